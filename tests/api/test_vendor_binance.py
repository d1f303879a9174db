"""Binance's protocol under /binance through the app: the REST answers' shapes against our
own /candles, Binance's errors, the streams from our live feed, the present pluggable."""

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dishka import Provider, Scope, provide
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.ingest import IngestOptions, Row
from marketdata.entrypoints.app import create_app
from marketdata.entrypoints.vendors.common import Present, number_text
from tests.api.test_caching import AUTH, KEY, Counting, CountingProvider
from tests.api.test_hostile import JUNK
from tests.api.test_live_ws import Writer
from tests.factories import series
from tests.support import DATA, AppFactory, Client, ingest, insert, suite_settings, wire

DAY = datetime(2022, 8, 1, tzinfo=UTC)  # the day of tests/data/BTCUSDT-1m-2022-08.csv
MS = 1000


def ms(at: datetime) -> int:
    return int(at.timestamp() * MS)


@pytest.fixture(scope="module")
def url(database_factory: Any) -> str:
    """BTCUSDT's and ETHUSDT's minutes of a day, an equity's 5-minute candles, a ticker
    that is no Binance symbol, and one that names its assets only through VENDOR_ASSETS."""
    url: str = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    paths = [DATA / "BTCUSDT-1m-2022-08.csv", DATA / "ETHUSDT-1m-2022-08.csv"]
    assert ingest(url, paths, IngestOptions()) == 0
    insert(url, series("AMZN.US", 300) + series("lower.case", 3) + series("SBER", 3))
    return url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[Client]:
    settings = suite_settings(url, vendor_assets="SBER=SBER/RUB")
    with TestClient(create_app(settings)) as started:
        yield started


def klines(client: Client, **params: Any) -> list[list[Any]]:
    response = client.get("/binance/api/v3/klines", params=params)
    assert response.status_code == 200, response.text
    rows: list[list[Any]] = response.json()
    return rows


def candles(client: Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/candles", params={"limit": 5000, **params})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def as_kline(candle: dict[str, Any], tf_min: int) -> list[Any]:
    """A candle of /candles as Binance's row."""
    opens = ms(datetime.fromisoformat(candle["ts"]))
    prices = [number_text(float(candle[k])) for k in ("open", "high", "low", "close", "volume")]
    return [opens, *prices, opens + tf_min * 60 * MS - 1, "0", 0, "0", "0", "0"]


# -- REST ---------------------------------------------------------------------------------


def test_ping_and_time_answer_as_binance_does(client: Client) -> None:
    assert client.get("/binance/api/v3/ping").json() == {}
    before = ms(datetime.now(UTC))
    server = client.get("/binance/api/v3/time").json()["serverTime"]
    assert before <= server <= ms(datetime.now(UTC))  # the real wall clock


def test_exchange_info_lists_every_series_as_a_spot_symbol(client: Client) -> None:
    body = client.get("/binance/api/v3/exchangeInfo").json()
    assert body["timezone"] == "UTC"
    assert isinstance(body["serverTime"], int)
    listed = {s["symbol"]: s for s in body["symbols"]}
    # lower.case is not a Binance symbol: not listed
    assert sorted(listed) == ["AMZN.US", "BTCUSDT", "ETHUSDT", "SBER"]
    assets = {k: (s["baseAsset"], s["quoteAsset"]) for k, s in listed.items()}
    assert assets == {
        "BTCUSDT": ("BTC", "USDT"),
        "ETHUSDT": ("ETH", "USDT"),
        "AMZN.US": ("AMZN.US", "USD"),  # no quote suffix: the ticker, in USD
        "SBER": ("SBER", "RUB"),  # VENDOR_ASSETS
    }
    btc = listed["BTCUSDT"]
    assert btc["status"] == "TRADING"
    assert btc["isSpotTradingAllowed"] is True
    for absent in ("contractType", "underlying", "deliveryDate", "expiryDate", "tradability"):
        assert absent not in btc  # each would make it a contract, an option or a stock token
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.00000001"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00000001"
    assert (btc["baseAssetPrecision"], btc["quotePrecision"]) == (8, 8)


def test_exchange_info_narrows_to_symbols_asked_for(client: Client) -> None:
    one = client.get("/binance/api/v3/exchangeInfo", params={"symbol": "ETHUSDT"}).json()
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    two = client.get(
        "/binance/api/v3/exchangeInfo", params={"symbols": '["BTCUSDT","SBER"]'}
    ).json()
    assert [s["symbol"] for s in two["symbols"]] == ["BTCUSDT", "SBER"]
    unknown = client.get("/binance/api/v3/exchangeInfo", params={"symbol": "NOPEUSDT"})
    assert (unknown.status_code, unknown.json()) == (400, {"code": -1121, "msg": "Invalid symbol."})


@pytest.mark.parametrize(
    ("params", "listed"),
    [
        ({"permissions": "SPOT"}, True),
        ({"permissions": '["MARGIN","SPOT"]'}, True),
        ({"permissions": "MARGIN"}, False),
        ({"permissions": '["MARGIN","LEVERAGED"]'}, False),
        ({"symbolStatus": "TRADING"}, True),
        ({"symbolStatus": "BREAK"}, False),  # every symbol here trades
        ({"symbolStatus": "HALT", "permissions": "SPOT"}, False),
    ],
)
def test_exchange_info_filters_by_permission_and_status(
    client: Client, params: dict[str, str], listed: bool
) -> None:
    body = client.get("/binance/api/v3/exchangeInfo", params=params).json()
    assert bool(body["symbols"]) is listed


def test_exchange_info_permission_sets_shown_or_not(client: Client) -> None:
    asked = {"symbol": "BTCUSDT", "showPermissionSets": "false"}
    hidden = client.get("/binance/api/v3/exchangeInfo", params=asked).json()["symbols"][0]
    assert (hidden["permissions"], hidden["permissionSets"]) == (["SPOT"], [])
    shown = client.get("/binance/api/v3/exchangeInfo", params={"symbol": "BTCUSDT"}).json()
    assert shown["symbols"][0]["permissionSets"] == [["SPOT"]]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "BTCUSDT", "permissions": "SPOT"}, -1128),
        ({"symbols": '["BTCUSDT"]', "symbolStatus": "TRADING"}, -1128),
        ({"symbol": "BTCUSDT", "symbolStatus": "TRADING"}, -1128),
        ({"symbolStatus": "OPEN"}, -1122),
        ({"permissions": "[SPOT"}, -1100),
        ({"showPermissionSets": "maybe"}, -1130),
    ],
)
def test_exchange_info_refuses_what_binance_refuses(
    client: Client, params: dict[str, str], code: int
) -> None:
    refused = client.get("/binance/api/v3/exchangeInfo", params=params)
    assert refused.status_code == 400
    assert refused.json()["code"] == code


def test_klines_are_our_candles_as_binance_rows(client: Client) -> None:
    rows = klines(client, symbol="BTCUSDT", interval="1m", startTime=0, limit=1000)
    ours = candles(client, ticker="BTCUSDT", tf_min=1, limit=1000)
    assert rows == [as_kline(c, 1) for c in ours]
    first = rows[0]
    assert first[:7] == [
        ms(DAY),
        "23290.1",
        "23290.1",
        "23260.0",
        "23275.8",
        "893.652",
        ms(DAY) + 59_999,  # the close time: open + interval - 1 ms
    ]
    assert first[7:] == ["0", 0, "0", "0", "0"]  # not stored


def test_times_in_microseconds_when_asked(client: Client) -> None:
    # X-MBX-TIME-UNIT: MICROSECOND (binance-connector's and python-binance's time_unit): every
    # time of the answer in µs; times given may be in ms or µs, as Binance takes them
    micro = {"X-MBX-TIME-UNIT": "MICROSECOND"}
    start = ms(DAY + timedelta(minutes=10)) * 1000
    rows = client.get(
        "/binance/api/v3/klines",
        params={"symbol": "BTCUSDT", "interval": "5m", "startTime": start, "limit": 2},
        headers=micro,
    ).json()
    plain = klines(client, symbol="BTCUSDT", interval="5m", startTime=start // 1000, limit=2)
    assert [r[0] for r in rows] == [p[0] * 1000 for p in plain]
    assert [r[6] for r in rows] == [p[0] * 1000 + 5 * 60_000_000 - 1 for p in plain]
    assert [r[1:6] for r in rows] == [p[1:6] for p in plain]
    mixed = client.get(  # startTime in µs, endTime in ms: in order as instants
        "/binance/api/v3/klines",
        params={"symbol": "BTCUSDT", "interval": "5m", "startTime": start, "endTime": ms(DAY) * 2},
    )
    assert mixed.status_code == 200, mixed.text
    server = client.get("/binance/api/v3/time", headers={"X-MBX-TIME-UNIT": "microsecond"})
    assert server.json()["serverTime"] > 10**15
    info = client.get("/binance/api/v3/exchangeInfo", headers=micro).json()
    assert info["serverTime"] > 10**15
    refused = client.get("/binance/api/v3/time", headers={"X-MBX-TIME-UNIT": "NANOSECOND"})
    assert (refused.status_code, refused.json()["code"]) == (400, -1130)
    assert "X-MBX-TIME-UNIT" in refused.json()["msg"]


def test_start_time_zero_gives_the_earliest_and_limit_defaults_to_500(client: Client) -> None:
    rows = klines(client, symbol="BTCUSDT", interval="1m", startTime=0)
    assert len(rows) == 500
    assert rows[0][0] == ms(DAY)
    assert [r[0] for r in rows] == [ms(DAY) + i * 60 * MS for i in range(500)]


def test_without_start_time_the_latest_up_to_end_time(client: Client) -> None:
    latest = klines(client, symbol="BTCUSDT", interval="1m", limit=3)
    last = DAY + timedelta(days=1) - timedelta(minutes=1)
    assert [r[0] for r in latest] == [ms(last - timedelta(minutes=2 - i)) for i in range(3)]
    noon = DAY + timedelta(hours=12)
    before = klines(client, symbol="BTCUSDT", interval="1h", endTime=ms(noon), limit=2)
    assert [r[0] for r in before] == [ms(noon - timedelta(hours=1)), ms(noon)]  # whole bars


def test_an_unaligned_start_and_an_end_bound_the_opens(client: Client) -> None:
    start = ms(DAY + timedelta(minutes=5)) - 1  # as ccxt pages: one ms before a boundary
    rows = klines(
        client,
        symbol="BTCUSDT",
        interval="5m",
        startTime=start,
        endTime=ms(DAY + timedelta(minutes=20)),
    )
    assert [r[0] for r in rows] == [ms(DAY + timedelta(minutes=m)) for m in (5, 10, 15, 20)]


@pytest.mark.parametrize(
    ("interval", "tf_min"), [("3m", 3), ("15m", 15), ("1h", 60), ("4h", 240), ("1d", 1440)]
)
def test_resampled_intervals_are_the_bars_of_candles(
    client: Client, interval: str, tf_min: int
) -> None:
    rows = klines(client, symbol="ETHUSDT", interval=interval, startTime=0, limit=1000)
    assert rows == [as_kline(c, tf_min) for c in candles(client, ticker="ETHUSDT", tf_min=tf_min)]


@pytest.mark.parametrize(
    "path",
    [
        "/binance/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=0&limit=100",
        "/udf/history?symbol=BTCUSDT&resolution=1&from=1659312000&to=1659330000",
    ],
)
def test_vendor_answers_are_gzip_as_the_vendors_servers_send_them(
    client: Client, path: str
) -> None:
    # binance-sdk-spot asks for br and cannot read it (no brotli decoder of its own)
    asked = {"Accept-Encoding": "gzip, deflate, br"}
    assert client.get(path, headers=asked).headers["content-encoding"] == "gzip"
    only = client.get(path, headers={"Accept-Encoding": "br"})
    assert "content-encoding" not in only.headers  # never brotli
    ours = client.get("/candles?ticker=BTCUSDT&tf_min=1&limit=100", headers=asked)
    assert ours.headers["content-encoding"] == "br"  # our own API: the smaller one
    made = client.post("/sessions", json={"start": "2022-08-02T00:00:00Z", "speed": 1})
    assert made.status_code == 201, made.text
    under = client.get(f"/sessions/{made.json()['id']}{path}", headers=asked)
    assert under.headers["content-encoding"] == "gzip"  # a time-travel session's too


def test_ui_klines_are_klines(client: Client) -> None:
    params = {"symbol": "BTCUSDT", "interval": "15m", "startTime": 0, "limit": 50}
    ui = client.get("/binance/api/v3/uiKlines", params=params).json()
    assert ui == klines(client, **params)


def test_a_time_zone_cuts_days_in_that_offset(client: Client) -> None:
    rows = klines(client, symbol="BTCUSDT", interval="1d", timeZone="+08:00", startTime=0)
    ours = candles(client, ticker="BTCUSDT", tf_min=1440, tz="Etc/GMT-8")
    assert rows == [as_kline(c, 1440) for c in ours]
    assert rows[0][0] == ms(DAY - timedelta(hours=8))  # 00:00 at UTC+8
    same = klines(client, symbol="BTCUSDT", interval="1d", timeZone="0", startTime=0)
    assert same[0][0] == ms(DAY)


@pytest.mark.parametrize("interval", ["1h", "4h", "1d"])
def test_a_time_zone_of_minutes_cuts_bars_in_that_offset(client: Client, interval: str) -> None:
    # Kathmandu has kept +05:45 since 1986: its bars are the offset's
    tf_min = {"1h": 60, "4h": 240, "1d": 1440}[interval]
    rows = klines(client, symbol="BTCUSDT", interval=interval, timeZone="+05:45", startTime=0)
    ours = candles(client, ticker="BTCUSDT", tf_min=tf_min, tz="Asia/Kathmandu")
    assert rows
    assert rows == [as_kline(c, tf_min) for c in ours]
    assert {row[0] // 60_000 % 60 for row in rows} == {15}  # 00:00 at +05:45 is 18:15 UTC


ERRORS = [
    ({"interval": "1m"}, -1102, "Mandatory parameter 'symbol'"),
    ({"symbol": "BTCUSDT"}, -1102, "Mandatory parameter 'interval'"),
    ({"symbol": "", "interval": "1m"}, -1102, "Mandatory parameter 'symbol'"),
    ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121, "Invalid symbol."),
    ({"symbol": "btcusdt", "interval": "1m"}, -1100, "parameter 'symbol'"),
    ({"symbol": "lower.case", "interval": "1m"}, -1100, "parameter 'symbol'"),
    ({"symbol": "BTCUSDT", "interval": "7m"}, -1120, "Invalid interval."),
    ({"symbol": "BTCUSDT", "interval": "1M"}, -1120, "Invalid interval."),  # calendar months
    ({"symbol": "BTCUSDT", "interval": "1s"}, -1120, "Invalid interval."),
    ({"symbol": "AMZN.US", "interval": "1m"}, -1120, "Invalid interval."),  # 5-minute data
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": 1001}, -1130, "parameter 'limit'"),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": 0}, -1130, "parameter 'limit'"),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": "ten"}, -1100, "parameter 'limit'"),
    ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "yesterday"}, -1100, "'startTime'"),
    ({"symbol": "BTCUSDT", "interval": "1m", "endTime": "-5"}, -1100, "'endTime'"),
    ({"symbol": "BTCUSDT", "interval": "1m", "startTime": 10**30}, -1100, "'startTime'"),
    ({"symbol": "BTCUSDT", "interval": "1m", "startTime": 9, "endTime": 8}, -1023, "Start time"),
    ({"symbol": "BTCUSDT", "interval": "1d", "timeZone": "05:60"}, -1130, "'timeZone'"),
    ({"symbol": "BTCUSDT", "interval": "1d", "timeZone": "+14:30"}, -1130, "'timeZone'"),
    ({"symbol": "BTCUSDT", "interval": "1d", "timeZone": "Asia/Kathmandu"}, -1130, "'timeZone'"),
    ({"symbol": "BTCUSDT", "interval": "1d", "timeZone": "+15:00"}, -1130, "'timeZone'"),
]


@pytest.mark.parametrize(("params", "code", "words"), ERRORS)
def test_bad_requests_get_binances_errors(
    client: Client, params: dict[str, Any], code: int, words: str
) -> None:
    response = client.get("/binance/api/v3/klines", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert words in body["msg"]


def test_a_parameter_sent_twice_is_refused(client: Client) -> None:
    response = client.get("/binance/api/v3/klines?symbol=BTCUSDT&symbol=ETHUSDT&interval=1m")
    assert response.json() == {"code": -1101, "msg": "Duplicate values for parameter 'symbol'."}


def test_our_own_error_shapes_are_untouched(client: Client) -> None:
    ours = client.get("/candles", params={"ticker": "NOPE"})
    assert ours.status_code == 404
    assert "error" in ours.json()


def test_the_vendor_routes_are_documented(client: Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for name in ("ping", "time", "exchangeInfo", "klines", "uiKlines"):
        operation = paths[f"/binance/api/v3/{name}"]["get"]
        assert operation["tags"] == ["binance"]
        assert operation["description"]


def test_klines_answers_are_kept_as_those_of_candles_until_the_series_changes(
    app_factory: AppFactory, db_url: str
) -> None:
    insert(db_url, series("KEPTUSDT", 30))
    params = {"symbol": "KEPTUSDT", "interval": "5m", "startTime": 0, "limit": 10}
    with app_factory(CountingProvider(), api_keys=KEY, response_cache_mb=64) as client:
        first = klines(client, **params)
        reads = Counting.reads["candle_range"]
        assert klines(client, **params) == first
        assert Counting.reads["candle_range"] == reads  # answered from memory
        corrected = {**wire(series("KEPTUSDT", 1)[0]), "close": 100.75}
        assert client.post("/candles", json=[corrected], headers=AUTH).status_code == 200
        again = klines(client, **params)
    assert Counting.reads["candle_range"] == reads + 1
    assert again[0][4] == "100.75"
    assert again[1:] == first[1:]


# -- the present ---------------------------------------------------------------------------

NOON = DAY + timedelta(hours=12)


class NoonPresent(Provider):
    """A present other than the wall clock: noon of the test day."""

    @provide(scope=Scope.APP)
    def present(self) -> Present:
        return lambda: NOON


def test_answers_are_as_of_the_present_provided(url: str) -> None:
    with TestClient(create_app(suite_settings(url), NoonPresent())) as client:
        server = client.get("/binance/api/v3/time").json()["serverTime"]
        assert server > ms(NOON)  # the time answer is the wall clock, whatever the present
        info = client.get("/binance/api/v3/exchangeInfo").json()
        assert info["serverTime"] >= server  # and exchangeInfo's server time too
        latest = klines(client, symbol="BTCUSDT", interval="1m", limit=2)
        assert [r[0] for r in latest] == [ms(NOON) - 60 * MS, ms(NOON)]  # none after it
        later = klines(client, symbol="BTCUSDT", interval="1h", startTime=ms(NOON))
        assert [r[0] for r in later] == [ms(NOON)]


# -- streams -------------------------------------------------------------------------------

START = datetime(2024, 6, 3, 13, 30, tzinfo=UTC)


def minute(i: int, price: float = 100.0, ticker: str = "LIVEUSDT") -> Row:
    ts = START + timedelta(minutes=i)
    return (ticker, 1, ts, price, price + 1, price - 1, price + 0.5, 10.0 + i, 0)


def receive(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.receive_text(timeout=10))
    return message


def request(ws: Any, method: str, params: list[Any] | None = None, id: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"method": method, "id": id}
    if params is not None:
        body["params"] = params
    ws.send_text(json.dumps(body))
    return receive(ws)


@pytest.fixture
def live(app_factory: AppFactory, db_url: str) -> Iterator[Client]:
    Writer(db_url, [[minute(0)]]).run()  # the ticker exists: its streams can be asked for
    with app_factory() as started:
        yield started


def test_subscribe_list_and_unsubscribe_with_any_kind_of_id(live: Client) -> None:
    with live.websocket_connect("/binance/ws") as ws:
        assert request(ws, "SUBSCRIBE", ["liveusdt@kline_1m"], 1) == {"result": None, "id": 1}
        assert request(ws, "SUBSCRIBE", ["liveusdt@kline_5m"], "b") == {"result": None, "id": "b"}
        listed = request(ws, "LIST_SUBSCRIPTIONS", id=None)
        assert listed == {"result": ["liveusdt@kline_1m", "liveusdt@kline_5m"], "id": None}
        assert request(ws, "UNSUBSCRIBE", ["liveusdt@kline_1m"], 4) == {"result": None, "id": 4}
        assert request(ws, "LIST_SUBSCRIPTIONS", id=5)["result"] == ["liveusdt@kline_5m"]
        assert request(ws, "GET_PROPERTY", ["combined"], 6) == {"result": False, "id": 6}
        assert request(ws, "SET_PROPERTY", ["combined", True], 7) == {"result": None, "id": 7}
        assert request(ws, "GET_PROPERTY", ["combined"], 8) == {"result": True, "id": 8}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"method": "SUBSCRIBE", "params": ["nopeusdt@kline_1m"], "id": 1}, 2),  # unknown
        ({"method": "SUBSCRIBE", "params": ["liveusdt@kline_7m"], "id": 1}, 2),  # interval
        ({"method": "SUBSCRIBE", "params": ["liveusdt@kline_1M"], "id": 1}, 2),  # months
        ({"method": "SUBSCRIBE", "params": ["liveusdt@trade"], "id": 1}, 2),  # not klines
        ({"method": "SUBSCRIBE", "params": ["LIVEUSDT@kline_1m"], "id": 1}, 2),  # upper case
        ({"method": "SUBSCRIBE", "params": [5], "id": 1}, 2),
        ({"method": "PUBLISH", "params": [], "id": 1}, 2),
        ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 1}, 1),
        ({"method": "GET_PROPERTY", "params": ["colour"], "id": 1}, 0),
        ({"method": "SUBSCRIBE", "id": 1.5}, 2),
        ({"params": []}, 2),
    ],
)
def test_bad_requests_get_binances_stream_errors(
    live: Client, message: dict[str, Any], code: int
) -> None:
    with live.websocket_connect("/binance/ws") as ws:
        ws.send_text(json.dumps(message))
        answer = receive(ws)
        assert answer["error"]["code"] == code
        assert answer["error"]["msg"]
        assert request(ws, "LIST_SUBSCRIPTIONS", id=9) == {"result": [], "id": 9}  # still open
    with live.websocket_connect("/binance/ws") as ws:
        ws.send_text("{not json")
        assert receive(ws)["error"]["code"] == 3


def test_committed_candles_come_as_klines_final_and_forming(live: Client, db_url: str) -> None:
    with live.websocket_connect("/binance/ws") as ws:
        request(ws, "SUBSCRIBE", ["liveusdt@kline_1m", "liveusdt@kline_5m"])
        Writer(db_url, [[minute(i)] for i in range(1, 6)]).run()
        events = [receive(ws) for _ in range(10)]
    assert all(e["e"] == "kline" and e["s"] == "LIVEUSDT" for e in events)
    minutes = [e["k"] for e in events if e["k"]["i"] == "1m"]
    assert [(k["t"], k["x"]) for k in minutes] == [
        (ms(START + timedelta(minutes=i)), True)
        for i in range(1, 6)  # stored: final
    ]
    first = minutes[0]
    assert first == {
        "t": ms(START + timedelta(minutes=1)),
        "T": ms(START + timedelta(minutes=2)) - 1,
        "s": "LIVEUSDT",
        "i": "1m",
        "f": -1,
        "L": -1,
        "o": "100.0",
        "c": "100.5",
        "h": "101.0",
        "l": "99.0",
        "v": "11.0",
        "n": 0,
        "x": True,
        "q": "0",
        "V": "0",
        "Q": "0",
        "B": "0",
    }
    fives = [e["k"] for e in events if e["k"]["i"] == "5m"]
    # 13:31-13:34 form the 13:30 bar (with 13:30 itself), final with its last candle;
    # 13:35 opens the next one
    assert [(k["t"], k["x"], k["v"]) for k in fives] == [
        (ms(START), False, "21.0"),
        (ms(START), False, "33.0"),
        (ms(START), False, "46.0"),
        (ms(START), True, "60.0"),
        (ms(START + timedelta(minutes=5)), False, "15.0"),
    ]
    assert all(k["T"] == k["t"] + 300 * MS - 1 for k in fives)


def test_streams_in_the_url_raw_and_combined(live: Client, db_url: str) -> None:
    with (
        live.websocket_connect("/binance/ws/liveusdt@kline_1m") as raw,
        live.websocket_connect(
            "/binance/stream?streams=liveusdt@kline_1m/liveusdt@kline_3m"
        ) as both,
    ):
        assert request(raw, "LIST_SUBSCRIPTIONS")["result"] == ["liveusdt@kline_1m"]
        listed = request(both, "LIST_SUBSCRIPTIONS")["result"]
        assert listed == ["liveusdt@kline_1m", "liveusdt@kline_3m"]
        Writer(db_url, [[minute(1)]]).run()
        event = receive(raw)
        assert (event["e"], event["k"]["t"]) == ("kline", ms(START + timedelta(minutes=1)))
        combined = [receive(both), receive(both)]
    assert sorted(c["stream"] for c in combined) == ["liveusdt@kline_1m", "liveusdt@kline_3m"]
    assert all(c["data"]["e"] == "kline" for c in combined)


def test_a_stream_in_an_offset_of_minutes_cuts_its_bars_there(live: Client, db_url: str) -> None:
    with live.websocket_connect("/binance/ws/liveusdt@kline_1h@+05:45") as ws:
        Writer(db_url, [[minute(1)]]).run()
        event = receive(ws)
    # the hour from 19:00 at +05:45 is the one from 13:15 UTC
    assert event["k"]["t"] == ms(START - timedelta(minutes=15))
    assert event["k"]["T"] == ms(START + timedelta(minutes=45)) - 1


def test_a_sum_of_volumes_is_sent_to_eight_decimals_over_rest_and_streams(
    live: Client, db_url: str
) -> None:
    # 0.1 + 0.2 is 0.30000000000000004 as floats: the 3-minute bar of 13:33 and 13:34 has
    # the text Binance would send (its symbols' 8 decimals), the same over REST and the
    # stream
    rows = [
        ("LIVEUSDT", 1, START + timedelta(minutes=i), 1.0, 1.0, 1.0, 1.0, v, 0)
        for i, v in ((3, 0.1), (4, 0.2))
    ]
    with live.websocket_connect("/binance/ws/liveusdt@kline_3m") as ws:
        assert request(ws, "LIST_SUBSCRIPTIONS")["result"] == ["liveusdt@kline_3m"]
        Writer(db_url, [rows]).run()
        sent = [receive(ws)["k"] for _ in range(3)]  # 13:30's bar final, then 13:33's twice
    assert [(k["t"], k["v"]) for k in sent][1:] == [
        (ms(START) + 3 * 60 * MS, v) for v in ("0.1", "0.3")
    ]
    rest = live.get(
        "/binance/api/v3/klines", params={"symbol": "LIVEUSDT", "interval": "3m"}
    ).json()
    assert [row[5] for row in rest] == ["10.0", "0.3"]  # 13:30 (the fixture's), 13:33


def test_a_combined_stream_s_offset_keeps_its_plus(live: Client, db_url: str) -> None:
    # python-binance's multiplex socket puts the names in the query string as they are
    # (`?streams=a@kline_1h@+05:45`), as Binance's documentation writes them: the `+` is the
    # offset's, not a form's space
    with live.websocket_connect("/binance/stream?streams=liveusdt@kline_1h@+05:45") as ws:
        assert request(ws, "LIST_SUBSCRIPTIONS")["result"] == ["liveusdt@kline_1h@+05:45"]
        Writer(db_url, [[minute(1)]]).run()
        event = receive(ws)
        assert event["stream"] == "liveusdt@kline_1h@+05:45"
        assert event["data"]["k"]["t"] == ms(START - timedelta(minutes=15))
        request(ws, "UNSUBSCRIBE", ["liveusdt@kline_1h@+05:45"])
        assert request(ws, "LIST_SUBSCRIPTIONS")["result"] == []


def test_stream_times_in_microseconds_when_asked(live: Client, db_url: str) -> None:
    with live.websocket_connect("/binance/ws/liveusdt@kline_1m?timeUnit=MICROSECOND") as ws:
        assert request(ws, "LIST_SUBSCRIPTIONS")["result"] == ["liveusdt@kline_1m"]
        Writer(db_url, [[minute(1)]]).run()
        event = receive(ws)
    opens = ms(START + timedelta(minutes=1)) * 1000
    assert (event["k"]["t"], event["k"]["T"]) == (opens, opens + 60_000_000 - 1)
    assert event["E"] > 10**15
    with (
        live.websocket_connect("/binance/ws?timeUnit=SECOND") as ws,
        pytest.raises(WebSocketDisconnect) as refused,
    ):
        ws.receive_text()
    assert refused.value.code == 1008
    assert "timeUnit" in refused.value.detail


def test_url_streams_not_served_stop_no_other(live: Client) -> None:
    path = "/binance/ws/nopeusdt@kline_1m/liveusdt@kline_1m/liveusdt@kline_7m"
    with live.websocket_connect(path) as ws:
        assert request(ws, "LIST_SUBSCRIPTIONS")["result"] == ["liveusdt@kline_1m"]


def test_ccxt_stream_index_paths_are_no_streams(live: Client, db_url: str) -> None:
    with live.websocket_connect("/binance/ws/0") as ws:  # ccxt.pro's URL
        assert request(ws, "LIST_SUBSCRIPTIONS")["result"] == []
        request(ws, "SUBSCRIBE", ["liveusdt@kline_1m"], 2)
        Writer(db_url, [[minute(1, price=7.0)]]).run()
        assert receive(ws)["k"]["o"] == "7.0"


def test_an_unsubscribed_stream_sends_nothing_more(live: Client, db_url: str) -> None:
    with live.websocket_connect("/binance/ws") as ws:
        request(ws, "SUBSCRIBE", ["liveusdt@kline_1m", "liveusdt@kline_3m"])
        request(ws, "UNSUBSCRIBE", ["liveusdt@kline_3m"], 2)
        Writer(db_url, [[minute(1)], [minute(2)]]).run()
        got = [receive(ws), receive(ws)]
        assert request(ws, "LIST_SUBSCRIPTIONS", id=3) == {"result": ["liveusdt@kline_1m"], "id": 3}
    assert [e["k"]["i"] for e in got] == ["1m", "1m"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (
            "klines",
            {"symbol": "BTCUSDT", "interval": "1m", "startTime": 0, "endTime": 1, "limit": 5},
        ),
        ("klines", {"symbol": "BTCUSDT", "interval": "1d", "timeZone": "+08:00"}),
        ("exchangeInfo", {"symbol": "BTCUSDT"}),
        ("exchangeInfo", {"symbols": '["BTCUSDT"]'}),
    ],
)
def test_junk_in_every_parameter_is_a_binance_error(
    client: Client, path: str, params: dict[str, Any]
) -> None:
    for name in params:
        for junk in JUNK:
            response = client.get(f"/binance/api/v3/{path}", params={**params, name: junk})
            assert response.status_code < 500, (name, junk, response.text)
            if response.status_code >= 400:
                body = response.json()
                assert body["code"] < 0, (name, junk)
                assert body["msg"], (name, junk)
