"""Whoever writes: another program's INSERT, UPDATE (values and keys), DELETE, COPY and
TRUNCATE, through a plain psycopg connection and through `psql`, while the service runs with
its answers kept and the catalog known in the process. Once the notification has arrived,
every read answers as a service started after the write does (which knows nothing yet), and
live subscribers hear the candles."""

import asyncio
import json
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from marketdata.adapters.postgres import rollups
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.timeframes import Rollup
from tests.factories import series
from tests.support import AppFactory, Client, insert, psql_path, run_sql

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
WEEK = (START.isoformat(), (START + timedelta(days=7)).isoformat())
RANGE = f"/candles/range?ticker=ACME&start={WEEK[0]}&end={WEEK[1]}".replace("+", "%2B")
URLS = [
    "/symbols",
    "/symbols?prefix=ne",
    "/symbols/ACME",
    "/symbols/ACME/gaps",
    "/symbols/NEWCO",
    "/candles?ticker=ACME",
    "/candles?ticker=ACME&order=desc&limit=20",
    "/candles?ticker=ACME&tf_min=60&order=desc",  # from the hourly rollup
    "/candles?ticker=ACME&tf_min=10&order=desc",  # resampled from the candles
    "/candles?ticker=ACME&tf_min=1440",  # from the daily rollup
    "/candles?ticker=NEWCO",
    RANGE,
    RANGE + "&tf_min=15",
    RANGE + "&format=csv",
    RANGE + "&format=ndjson",
    RANGE + "&format=parquet",
    RANGE + "&format=arrow",
    RANGE + "&tf_min=60&format=parquet",
]


def answer(client: Client, url: str) -> tuple[int, bytes, str | None]:
    response = client.get(url)
    return response.status_code, response.content, response.headers.get("etag")


def replayed(client: Client, ticker: str) -> tuple[Any, list[Any]]:
    """A whole replay at full speed: its STATUS (total_candles) and its candles."""
    with client.websocket_connect(f"/ws/replay?ticker={ticker}&step_seconds=0") as ws:
        first = json.loads(ws.receive_text(timeout=10))
        if first["message"] != "replay_starting":
            return first.get("error"), []
        candles = []
        while (message := json.loads(ws.receive_text(timeout=10)))["type"] == "CANDLE":
            candles.append(message["candle"])
    return first["total_candles"], candles


Sql = Callable[[str], None]


def through_psycopg(url: str) -> Sql:
    def run(statement: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            if statement.startswith("COPY"):
                lines = statement.split("\n")
                with conn.cursor().copy(lines[0]) as copy:
                    copy.write("\n".join(lines[1:]) + "\n")
            else:
                conn.execute(statement)

    return run


def through_psql(url: str) -> Sql:
    def run(statement: str) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".tsv") as data:
            if statement.startswith("COPY"):  # psql's \copy of a file, as a cron job does
                head, *rows = statement.split("\n")
                data.write("\n".join(rows) + "\n")
                data.flush()
                statement = f"\\copy {head.removeprefix('COPY ').removesuffix(' FROM STDIN')}"
                statement += f" FROM '{data.name}'"
            done = subprocess.run(
                [psql_path(), url, "-v", "ON_ERROR_STOP=1", "-c", statement],
                capture_output=True,
                text=True,
                check=False,
            )
        assert done.returncode == 0, done.stderr

    return run


@pytest.fixture(params=["psycopg", "psql"])
def sql(request: pytest.FixtureRequest, db_url: str) -> Sql:
    return through_psycopg(db_url) if request.param == "psycopg" else through_psql(db_url)


@pytest.fixture
def warm(app_factory: AppFactory, db_url: str) -> Iterator[Client]:
    asyncio.run(rollups.sync(DatabaseConfig(url=db_url), [Rollup(15), Rollup(60), Rollup(1440)]))
    insert(db_url, series("ACME", 400))
    with app_factory(response_cache_mb=16) as client:
        for url in URLS:  # everything asked once: answers kept, the catalog known
            answer(client, url)
        yield client


def converged(warm: Client, app_factory: AppFactory, urls: list[str]) -> None:
    """Each URL answers on the running service as on one started now, within 5 s."""
    with app_factory(response_cache_mb=0) as cold:
        for url in urls:
            truth = answer(cold, url)
            deadline = time.monotonic() + 5
            while (seen := answer(warm, url)) != truth and time.monotonic() < deadline:
                time.sleep(0.02)
            assert seen == truth, url
        assert replayed(warm, "ACME") == replayed(cold, "ACME")
        assert replayed(warm, "NEWCO") == replayed(cold, "NEWCO")


def test_every_read_follows_another_program_s_writes(
    warm: Client, app_factory: AppFactory, sql: Sql
) -> None:
    tags = {url: answer(warm, url)[2] for url in URLS}
    last = series("ACME", 400)[-1].ts
    with warm.websocket_connect("/ws/live?tickers=ACME,NEWCO&tf_min=5") as live:
        assert json.loads(live.receive_text(timeout=10))["message"] == "live"
        sql(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume) VALUES"
            " ('NEWCO', 5, '2024-01-02 14:30+00', 5, 6, 4, 5.5, 10),"
            " ('NEWCO', 5, '2024-01-02 14:35+00', 5.5, 7, 5, 6, 20)"
        )
        newer = last + timedelta(minutes=5)
        sql(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            f" VALUES ('ACME', 5, '{newer.isoformat()}', 1, 900, 0.5, 800, 1)"
        )
        heard = [json.loads(live.receive_text(timeout=10)) for _ in range(3)]
        assert [(m["candle"]["ticker"], m["candle"]["close"]) for m in heard] == [
            ("NEWCO", 5.5),
            ("NEWCO", 6.0),
            ("ACME", 800.0),
        ]
        converged(warm, app_factory, URLS)
        # the answers of ACME and of the catalog changed their ETags; a 304 no more
        moved = {url for url in URLS if answer(warm, url)[2] != tags[url]}
        assert "/candles?ticker=ACME&order=desc&limit=20" in moved
        assert "/candles?ticker=ACME&tf_min=60&order=desc" in moved
        assert "/symbols" in moved
        stale = warm.get(
            "/candles?ticker=ACME&order=desc&limit=20",
            headers={"If-None-Match": tags["/candles?ticker=ACME&order=desc&limit=20"] or ""},
        )
        assert stale.status_code == 200
        assert stale.json()["data"][0]["close"] == 800.0

        # values and keys of several rows at once: revisions counted, keys moved
        sql(
            "UPDATE candles SET close = close + 1000 WHERE ticker = 'ACME'"
            f" AND ts >= '{(last - timedelta(minutes=5)).isoformat()}'"
        )
        corrected = [json.loads(live.receive_text(timeout=10)) for _ in range(3)]
        assert {m.get("revision") for m in corrected} == {1}
        sql("UPDATE candles SET ts = ts + interval '1 day' WHERE ticker = 'NEWCO'")
        gone, *moved_keys = [json.loads(live.receive_text(timeout=10)) for _ in range(3)]
        assert (gone["type"], gone["ticker"], gone["start"], gone["end"]) == (
            "REMOVED",
            "NEWCO",
            "2024-01-02T14:30:00Z",
            "2024-01-02T14:35:00Z",
        )
        assert [m["candle"]["ts"] for m in moved_keys] == [
            "2024-01-03T14:30:00Z",
            "2024-01-03T14:35:00Z",
        ]
        converged(warm, app_factory, URLS)

        sql(f"DELETE FROM candles WHERE ticker = 'ACME' AND ts > '{WEEK[0]}' AND ts < '{WEEK[1]}'")
        deleted = json.loads(live.receive_text(timeout=10))
        assert (deleted["type"], deleted["start"]) == ("REMOVED", "2024-01-02T14:35:00Z")
        rows = "\n".join(
            f"ACME\t5\t{(newer + timedelta(minutes=5 * i)).isoformat()}\t1\t2\t0.5\t1.5\t7"
            for i in range(1, 40)
        )
        sql(f"COPY candles (ticker, tf_min, ts, open, high, low, close, volume) FROM STDIN\n{rows}")
        copied = [json.loads(live.receive_text(timeout=10)) for _ in range(39)]
        assert [m["candle"]["volume"] for m in copied] == [7.0] * 39
        converged(warm, app_factory, URLS)

    sql("TRUNCATE candles")
    converged(warm, app_factory, URLS)
    assert warm.get("/symbols").json() == {"symbols": [], "count": 0}
    assert warm.get("/candles?ticker=ACME").status_code == 404


def test_replay_into_live_hears_another_program_s_rows(
    warm: Client, sql: Sql, app_factory: AppFactory
) -> None:
    last = series("ACME", 400)[-1].ts
    with warm.websocket_connect("/ws/replay?ticker=ACME&step_seconds=0&live=true") as ws:
        assert json.loads(ws.receive_text(timeout=10))["total_candles"] == 400
        while (message := json.loads(ws.receive_text(timeout=10)))["type"] == "CANDLE":
            seq = message["seq"]
        assert (message["message"], seq) == ("live", 399)
        sql(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume) VALUES"
            f" ('ACME', 5, '{(last + timedelta(minutes=5)).isoformat()}', 1, 2, 0.5, 1.5, 3)"
        )
        after = json.loads(ws.receive_text(timeout=10))
        assert (after["seq"], after["candle"]["volume"]) == (400, 3.0)


def test_a_timeframe_deleted_whole_moves_every_answer_of_its_ticker(
    warm: Client, app_factory: AppFactory, sql: Sql
) -> None:
    # Two timeframes written by one statement have one version. Once the finer one is gone,
    # hours are made of the other: their answer, its ETag and the ticker's coverage change,
    # though nothing was written to the timeframe that now serves them.
    five = ", ".join(
        f"('TWO', 5, '{(START + timedelta(minutes=5 * i)).isoformat()}', {100 + i}, {101 + i},"
        f" {99 + i}, {100 + i}, 1)"
        for i in range(48)
    )
    fifteen = ", ".join(
        f"('TWO', 15, '{(START + timedelta(minutes=15 * i)).isoformat()}', 500, 510, 490, 505, 9)"
        for i in range(16)
    )
    sql(
        "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
        f" VALUES {five}, {fifteen}"
    )
    urls = ["/candles?ticker=TWO&tf_min=60&order=desc", "/symbols/TWO", "/candles?ticker=TWO"]
    converged(warm, app_factory, urls)
    tags = {url: answer(warm, url)[2] for url in urls}
    sql("DELETE FROM candles WHERE ticker = 'TWO' AND tf_min = 5")
    converged(warm, app_factory, urls)
    hours = warm.get(urls[0], headers={"If-None-Match": tags[urls[0]] or ""})
    assert hours.status_code == 200
    assert {bar["open"] for bar in hours.json()["data"]} == {500.0}
    assert answer(warm, urls[1])[2] != tags[urls[1]]


def script(url: str, text: str) -> None:
    """A script run by `psql -f`, as a restore of a dump is."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as file:
        file.write(text)
        file.flush()
        done = subprocess.run(
            [psql_path(), url, "-v", "ON_ERROR_STOP=1", "-f", file.name],
            capture_output=True,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr


def test_a_role_allowed_only_candles_writes_with_its_own_search_path(
    warm: Client, app_factory: AppFactory, db_url: str
) -> None:
    # A feed handler's role may write `candles` and nothing else; pg_dump's scripts (and
    # pg_restore) empty the search_path and give each row the transaction mark it had in the
    # database dumped; a program may put its own schema first, holding a table of the name
    # of one the triggers keep.
    role = f"feeder_{uuid.uuid4().hex[:8]}"
    run_sql(db_url, f"CREATE ROLE {role}")
    run_sql(db_url, f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON candles TO {role}")
    run_sql(db_url, "CREATE SCHEMA IF NOT EXISTS feed")
    run_sql(db_url, "CREATE TABLE IF NOT EXISTS feed.candle_series (ticker text)")
    run_sql(db_url, f"GRANT USAGE ON SCHEMA feed TO {role}")
    sql = through_psql(db_url)
    last = series("ACME", 400)[-1].ts
    try:
        with warm.websocket_connect("/ws/live?tickers=ACME,NEWCO&tf_min=5") as live:
            assert json.loads(live.receive_text(timeout=10))["message"] == "live"
            script(  # as pg_dump --data-only writes it (a far later transaction's mark)
                db_url,
                f"SET ROLE {role};\n"
                "SELECT pg_catalog.set_config('search_path', '', false);\n"
                "COPY public.candles (ticker, tf_min, ts, open, high, low, close, volume,"
                " openint, revision, xact) FROM stdin;\n"
                "NEWCO\t5\t2024-01-02 14:30:00+00\t5\t6\t4\t5.5\t10\t0\t0\t987654321\n"
                "NEWCO\t5\t2024-01-02 14:35:00+00\t5.5\t7\t5\t6\t20\t0\t2\t987654321\n"
                "\\.\n",
            )
            own = f"SET ROLE {role}; SET search_path = feed, public;"
            newer = (last + timedelta(minutes=5)).isoformat()
            sql(
                f"{own} INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
                f" VALUES ('ACME', 5, '{newer}', 1, 900, 0.5, 800, 1)"
            )
            sql(f"{own} UPDATE candles SET close = 801 WHERE ticker = 'ACME' AND ts = '{newer}'")
            heard = [json.loads(live.receive_text(timeout=10)) for _ in range(4)]
            assert [(m["candle"]["ticker"], m["candle"]["close"]) for m in heard] == [
                ("NEWCO", 5.5),
                ("NEWCO", 6.0),
                ("ACME", 800.0),
                ("ACME", 801.0),
            ]
            converged(warm, app_factory, URLS)
            sql(f"{own} DELETE FROM candles WHERE ticker = 'NEWCO' AND ts > '2024-01-02 14:30+00'")
            assert json.loads(live.receive_text(timeout=10))["type"] == "REMOVED"
            converged(warm, app_factory, URLS)
        sql(
            f"SET ROLE {role}; SELECT pg_catalog.set_config('search_path', '', false);"
            " TRUNCATE public.candles"
        )
        converged(warm, app_factory, URLS)
        assert warm.get("/symbols").json() == {"symbols": [], "count": 0}
    finally:
        run_sql(db_url, f"DROP OWNED BY {role}")
        run_sql(db_url, f"DROP ROLE {role}")
        run_sql(db_url, "DROP SCHEMA feed CASCADE")
