"""Binance's own clients against a running server: ccxt (sync and async) and ccxt.pro, as
a user points them at /binance (the recipe of their source: `urls.api.public` and
`urls.api.ws.spot`). What they get must be our /candles, their errors Binance's."""

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest
from websockets.asyncio.client import connect

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.ingest import IngestOptions
from tests.factories import series
from tests.support import DATA, free_port, get_json, ingest, insert, metric, served

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

KEY = "vendor-key"
PAGED = datetime(2024, 3, 1, tzinfo=UTC)  # PAGEUSDT: 4,500 minutes from here
PAGES = 4500
LIVE = datetime(2024, 7, 1, 9, tzinfo=UTC)  # LIVEUSDT: one minute; the rest comes live
SPOT_ONLY = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.public = f"{self.base}/binance/api/v3"
        self.ws = f"ws://127.0.0.1:{port}/binance/ws"

    def candles(self, ticker: str, tf_min: int, **params: Any) -> list[list[float]]:
        """/candles as ccxt's OHLCV rows."""
        query = "&".join(f"{k}={v}" for k, v in {"limit": 5000, **params}.items())
        status, body = get_json(f"{self.base}/candles?ticker={ticker}&tf_min={tf_min}&{query}")
        assert status == 200, body
        data: list[dict[str, Any]] = body["data"]  # type: ignore[assignment]
        return [
            [
                ms(datetime.fromisoformat(c["ts"])),
                *(c[k] for k in ("open", "high", "low", "close", "volume")),
            ]
            for c in data
        ]

    def post(self, rows: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{self.base}/candles",
            data=json.dumps(rows).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def live_subscribers(self) -> float:
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=5) as response:
            return metric(response.read().decode(), "marketdata_live_subscribers")


@pytest.fixture(scope="module")
def server(database_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url: str = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    assert ingest(url, [DATA / "BTCUSDT-1m-2022-08.csv"], IngestOptions()) == 0
    insert(url, series("PAGEUSDT", PAGES, tf_min=1, start=PAGED) + series("LIVEUSDT", 1, 1, LIVE))
    port = free_port()
    cwd: Path = tmp_path_factory.mktemp("vendors")
    with served(cwd, url, port, API_KEYS=KEY, LOG_LEVEL="WARNING"):
        yield Server(port)


@pytest.fixture
def exchange(server: Server) -> Iterator[ccxt.binance]:
    """ccxt's sync client on our server, counting its requests."""
    ex = ccxt.binance({"urls": {"api": {"public": server.public}}, "options": SPOT_ONLY})
    ex.requested = []
    ex.session.hooks["response"].append(lambda r, *a, **k: ex.requested.append(r.url))
    return ex


def test_load_markets_is_one_request_and_every_series_a_spot_market(
    exchange: ccxt.binance, server: Server
) -> None:
    markets = exchange.load_markets()
    assert exchange.requested == [f"{server.public}/exchangeInfo"]
    assert {"BTC/USDT", "PAGE/USDT", "LIVE/USDT"} <= set(markets)
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"]) == ("BTCUSDT", "BTC", "USDT")
    assert btc["spot"]
    assert btc["active"]
    assert btc["type"] == "spot"
    assert btc["precision"]["price"] == 1e-8
    assert exchange.price_to_precision("BTC/USDT", 23290.123456789) == "23290.12345679"


def test_fetch_ohlcv_page_by_page_is_our_candles(exchange: ccxt.binance, server: Server) -> None:
    """The classic loop: since, limit 1000, since = last + 1, until a short page."""
    got: list[list[float]] = []
    since = ms(PAGED)
    while True:
        page = exchange.fetch_ohlcv("PAGE/USDT", "1m", since=since, limit=1000)
        got += page
        if len(page) < 1000:
            break
        since = page[-1][0] + 1
    assert len(got) == PAGES
    assert got == server.candles("PAGEUSDT", 1)


def test_fetch_ohlcv_paginated_until_is_our_candles(exchange: ccxt.binance, server: Server) -> None:
    until = ms(PAGED + timedelta(minutes=PAGES))
    got = exchange.fetch_ohlcv(
        "PAGE/USDT", "1m", since=ms(PAGED), params={"paginate": True, "until": until}
    )
    assert got == server.candles("PAGEUSDT", 1)
    klines = [u for u in exchange.requested if "/klines?" in u]
    assert len(klines) == 5  # 4,500 minutes in pages of 1,000
    assert all("limit=1000" in u and f"endTime={until}" in u for u in klines)


def test_fetch_ohlcv_of_a_resampled_timeframe(exchange: ccxt.binance, server: Server) -> None:
    until = ms(PAGED + timedelta(minutes=PAGES))
    got = exchange.fetch_ohlcv(
        "PAGE/USDT", "15m", since=ms(PAGED), params={"paginate": True, "until": until}
    )
    ours = server.candles("PAGEUSDT", 15)
    assert len(got) == PAGES // 15
    assert [row[0] for row in got] == [row[0] for row in ours]
    assert got == [pytest.approx(row) for row in ours]


def test_fetch_ohlcv_without_since_is_the_latest(exchange: ccxt.binance, server: Server) -> None:
    got = exchange.fetch_ohlcv("BTC/USDT", "1m")
    assert got == server.candles("BTCUSDT", 1, order="desc", limit=500)[::-1]


def test_async_pages_fired_at_once_are_our_candles(server: Server) -> None:
    async def fetch() -> list[list[float]]:
        ex = ccxt.async_support.binance(
            {"urls": {"api": {"public": server.public}}, "options": SPOT_ONLY}
        )
        try:
            until = ms(PAGED + timedelta(minutes=PAGES))
            rows: list[list[float]] = await ex.fetch_ohlcv(
                "PAGE/USDT", "5m", since=ms(PAGED), params={"paginate": True, "until": until}
            )
            return rows
        finally:
            await ex.close()

    got = asyncio.run(fetch())
    ours = server.candles("PAGEUSDT", 5)
    assert [row[0] for row in got] == [row[0] for row in ours]
    assert got == [pytest.approx(row) for row in ours]


def test_errors_are_ccxts_exceptions_for_binances_codes(exchange: ccxt.binance) -> None:
    with pytest.raises(ccxt.BadSymbol, match="-1121"):
        exchange.publicGetKlines({"symbol": "NOPEUSDT", "interval": "1m"})
    exchange.load_markets()
    with pytest.raises(ccxt.BadRequest, match="-1120"):
        exchange.fetch_ohlcv("BTC/USDT", "7m")  # passed through by ccxt
    with pytest.raises(ccxt.BadRequest, match="-1120"):
        exchange.fetch_ohlcv("BTC/USDT", "1M")  # calendar months: not served
    with pytest.raises(ccxt.BadRequest, match="-1100"):
        exchange.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "startTime": "noon"})
    # (ccxt maps -1023 by the host's market type only: from 127.0.0.1, an ExchangeError)
    with pytest.raises(ccxt.ExchangeError, match="-1023"):
        exchange.publicGetKlines(
            {"symbol": "BTCUSDT", "interval": "1m", "startTime": 10, "endTime": 5}
        )
    with pytest.raises(ccxt.BadRequest, match="-1102"):
        exchange.publicGetKlines({"interval": "1m"})
    with pytest.raises(ccxt.BadSymbol):
        exchange.fetch_ohlcv("NOPE/USDT", "1m")  # refused by ccxt itself


def test_fetch_time_is_the_wall_clock(exchange: ccxt.binance) -> None:
    assert abs(exchange.fetch_time() - time.time() * 1000) < 5000


def test_watch_ohlcv_receives_candles_posted_meanwhile(server: Server) -> None:
    minute = LIVE + timedelta(minutes=1)
    written = {
        "ticker": "LIVEUSDT",
        "tf_min": 1,
        "ts": minute.isoformat(),
        "open": 5.0,
        "high": 6.0,
        "low": 4.5,
        "close": 5.5,
        "volume": 12.0,
    }

    async def watch() -> tuple[list[list[float]], list[list[float]]]:
        ex = ccxt.pro.binance(
            {
                "urls": {"api": {"public": server.public, "ws": {"spot": server.ws}}},
                "options": SPOT_ONLY,
            }
        )
        try:
            first = asyncio.create_task(ex.watch_ohlcv("LIVE/USDT", "1m"))
            deadline = time.monotonic() + 20
            while await asyncio.to_thread(server.live_subscribers) < 1:  # subscribed
                assert time.monotonic() < deadline
                assert not first.done()
                await asyncio.sleep(0.05)
            await asyncio.to_thread(server.post, [written])
            # (ccxt updates the rows it returned in place: copies)
            got = [list(row) for row in await asyncio.wait_for(first, 10)]
            corrected = asyncio.create_task(ex.watch_ohlcv("LIVE/USDT", "1m"))
            await asyncio.to_thread(server.post, [{**written, "close": 5.75, "volume": 13.0}])
            again = [list(row) for row in await asyncio.wait_for(corrected, 10)]
            return got, again
        finally:
            await ex.close()

    got, again = asyncio.run(watch())
    assert got == [[ms(minute), 5.0, 6.0, 4.5, 5.5, 12.0]]
    assert again == [[ms(minute), 5.0, 6.0, 4.5, 5.75, 13.0]]  # the same kline, updated


def test_a_protocol_ping_is_answered(server: Server) -> None:
    async def ping() -> float:
        async with connect(server.ws) as ws:
            pong = await ws.ping()
            latency: float = await asyncio.wait_for(pong, 5)
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            assert json.loads(await ws.recv()) == {"result": [], "id": 1}
            return latency

    assert asyncio.run(ping()) >= 0
