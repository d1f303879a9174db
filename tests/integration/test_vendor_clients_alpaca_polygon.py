"""The vendors' own clients, unmodified, against a real server process: alpaca-py's
historical clients and StockDataStream on /alpaca, massive's RESTClient and WebSocketClient
on /polygon. Pages are small (MAX_LIMIT=50), so every read takes several."""

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.models import Bar
from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from massive import RESTClient, WebSocketClient
from massive.exceptions import BadResponse
from massive.websocket.models import EquityAgg, Market, WebSocketMessage

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.candles import Candle
from tests.alpaca_polygon_support import sessions
from tests.support import free_port, insert, metric, served

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

KEY = "vendor-key"
START = datetime(2024, 1, 2, tzinfo=UTC)
END = datetime(2024, 1, 4, tzinfo=UTC)
LIVE = datetime(2024, 2, 1, 14, 30, tzinfo=UTC)


class Server:
    def __init__(self, port: int, stored: dict[str, list[Candle]]) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.stored = stored

    def requests(self, route: str) -> float:
        """How many GETs of this route template were answered 200."""
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=5) as response:
            text = response.read().decode()
        return metric(text, "marketdata_requests_total", route=route, method="GET", status="200")

    def post(self, candle: Candle) -> None:
        body = json.dumps(
            [
                {
                    "ticker": candle.ticker,
                    "tf_min": candle.tf_min,
                    "ts": candle.ts.isoformat(),
                    "open": candle.open,
                    "high": candle.high,
                    "low": candle.low,
                    "close": candle.close,
                    "volume": candle.volume,
                }
            ]
        ).encode()
        request = urllib.request.Request(
            f"{self.base}/candles",
            data=body,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


@pytest.fixture(scope="module")
def server(database_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    stored = {
        "AAPL": sessions("AAPL", base=180.0),
        "MSFT": sessions("MSFT", base=370.0),
        "BTCUSD": sessions("BTCUSD", days=1, tf_min=1, base=42000.0),
        # a daily file's dates, stamped at 00:00 UTC (Stooq's, a broker's export)
        "KO": [
            Candle(
                "KO",
                1440,
                datetime(2024, 1, d, tzinfo=UTC),
                d * 1.0,
                d + 1.0,
                d - 1.0,
                d * 1.0,
                100.0,
                0,
            )
            for d in (2, 3, 4, 5)
        ],
    }
    insert(url, [c for candles in stored.values() for c in candles])
    port = free_port()
    cwd: Path = tmp_path_factory.mktemp("vendors")
    env = {"API_KEYS": KEY, "MAX_LIMIT": "50", "LOG_LEVEL": "WARNING"}
    with served(cwd, url, port, **env):
        yield Server(port, stored)


def minute(ticker: str, i: int) -> Candle:
    price = 50.0 + i
    return Candle(ticker, 1, LIVE + timedelta(minutes=i), price, price + 1, price - 1, price, i, 0)


# -- alpaca-py -----------------------------------------------------------------------------


def test_alpaca_py_reads_several_symbols_over_several_pages(server: Server) -> None:
    client = StockHistoricalDataClient("key", "secret", url_override=f"{server.base}/alpaca")
    asked = server.requests("/alpaca/v2/stocks/bars")
    request = StockBarsRequest(
        symbol_or_symbols=["MSFT", "AAPL"],
        timeframe=TimeFrame(5, TimeFrameUnit.Minute),
        start=START,
        end=END,
        feed=DataFeed.IEX,
    )
    frame = client.get_stock_bars(request).df
    assert server.requests("/alpaca/v2/stocks/bars") - asked == 7  # 312 bars, 50 a page
    assert list(frame.index.names) == ["symbol", "timestamp"]
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]  # n, vw: null
    for symbol in ("AAPL", "MSFT"):
        rows = frame.loc[symbol]
        candles = server.stored[symbol]
        assert [t.to_pydatetime() for t in rows.index] == [c.ts for c in candles]
        assert rows["open"].tolist() == [c.open for c in candles]
        assert rows["close"].tolist() == [c.close for c in candles]
        assert rows["volume"].tolist() == [c.volume for c in candles]
    # a limit is the client's, across symbols and pages: AAPL first
    few = client.get_stock_bars(
        StockBarsRequest(
            symbol_or_symbols=["MSFT", "AAPL"],
            timeframe=TimeFrame(5, TimeFrameUnit.Minute),
            start=START,
            end=END,
            limit=70,
        )
    )
    assert len(few.data["AAPL"]) == 70
    assert "MSFT" not in few.data


def test_alpaca_py_days_and_crypto(server: Server) -> None:
    stocks = StockHistoricalDataClient("key", "secret", url_override=f"{server.base}/alpaca")
    days = stocks.get_stock_bars(
        StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Day, start=START, end=END)
    ).data["AAPL"]
    assert [d.timestamp for d in days] == [
        datetime(2024, 1, 2, 5, tzinfo=UTC),
        datetime(2024, 1, 3, 5, tzinfo=UTC),
    ]
    assert days[0].volume == sum(c.volume for c in server.stored["AAPL"][:78])
    assert (days[0].trade_count, days[0].vwap) == (None, None)
    crypto = CryptoHistoricalDataClient(url_override=f"{server.base}/alpaca")  # no keys
    hours = crypto.get_crypto_bars(
        CryptoBarsRequest(
            symbol_or_symbols="BTC/USD", timeframe=TimeFrame.Hour, start=START, end=END
        )
    ).data["BTC/USD"]
    assert [h.timestamp.hour for h in hours] == [14, 15, 16, 17, 18, 19, 20]
    assert hours[0].open == server.stored["BTCUSD"][0].open
    assert sum(h.volume for h in hours) == sum(c.volume for c in server.stored["BTCUSD"])


def test_stored_dates_are_their_new_york_days_in_both_clients(server: Server) -> None:
    # Both clients read a stock's day in New York: a date stored at 00:00 UTC is its own day
    # there, not the evening before, and a day asked for by its date is that date's bar.
    new_york = ZoneInfo("America/New_York")
    stocks = StockHistoricalDataClient("key", "secret", url_override=f"{server.base}/alpaca")
    days = stocks.get_stock_bars(
        StockBarsRequest(
            symbol_or_symbols="KO",
            timeframe=TimeFrame.Day,
            start=datetime(2024, 1, 3, tzinfo=new_york),
            end=datetime(2024, 1, 4, 23, 59, tzinfo=new_york),
        )
    ).data["KO"]
    assert [(d.timestamp.astimezone(new_york).date().day, d.open) for d in days] == [
        (3, 3.0),
        (4, 4.0),
    ]
    client = RESTClient(api_key="key", base=f"{server.base}/polygon", retries=0)
    aggs = list(client.list_aggs("KO", 1, "day", "2024-01-04", "2024-01-05"))
    assert [(a.timestamp, a.open) for a in aggs] == [
        (int(datetime(2024, 1, d, tzinfo=new_york).timestamp() * 1000), float(d)) for d in (4, 5)
    ]


@pytest.mark.parametrize(
    ("symbol", "timeframe", "words"),
    [
        ("NOPE", TimeFrame(5, TimeFrameUnit.Minute), "invalid symbol: NOPE"),
        ("AAPL", TimeFrame(1, TimeFrameUnit.Month), "calendar months are not served"),
    ],
)
def test_alpaca_py_gets_alpacas_errors(
    server: Server, symbol: str, timeframe: TimeFrame, words: str
) -> None:
    client = StockHistoricalDataClient("key", "secret", url_override=f"{server.base}/alpaca")
    request = StockBarsRequest(symbol_or_symbols=symbol, timeframe=timeframe, start=START, end=END)
    with pytest.raises(APIError) as raised:
        client.get_stock_bars(request)
    assert raised.value.status_code == 422
    assert raised.value.code == 42210000
    assert words in raised.value.message


def test_stock_data_stream_receives_a_posted_bar(server: Server) -> None:
    stream = StockDataStream(
        "key", "secret", url_override=f"ws://127.0.0.1:{server.port}/alpaca/v2/iex"
    )
    got: list[Bar] = []

    async def on_bar(bar: Bar) -> None:
        got.append(bar)

    stream.subscribe_bars(on_bar, "LIVEA")
    runner = threading.Thread(target=stream.run, daemon=True)
    runner.start()
    posted: dict[datetime, Candle] = {}
    try:
        deadline = time.monotonic() + 30
        # until the stream has subscribed, a bar may be written before it: write on
        while not got and time.monotonic() < deadline:
            candle = minute("LIVEA", len(posted))
            server.post(candle)
            posted[candle.ts] = candle
            time.sleep(0.3)
    finally:
        stream.stop()
        runner.join(timeout=15)
    assert got, "no bar arrived"
    bar = got[0]
    sent = posted[bar.timestamp]
    assert (bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.volume) == (
        "LIVEA",
        sent.open,
        sent.high,
        sent.low,
        sent.close,
        sent.volume,
    )
    assert (bar.trade_count, bar.vwap) == (None, None)
    assert not runner.is_alive()


# -- massive -------------------------------------------------------------------------------

AGGS = "/polygon/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from_}/{to}"


def test_massive_lists_aggregates_over_several_pages(server: Server) -> None:
    client = RESTClient(api_key="key", base=f"{server.base}/polygon", retries=0)
    first, following = AGGS, "/polygon" + AGGS
    asked = server.requests(first), server.requests(following)
    aggs = list(client.list_aggs("AAPL", 5, "minute", "2024-01-02", "2024-01-03", limit=40))
    candles = server.stored["AAPL"]
    assert [a.timestamp for a in aggs] == [int(c.ts.timestamp() * 1000) for c in candles]
    assert [(a.open, a.high, a.low, a.close, a.volume) for a in aggs] == [
        (c.open, c.high, c.low, c.close, c.volume) for c in candles
    ]
    assert {(a.vwap, a.transactions) for a in aggs} == {(None, None)}
    # the first page, then three through next_url, as massive follows it: its base
    # before next_url's path (the prefix twice)
    assert server.requests(first) - asked[0] == 1
    assert server.requests(following) - asked[1] == 3
    descending = list(
        client.list_aggs("AAPL", 1, "hour", "2024-01-02", "2024-01-03", sort="desc", limit=5)
    )
    assert len(descending) == 14
    assert descending[0].timestamp > descending[-1].timestamp


@pytest.mark.parametrize(
    ("ticker", "timespan", "words"),
    [("NOPE", "minute", "NOT_FOUND"), ("AAPL", "fortnight", "invalid timespan")],
)
def test_massive_gets_polygons_errors(
    server: Server, ticker: str, timespan: str, words: str
) -> None:
    client = RESTClient(api_key="key", base=f"{server.base}/polygon", retries=0)
    with pytest.raises(BadResponse, match=words):
        list(client.list_aggs(ticker, 5, timespan, "2024-01-02", "2024-01-03"))


def test_massive_websocket_receives_a_minute_aggregate(server: Server) -> None:
    socket = WebSocketClient(
        api_key="key",
        feed=f"127.0.0.1:{server.port}/polygon",
        market=Market.Stocks,
        secure=False,
        subscriptions=["AM.LIVEP"],
        max_reconnects=1,
    )
    got: list[WebSocketMessage] = []
    posted: dict[int, Candle] = {}

    async def received(messages: list[WebSocketMessage]) -> None:
        got.extend(messages)
        await socket.close()  # the client's connect() then returns

    async def write() -> None:
        while not got:
            candle = minute("LIVEP", len(posted))
            # noted before it is sent: its aggregate can arrive, and this task be cancelled,
            # before the POST's answer does
            posted[int(candle.ts.timestamp() * 1000)] = candle
            await asyncio.to_thread(server.post, candle)
            await asyncio.sleep(0.3)

    async def scenario() -> None:
        async with asyncio.timeout(30), asyncio.TaskGroup() as group:
            writer = group.create_task(write())
            await socket.connect(received)
            writer.cancel()

    asyncio.run(scenario())
    agg = got[0]
    assert isinstance(agg, EquityAgg)
    sent = posted[agg.start_timestamp or 0]
    assert (agg.event_type, agg.symbol) == ("AM", "LIVEP")
    assert (agg.open, agg.high, agg.low, agg.close, agg.volume) == (
        sent.open,
        sent.high,
        sent.low,
        sent.close,
        sent.volume,
    )
    assert agg.end_timestamp == (agg.start_timestamp or 0) + 60_000
