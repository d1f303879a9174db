"""Ingest benchmark: `marketdata ingest` of a Stooq file, and another program's `psql \\copy`
into `candles` (with what the database's triggers do on it), against `psql \\copy` of the
same rows into a bare table of the same shape and index, side by side.

Usage (from the repository root, with the project installed in .venv and psql on PATH):

    .venv/bin/python bench/ingest_bench.py [--rows 2000000] [--rounds 3] [--admin-url ...]

Writes N five-minute candles (20 tickers) twice: as a Stooq file (`<TICKER>,<PER>,<DATE>,
<TIME>,...`) and as a CSV in the table's own columns. Then, `rounds` times, each into an
emptied, migrated `candles` (its primary key index in place; the catalog and rollups
emptied too): `psql \\copy` of the CSV into `candles_bare` (the same columns and primary
key, no trigger: the database's own rate), the same `\\copy` into `candles` (the triggers
keep the catalog, rollups and change feed), and `marketdata ingest` of the Stooq file
(parse, check, COPY to staging, merge; the triggers the same). Then once each: the same
ingest again (every row unchanged), and a Parquet file of the same rows. Prints rows/s,
medians over the rounds and the ratio. Then, on the rows the Parquet file left, what the
rollups take of the triggers' time, each from a checkpoint and rolled back: every level
built afresh (`candle_rollups_build`, as a bulk load of new tickers does), and only writing
the same rollup rows, made beforehand, into the emptied `candle_rollups` (the floor of any
way of keeping them in the writer's transaction). Measures only; the database is dropped at
the end.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, fresh_database

DB = "marketdata_bench_ingest"


def write_files(folder: Path, rows: int) -> tuple[Path, Path]:
    """The same candles as a Stooq file and as a CSV in the table's columns."""
    start = datetime(2020, 1, 1, tzinfo=UTC)
    tickers = 20
    per = rows // tickers
    stooq, table = folder / "candles.txt", folder / "candles.csv"
    with stooq.open("w") as out, table.open("w") as flat:
        out.write("<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n")
        for t in range(tickers):
            price = 100.0 + t
            for i in range(per):
                at = start + timedelta(minutes=5 * i)
                o = round(price, 2)
                c = round(price + ((i * 7919) % 13 - 6) * 0.01, 2)
                h, low, v = f"{max(o, c) + 0.05:.2f}", f"{min(o, c) - 0.05:.2f}", 1000 + i % 500
                out.write(f"B{t:02d},5,{at:%Y%m%d},{at:%H%M%S},{o},{h},{low},{c},{v},0\n")
                flat.write(f"B{t:02d},5,{at:%Y-%m-%dT%H:%M:%SZ},{o},{h},{low},{c},{v},0\n")
                price = c
    return stooq, table


WAL: dict[str, list[float]] = {}  # MB of WAL each kind of run wrote


def timed(command: list[str], env: dict[str, str], kind: str = "") -> float:
    """Seconds `command` took, started from a checkpoint: each run pays for the WAL it
    writes, not for a checkpoint of what the run before it wrote."""
    lsn = "SELECT pg_current_wal_lsn()"
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        before = conn.execute(lsn).fetchone()
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        took = time.perf_counter() - started
        written = conn.execute(f"SELECT ({lsn}) - %s::pg_lsn", before).fetchone()
    assert written is not None
    WAL.setdefault(kind, []).append(float(written[0]) / 2**20)
    return took


def emptied(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE candles, candle_series, candle_rollups, candle_changes")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS candles_bare"
            " (LIKE candles INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        )
        conn.execute("TRUNCATE candles_bare")
        conn.execute("VACUUM ANALYZE candles, candles_bare")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    url = fresh_database(args.admin_url, DB)
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    cli = [sys.executable, "-m", "marketdata.entrypoints.cli"]
    bare, copies, ingests = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        stooq, table = write_files(Path(folder), args.rows)
        rows = sum(1 for _ in table.open())
        copy_command = (
            "\\copy {} (ticker, tf_min, ts, open, high, low, close, volume, openint)"
            f" FROM '{table}' WITH (FORMAT csv)"
        )
        for _ in range(args.rounds):
            emptied(url)
            bare_copy = ["psql", url, "-q", "-c", copy_command.format("candles_bare")]
            bare.append(timed(bare_copy, env, "bare"))
            into = ["psql", url, "-q", "-c", copy_command.format("candles")]
            copies.append(timed(into, env, "candles"))
            emptied(url)
            ingests.append(timed([*cli, "ingest", str(stooq)], env, "ingest"))
        again = timed([*cli, "ingest", str(stooq)], env)
        parquet = Path(folder) / "candles.parquet"
        subprocess.run(
            [sys.executable, "-c", PARQUET_OF_CSV, str(table), str(parquet)], check=True, env=env
        )
        emptied(url)
        columnar = timed([*cli, "ingest", str(parquet)], env)
        build, written, kept = rollup_parts(url)
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    floor = statistics.median(bare)
    copy, first = statistics.median(copies), statistics.median(ingests)

    def each(times: list[float]) -> str:
        return " ".join(f"{x:.1f}" for x in times)

    def pairs(times: list[float]) -> str:
        return " ".join(f"{b / t:.0%}" for b, t in zip(bare, times, strict=True))

    print(f"rows: {rows:,}; rounds: {args.rounds}")
    print(f"psql \\copy into a bare table:      {rows / floor:>10,.0f} rows/s", end="")
    print(f" (median {floor:.1f} s; {each(bare)})")
    print(f"psql \\copy into candles:           {rows / copy:>10,.0f} rows/s", end="")
    print(f" (median {copy:.1f} s; {each(copies)})")
    print(f"marketdata ingest, Stooq, empty:   {rows / first:>10,.0f} rows/s", end="")
    print(f" (median {first:.1f} s; {each(ingests)})")
    print(f"\\copy into candles / bare: {floor / copy:.0%} (medians); pairs: {pairs(copies)}")
    print(f"ingest / bare \\copy: {floor / first:.0%} (medians); pair by pair: {pairs(ingests)}")
    wal = ", ".join(f"{k} {statistics.median(v):,.0f}" for k, v in WAL.items() if k)
    print(f"WAL written, MB (medians): {wal}")
    print(f"marketdata ingest, Stooq, again:   {rows / again:>10,.0f} rows/s ({again:.1f} s)")
    print(f"marketdata ingest, Parquet, empty: {rows / columnar:>10,.0f} rows/s ({columnar:.1f} s)")
    print(
        f"rollups ({kept:,} rows): built afresh {statistics.median(build):.2f} s"
        f" ({statistics.median(build) / floor:.0%} of the bare copy; {each(build)});"
        f" their rows only written {statistics.median(written):.2f} s"
        f" ({statistics.median(written) / floor:.0%}; {each(written)})"
    )


def rollup_parts(url: str, rounds: int = 3) -> tuple[list[float], list[float], int]:
    """Seconds to build every rollup level of the loaded tickers afresh, and seconds to only
    write the same rows (made beforehand) into the emptied rollups, `rounds` times each, in
    turn; each from a checkpoint, in a transaction rolled back."""
    build, written = [], []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE made AS SELECT * FROM candle_rollups ORDER BY 1, 2, 3, 4")
        kept = conn.execute("SELECT count(*) FROM made").fetchone()
        tickers = "ARRAY(SELECT DISTINCT ticker FROM candle_series)"
        for _ in range(rounds):
            for times, work in (
                (build, f"SELECT candle_rollups_build({tickers})"),
                (written, "INSERT INTO candle_rollups SELECT * FROM made"),
            ):
                conn.execute("CHECKPOINT")
                with conn.transaction(force_rollback=True):
                    conn.execute("TRUNCATE candle_rollups")
                    started = time.perf_counter()
                    conn.execute(work)
                    times.append(time.perf_counter() - started)
        conn.execute("DROP TABLE made")
    assert kept is not None
    return build, written, int(kept[0])


PARQUET_OF_CSV = """
import sys, pyarrow as pa, pyarrow.csv as c, pyarrow.parquet as pq
names = ["ticker", "tf_min", "ts", "open", "high", "low", "close", "volume", "openint"]
t = c.read_csv(sys.argv[1], c.ReadOptions(column_names=names),
               convert_options=c.ConvertOptions(column_types={"ts": pa.timestamp("us", "UTC")}))
pq.write_table(t, sys.argv[2])
"""


if __name__ == "__main__":
    main()
