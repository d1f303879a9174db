"""Alpaca market data v2 under /alpaca, through the app against real PostgreSQL: the bars
are our own API's, in Alpaca's shapes; pages across symbols; Alpaca's errors; the
present; the stream in JSON and MessagePack."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import msgpack
import psycopg
import pytest

from marketdata.domain.candles import Candle
from tests.alpaca_polygon_support import (
    fixed_present,
    minute_bar,
    ours,
    rewrite,
    sessions,
)
from tests.support import AppFactory, Client, insert

DAYS = {"start": "2024-01-02T00:00:00+00:00", "end": "2024-01-04T00:00:00+00:00"}


@pytest.fixture
def stored(db_url: str) -> dict[str, list[Candle]]:
    held = {
        "AAPL": sessions("AAPL", base=180.0),
        "MSFT": sessions("MSFT", base=370.0),
        "BTCUSD": sessions("BTCUSD", days=1, tf_min=1, base=42000.0),
    }
    insert(db_url, [c for candles in held.values() for c in candles])
    return held


def bars(client: Client, path: str = "/alpaca/v2/stocks/bars", **params: Any) -> Any:
    response = client.get(f"{path}?{urlencode(params)}")
    assert response.status_code == 200, response.text
    return response.json()


def alpaca_bar(candle: dict[str, Any]) -> dict[str, Any]:
    """One of our candles as Alpaca's bar."""
    return {
        "t": candle["ts"],
        "o": candle["open"],
        "h": candle["high"],
        "l": candle["low"],
        "c": candle["close"],
        "v": candle["volume"],
        "n": None,
        "vw": None,
    }


def every_page(client: Client, path: str = "/alpaca/v2/stocks/bars", **params: Any) -> list[Any]:
    pages = [bars(client, path, **params)]
    while pages[-1]["next_page_token"] is not None:
        pages.append(bars(client, path, **params, page_token=pages[-1]["next_page_token"]))
    return pages


def test_bars_of_several_symbols_are_our_candles(
    client: Client, stored: dict[str, list[Candle]]
) -> None:
    body = bars(client, symbols="MSFT,AAPL", timeframe="5Min", **DAYS)
    assert list(body) == ["bars", "next_page_token"]
    assert list(body["bars"]) == ["AAPL", "MSFT"]  # symbol order
    assert body["next_page_token"] is None
    for symbol in ("AAPL", "MSFT"):
        expected = ours(client, symbol, DAYS["start"], DAYS["end"], tf_min=5)
        assert len(expected) == 156
        assert body["bars"][symbol] == [alpaca_bar(c) for c in expected]
    assert body["bars"]["AAPL"][0]["t"] == "2024-01-02T14:30:00Z"


def test_resampled_bars_are_our_resampled_candles(
    client: Client, stored: dict[str, list[Candle]]
) -> None:
    hours = bars(client, symbols="AAPL", timeframe="1Hour", **DAYS)["bars"]["AAPL"]
    assert hours == [alpaca_bar(c) for c in ours(client, "AAPL", **DAYS, tf_min=60)]
    assert [h["t"][11:16] for h in hours[:2]] == ["14:00", "15:00"]
    # an equity's days are New York's, stamped at its midnight; a bar comes when it opens
    # in [start, end] (our range reads want its whole bucket inside: a day more here)
    days = bars(client, symbols="AAPL", timeframe="1Day", **DAYS)["bars"]["AAPL"]
    new_york = ours(client, "AAPL", DAYS["start"], "2024-01-05", tf_min=1440, tz="America/New_York")
    assert days == [alpaca_bar(c) for c in new_york]
    assert [d["t"] for d in days] == ["2024-01-02T05:00:00Z", "2024-01-03T05:00:00Z"]
    assert days[0]["v"] == sum(c.volume for c in stored["AAPL"][:78])


@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_pages_across_symbols_hold_every_bar_once(
    client: Client, stored: dict[str, list[Candle]], sort: str
) -> None:
    pages = every_page(client, symbols="AAPL,MSFT", timeframe="5Min", limit=50, sort=sort, **DAYS)
    assert len(pages) == 7  # 312 bars, 50 a page
    assert [sum(len(v) for v in p["bars"].values()) for p in pages] == [50] * 6 + [12]
    assert list(pages[3]["bars"]) == ["AAPL", "MSFT"]  # a page across the two
    for symbol in ("AAPL", "MSFT"):
        got = [b for p in pages for b in p["bars"].get(symbol, [])]
        expected = [alpaca_bar(c) for c in ours(client, symbol, **DAYS, tf_min=5)]
        assert got == (expected if sort == "asc" else expected[::-1])


def test_a_page_holds_at_most_max_limit(
    app_factory: AppFactory, stored: dict[str, list[Candle]]
) -> None:
    with app_factory(max_limit=100) as client:
        pages = every_page(client, symbols="AAPL,MSFT", timeframe="5Min", limit=10000, **DAYS)
    assert [sum(len(v) for v in p["bars"].values()) for p in pages] == [100, 100, 100, 12]


def test_one_symbol_has_a_list(client: Client, stored: dict[str, list[Candle]]) -> None:
    pages = every_page(client, "/alpaca/v2/stocks/AAPL/bars", timeframe="15Min", limit=20, **DAYS)
    assert [list(p) for p in pages[:1]] == [["bars", "symbol", "next_page_token"]]
    assert {p["symbol"] for p in pages} == {"AAPL"}
    got = [b for p in pages for b in p["bars"]]
    assert got == [alpaca_bar(c) for c in ours(client, "AAPL", **DAYS, tf_min=15)]
    assert len(got) == 52


def test_a_crypto_pair_is_its_stored_ticker(
    client: Client, stored: dict[str, list[Candle]]
) -> None:
    path = "/alpaca/v1beta3/crypto/us/bars"
    body = bars(client, path, symbols="BTC/USD", timeframe="1Hour", **DAYS)
    assert list(body["bars"]) == ["BTC/USD"]
    assert body["bars"]["BTC/USD"] == [
        alpaca_bar(c) for c in ours(client, "BTCUSD", **DAYS, tf_min=60)
    ]
    # crypto days are UTC's
    day = bars(client, path, symbols="BTC/USD", timeframe="1Day", **DAYS)["bars"]["BTC/USD"]
    assert [d["t"] for d in day] == ["2024-01-02T00:00:00Z"]


def test_nothing_in_range_is_an_empty_dict(client: Client, stored: dict[str, list[Candle]]) -> None:
    empty = {"start": "2023-01-01T00:00:00Z", "end": "2023-02-01T00:00:00Z"}
    assert bars(client, symbols="AAPL,MSFT", timeframe="5Min", **empty) == {
        "bars": {},
        "next_page_token": None,
    }
    one = bars(client, "/alpaca/v2/stocks/AAPL/bars", timeframe="5Min", **empty)
    assert one == {"bars": [], "symbol": "AAPL", "next_page_token": None}
    # a timeframe the stored candles cannot make: no bars either
    assert bars(client, symbols="AAPL", timeframe="1Min", **DAYS)["bars"] == {}


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("symbols=AAPL,NOPE&timeframe=5Min", "invalid symbol: NOPE"),
        ("timeframe=5Min", "invalid symbols: required"),
        ("symbols=AAPL", "invalid timeframe: required"),
        ("symbols=AAPL&timeframe=7Fortnight", "invalid timeframe"),
        ("symbols=AAPL&timeframe=60Min", "at most 59Min"),
        ("symbols=AAPL&timeframe=2Day", "at most 1Day"),
        ("symbols=AAPL&timeframe=1Month", "calendar months are not served"),
        ("symbols=AAPL&timeframe=5Min&start=yesterday", "start"),
        ("symbols=AAPL&timeframe=5Min&start=2024-01-03&end=2024-01-02", "must not be after"),
        ("symbols=AAPL&timeframe=5Min&limit=0", "invalid limit"),
        ("symbols=AAPL&timeframe=5Min&limit=10001", "invalid limit"),
        ("symbols=AAPL&timeframe=5Min&limit=abc", "invalid limit"),
        ("symbols=AAPL&timeframe=5Min&sort=sideways", "invalid sort"),
        ("symbols=AAPL&timeframe=5Min&page_token=garbage", "invalid page_token"),
        ("symbols=AAPL&timeframe=5Min&page_token=eyJzIjoiTVNGVCJ9", "not a token of this"),
    ],
)
def test_errors_are_alpacas(
    client: Client, stored: dict[str, list[Candle]], query: str, words: str
) -> None:
    response = client.get(f"/alpaca/v2/stocks/bars?{query}")
    assert response.status_code == 422, response.text
    body = response.json()
    assert list(body) == ["code", "message"]
    assert body["code"] == 42210000
    assert words in body["message"]


def test_our_own_errors_keep_their_shape(client: Client, stored: dict[str, list[Candle]]) -> None:
    assert client.get("/candles?ticker=NOPE").json() == {
        "error": "No candles found for ticker 'NOPE' with tf_min=5"
    }
    assert client.get("/alpaca/v2/stocks/bars?symbols=NOPE&timeframe=5Min").status_code == 422


def test_the_present_ends_every_read_and_starts_the_default_day(
    app_factory: AppFactory, stored: dict[str, list[Candle]]
) -> None:
    present = datetime(2024, 1, 3, 15, 2, tzinfo=UTC)
    with app_factory(fixed_present(present)) as client:
        # no start, no end: New York's day of the present, up to the present
        today = bars(client, symbols="AAPL", timeframe="5Min")["bars"]["AAPL"]
        assert (today[0]["t"], today[-1]["t"]) == ("2024-01-03T14:30:00Z", "2024-01-03T15:00:00Z")
        # an end after the present is the present
        later = bars(client, symbols="AAPL", timeframe="5Min", start="2024-01-03", end="2024-02-01")
        assert later["bars"]["AAPL"] == today
        # a range after the present: nothing yet (without an end, the end is the present)
        future = bars(
            client, symbols="AAPL", timeframe="5Min", start="2024-01-04", end="2024-01-05"
        )
        assert future == {"bars": {}, "next_page_token": None}
        assert (
            client.get(
                "/alpaca/v2/stocks/bars?symbols=AAPL&timeframe=5Min&start=2024-01-04"
            ).status_code
            == 422
        )


def test_described_in_the_openapi_document(client: Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    alpaca = {p for p in paths if p.startswith("/alpaca")}
    assert alpaca == {
        "/alpaca/v2/stocks/bars",
        "/alpaca/v2/stocks/{symbol}/bars",
        "/alpaca/v1beta3/crypto/us/bars",
    }
    for path in alpaca:
        operation = paths[path]["get"]
        assert operation["tags"] == ["alpaca"]
        assert {"200", "422", "500", "503"} <= set(operation["responses"])


# -- the stream ------------------------------------------------------------------------------

MINUTE = datetime(2024, 1, 5, 14, 30, tzinfo=UTC)


def received(ws: Any, binary: bool = False) -> list[dict[str, Any]]:
    frame: list[dict[str, Any]] = (
        msgpack.unpackb(ws.receive_bytes()) if binary else json.loads(ws.receive_text())
    )
    return frame


@pytest.mark.timeout(60)
def test_stream_in_json_sends_minute_bars_as_written(app_factory: AppFactory, db_url: str) -> None:
    with app_factory() as client, client.websocket_connect("/alpaca/v2/iex") as ws:
        assert received(ws) == [{"T": "success", "msg": "connected"}]
        ws.send_text(json.dumps({"action": "subscribe", "bars": ["AAPL"]}))
        assert received(ws) == [{"T": "error", "msg": "not authenticated", "code": 401}]
        ws.send_text(json.dumps({"action": "auth", "key": "any", "secret": "thing"}))
        assert received(ws) == [{"T": "success", "msg": "authenticated"}]
        ws.send_text(
            json.dumps({"action": "subscribe", "bars": ["AAPL", "MSFT"], "updatedBars": ["AAPL"]})
        )
        subscribed = received(ws)[0]
        assert subscribed["T"] == "subscription"
        assert (subscribed["bars"], subscribed["updatedBars"]) == (["AAPL", "MSFT"], ["AAPL"])
        assert subscribed["trades"] == subscribed["dailyBars"] == []
        # a 5-minute candle is no minute bar; another ticker is not subscribed
        insert(
            db_url,
            [Candle("AAPL", 5, MINUTE, 1.0, 2.0, 0.5, 1.5, 9.0, 0), minute_bar("IBM", MINUTE)],
        )
        insert(db_url, [minute_bar("AAPL", MINUTE, 187.5)])
        assert received(ws) == [
            {
                "T": "b",
                "S": "AAPL",
                "o": 187.5,
                "h": 188.5,
                "l": 186.5,
                "c": 188.0,
                "v": 100.0,
                "t": "2024-01-05T14:30:00Z",
                "n": None,
                "vw": None,
            }
        ]
        # written again with other values: an updated bar, to updatedBars subscribers
        rewrite(db_url, minute_bar("AAPL", MINUTE, 187.0))
        updated = received(ws)
        assert [(m["T"], m["S"], m["o"]) for m in updated] == [("u", "AAPL", 187.0)]
        # MSFT's bars, not its updates; dropped symbols get nothing
        ws.send_text(json.dumps({"action": "unsubscribe", "bars": ["AAPL"]}))
        assert received(ws)[0]["bars"] == ["MSFT"]
        insert(
            db_url, [minute_bar("AAPL", MINUTE + timedelta(minutes=1)), minute_bar("MSFT", MINUTE)]
        )
        assert [(m["T"], m["S"]) for m in received(ws)] == [("b", "MSFT")]


@pytest.mark.timeout(60)
def test_a_minute_written_and_corrected_in_one_transaction_is_one_bar(
    app_factory: AppFactory, db_url: str
) -> None:
    # Heard once, as it stands at the commit: a bar, then a later correction an update
    # (two transactions close together: tests/unit/test_vendor_alpaca_polygon.py).
    with app_factory() as client, client.websocket_connect("/alpaca/v2/iex") as ws:
        assert received(ws)[0]["msg"] == "connected"
        ws.send_text(json.dumps({"action": "auth", "key": "any", "secret": "thing"}))
        assert received(ws)[0]["msg"] == "authenticated"
        ws.send_text(json.dumps({"action": "subscribe", "bars": ["MSFT"], "updatedBars": ["MSFT"]}))
        assert received(ws)[0]["T"] == "subscription"
        with psycopg.connect(db_url) as conn:
            bar = minute_bar("MSFT", MINUTE)
            conn.execute(
                "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
                " VALUES (%s, 1, %s, %s, %s, %s, %s, %s)",
                (bar.ticker, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume),
            )
            conn.execute("UPDATE candles SET close = close - 1 WHERE ticker = 'MSFT'")
        assert [(m["T"], m["c"]) for m in received(ws)] == [("b", bar.close - 1)]
        rewrite(db_url, minute_bar("MSFT", MINUTE, 190.0))
        assert [(m["T"], m["o"]) for m in received(ws)] == [("u", 190.0)]


@pytest.mark.timeout(60)
def test_stream_in_msgpack_when_asked_with_timestamps(app_factory: AppFactory, db_url: str) -> None:
    headers = {"Content-Type": "application/msgpack"}
    with app_factory() as client, client.websocket_connect("/alpaca/v2/sip", headers=headers) as ws:
        assert received(ws, binary=True) == [{"T": "success", "msg": "connected"}]
        ws.send_bytes(msgpack.packb({"action": "auth", "key": "k", "secret": "s"}))
        assert received(ws, binary=True) == [{"T": "success", "msg": "authenticated"}]
        ws.send_bytes(msgpack.packb({"action": "subscribe", "bars": ["AAPL"]}))
        assert received(ws, binary=True)[0]["bars"] == ["AAPL"]
        insert(db_url, [minute_bar("AAPL", MINUTE)])
        (bar,) = received(ws, binary=True)
        assert bar["T"] == "b"
        assert isinstance(bar["t"], msgpack.Timestamp)
        assert bar["t"].to_datetime() == MINUTE
        ws.send_bytes(b"\xc1 not msgpack")
        assert received(ws, binary=True) == [{"T": "error", "msg": "invalid syntax", "code": 400}]


def test_stream_refuses_unknown_feeds_and_every_symbol(app_factory: AppFactory) -> None:
    with app_factory() as client:
        with client.websocket_connect("/alpaca/v2/nasdaq") as ws:
            (error,) = received(ws)
            assert (error["T"], error["code"]) == ("error", 404)
        with client.websocket_connect("/alpaca/v2/iex") as ws:
            received(ws)
            ws.send_text(json.dumps({"action": "auth", "key": "k", "secret": "s"}))
            received(ws)
            ws.send_text(json.dumps({"action": "auth", "key": "k", "secret": "s"}))
            assert received(ws)[0]["code"] == 403
            ws.send_text(json.dumps({"action": "subscribe", "bars": ["*"]}))
            assert received(ws)[0]["code"] == 410


def daily_file(ticker: str, *stamps: datetime) -> list[Candle]:
    """A daily series as a daily file gives it (Stooq's, a broker's export): one row a
    date, stamped at that date's UTC midnight."""
    return [
        Candle(ticker, 1440, at, 50.0 + i, 52.0 + i, 49.0 + i, 51.0 + i, 1000.0 + i, 0)
        for i, at in enumerate(stamps)
    ]


def test_stored_days_are_stamped_at_new_york_midnight_of_their_date(
    db_url: str, client: Client
) -> None:
    # Alpaca stamps a stock's day at New York's midnight, and its clients read `t` in New
    # York (alpaca-trade-api's entity.py): a date stored at 00:00 UTC is New York's evening
    # before. Each stored day is shown at its own date's midnight, summer time included.
    dates = [datetime(2024, 1, d, tzinfo=UTC) for d in (2, 3, 4, 5)]
    summer = [datetime(2024, 7, 1, tzinfo=UTC), datetime(2024, 7, 2, tzinfo=UTC)]
    insert(db_url, daily_file("KO", *dates, *summer))
    path = "/alpaca/v2/stocks/KO/bars"
    # New York's Jan 3 and 4, as a client in New York asks for them
    got = bars(
        client,
        path,
        timeframe="1Day",
        start="2024-01-03T00:00:00-05:00",
        end="2024-01-04T23:59:59-05:00",
    )["bars"]
    assert [(b["t"], b["o"]) for b in got] == [
        ("2024-01-03T05:00:00Z", 51.0),
        ("2024-01-04T05:00:00Z", 52.0),
    ]
    # dates as bounds (00:00 UTC: the day before's evening in New York), both orders, pages
    every = every_page(
        client, path, timeframe="1Day", start="2024-01-01", end="2024-12-31", limit=2
    )
    shown = [(b["t"], b["o"]) for p in every for b in p["bars"]]
    assert shown == [
        ("2024-01-02T05:00:00Z", 50.0),
        ("2024-01-03T05:00:00Z", 51.0),
        ("2024-01-04T05:00:00Z", 52.0),
        ("2024-01-05T05:00:00Z", 53.0),
        ("2024-07-01T04:00:00Z", 54.0),
        ("2024-07-02T04:00:00Z", 55.0),
    ]
    newest = every_page(
        client, path, timeframe="1Day", start="2024-01-01", end="2024-12-31", limit=4, sort="desc"
    )
    assert [(b["t"], b["o"]) for p in newest for b in p["bars"]] == shown[::-1]
    # a crypto pair's days are UTC's: as stored
    insert(db_url, daily_file("ETHUSD", *dates[:2]))
    crypto = bars(
        client,
        "/alpaca/v1beta3/crypto/us/bars",
        symbols="ETH/USD",
        timeframe="1Day",
        start="2024-01-01",
        end="2024-01-05",
    )["bars"]["ETH/USD"]
    assert [b["t"] for b in crypto] == ["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"]


def test_a_day_of_25_hours_opening_just_before_end_is_served(db_url: str, client: Client) -> None:
    # New York's 2024-11-03 lasts 25 hours (04:00Z to 05:00Z the next day): a window ending
    # half an hour after it opens holds its bar, made of all its candles
    start = datetime(2024, 11, 3, 4, tzinfo=UTC)
    insert(
        db_url,
        [
            Candle("LONGDAY", 5, start + timedelta(minutes=5 * i), 1.0, 2.0, 0.5, 1.5, 1.0, 0)
            for i in range(300)
        ],
    )
    got = bars(
        client,
        "/alpaca/v2/stocks/LONGDAY/bars",
        timeframe="1Day",
        start="2024-11-03T04:00:00Z",
        end="2024-11-03T04:30:00Z",
    )["bars"]
    assert [(b["t"], b["v"]) for b in got] == [("2024-11-03T04:00:00Z", 300.0)]


def dailies(ticker: str, first: datetime, count: int) -> list[Candle]:
    """A daily file's weekdays, each stamped at its UTC midnight (as Stooq's are), the
    day's number its volume."""
    days = [first + timedelta(days=i) for i in range(count)]
    return [
        Candle(ticker, 1440, d, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, float(i), 0)
        for i, d in enumerate(d for d in days if d.weekday() < 5)
    ]


def test_weeks_of_stored_days_are_their_dates_weeks(client: Client, db_url: str) -> None:
    # Stored days are dates: Monday's, stamped 00:00 UTC, is New York's Sunday evening, yet
    # it opens its week, as Alpaca's weekly bar of those days does (from Monday, shown at
    # New York's midnight)
    days = dailies("DLY", datetime(2026, 2, 23, tzinfo=UTC), 26)  # Monday 02-23 to 03-20
    insert(db_url, days)
    got = bars(client, symbols="DLY", timeframe="1Week", start="2026-02-23", end="2026-03-20")[
        "bars"
    ]["DLY"]
    weeks = [days[i : i + 5] for i in range(0, len(days), 5)]
    assert [(b["t"], b["o"], b["c"], b["v"]) for b in got] == [
        (
            datetime.combine(w[0].ts.date(), datetime.min.time(), ZoneInfo("America/New_York"))
            .astimezone(UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            w[0].open,
            w[-1].close,
            sum(c.volume for c in w),
        )
        for w in weeks
    ]
