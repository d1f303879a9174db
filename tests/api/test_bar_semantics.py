"""Bar semantics that strategies can trust, checked against the plain-Python reference
(tests/reference.py) on excerpts of the real files: Binance's 24/7 minutes, an equity's
5-minute bars across a daylight-saving change (Stooq, Warsaw time), and SBER on Moscow time
with its intraday holes and the 26-day closure of 2022. REST, exports, pages and replay,
with and without rollups."""

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from litestar.testing import TestClient

from marketdata.adapters.postgres import rollups
from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.candles import Candle
from marketdata.domain.ingest import IngestOptions
from marketdata.domain.timeframes import Rollup
from marketdata.entrypoints.app import create_app
from tests.reference import Spec, bars, first_difference, forming, same
from tests.support import DATA, WARSAW, Client, ingest, suite_settings

MOSCOW = IngestOptions(tz=ZoneInfo("Europe/Moscow"), ticker="SBER", tf_min=5)
NY = "America/New_York"
KEPT = [Rollup(15), Rollup(60), Rollup(1440), Rollup(1440, NY)]


@pytest.fixture(scope="module")
def url(database_factory: Any) -> str:
    url: str = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    assert ingest(url, [DATA / "amzn.us.txt"], WARSAW) == 0
    assert ingest(url, [DATA / "BTCUSDT-1m-2022-08.csv"], IngestOptions()) == 0
    assert ingest(url, [DATA / "TQBR.SBER_M5.csv"], MOSCOW) == 0
    return url


def stored(url: str, ticker: str) -> list[Candle]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ticker, tf_min, ts, open, high, low, close, volume, openint FROM candles"
            " WHERE ticker = %s ORDER BY ts",
            (ticker,),
        ).fetchall()
    return [Candle(*row) for row in rows]


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[Client]:
    with TestClient(create_app(suite_settings(url))) as started:
        yield started


# (ticker, stored timeframe, spec, query)
CASES: list[tuple[str, int, Spec, dict[str, Any]]] = [
    # an equity's regular session as its day, across New York's change to summer time
    (
        "AMZN.US",
        5,
        Spec(1440, True, NY, session=(time(9, 30), time(16))),
        {"tf_min": 1440, "tz": NY, "session": "09:30-16:00"},
    ),
    # hours from the open, with the closing times asked for
    (
        "AMZN.US",
        5,
        Spec(60, True, NY, day_start=time(9, 30), session=(time(9, 30), time(16)), label="close"),
        {"tf_min": 60, "tz": NY, "day_start": "09:30", "session": "09:30-16:00", "label": "close"},
    ),
    # the stored 5-minute bars, the feed's holes filled within the session
    (
        "AMZN.US",
        5,
        Spec(5, False, NY, session=(time(9, 30), time(16)), fill="null"),
        {"tf_min": 5, "tz": NY, "session": "09:30-16:00", "fill": "null"},
    ),
    # quarter hours of the equity filled with the previous close (2026-03-23's hole)
    (
        "AMZN.US",
        5,
        Spec(15, True, NY, session=(time(9, 30), time(16)), fill="prev", label="open"),
        {"tf_min": 15, "tz": NY, "session": "09:30-16:00", "fill": "prev", "label": "open"},
    ),
    # the FX day of a 24/7 market: from 17:00 New York
    (
        "BTCUSDT",
        1,
        Spec(1440, True, NY, day_start=time(17)),
        {"tf_min": 1440, "tz": NY, "day_start": "17:00"},
    ),
    # Binance's hours, labelled by their close
    ("BTCUSDT", 1, Spec(60, True, label="close"), {"tf_min": 60, "label": "close"}),
    # SBER's hours on Moscow time, holes and the 26-day closure filled in session hours
    (
        "SBER",
        5,
        Spec(60, True, "Europe/Moscow", session=(time(10), time(18, 45)), fill="prev"),
        {"tf_min": 60, "tz": "Europe/Moscow", "session": "10:00-18:45", "fill": "prev"},
    ),
    # SBER's days (the closure is not filled: fill none)
    (
        "SBER",
        5,
        Spec(1440, True, "Europe/Moscow"),
        {"tf_min": 1440, "tz": "Europe/Moscow"},
    ),
]


def _expected(url: str, ticker: str, spec: Spec) -> list[dict[str, Any]]:
    return bars(spec, stored(url, ticker), ticker)


@pytest.mark.parametrize(("ticker", "tf", "spec", "query"), CASES)
def test_bars_equal_the_reference(
    client: Client, url: str, ticker: str, tf: int, spec: Spec, query: dict[str, Any]
) -> None:
    expected = _expected(url, ticker, spec)
    assert expected, "the case has bars"
    got = client.get("/candles", params={"ticker": ticker, "limit": 5000, **query})
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    assert same(data, expected), first_difference(data, expected)
    # newest first: the same bars reversed (fill counts toward limit)
    newest = client.get(
        "/candles", params={"ticker": ticker, "limit": 7, "order": "desc", **query}
    ).json()["data"]
    assert same(newest, expected[::-1][:7]), first_difference(newest, expected[::-1][:7])
    # an export streams the same bars
    lines = client.get(
        "/candles", params={"ticker": ticker, "format": "ndjson", **query}
    ).text.splitlines()
    exported = [json.loads(line) for line in lines]
    assert same(exported, expected), first_difference(exported, expected)


@pytest.mark.parametrize(("ticker", "tf", "spec", "query"), CASES)
def test_pages_of_a_range_join_into_the_whole(
    client: Client, url: str, ticker: str, tf: int, spec: Spec, query: dict[str, Any]
) -> None:
    expected = _expected(url, ticker, spec)
    start, end = "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
    params = {"ticker": ticker, "start": start, "end": end, "limit": 13, **query}
    got: list[dict[str, Any]] = []
    response = client.get("/candles/range", params=params)
    for _ in range(1000):
        assert response.status_code == 200, response.text
        body = response.json()
        got += body["data"]
        if "next" not in body:
            break
        response = client.get("/candles/range", params={**params, "cursor": body["next"]})
    # a filled gap across a page's edge is filled on the next page, from before it
    assert same(got, expected), first_difference(got, expected)


def test_rollups_give_the_same_bars(url: str) -> None:
    asyncio.run(rollups.sync(DatabaseConfig(url=url), KEPT))
    try:
        with TestClient(create_app(suite_settings(url))) as client:
            for ticker, _, spec, query in CASES:
                expected = _expected(url, ticker, spec)
                got = client.get("/candles", params={"ticker": ticker, "limit": 5000, **query})
                data = got.json()["data"]
                assert same(data, expected), (query, first_difference(data, expected))
    finally:
        asyncio.run(rollups.sync(DatabaseConfig(url=url), []))


def test_csv_shows_filled_bars_with_empty_prices_and_their_close(client: Client) -> None:
    query = {"ticker": "AMZN.US", "tz": NY, "session": "09:30-16:00", "fill": "null"}
    text = client.get("/candles", params={**query, "tf_min": 5, "format": "csv", "limit": 400})
    rows = text.text.splitlines()
    assert rows[0] == "ticker,tf_min,ts,open,high,low,close,volume,openint,filled"
    saturday = next(r for r in rows if ",2026-01-31T14:30:00Z," in r)
    assert saturday == "AMZN.US,5,2026-01-31T14:30:00Z,,,,,,0,true"
    labelled = client.get(
        "/candles", params={**query, "tf_min": 5, "format": "csv", "label": "close", "limit": 1}
    ).text.splitlines()
    assert labelled[0].endswith("openint,ts_close,filled")
    assert labelled[1].endswith(",0,2026-01-26T14:35:00Z,false")
    plain = client.get("/candles", params={"ticker": "AMZN.US", "format": "csv", "limit": 1})
    assert plain.text.splitlines()[0] == "ticker,tf_min,ts,open,high,low,close,volume,openint"


def test_bad_options_are_named(client: Client) -> None:
    for query, name in (
        ({"day_start": "25:00"}, "day_start"),
        ({"session": "09:30-09:30"}, "session"),
        ({"fill": "zero"}, "fill"),
        ({"label": "middle"}, "label"),
    ):
        response = client.get("/candles", params={"ticker": "AMZN.US", "tf_min": 60, **query})
        assert response.status_code == 422, (query, response.text)
        assert name in response.json()["error"]


# -- replay ---------------------------------------------------------------------------


def replay(client: Client, query: str) -> list[dict[str, Any]]:
    with client.websocket_connect(f"/ws/replay?step_seconds=0&{query}") as ws:
        messages = []
        while True:
            message = json.loads(ws.receive_text())
            messages.append(message)
            if message.get("message") in ("replay_complete", "error"):
                break
    assert messages[-1]["message"] == "replay_complete", messages[-1]
    return messages


def test_forming_bars_replay_at_the_pace_of_their_source(client: Client, url: str) -> None:
    spec = Spec(15, True)
    candles = [c for c in stored(url, "BTCUSDT") if c.ts.hour < 3]
    end = "2022-08-01T02:59:00Z"
    expected = forming(spec, candles, "BTCUSDT", 1)
    messages = replay(client, f"ticker=BTCUSDT&tf_min=15&forming=true&end={end}")
    sent = [m for m in messages if m["type"] == "CANDLE"]
    assert messages[0]["total_candles"] == len(expected) == 180
    assert [m["seq"] for m in sent] == list(range(len(expected)))
    got = [{"candle": m["candle"], "final": m["final"]} for m in sent]
    assert got == expected or same([g["candle"] for g in got], [e["candle"] for e in expected])
    assert [g["final"] for g in got] == [e["final"] for e in expected]
    # resumed in the middle of a bar: the bar so far is whole, nothing lost or repeated
    tail = replay(client, f"ticker=BTCUSDT&tf_min=15&forming=true&end={end}&from_seq=37")
    resumed = [m for m in tail if m["type"] == "CANDLE"]
    assert [m["seq"] for m in resumed] == list(range(37, 180))
    assert [m["candle"] for m in resumed] == [m["candle"] for m in sent[37:]]


def test_several_timeframes_arrive_in_close_time_order(client: Client, url: str) -> None:
    query = "ticker=AMZN.US&tf_min=5,60&start=2026-03-02T14:00:00Z&end=2026-03-03T21:00:00Z"
    messages = replay(client, query)
    sent = [m for m in messages if m["type"] == "CANDLE"]
    assert messages[0]["tf_mins"] == [5, 60]
    assert [m["seq"] for m in sent] == list(range(len(sent)))
    closes = []
    for m in sent:
        candle = m["candle"]
        opens = datetime.fromisoformat(candle["ts"].replace("Z", "+00:00"))
        closes.append((opens + timedelta(minutes=candle["tf_min"]), candle["tf_min"]))
    assert closes == sorted(closes)  # never a bar before one that closed earlier
    hourly = [m["candle"] for m in sent if m["candle"]["tf_min"] == 60]
    rest = client.get(
        "/candles/range",
        params={
            "ticker": "AMZN.US",
            "tf_min": 60,
            "start": "2026-03-02T14:00:00Z",
            "end": "2026-03-03T21:00:00Z",
        },
    ).json()["data"]
    assert hourly == rest
    # the hour 14:00-15:00 comes right after the 5-minute bar of 14:55
    i = next(i for i, m in enumerate(sent) if m["candle"]["tf_min"] == 60)
    assert sent[i - 1]["candle"]["tf_min"] == 5
    assert sent[i - 1]["candle"]["ts"][11:16] == "14:55"
    assert sent[i]["candle"]["ts"][11:16] == "14:00"
    # from_seq resumes the merged stream exactly
    tail = replay(client, f"{query}&from_seq={i}")
    assert [m["candle"] for m in tail if m["type"] == "CANDLE"] == [m["candle"] for m in sent[i:]]


def test_replay_labels_sessions_and_fill_as_rest_does(client: Client, url: str) -> None:
    for _, _, _, query in CASES[1:4] + CASES[6:7]:
        ticker = {"America/New_York": "AMZN.US", "Europe/Moscow": "SBER"}[query["tz"]]
        rest = client.get("/candles", params={"ticker": ticker, "limit": 5000, **query})
        words = "&".join(f"{k}={v}" for k, v in query.items())
        messages = replay(client, f"ticker={ticker}&{words}")
        sent = [m["candle"] for m in messages if m["type"] == "CANDLE"]
        expected = rest.json()["data"]
        assert messages[0]["total_candles"] == len(expected), query
        assert same(sent, expected), (query, first_difference(sent, expected))
        # seek into the middle and resume there with from_seq: the same bars
        middle = len(expected) // 2
        tail = replay(client, f"ticker={ticker}&{words}&from_seq={middle}")
        resumed = [m["candle"] for m in tail if m["type"] == "CANDLE"]
        assert same(resumed, expected[middle:]), (
            query,
            first_difference(resumed, expected[middle:]),
        )
