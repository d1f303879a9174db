"""Resampling, cursor pagination, streaming exports and coverage, against real PostgreSQL
and excerpts of the real files (tests/data)."""

import asyncio
import csv
import io
import json
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.reads import PostgresCandleRepository
from marketdata.domain.candles import Candle
from marketdata.domain.timeframes import Resample
from marketdata.entrypoints.app import create_app
from tests.factories import series
from tests.fakes import resample_reference
from tests.support import (
    DATA,
    WARSAW,
    AppFactory,
    Client,
    ingest,
    insert,
    read_plan,
    suite_settings,
    wire,
)


@pytest.fixture(scope="module")
def loaded_url(database_factory: Any) -> str:
    """A database with AMZN (5-minute Stooq bars) and SBER (MOEX) loaded once."""
    url: str = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    assert ingest(url, [DATA / "amzn.us.txt"], WARSAW) == 0
    return url


@pytest.fixture(scope="module")
def amzn(loaded_url: str) -> list[Candle]:
    with psycopg.connect(loaded_url) as conn:
        rows = conn.execute(
            "SELECT ticker, tf_min, ts, open, high, low, close, volume, openint FROM candles"
            " WHERE ticker = 'AMZN.US' AND tf_min = 5 ORDER BY ts"
        ).fetchall()
    return [Candle(*row) for row in rows]


@pytest.fixture(scope="module")
def loaded(loaded_url: str) -> Iterator[Client]:
    with TestClient(create_app(suite_settings(loaded_url))) as client:
        yield client


@pytest.mark.parametrize(
    ("tf_min", "tz"),
    [
        (15, "UTC"),
        (30, "UTC"),
        (60, "UTC"),
        (1440, "UTC"),
        (1440, "America/New_York"),
        (10080, "America/New_York"),
    ],
)
def test_resampling_equals_a_plain_python_reference(
    loaded: Client, amzn: list[Candle], tf_min: int, tz: str
) -> None:
    reference = resample_reference(amzn, tf_min, tz)
    first, last = amzn[0].ts, amzn[-1].ts
    start = first.isoformat()
    end = (last + timedelta(minutes=5) - timedelta(seconds=1)).isoformat()
    body = loaded.get(
        "/candles/range",
        params={"ticker": "AMZN.US", "tf_min": tf_min, "tz": tz, "start": start, "end": end},
    ).json()
    # buckets entirely inside the range: those starting at or after the first candle and
    # whose last 5-minute slot is not after the range's end
    inside = [
        c
        for c in reference
        if c.ts >= first and c.ts + timedelta(minutes=tf_min - 5) <= datetime.fromisoformat(end)
    ]
    assert body["data"] == [wire(c) for c in inside]
    assert body["count"] == len(inside)
    # /candles, both ends
    oldest = loaded.get(
        "/candles", params={"ticker": "AMZN.US", "tf_min": tf_min, "tz": tz, "limit": 5}
    ).json()
    newest = loaded.get(
        "/candles",
        params={"ticker": "AMZN.US", "tf_min": tf_min, "tz": tz, "limit": 5, "order": "desc"},
    ).json()
    assert oldest["data"] == [wire(c) for c in reference[:5]]
    assert newest["data"] == [wire(c) for c in reference[::-1][:5]]


def test_new_york_days_keep_a_us_session_whole(loaded: Client, amzn: list[Candle]) -> None:
    utc = loaded.get("/candles", params={"ticker": "AMZN.US", "tf_min": 1440, "limit": 3}).json()
    local = loaded.get(
        "/candles",
        params={"ticker": "AMZN.US", "tf_min": 1440, "limit": 3, "tz": "America/New_York"},
    ).json()
    # 2026-01-26: 14:30-20:55 UTC is one UTC day and one New York day (05:00 UTC)
    assert utc["data"][0]["ts"] == "2026-01-26T00:00:00Z"
    assert local["data"][0]["ts"] == "2026-01-26T05:00:00Z"
    assert local["data"][0]["volume"] == utc["data"][0]["volume"]


def test_an_undivided_timeframe_is_404_and_a_bad_zone_422(loaded: Client) -> None:
    for path, extra in (
        ("/candles", {}),
        ("/candles/range", {"start": "2026-01-01", "end": "2027-01-01"}),
    ):
        response = loaded.get(path, params={"ticker": "AMZN.US", "tf_min": 7, **extra})
        assert response.status_code == 404
        # says why, naming what is stored, not just "no candles"
        assert "cannot be built from the stored timeframes (5)" in response.json()["error"]
    response = loaded.get("/candles", params={"ticker": "AMZN.US", "tf_min": 60, "tz": "Nowhere"})
    assert response.status_code == 422
    assert "tz" in response.json()["error"]


def follow(client: Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of /candles/range, through the body's `next` and the Link header."""
    pages: list[dict[str, Any]] = []
    response = client.get("/candles/range", params=params)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body)
        if "next" not in body:
            assert "link" not in response.headers
            return pages
        link = response.headers["link"]
        assert link.endswith('>; rel="next"')
        response = client.get(link[1 : link.index(">")])


def test_pages_of_a_resampled_range(loaded: Client) -> None:
    params = {"ticker": "AMZN.US", "tf_min": 60, "start": "2026-01-01", "end": "2026-07-01"}
    whole = loaded.get("/candles/range", params=params).json()
    pages = follow(loaded, {**params, "limit": 77})
    assert [c for p in pages for c in p["data"]] == whole["data"]
    assert all(p["count"] == 77 for p in pages[:-1])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    present=st.lists(st.booleans(), min_size=1, max_size=120),
    limit=st.integers(min_value=1, max_value=40),
)
def test_following_the_cursors_returns_every_row_once(
    client: Client, db_url: str, present: list[bool], limit: int
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE candles")
    candles = [c for c, keep in zip(series("P", len(present)), present, strict=True) if keep]
    if not candles:
        return
    insert(db_url, candles)
    params = {"ticker": "P", "start": "2024-01-01", "end": "2024-12-31"}
    whole = client.get("/candles/range", params={**params, "limit": 5000}).json()["data"]
    pages = follow(client, {**params, "limit": limit})
    assert [c for p in pages for c in p["data"]] == whole == [wire(c) for c in candles]


def test_rows_inserted_while_paging_neither_repeat_nor_hide_others(
    client: Client, db_url: str
) -> None:
    candles = series("Q", 50)
    insert(db_url, candles[::2])  # every other slot
    params = {"ticker": "Q", "start": "2024-01-01", "end": "2024-12-31", "limit": 10}
    first = client.get("/candles/range", params=params)
    seen = first.json()["data"]
    insert(db_url, candles[1::2])  # the holes fill up meanwhile, before and after the cursor
    link = first.headers["link"]
    rest = follow(client, {**params, "cursor": first.json()["next"]})
    seen += [c for p in rest for c in p["data"]]
    timestamps = [c["ts"] for c in seen]
    assert len(timestamps) == len(set(timestamps))  # nothing twice
    assert {wire(c)["ts"] for c in candles[::2]} <= set(timestamps)  # nothing lost
    assert timestamps == sorted(timestamps)
    assert "cursor=" in link


def test_a_forged_cursor_is_400(client: Client) -> None:
    response = client.get(
        "/candles/range",
        params={"ticker": "Q", "start": "2024-01-01", "end": "2024-12-31", "cursor": "bogus"},
    )
    assert response.status_code == 400
    assert "cursor" in response.json()["error"]


def test_the_last_page_is_the_seeds_body(client: Client, db_url: str) -> None:
    insert(db_url, series("S", 3))
    response = client.get(
        "/candles/range", params={"ticker": "S", "start": "2024-01-01", "end": "2024-12-31"}
    )
    assert set(response.json()) == {"data", "count"}
    assert "link" not in response.headers


@pytest.mark.parametrize("how", ["format", "accept"])
def test_csv_and_ndjson_equal_the_json_result(client: Client, db_url: str, how: str) -> None:
    insert(db_url, series("E", 300) + series("F", 5))
    params = {"ticker": "E", "start": "2024-01-01", "end": "2024-12-31"}
    expected = client.get("/candles/range", params=params).json()["data"]
    for output, media in (("csv", "text/csv"), ("ndjson", "application/x-ndjson")):
        if how == "format":
            response = client.get("/candles/range", params={**params, "format": output})
        else:
            response = client.get("/candles/range", params=params, headers={"Accept": media})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)
        assert response.headers["content-type"].count("charset") <= 1
        if output == "ndjson":
            rows = [json.loads(line) for line in response.text.splitlines()]
        else:
            rows = [
                {
                    **r,
                    "tf_min": int(r["tf_min"]),
                    "openint": int(r["openint"]),
                    **{k: float(r[k]) for k in ("open", "high", "low", "close", "volume")},
                }
                for r in csv.DictReader(io.StringIO(response.text))
            ]
        assert rows == expected


def test_exports_are_not_capped_by_max_limit(db_url: str, app_factory: AppFactory) -> None:
    insert(db_url, series("BIG", 120))
    with app_factory(max_limit=50) as client:
        capped = client.get("/candles", params={"ticker": "BIG", "limit": 120})
        exported = client.get("/candles", params={"ticker": "BIG", "format": "ndjson"})
        newest = client.get(
            "/candles", params={"ticker": "BIG", "format": "csv", "order": "desc", "limit": 2}
        )
        missing = client.get("/candles", params={"ticker": "NONE", "format": "csv"})
    assert capped.status_code == 422
    assert len(exported.text.splitlines()) == 120
    assert [line.split(",")[2] for line in newest.text.splitlines()[1:]] == [
        c.ts.isoformat().replace("+00:00", "Z") for c in series("BIG", 120)[::-1][:2]
    ]
    assert missing.status_code == 404
    assert missing.json()["error"]


@pytest.mark.slow
async def test_a_large_export_streams_in_bounded_memory(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT 'X', 1, timestamptz '2020-01-01 00:00+00' + i * interval '1 minute',"
            " 1, 2, 0.5, 1.5, i FROM generate_series(0, 499999) i"
        )
    pool = Database(DatabaseConfig(url=db_url, pool_min_size=1))
    await pool.open()
    repo = PostgresCandleRepository(pool)
    tracemalloc.start()
    try:
        count = 0
        async for _ in repo.export(read_plan("X", 1)):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await pool.close()
    assert count == 500_000
    print(f"peak traced memory while streaming 500,000 candles: {peak / 1e6:.2f} MB")
    assert peak < 10_000_000  # 500,000 Candles at once would be well over 100 MB


async def test_a_resampled_export_streams_whole_buckets(db_url: str) -> None:
    candles = series("R", 100)
    insert(db_url, candles)
    pool = Database(DatabaseConfig(url=db_url, pool_min_size=1))
    await pool.open()
    try:
        repo = PostgresCandleRepository(pool)
        exported = [c async for c in repo.export(read_plan("R", 60, resample=Resample(5)))]
    finally:
        await pool.close()
    assert exported == resample_reference(candles, 60)


def test_coverage_equals_count_min_max(client: Client, db_url: str) -> None:
    insert(db_url, series("C", 40) + series("C", 7, tf_min=60) + series("D", 3))
    body = client.get("/symbols/C").json()
    body.pop("served")  # below; the seed's fields are as they were
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT tf_min, min(ts), max(ts), count(*) FROM candles WHERE ticker = 'C'"
            " GROUP BY tf_min ORDER BY tf_min"
        ).fetchall()
    assert body == {
        "ticker": "C",
        "timeframes": [
            {
                "tf_min": tf,
                "first": a.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "last": b.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "count": n,
            }
            for tf, a, b, n in rows
        ],
    }
    assert client.get("/symbols/NOPE").status_code == 404


def test_coverage_lists_the_timeframes_that_can_be_served_and_each_is(
    client: Client, db_url: str
) -> None:
    insert(db_url, series("C", 40) + series("C", 7, tf_min=60))
    served = client.get("/symbols/C").json()["served"]
    assert [s["tf_min"] for s in served] == [5, 10, 15, 30, 60, 120, 240, 360, 720, 1440, 10080]
    sources = {s["tf_min"]: (s["source"], s["from_tf_min"]) for s in served}
    assert sources[5] == ("stored", 5)
    assert sources[60] == ("stored", 60)
    assert sources[10] == ("resampled", 5)  # no rollup divides it
    assert {sources[tf][0] for tf in (15, 1440)} <= {"rollup", "resampled"}
    assert {sources[tf][1] for tf in sources if tf not in (5, 60)} == {5}
    for s in served:
        answer = client.get("/candles", params={"ticker": "C", "tf_min": s["tf_min"]})
        assert answer.status_code == 200, s
        assert answer.json()["count"] > 0
    assert client.get("/candles", params={"ticker": "C", "tf_min": 3}).status_code == 404


def test_gaps_show_the_feed_holes_of_a_real_file(loaded: Client) -> None:
    body = loaded.get("/symbols/AMZN.US/gaps", params={"tf_min": 5, "min_gap": 5}).json()
    day_holes = [g for g in body["gaps"] if g["minutes"] < 60]
    # SOURCES.md: 2026-02-26 misses 19:50, 19:55 and 20:00 (Warsaw); 2026-03-23 misses
    # 15:45 to 16:15 (Warsaw, UTC+1)
    assert {
        "after": "2026-02-26T18:45:00Z",
        "before": "2026-02-26T19:05:00Z",
        "minutes": 20.0,
    } in day_holes
    assert {
        "after": "2026-03-23T14:40:00Z",
        "before": "2026-03-23T15:20:00Z",
        "minutes": 40.0,
    } in day_holes
    assert body["count"] == len(body["gaps"])
    none = loaded.get("/symbols/AMZN.US/gaps", params={"tf_min": 5, "min_gap": 100000}).json()
    assert none["gaps"] == []
    assert none["min_gap"] == 100000
