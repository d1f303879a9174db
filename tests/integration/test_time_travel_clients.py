"""Time travel checked with the vendors' own clients against a running server: ccxt and
ccxt.pro on a session's Binance, alpaca-py on its Alpaca. REST answers nothing from after
the session's present, the stream sends each bar as the present passes its close, the two
agree, and pause and seek move both."""

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ccxt
import ccxt.pro
import psycopg
import pytest
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.models import Bar
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from websockets.asyncio.client import connect

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.ingest import IngestOptions
from tests.factories import series
from tests.support import DATA, free_port, get_json, ingest, insert, served

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

DAY = datetime(2022, 8, 1, tzinfo=UTC)  # BTCUSDT's minutes (tests/data) start here
OPEN = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)  # TTA: minutes of a stock from here
SPOT_ONLY = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}
MINUTE = 60_000


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class Server:
    def __init__(self, port: int, url: str) -> None:
        self.port = port
        self.url = url  # the database's
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def session(self, **body: Any) -> dict[str, Any]:
        made: dict[str, Any] = self.call("POST", "/sessions", body)
        return made

    def present(self, sid: str) -> datetime:
        return datetime.fromisoformat(self.call("GET", f"/sessions/{sid}")["present"])

    def candles(self, ticker: str, tf_min: int, start: datetime, end: datetime) -> list[Any]:
        """/candles/range as ccxt's OHLCV rows."""
        query = f"ticker={ticker}&tf_min={tf_min}&start={start:%Y-%m-%dT%H:%M:%SZ}"
        status, body = get_json(f"{self.base}/candles/range?{query}&end={end:%Y-%m-%dT%H:%M:%SZ}")
        assert status == 200, body
        rows: list[dict[str, Any]] = body["data"]  # type: ignore[assignment]
        return [
            [
                ms(datetime.fromisoformat(c["ts"])),
                *(c[k] for k in ("open", "high", "low", "close", "volume")),
            ]
            for c in rows
        ]


@pytest.fixture(scope="module")
def server(database_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url: str = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    assert ingest(url, [DATA / "BTCUSDT-1m-2022-08.csv"], IngestOptions()) == 0
    insert(url, series("TTA", 600, tf_min=1, start=OPEN))
    port = free_port()
    cwd: Path = tmp_path_factory.mktemp("travel")
    with served(cwd, url, port, LOG_LEVEL="WARNING"):
        yield Server(port, url)


def binance(server: Server, sid: str) -> tuple[str, str]:
    base = f"{server.base}/sessions/{sid}/binance"
    return f"{base}/api/v3", f"ws://127.0.0.1:{server.port}/sessions/{sid}/binance/ws"


def test_watch_ohlcv_at_600x_is_our_candles_each_once_its_close_is_past(server: Server) -> None:
    """ccxt.pro's watch_ohlcv of minutes at 600x (a minute every 0.1 s) for 150 bars; a raw
    client of the 5-minute klines made of them sees `x` false as each minute closes and
    true when the five-minute bar does, as Binance sets it."""
    start = DAY + timedelta(hours=3)
    bars = 150
    sid = server.session(
        start=start.isoformat(), speed=600, end=(start + timedelta(minutes=bars)).isoformat()
    )["id"]
    public, ws = binance(server, sid)

    server.call("POST", f"/sessions/{sid}/pause")  # until both clients have subscribed

    async def watch() -> tuple[list[list[float]], list[dict[str, Any]]]:
        ex = ccxt.pro.binance(
            {"urls": {"api": {"public": public, "ws": {"spot": ws}}}, "options": SPOT_ONLY}
        )
        seen: dict[int, list[float]] = {}
        klines: list[dict[str, Any]] = []

        async def raw() -> None:
            async with connect(f"{ws}/btcusdt@kline_5m") as socket:
                async for message in socket:
                    klines.append(json.loads(message)["k"])

        listener = asyncio.create_task(raw())
        watching = asyncio.create_task(ex.watch_ohlcv("BTC/USDT", "1m"))
        try:
            await asyncio.sleep(1.0)  # subscribed (nothing comes while paused)
            assert not watching.done()
            await asyncio.to_thread(server.call, "POST", f"/sessions/{sid}/resume")
            while len(seen) < bars:
                rows = await asyncio.wait_for(watching, 10)
                present = await asyncio.to_thread(server.present, sid)
                for row in rows:
                    seen[int(row[0])] = list(row)
                # nothing from after the present: each bar's close had passed when it came
                assert max(seen) + MINUTE <= ms(present)
                watching = asyncio.create_task(ex.watch_ohlcv("BTC/USDT", "1m"))
            await asyncio.sleep(0.5)  # the last five-minute kline
        finally:
            watching.cancel()
            listener.cancel()
            await ex.close()
        return [seen[t] for t in sorted(seen)], klines

    got, klines = asyncio.run(watch())
    assert got == server.candles("BTCUSDT", 1, start, start + timedelta(minutes=bars - 1))
    assert [row[0] for row in got] == [ms(start) + i * MINUTE for i in range(bars)]
    finals = [k for k in klines if k["x"]]
    assert finals, "no 5-minute bar closed"
    five = server.candles("BTCUSDT", 5, start, start + timedelta(minutes=bars))
    by_open = {row[0]: row for row in five}
    for kline in finals:
        row = by_open[kline["t"]]
        assert [float(kline[k]) for k in "ohlcv"] == pytest.approx(row[1:])
    updates: dict[int, list[bool]] = {}
    for kline in klines:
        updates.setdefault(kline["t"], []).append(kline["x"])
    for opens, flags in updates.items():  # a bar forms at each minute, final at its last
        if opens + 5 * MINUTE <= ms(start) + bars * MINUTE:  # closed within the session
            assert flags[-1], opens
            assert not any(flags[:-1]), opens
            assert len(flags) <= 5


def test_fetch_ohlcv_polled_during_a_session_never_sees_a_later_candle(server: Server) -> None:
    start = DAY + timedelta(hours=6)
    sid = server.session(start=start.isoformat(), speed=1200)["id"]
    public, _ = binance(server, sid)
    exchange = ccxt.binance({"urls": {"api": {"public": public}}, "options": SPOT_ONLY})
    last = 0
    for _ in range(15):
        before = server.present(sid)
        rows = exchange.fetch_ohlcv(
            "BTC/USDT", "1m", since=ms(start - timedelta(hours=1)), limit=1000
        )
        after = server.present(sid)
        newest = rows[-1][0]
        assert newest + MINUTE <= ms(after)  # closed by the present (even the latest)
        assert newest + MINUTE > ms(before) - 2 * MINUTE  # and about the latest closed
        assert [r[0] for r in rows] == list(range(rows[0][0], newest + 1, MINUTE))  # no gap
        assert newest >= last
        last = newest
        five = exchange.fetch_ohlcv(
            "BTC/USDT", "5m", since=ms(start - timedelta(hours=1)), limit=1000
        )
        # the five minutes holding the present, as they stood: made of closed minutes only
        assert five[-1][0] + MINUTE <= ms(server.present(sid))
        time.sleep(0.1)


async def drained(socket: Any) -> None:
    """Until nothing comes for half a second."""
    while True:
        try:
            await asyncio.wait_for(socket.recv(), 0.5)
        except TimeoutError:
            return


def test_pause_stops_and_seek_moves_rest_and_the_stream_alike(server: Server) -> None:
    start = DAY + timedelta(hours=9)
    sid = server.session(start=start.isoformat(), speed=600)["id"]
    public, ws = binance(server, sid)
    exchange = ccxt.binance({"urls": {"api": {"public": public}}, "options": SPOT_ONLY})

    def newest() -> int:
        rows = exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)  # the latest, up to the present
        return int(rows[-1][0])

    async def run() -> None:
        async with connect(f"{ws}/btcusdt@kline_1m") as socket:
            first = json.loads(await asyncio.wait_for(socket.recv(), 10))["k"]["t"]
            assert first >= ms(start)
            server.call("POST", f"/sessions/{sid}/pause")
            held = newest()
            # what was sent before the pause reached us may still come: drain it
            await drained(socket)
            await asyncio.sleep(0.5)
            assert newest() == held  # REST's present stopped too
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(socket.recv(), 0.5)
            there = DAY + timedelta(hours=20)
            server.call("POST", f"/sessions/{sid}/seek", {"to": there.isoformat()})
            assert newest() == ms(there) - MINUTE  # paused at the new present
            server.call("POST", f"/sessions/{sid}/resume")
            moved = json.loads(await asyncio.wait_for(socket.recv(), 10))["k"]
            assert moved["t"] == ms(there)  # on from the new present, nothing skipped
            assert newest() >= ms(there)

    asyncio.run(run())


def test_alpaca_py_stream_and_bars_agree_under_a_session(server: Server) -> None:
    start = OPEN + timedelta(minutes=30)
    sid = server.session(start=start.isoformat(), speed=600, tickers=["TTA"])["id"]
    base = f"{server.base}/sessions/{sid}/alpaca"
    stream = StockDataStream(
        "key", "secret", url_override=f"ws://127.0.0.1:{server.port}/sessions/{sid}/alpaca/v2/iex"
    )
    got: list[Bar] = []

    async def on_bar(bar: Bar) -> None:
        got.append(bar)

    stream.subscribe_bars(on_bar, "TTA")
    runner = threading.Thread(target=stream.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stream.stop()
        runner.join(timeout=15)
    assert len(got) >= 20
    client = StockHistoricalDataClient("key", "secret", url_override=base)
    request = StockBarsRequest(symbol_or_symbols="TTA", timeframe=TimeFrame.Minute, start=OPEN)
    history = {bar.timestamp: bar for bar in client.get_stock_bars(request)["TTA"]}
    # read after the answer (at 600x the present moves 10 minutes a second): the answer
    # was made as of a present no later than this one
    present = server.present(sid)
    assert max(history) + timedelta(minutes=1) <= present  # nothing from after the present
    stamps = [bar.timestamp for bar in got]
    assert stamps == sorted(stamps)
    assert stamps[0] >= start
    for bar in got:  # what the stream sent is what REST answers for the same minute
        rest = history[bar.timestamp]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            rest.open,
            rest.high,
            rest.low,
            rest.close,
            rest.volume,
        )
    other = StockHistoricalDataClient("key", "secret", url_override=base)
    with pytest.raises(Exception, match=r"TTB|symbol"):
        other.get_stock_bars(
            StockBarsRequest(symbol_or_symbols="TTB", timeframe=TimeFrame.Minute, start=OPEN)
        )


def test_shift_shows_the_past_as_today(server: Server) -> None:
    start = DAY + timedelta(hours=12)
    sid = server.session(start=start.isoformat(), speed=1, shift=True)["id"]
    public, _ = binance(server, sid)
    exchange = ccxt.binance({"urls": {"api": {"public": public}}, "options": SPOT_ONLY})
    now = time.time() * 1000
    assert abs(exchange.fetch_time() - now) < 5000  # the wall clock, as always
    rows = exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    assert now - 3 * MINUTE < rows[-1][0] <= now  # the latest minute looks like today's
    unshifted = server.candles("BTCUSDT", 1, start - timedelta(minutes=10), start)
    assert [row[1:] for row in rows] == [row[1:] for row in unshifted[-6:-1]]  # the past's


def test_what_is_written_ahead_of_the_present_streams_as_it_stands(server: Server) -> None:
    """A program writes ahead of a session's present (a minute that was missing, and a
    correction): the session's stream sends each as the table holds it when due, as REST
    says; each final kline's `E` is the session's present (controls made during the
    connection followed), never before the bar's close."""
    minutes = series("TTW", 30, tf_min=1, start=OPEN)
    insert(server.url, [m for i, m in enumerate(minutes) if i != 5])
    sid = server.session(start=(OPEN + timedelta(minutes=3)).isoformat(), speed=600)["id"]
    server.call("POST", f"/sessions/{sid}/pause")
    _, ws = binance(server, sid)

    async def run() -> dict[int, dict[str, Any]]:
        finals: dict[int, dict[str, Any]] = {}
        async with connect(f"{ws}/ttw@kline_1m") as socket:
            await asyncio.sleep(0.5)  # subscribed: its bars ahead are read
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
                    " VALUES ('TTW', 1, %s, 1, 2, 0.5, 1.5, 7)",
                    (minutes[5].ts,),
                )
                conn.execute(
                    "UPDATE candles SET high = high + 50 WHERE ticker = 'TTW' AND ts = %s",
                    (minutes[7].ts,),
                )
            await asyncio.sleep(0.5)  # heard
            server.call("POST", f"/sessions/{sid}/resume")
            while 9 not in finals:
                event = json.loads(await asyncio.wait_for(socket.recv(), 10))
                kline = event["k"]
                assert event["E"] >= kline["T"]
                finals[(kline["t"] - ms(OPEN)) // MINUTE] = kline
        return finals

    finals = asyncio.run(run())
    assert (finals[5]["o"], finals[5]["v"]) == ("1.0", "7.0")
    assert float(finals[7]["h"]) == minutes[7].high + 50
    assert sorted(finals) == list(range(3, 10))
