"""POST /candles: API keys, body formats, all-or-nothing, size limit."""

import json
from collections.abc import Iterator

import psycopg
import pytest

from tests.support import CANDLE, AppFactory, Client

KEY = "k-0123456789abcdef"


def candle(minute: int, **changes: object) -> dict[str, object]:
    return {**CANDLE, "ts": f"2024-01-02T14:{minute:02d}:00Z", **changes}


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM candles").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def writer(app_factory: AppFactory, db_url: str) -> Iterator[Client]:
    with app_factory(api_keys=f"other-key,{KEY}", max_body_bytes=20_000) as client:
        yield client


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_no_key_is_401_with_a_challenge(writer: Client, db_url: str) -> None:
    response = writer.post("/candles", json=[CANDLE])
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["error"]
    assert count(db_url) == 0


@pytest.mark.parametrize("header", ["Bearer wrong", "Basic " + KEY, "Bearer " + KEY + "x"])
def test_a_wrong_key_is_403(writer: Client, db_url: str, header: str) -> None:
    response = writer.post("/candles", json=[CANDLE], headers={"Authorization": header})
    assert response.status_code in (401, 403)
    assert response.status_code == (401 if header.startswith("Basic") else 403)
    assert count(db_url) == 0


def test_writes_are_refused_when_no_keys_are_configured(
    app_factory: AppFactory, db_url: str
) -> None:
    with app_factory() as client:
        response = client.post("/candles", json=[CANDLE], headers=AUTH)
    assert response.status_code == 403
    assert "API_KEYS" in response.json()["error"]
    assert count(db_url) == 0


def test_reads_need_no_key(writer: Client) -> None:
    assert writer.get("/symbols").status_code == 200


def test_json_body_is_upserted(writer: Client, db_url: str) -> None:
    response = writer.post("/candles", json=[candle(30), candle(35)], headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"rows": 2, "inserted": 2, "updated": 0, "unchanged": 0}
    again = writer.post("/candles", json=[candle(30), candle(35, close=10.75)], headers=AUTH)
    assert again.json() == {"rows": 2, "inserted": 0, "updated": 1, "unchanged": 1}
    assert writer.get("/candles?ticker=W.US").json()["data"][1]["close"] == 10.75


def test_ndjson_body(writer: Client, db_url: str) -> None:
    body = "\n".join(json.dumps(candle(m)) for m in (30, 35, 40))
    response = writer.post(
        "/candles", content=body, headers={**AUTH, "Content-Type": "application/x-ndjson"}
    )
    assert response.json()["inserted"] == 3
    assert count(db_url) == 3


def test_csv_body(writer: Client, db_url: str) -> None:
    body = (
        "ticker,tf_min,ts,open,high,low,close,volume\n"
        "W.US,5,2024-01-02 14:30:00,10,11,9.5,10.5,100\n"
        "W.US,5,2024-01-02 14:35:00,10,11,9.5,10.5,100\n"
    )
    response = writer.post("/candles", content=body, headers={**AUTH, "Content-Type": "text/csv"})
    assert response.status_code == 200
    assert response.json()["inserted"] == 2
    assert writer.get("/candles?ticker=W.US").json()["data"][0]["ts"] == "2024-01-02T14:30:00Z"


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", json.dumps([candle(30), candle(35, close="x")]), "body:2: close"),
        ("application/json", json.dumps([candle(30), candle(35, close=50)]), "body:2: close"),
        ("application/json", json.dumps([candle(30), candle(30)]), "more than once"),
        ("application/x-ndjson", json.dumps(candle(30)) + "\n{oops", "body:2"),
        ("text/csv", "ticker,tf_min,ts,open,high,low,close\nW.US,5,2024-01-02,1,2,3,1\n", "body:2"),
        ("text/csv", "nothing,useful\n1,2\n", "no ts, open, high, low, close column"),
        (
            "application/json",
            json.dumps([candle(30, ts="0001-01-01T00:00:00+05:00")]),
            "body:1: ts",
        ),
        ("application/json", json.dumps([candle(30, openint=2**70)]), "body:1: openint"),
        ("application/json", "[" * 10_000, "body:1"),
        ("application/json", b"\xff\xfe".decode("latin-1"), "body:1"),
        ("text/csv", 'ticker,tf_min,ts,open,high,low,close\n"unterminated', "body:2"),
    ],
)
def test_a_rejected_batch_writes_nothing(
    writer: Client, db_url: str, content_type: str, body: str, message: str
) -> None:
    writer.post("/candles", json=[candle(50)], headers=AUTH)
    response = writer.post("/candles", content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 422
    assert message in response.json()["error"]
    assert response.json()["detail"]
    assert count(db_url) == 1


def test_an_unknown_content_type_is_415(writer: Client) -> None:
    response = writer.post(
        "/candles", content=b"<xml/>", headers={**AUTH, "Content-Type": "application/xml"}
    )
    assert response.status_code == 415
    assert "text/csv" in response.json()["error"]


def test_a_body_over_the_limit_is_413(writer: Client, db_url: str) -> None:
    body = json.dumps([candle(m % 60, ticker=f"T{m}") for m in range(400)])
    assert len(body) > 20_000
    response = writer.post(
        "/candles", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "error" in response.json()
    assert count(db_url) == 0
