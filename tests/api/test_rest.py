"""Every row of the REST contract, through the HTTP app, against real PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from marketdata.domain.candles import Candle
from tests.factories import series
from tests.support import Client, insert, wire

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


@pytest.fixture
def stored(db_url: str) -> list[Candle]:
    candles = series("AMZN.US", 300)
    insert(db_url, candles + series("AMZN.US", 4, tf_min=60) + series("MSFT.US", 2))
    return candles


def test_health_ok(client: Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "connected"}


def test_symbols(client: Client, stored: list[Candle]) -> None:
    assert client.get("/symbols").json() == {"symbols": ["AMZN.US", "MSFT.US"], "count": 2}
    assert client.get("/symbols?prefix=ms").json() == {"symbols": ["MSFT.US"], "count": 1}
    assert client.get("/symbols?limit=1").json() == {"symbols": ["AMZN.US"], "count": 1}
    assert client.get("/symbols?prefix=%25").json() == {"symbols": [], "count": 0}


@pytest.mark.parametrize("query", ["limit=0", "limit=5001", "limit=abc", "prefix=" + "x" * 65])
def test_symbols_bad_parameters_are_422(client: Client, query: str) -> None:
    response = client.get(f"/symbols?{query}")
    assert response.status_code == 422
    body = response.json()
    assert body["error"]
    assert body["detail"][0]["loc"][0] == "query"


def test_candles_default_is_200_oldest_ascending(client: Client, stored: list[Candle]) -> None:
    response = client.get("/candles?ticker=AMZN.US")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 200
    assert body["data"] == [wire(c) for c in stored[:200]]


def test_candles_desc_is_newest_first(client: Client, stored: list[Candle]) -> None:
    body = client.get("/candles?ticker=AMZN.US&order=desc&limit=5").json()
    assert body == {"data": [wire(c) for c in stored[::-1][:5]], "count": 5}


def test_candles_of_another_timeframe(client: Client, stored: list[Candle]) -> None:
    body = client.get("/candles?ticker=AMZN.US&tf_min=60").json()
    assert body["count"] == 4
    assert {c["tf_min"] for c in body["data"]} == {60}


def test_candles_unknown_ticker_is_404(client: Client, stored: list[Candle]) -> None:
    response = client.get("/candles?ticker=NOPE")
    assert response.status_code == 404
    assert response.json() == {"error": "No candles found for ticker 'NOPE' with tf_min=5"}


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("", "ticker"),
        ("ticker=", "ticker"),
        ("ticker=AMZN.US&limit=0", "limit"),
        ("ticker=AMZN.US&limit=5001", "limit"),
        ("ticker=AMZN.US&limit=ten", "limit"),
        ("ticker=AMZN.US&tf_min=0", "tf_min"),
        ("ticker=AMZN.US&tf_min=-5", "tf_min"),
        ("ticker=AMZN.US&tf_min=99999999999", "tf_min"),
        ("ticker=AMZN.US&order=sideways", "order"),
    ],
)
def test_candles_bad_parameters_are_422_naming_the_parameter(
    client: Client, query: str, name: str
) -> None:
    response = client.get(f"/candles?{query}")
    assert response.status_code == 422
    body = response.json()
    assert name in body["error"]
    assert body["detail"][0]["loc"] == ["query", name]


def test_range_is_inclusive_and_ascending(client: Client, stored: list[Candle]) -> None:
    start, end = stored[10].ts.isoformat(), stored[20].ts.isoformat()
    response = client.get(
        "/candles/range", params={"ticker": "AMZN.US", "start": start, "end": end}
    )
    assert response.status_code == 200
    assert response.json() == {"data": [wire(c) for c in stored[10:21]], "count": 11}


def test_range_limit_defaults_to_max_limit_and_is_bounded(
    client: Client, stored: list[Candle]
) -> None:
    params = {"ticker": "AMZN.US", "start": "2024-01-01", "end": "2024-02-01"}
    assert client.get("/candles/range", params=params).json()["count"] == 300
    assert client.get("/candles/range", params={**params, "limit": 7}).json()["count"] == 7
    assert client.get("/candles/range", params={**params, "limit": 5001}).status_code == 422


@pytest.mark.parametrize(
    "start",
    [
        "2024-01-02T14:40:00Z",
        "2024-01-02T14:40:00+00:00",
        "2024-01-02T17:40:00+03:00",
        "2024-01-02T09:40:00-05:00",
        "2024-01-02T14:40:00",  # naive means UTC
        "2024-01-02 14:40:00",
    ],
)
def test_range_accepts_naive_and_offset_datetimes(
    client: Client, stored: list[Candle], start: str
) -> None:
    params = {"ticker": "AMZN.US", "start": start, "end": start}
    body = client.get("/candles/range", params=params).json()
    assert body["data"] == [wire(stored[2])]


def test_an_unencoded_plus_in_the_offset_is_understood(
    client: Client, stored: list[Candle]
) -> None:
    # "+03:00" sent raw in a query string decodes to " 03:00"
    moment = "2024-01-02T17:40:00+03:00"
    url = f"/candles/range?ticker=AMZN.US&start={moment}&end={moment}"
    assert client.get(url).json()["data"] == [wire(stored[2])]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("not-a-date", "2024-01-03", "start: 'not-a-date' is not an ISO 8601 datetime"),
        ("2024-01-02", "2024-02-30", "end: '2024-02-30' is not an ISO 8601 datetime"),
        ("2024-01-03", "2024-01-02", "must not be after end"),
    ],
)
def test_range_bad_datetimes_and_start_after_end_are_400(
    client: Client, stored: list[Candle], start: str, end: str, message: str
) -> None:
    response = client.get(
        "/candles/range", params={"ticker": "AMZN.US", "start": start, "end": end}
    )
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert set(response.json()) == {"error"}


def test_range_missing_end_is_422(client: Client) -> None:
    response = client.get("/candles/range", params={"ticker": "AMZN.US", "start": "2024-01-01"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "end"]


def test_empty_range_is_404(client: Client, stored: list[Candle]) -> None:
    params = {"ticker": "AMZN.US", "start": "2023-01-01", "end": "2023-12-31"}
    response = client.get("/candles/range", params=params)
    assert response.status_code == 404
    assert "between" in response.json()["error"]


def test_unknown_route_and_method_are_json(client: Client) -> None:
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    response = client.put("/candles")  # DELETE /candles exists (deletes a range)
    assert response.status_code == 405
    assert "error" in response.json()


def test_every_response_carries_a_request_id(client: Client) -> None:
    assert len(client.get("/health").headers["x-request-id"]) == 32
    echoed = client.get("/health", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"


def test_floats_and_timestamps_survive_the_round_trip(client: Client, db_url: str) -> None:
    odd = Candle(
        ticker="ODD",
        tf_min=1,
        ts=START + timedelta(microseconds=1),
        open=0.1 + 0.2,
        high=1e308,
        low=5e-324,
        close=123456789.123456,
        volume=0.0,
        openint=2**62,
    )
    insert(db_url, [odd])
    assert client.get("/candles?ticker=ODD&tf_min=1").json()["data"] == [wire(odd)]
