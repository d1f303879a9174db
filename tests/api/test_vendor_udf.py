"""TradingView's UDF protocol under /udf through the app: each endpoint's shape as the
datafeed reads it, its bars against our own /candles, and its errors (JSON, never a 500)."""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.ingest import IngestOptions
from marketdata.entrypoints.app import create_app
from tests.api.test_hostile import JUNK
from tests.api.test_vendor_binance import NOON, NoonPresent
from tests.factories import series
from tests.support import DATA, Client, ingest, insert, suite_settings

DAY = datetime(2022, 8, 1, tzinfo=UTC)  # BTCUSDT's minutes of tests/data
END = DAY + timedelta(days=1)  # after its last
EQUITY = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)  # AMZN.US: 5-minute candles from here


def seconds(at: datetime) -> int:
    return int(at.timestamp())


@pytest.fixture(scope="module")
def url(database_factory: Any) -> str:
    url: str = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    assert ingest(url, [DATA / "BTCUSDT-1m-2022-08.csv"], IngestOptions()) == 0
    insert(url, series("AMZN.US", 300, start=EQUITY))
    return url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[Client]:
    with TestClient(create_app(suite_settings(url))) as started:
        yield started


def history(client: Client, **params: Any) -> dict[str, Any]:
    response = client.get("/udf/history", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_config_is_what_the_datafeed_needs(client: Client) -> None:
    config = client.get("/udf/config").json()
    assert config["supports_search"] != config["supports_group_request"]  # exactly one
    assert config["supports_time"] is True
    assert config["supported_resolutions"] == [
        *("1", "2", "3", "5", "10", "15", "30", "60", "120", "240", "360", "720", "1D", "1W")
    ]
    assert "1M" not in config["supported_resolutions"]


def test_a_symbol_resolves_with_the_resolutions_it_can_serve(client: Client) -> None:
    btc = client.get("/udf/symbols", params={"symbol": "BTCUSDT"}).json()
    assert "s" not in btc  # the datafeed takes any `s` for an error
    assert (btc["name"], btc["ticker"], btc["type"]) == ("BTCUSDT", "BTCUSDT", "crypto")
    assert btc["supported_resolutions"][:4] == ["1", "2", "3", "5"]
    assert btc["has_intraday"]
    assert btc["has_daily"]
    assert btc["pricescale"] == 10  # its latest prices have one decimal
    assert btc["volume_precision"] == 3
    assert (btc["session"], btc["timezone"]) == ("24x7", "Etc/UTC")
    amzn = client.get("/udf/symbols", params={"symbol": "MARKETDATA:AMZN.US"}).json()
    assert amzn["ticker"] == "AMZN.US"
    assert amzn["type"] == "stock"
    assert amzn["supported_resolutions"][:3] == ["5", "10", "15"]  # made of 5-minute candles
    assert "1" not in amzn["intraday_multipliers"]
    assert amzn["pricescale"] == 100  # 99.25, 100.5, ...


def test_an_unknown_symbol_is_the_datafeeds_unknown_symbol(client: Client) -> None:
    for name in ("NOPE", "MARKETDATA:NOPE", "x" * 80):
        response = client.get("/udf/symbols", params={"symbol": name})
        assert response.status_code == 404
        assert response.json() == {"s": "error", "errmsg": "unknown_symbol"}


def test_search_as_the_datafeed_sends_it(client: Client) -> None:
    found = client.get(
        "/udf/search", params={"limit": 30, "query": "BT", "type": "", "exchange": ""}
    ).json()
    assert found == [
        {
            "symbol": "BTCUSDT",
            "full_name": "MARKETDATA:BTCUSDT",
            "description": "BTCUSDT",
            "exchange": "MARKETDATA",
            "ticker": "BTCUSDT",
            "type": "crypto",
        }
    ]
    assert client.get("/udf/search", params={"query": "", "type": "stock"}).json()[0]["ticker"] == (
        "AMZN.US"
    )
    assert client.get("/udf/search", params={"query": "BT", "exchange": "NYSE"}).json() == []


def test_time_is_a_bare_number_of_seconds(client: Client) -> None:
    response = client.get("/udf/time")
    assert response.headers["content-type"].startswith("text/plain")
    assert abs(int(response.text) - datetime.now(UTC).timestamp()) < 5


def test_answers_are_as_of_the_present_provided(url: str) -> None:
    with TestClient(create_app(suite_settings(url), NoonPresent())) as noon:
        assert int(noon.get("/udf/time").text) > seconds(NOON)  # the wall clock, always
        latest = history(
            noon, symbol="BTCUSDT", resolution="1", **{"from": 0}, to=10**10, countback=2
        )
        assert latest["t"] == [seconds(NOON) - 60, seconds(NOON)]  # none after it


def test_history_is_the_bars_of_candles_from_inclusive_to_exclusive(client: Client) -> None:
    start, to = DAY + timedelta(hours=1), DAY + timedelta(hours=5)
    body = history(
        client, symbol="BTCUSDT", resolution="60", **{"from": seconds(start)}, to=seconds(to)
    )
    assert body["s"] == "ok"
    assert body["t"] == [seconds(start + timedelta(hours=h)) for h in range(4)]  # not 05:00
    ours = client.get(
        "/candles/range",
        params={
            "ticker": "BTCUSDT",
            "tf_min": 60,
            "start": start.isoformat(),
            "end": to.isoformat(),
        },
    ).json()["data"][:4]
    for key, field in (("o", "open"), ("h", "high"), ("l", "low"), ("c", "close")):
        assert body[key] == [c[field] for c in ours]
    assert body["v"] == pytest.approx([c["volume"] for c in ours])


def test_countback_counts_back_from_to_whatever_from_says(client: Client) -> None:
    to = DAY + timedelta(hours=10)
    body = history(
        client,
        symbol="BTCUSDT",
        resolution="1",
        **{"from": seconds(to) - 60},
        to=seconds(to),
        countback=300,
    )
    assert len(body["t"]) == 300
    assert body["t"][-1] == seconds(to) - 60  # t < to
    assert body["t"] == sorted(body["t"])


def test_the_pulse_gets_the_last_two_bars_the_forming_one_included(client: Client) -> None:
    now = seconds(datetime.now(UTC))
    day = history(
        client, symbol="BTCUSDT", resolution="1D", **{"from": now - 864000}, to=now, countback=2
    )
    assert day["t"] == [seconds(DAY)]  # one day of data: the one bar there is
    five = history(
        client, symbol="BTCUSDT", resolution="5", **{"from": now - 3000}, to=now, countback=2
    )
    assert five["t"] == [seconds(END) - 600, seconds(END) - 300]


def test_no_data_says_where_the_last_bar_before_is(client: Client) -> None:
    later = END + timedelta(days=30)
    body = history(
        client,
        symbol="BTCUSDT",
        resolution="60",
        **{"from": seconds(later)},
        to=seconds(later) + 86400,
    )
    assert body == {"s": "no_data", "nextTime": seconds(END - timedelta(hours=1))}
    before = history(client, symbol="BTCUSDT", resolution="60", **{"from": 0}, to=seconds(DAY))
    assert before == {"s": "no_data"}  # nothing older: no nextTime
    counted = history(
        client, symbol="BTCUSDT", resolution="60", **{"from": 0}, to=seconds(DAY), countback=5
    )
    assert counted == {"s": "no_data"}


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"symbol": "NOPE", "resolution": "5", "from": 0, "to": 1}, 404, "unknown_symbol"),
        ({"symbol": "BTCUSDT", "resolution": "1M", "from": 0, "to": 1}, 400, "resolution"),
        ({"symbol": "BTCUSDT", "resolution": "1S", "from": 0, "to": 1}, 400, "resolution"),
        ({"symbol": "BTCUSDT", "resolution": "7x", "from": 0, "to": 1}, 400, "resolution"),
        ({"symbol": "AMZN.US", "resolution": "1", "from": 0, "to": 1}, 400, "not served"),
        ({"symbol": "BTCUSDT", "resolution": "5", "from": "yesterday", "to": 1}, 400, "from"),
        ({"symbol": "BTCUSDT", "resolution": "5", "from": 9, "to": 1}, 400, "from"),
        (
            {"symbol": "BTCUSDT", "resolution": "5", "from": 0, "to": 1, "countback": 0},
            400,
            "count",
        ),
        ({"symbol": "BTCUSDT", "resolution": "5", "from": 0}, 400, "to"),
        ({"resolution": "5", "from": 0, "to": 1}, 400, "symbol"),
    ],
)
def test_bad_history_requests_are_udf_errors(
    client: Client, params: dict[str, Any], status: int, words: str
) -> None:
    response = client.get("/udf/history", params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["s"] == "error"
    assert words in body["errmsg"]


def test_absurd_times_are_answered(client: Client) -> None:
    for start, to in ((-(10**12), 10**30), (0, 2**63 - 1), (10**20, 10**21)):
        response = client.get(
            "/udf/history", params={"symbol": "BTCUSDT", "resolution": "D", "from": start, "to": to}
        )
        assert response.status_code in (200, 400), response.text
        assert response.json()["s"] in ("ok", "no_data", "error")


def test_the_udf_routes_are_documented(client: Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for name in ("config", "symbols", "search", "time", "history"):
        assert paths[f"/udf/{name}"]["get"]["tags"] == ["udf"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("history", {"symbol": "BTCUSDT", "resolution": "60", "from": 0, "to": 1, "countback": 2}),
        ("symbols", {"symbol": "BTCUSDT"}),
        ("search", {"query": "BT", "type": "", "exchange": "", "limit": 30}),
    ],
)
def test_junk_in_every_parameter_is_a_udf_answer(
    client: Client, path: str, params: dict[str, Any]
) -> None:
    for name in params:
        for junk in JUNK:
            response = client.get(f"/udf/{path}", params={**params, name: junk})
            assert response.status_code < 500, (name, junk, response.text)
            body = response.json()  # JSON on every status
            if response.status_code >= 400:
                assert body["s"] == "error", (name, junk)
                assert body["errmsg"], (name, junk)
