"""A feed's time step: one bar of 2,000 tickers in one INSERT, with the trigger functions of
this tree, then with those of an older migration file, in the same database.

Usage (from the repository root):

    git show COMMIT:src/marketdata/adapters/postgres/migrations/0006_any_writer.sql > old.sql
    .venv/bin/python bench/step_probe.py old.sql

Creates database md_probe on the local server (2,000 tickers x 300 five-minute bars, by
plain SQL), times three steps with each set of functions, and drops it.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
URL = "postgresql://postgres@127.0.0.1:5432/md_probe"
REPLACED = ("candle_rollup_levels", "candle_rollups_refresh")
ROWS = """
INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)
SELECT 'S' || lpad(t::text, 4, '0'), 5, timestamptz '2020-01-01' + i * interval '5 minutes',
       100, 101, 99, 100.5, 10, 0
FROM generate_series(0, 1999) t, generate_series(%s::int, %s::int) i
"""


def step(conn: psycopg.Connection, bar: int) -> float:
    began = time.monotonic()
    conn.execute(ROWS, (bar, bar))
    return round(time.monotonic() - began, 2)


def main() -> None:
    old = Path(sys.argv[1]).read_text()
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS md_probe WITH (FORCE)")
        admin.execute("CREATE DATABASE md_probe")
    try:
        subprocess.run(
            [sys.executable, "-m", "marketdata.entrypoints.cli", "migrate"],
            env={**os.environ, "DATABASE_URL": URL},
            check=True,
            capture_output=True,
        )
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(ROWS, (0, 299))
            conn.execute("VACUUM ANALYZE")
            print(
                "this tree: one bar of 2,000 tickers, s:", [step(conn, 300 + i) for i in range(3)]
            )
            for name in REPLACED:
                found = re.search(rf"CREATE OR REPLACE FUNCTION {name}\(.*?\n\$\$;\n", old, re.S)
                assert found is not None, name
                conn.execute(found.group(0).encode())
            print("the old file's:", [step(conn, 303 + i) for i in range(3)])
            rows = conn.execute("SELECT count(*) FROM candle_rollups").fetchone()
            print("rollup rows:", rows[0] if rows else None)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS md_probe WITH (FORCE)")


if __name__ == "__main__":
    main()
