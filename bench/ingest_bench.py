"""Ingest benchmark: `marketdata ingest` against `psql \\copy` of the same CSV file.

Usage (from the repository root, with the project installed in .venv and psql on PATH):

    .venv/bin/python bench/ingest_bench.py [--rows 2000000] [--admin-url postgresql://...]

Writes a CSV of N five-minute candles (20 tickers), then in one run: `psql \\copy` of it
into a bare table (no index, no checks: the raw COPY rate), `marketdata ingest` of it into
an empty, migrated `candles` table (parse, validate, COPY to staging, upsert), and the same
ingest again (every row unchanged). Prints rows/s for each and the ratio. Measures only.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL

DB = "marketdata_bench_ingest"


def write_csv(path: Path, rows: int) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    tickers = 20
    per = rows // tickers
    with path.open("w") as out:
        out.write("ticker,tf_min,ts,open,high,low,close,volume\n")
        for t in range(tickers):
            price = 100.0 + t
            for i in range(per):
                ts = (start + timedelta(minutes=5 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
                o = round(price, 2)
                c = round(price + ((i * 7919) % 13 - 6) * 0.01, 2)
                out.write(
                    f"B{t:02d},5,{ts},{o},{max(o, c) + 0.05:.2f},{min(o, c) - 0.05:.2f},"
                    f"{c},{1000 + i % 500}\n"
                )
                price = c


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    p = conninfo_to_dict(make_conninfo(args.admin_url, dbname=DB))
    url = f"postgresql://{p.get('user', 'postgres')}@{p.get('host')}:{p.get('port', 5432)}/{DB}"
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    cli = [sys.executable, "-m", "marketdata.entrypoints.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bare (ticker text, tf_min int, ts timestamptz, open float8,"
            " high float8, low float8, close float8, volume float8)"
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "candles.csv"
        write_csv(path, args.rows)
        rows = sum(1 for _ in path.open()) - 1
        copy = timed(
            ["psql", url, "-q", "-c", f"\\copy bare FROM '{path}' WITH (FORMAT csv, HEADER true)"],
            env,
        )
        first = timed([*cli, "ingest", str(path)], env)
        again = timed([*cli, "ingest", str(path)], env)
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    print(f"rows: {rows:,}")
    print(f"psql \\copy into a bare table:       {rows / copy:>10,.0f} rows/s ({copy:.1f} s)")
    print(f"marketdata ingest, empty table:     {rows / first:>10,.0f} rows/s ({first:.1f} s)")
    print(f"marketdata ingest, again (no-op):   {rows / again:>10,.0f} rows/s ({again:.1f} s)")
    print(f"ingest / raw COPY: {copy / first:.0%} (first), {copy / again:.0%} (re-import)")


if __name__ == "__main__":
    main()
