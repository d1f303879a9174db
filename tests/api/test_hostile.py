"""Hostile input: every parameter gets junk, SQL, huge or absurd values; each answer is a
4xx with a message, the data survives, and no secret reaches a log line."""

import psycopg
import pytest
import structlog

from tests.factories import series
from tests.support import AppFactory, Client, insert

SQL = "'; DROP TABLE candles; --"
JUNK = [
    SQL,
    "1 OR 1=1",
    "%00",
    "%ff%fe",
    "x" * 5000,
    "-1",
    "0",
    "1e400",
    "99999999999999999999999",
    "NaN",
    "9999-99-99",
    "0000-00-00T00:00:00",
    "🙂" * 70,
    "",
]
ENDPOINTS = {
    "/candles": {
        "ticker": "H.US",
        "tf_min": "5",
        "limit": "10",
        "order": "asc",
        "tz": "UTC",
        "format": "json",
    },
    "/candles/range": {
        "ticker": "H.US",
        "tf_min": "5",
        "start": "2024-01-01",
        "end": "2024-12-31",
        "limit": "10",
        "tz": "UTC",
        "cursor": "",
        "format": "json",
    },
    "/symbols": {"prefix": "H", "limit": "10"},
    "/symbols/H.US/gaps": {"tf_min": "5", "min_gap": "5", "limit": "10"},
}


@pytest.fixture
def hostile(app_factory: AppFactory, db_url: str) -> Client:
    insert(db_url, series("H.US", 20))
    with app_factory(api_keys="s3cret-key") as client:
        yield client


@pytest.mark.parametrize("path", ENDPOINTS)
def test_junk_in_every_parameter_is_a_clear_4xx(hostile: Client, db_url: str, path: str) -> None:
    for name in ENDPOINTS[path]:
        for junk in JUNK:
            params = {**ENDPOINTS[path], name: junk}
            response = hostile.get(path, params=params)
            assert 200 <= response.status_code < 500, (name, junk, response.text)
            if response.status_code >= 400:
                assert response.json()["error"], (name, junk)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM candles").fetchone() == (20,)


def test_a_huge_query_string_is_refused(hostile: Client) -> None:
    response = hostile.get("/candles", params={"ticker": "H" * 60_000})
    assert response.status_code == 422
    assert "ticker" in response.json()["error"]


def test_absurd_ranges_and_limits(hostile: Client) -> None:
    far = hostile.get(
        "/candles/range",
        params={"ticker": "H.US", "start": "0001-01-01", "end": "9999-12-31T23:59:59"},
    )
    assert far.status_code == 200
    assert far.json()["count"] == 20
    for limit in ("0", "-5", "5001", str(2**64)):
        assert hostile.get("/candles", params={"ticker": "H.US", "limit": limit}).status_code == 422


def test_an_api_key_never_reaches_the_logs(hostile: Client) -> None:
    with structlog.testing.capture_logs() as logs:
        wrong = hostile.post(
            "/candles", json=[{"x": 1}], headers={"Authorization": "Bearer not-the-s3cret-key"}
        )
        right_but_bad = hostile.post(
            "/candles",
            content=b"[{",
            headers={"Authorization": "Bearer s3cret-key", "Content-Type": "application/json"},
        )
    assert wrong.status_code == 403
    assert right_but_bad.status_code == 422
    assert logs
    text = repr(logs)
    assert "s3cret-key" not in text
    assert "not-the-s3cret-key" not in text
    assert "s3cret-key" not in wrong.text + right_but_bad.text
