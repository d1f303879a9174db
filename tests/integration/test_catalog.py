"""The series catalog: kept exact by the database's triggers whoever writes, filled for
existing databases, checked against the table and mended after writes that skipped the
triggers."""

import asyncio
from pathlib import Path
from typing import Any

import psycopg

from marketdata.adapters.postgres import catalog
from marketdata.adapters.postgres.pool import DatabaseConfig, connect
from marketdata.adapters.postgres.writes import write_rows
from marketdata.domain.ingest import Row
from tests.factories import series
from tests.support import run


def rows_of(ticker: str, count: int, tf_min: int = 5, shift: float = 0.0) -> list[Row]:
    return [
        (c.ticker, c.tf_min, c.ts, c.open + shift, c.high + shift, c.low, c.close, c.volume, 0)
        for c in series(ticker, count, tf_min)
    ]


def entries(url: str) -> dict[tuple[str, int], tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT ticker, tf_min, first_ts, last_ts, count, version FROM candle_series"
        ).fetchall()
    return {(r[0], r[1]): r[2:] for r in found}


def write(url: str, rows: list[Row]) -> tuple[int, int]:
    async def go() -> tuple[int, int]:
        async with await connect(DatabaseConfig(url=url), "test") as conn:
            result = await write_rows(conn, rows)
        return result.inserted, result.updated

    return asyncio.run(go())


def drift(url: str) -> list[catalog.Drift]:
    return asyncio.run(catalog.drift(DatabaseConfig(url=url)))


def test_writes_keep_the_catalog_exact_and_versions_move_only_on_change(db_url: str) -> None:
    first = rows_of("A", 10)
    assert write(db_url, first + rows_of("B", 3, tf_min=60)) == (13, 0)
    before = entries(db_url)
    assert before["A", 5][:3] == (first[0][2], first[-1][2], 10)
    assert drift(db_url) == []

    assert write(db_url, first) == (0, 0)  # the same rows again: nothing changes
    assert entries(db_url) == before

    changed = [(*first[3][:3], first[3][3] + 1, *first[3][4:])]  # one candle updated
    assert write(db_url, changed) == (0, 1)
    after = entries(db_url)
    assert after["A", 5][:3] == before["A", 5][:3]
    assert after["A", 5][3] > before["A", 5][3]  # a new version
    assert after["B", 60] == before["B", 60]  # the other series untouched

    longer = rows_of("A", 15)[10:]  # appended after the last one, and one out of order
    earlier = [("A", 5, first[0][2].replace(hour=1), *first[0][3:])]
    assert write(db_url, longer + earlier) == (6, 0)
    assert entries(db_url)["A", 5][:3] == (earlier[0][2], longer[-1][2], 16)
    assert drift(db_url) == []


def test_concurrent_writers_of_one_new_series_count_each_candle_once(db_url: str) -> None:
    rows = rows_of("C", 400)

    async def both() -> None:
        config = DatabaseConfig(url=db_url)
        async with (
            await connect(config, "one") as one,
            await connect(config, "two") as two,
        ):
            await asyncio.gather(write_rows(one, rows[:300]), write_rows(two, rows[100:]))

    asyncio.run(both())
    assert entries(db_url)["C", 5][2] == 400
    assert drift(db_url) == []


def test_concurrent_writers_of_overlapping_tickers_never_deadlock(db_url: str) -> None:
    """Many writers, each of ten of 40 tickers at a time, overlapping the others: each
    write takes its tickers' locks in one order, so they take turns instead of failing
    with a deadlock (the series' rows were once locked in the order of a scan)."""
    tickers = [f"D{i:02d}" for i in range(40)]
    rounds, writers = 12, 8

    async def writer(w: int) -> None:
        async with await connect(DatabaseConfig(url=db_url), f"w{w}") as conn:
            for at in range(rounds):
                start = (w * 7 + at * 3) % 30
                chosen = tickers[start : start + 10][:: 1 if w % 2 else -1]
                await write_rows(conn, [rows_of(t, rounds, shift=w)[at // 2] for t in chosen])

    async def all_of_them() -> None:
        await asyncio.gather(*(writer(w) for w in range(writers)))

    asyncio.run(all_of_them())
    assert sum(entry[2] for entry in entries(db_url).values()) > 0
    assert drift(db_url) == []


def test_plain_sql_of_any_kind_keeps_the_catalog_exact(db_url: str) -> None:
    """Another program's INSERT, multi-row UPDATE (values and keys), DELETE, COPY and a
    transaction of several statements: the triggers keep every catalog row as the table is."""
    write(db_url, rows_of("D", 5) + rows_of("E", 2))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " VALUES ('D', 5, '2030-01-01', 1, 1, 1, 1, 1), ('F', 1, '2030-01-01', 1, 1, 1, 1, 1)"
        )
        conn.execute("UPDATE candles SET close = close + 1 WHERE ticker = 'D'")
        conn.execute("UPDATE candles SET ts = ts + interval '1 year' WHERE ticker = 'F'")
        conn.execute("DELETE FROM candles WHERE ticker = 'E'")
        with conn.cursor().copy(
            "COPY candles (ticker, tf_min, ts, open, high, low, close, volume) FROM STDIN"
        ) as copy:
            for c in series("G", 30, 15):
                copy.write_row((c.ticker, c.tf_min, c.ts, 1, 2, 0.5, 1.5, 10))
        with conn.transaction():
            conn.execute(
                "DELETE FROM candles WHERE ticker = 'G' AND ts > %s", (series("G", 30, 15)[20].ts,)
            )
            conn.execute(
                "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
                " VALUES ('G', 15, '2031-01-01', 1, 1, 1, 1, 1)"
            )
    assert drift(db_url) == []
    held = entries(db_url)
    assert set(held) == {("D", 5), ("F", 1), ("G", 15)}
    assert held["D", 5][2] == 6
    assert held["G", 15][2] == 22
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE candles")
    assert entries(db_url) == {}


def test_one_statement_that_empties_and_refills_a_series_counts_it_exactly(
    db_url: str,
) -> None:
    # Its DELETE's trigger runs first and sees the series refilled by the same statement
    write(db_url, rows_of("R", 10) + rows_of("S", 4))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "WITH gone AS (DELETE FROM candles WHERE ticker = 'R' RETURNING *)"
            " INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)"
            " SELECT ticker, tf_min, ts, open, high, low, close + 1, volume, openint FROM gone"
        )
        conn.execute(
            "MERGE INTO candles c USING (SELECT ticker, tf_min, ts + interval '1 day' AS ts,"
            " open FROM candles WHERE ticker = 'S' UNION ALL SELECT ticker, tf_min, ts, open"
            " FROM candles WHERE ticker = 'S') v ON c.ticker = v.ticker AND c.tf_min = v.tf_min"
            " AND c.ts = v.ts WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT (ticker,"
            " tf_min, ts, open, high, low, close, volume) VALUES (v.ticker, v.tf_min, v.ts,"
            " v.open, v.open, v.open, v.open, 1)"
        )
    assert drift(db_url) == []
    held = entries(db_url)
    assert (held["R", 5][2], held["S", 5][2]) == (10, 4)


def test_a_series_written_behind_the_triggers_still_takes_deletes(db_url: str) -> None:
    # its catalog counts fewer candles than the table holds until it is mended: a DELETE of
    # more than it counts is a drift found by check, not a failed write
    rows = rows_of("BH", 11)
    write(db_url, rows[:1])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT * FROM unnest(%s::text[], %s::int4[], %s::timestamptz[], %s::float8[],"
            " %s::float8[], %s::float8[], %s::float8[], %s::float8[])",
            [list(column) for column in zip(*(r[:8] for r in rows[1:]), strict=True)],
        )
        conn.execute("SET session_replication_role = origin")
        conn.execute("DELETE FROM candles WHERE ticker = 'BH' AND ts <= %s", (rows[2][2],))
    assert [(d.ticker, d.table_count) for d in drift(db_url)] == [("BH", 8)]
    assert asyncio.run(catalog.mend(DatabaseConfig(url=db_url), ["BH"]))[0] == ["BH"]
    assert drift(db_url) == []


def test_a_candle_moved_to_a_key_that_had_none_is_a_first_version(db_url: str) -> None:
    rows = rows_of("MV", 3)
    write(db_url, rows)
    for shift in (1.0, 2.0):  # corrected twice: revision 2
        write(db_url, [(*rows[0][:3], rows[0][3] + shift, *rows[0][4:])])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE candles SET ticker = 'MW' WHERE ticker = 'MV' AND ts = %s", (rows[0][2],)
        )
        moved = conn.execute("SELECT revision FROM candles WHERE ticker = 'MW'").fetchone()
        conn.execute("UPDATE candles SET close = close + 1 WHERE ticker = 'MW'")
        corrected = conn.execute("SELECT revision FROM candles WHERE ticker = 'MW'").fetchone()
    assert (moved, corrected) == ((0,), (1,))


def test_check_finds_writes_that_skipped_the_triggers_and_mend_mends_them(
    tmp_path: Path, db_url: str
) -> None:
    write(db_url, rows_of("D", 5) + rows_of("E", 2) + rows_of("H", 3))
    versions = {key: entry[3] for key, entry in entries(db_url).items()}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # as pg_restore does
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " VALUES ('D', 5, '2030-01-01', 1, 1, 1, 1, 1), ('F', 1, '2030-01-01', 1, 1, 1, 1, 1)"
        )
        conn.execute("DELETE FROM candles WHERE ticker = 'E'")
        conn.execute("RESET session_replication_role")
        conn.execute("ALTER TABLE candles DISABLE TRIGGER candles_updated")
        conn.execute("UPDATE candles SET close = close + 1 WHERE ticker = 'H'")  # same count
        conn.execute("ALTER TABLE candles ENABLE TRIGGER candles_updated")
    env = {"DATABASE_URL": db_url}
    checked = run(["check"], env, tmp_path)
    assert checked.returncode == 1
    assert "D tf_min=5: counts differ (catalog 5, table 6)" in checked.stderr
    assert "E tf_min=5: no candles in the table (catalog 2, table no rows)" in checked.stderr
    assert "F tf_min=1: not in the catalog (catalog no row, table 1)" in checked.stderr
    assert "H tf_min=5: candles changed (catalog 3, table 3)" in checked.stderr
    assert "`marketdata mend D E F H` mends them" in checked.stderr
    mended = run(["mend", "D", "E", "F", "H"], env, tmp_path)
    assert mended.returncode == 0, mended.stderr
    assert "mended 4 tickers" in mended.stdout
    assert drift(db_url) == []
    after = entries(db_url)
    assert after["H", 5][3] != versions["H", 5]  # every answer of a mended series changes
    assert after["D", 5][2] == 6
    again = run(["check"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "series catalog and rollups agree with the candles" in again.stdout
    assert "nothing to mend" in run(["mend"], env, tmp_path).stdout
