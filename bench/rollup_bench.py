"""Rollups benchmark: zoomed-out reads with and without rollups, side by side in one run;
ingest with the default rollups on and off; what rollups cost on disk.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/rollup_bench.py [--requests 30] [--ingest-rows 1000000]

Creates `marketdata_bench_rollups` on the local PostgreSQL with a year of 1-minute candles
for YEAR (525,600 rows, 2023) and five years for FIVE (2,629,440 rows, 2019-2023), builds
the default rollups (15, 60, 1440) and New York's days (1440@America/New_York) with
`marketdata rollups`, starts `marketdata serve`, then takes turns request by
request between the on-the-fly path and the rollups (a rollup is left out of a request by
marking it not ready, which every read looks at): p50 and p90 of each, and each answer
checked equal to the on-the-fly one. Then `marketdata ingest` of a CSV of N 1-minute candles
into an empty database, ROLLUP_TF_MINS default and empty, alternately, three times each.
Measures only; the databases are dropped at the end.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, free_port, start_server

DB = "marketdata_bench_rollups"
INGEST_DB = "marketdata_bench_rollups_ingest"
CLI = [sys.executable, "-m", "marketdata.entrypoints.cli"]
KEPT = "15,60,1440,1440@America/New_York"
# which rollups are ready in each mode (the others are marked not ready for the request)
MODES = {
    "on the fly": "false",
    "default rollups (15,60,1440)": "tz = 'UTC'",
    "with 1440@America/New_York": "true",
}


def url_of(admin_url: str, db: str) -> str:
    p = conninfo_to_dict(make_conninfo(admin_url, dbname=db))
    return f"postgresql://{p.get('user', 'postgres')}@{p.get('host')}:{p.get('port', 5432)}/{db}"


def fresh(admin_url: str, db: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {db}")
    url = url_of(admin_url, db)
    subprocess.run(
        [*CLI, "migrate"],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return url


def prepare(admin_url: str) -> tuple[str, float]:
    url = fresh(admin_url, DB)
    # the candles loaded with no rollup kept, then the rollups built for them (timed)
    subprocess.run(
        [*CLI, "rollups"],
        env={**os.environ, "DATABASE_URL": url, "ROLLUP_TF_MINS": ""},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        for ticker, start, minutes in (
            ("YEAR", "2023-01-01", 525_600),
            ("FIVE", "2019-01-01", 2_629_440),
        ):
            conn.execute(
                "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
                f" SELECT %s, 1, timestamptz '{start} 00:00+00' + i * interval '1 minute',"
                " 100 + i %% 7, 101 + i %% 7, 99 + i %% 7, 100.5 + i %% 7, i %% 1000"
                " FROM generate_series(0, %s - 1) i",
                (ticker, minutes),
            )
        conn.execute("VACUUM ANALYZE candles")
    started = time.perf_counter()
    subprocess.run(
        [*CLI, "rollups"],
        env={**os.environ, "DATABASE_URL": url, "ROLLUP_TF_MINS": KEPT},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return url, time.perf_counter() - started


def timed_get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - started, body


def side_by_side(db: str, url: str, requests: int, modes: list[str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    bodies: dict[str, bytes] = {}
    with psycopg.connect(db, autocommit=True) as conn:
        for i in range(requests + 1):  # the first round warms the caches
            for mode in modes[i % len(modes) :] + modes[: i % len(modes)]:
                conn.execute(f"UPDATE rollup_timeframes SET ready = {MODES[mode]}")
                seconds, body = timed_get(url)
                bodies[mode] = body
                if i:
                    times[mode].append(seconds)
        conn.execute("UPDATE rollup_timeframes SET ready = true")
    for mode in modes:
        assert bodies[mode] == bodies["on the fly"], f"{mode}: another answer"
    times["buckets"] = [float(bodies["on the fly"].count(b'"ticker"'))]
    return times


def write_csv(path: Path, rows: int) -> None:
    start = datetime(2021, 1, 1, tzinfo=UTC)
    tickers = 10
    with path.open("w") as out:
        out.write("ticker,tf_min,ts,open,high,low,close,volume\n")
        for t in range(tickers):
            for i in range(rows // tickers):
                ts = (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
                o = 100 + (i * 7919) % 13
                out.write(f"M{t},1,{ts},{o},{o + 1},{o - 1},{o + 0.5},{i % 977}\n")


def ingest_rates(admin_url: str, rows: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"rollups on (15,60,1440)": [], "rollups off": []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "minutes.csv"
        write_csv(path, rows)
        for _ in range(3):
            for mode, setting in (("rollups on (15,60,1440)", "15,60,1440"), ("rollups off", "")):
                url = fresh(admin_url, INGEST_DB)
                env = {
                    **os.environ,
                    "DATABASE_URL": url,
                    "ROLLUP_TF_MINS": setting,
                    "LOG_LEVEL": "WARNING",
                }
                subprocess.run([*CLI, "rollups"], env=env, check=True, stdout=subprocess.DEVNULL)
                started = time.perf_counter()
                subprocess.run(
                    [*CLI, "ingest", str(path)], env=env, check=True, stdout=subprocess.DEVNULL
                )
                rates[mode].append(rows / (time.perf_counter() - started))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {INGEST_DB} WITH (FORCE)")
    return rates


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms,"
        f" p90 {ordered[int(len(ordered) * 0.9)] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--ingest-rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["reads", "ingest"], default=None)
    args = parser.parse_args()
    if args.only == "ingest":
        report_ingest(ingest_rates(args.admin_url, args.ingest_rows), args.ingest_rows)
        return
    db, build = prepare(args.admin_url)
    with psycopg.connect(db) as conn:
        sizes = conn.execute(
            "SELECT pg_total_relation_size('candles'), pg_total_relation_size('candle_rollups'),"
            " (SELECT count(*) FROM candles), (SELECT count(*) FROM candle_rollups)"
        ).fetchone()
    assert sizes is not None
    base_bytes, rollup_bytes, base_rows, rollup_rows = sizes
    port = free_port()
    server = start_server(db, port, LOG_LEVEL="WARNING", ROLLUP_TF_MINS=KEPT)
    base = f"http://127.0.0.1:{port}"
    try:
        hourly = side_by_side(
            db,
            f"{base}/candles?ticker=YEAR&tf_min=60&limit=5000",
            args.requests,
            ["on the fly", "default rollups (15,60,1440)"],
        )
        daily = side_by_side(
            db,
            f"{base}/candles/range?ticker=FIVE&tf_min=1440&tz=America/New_York"
            "&start=2019-01-01T00:00:00Z&end=2024-01-01T00:00:00Z",
            args.requests,
            list(MODES),
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    print(f"rollups built for {base_rows:,} 1-minute rows in {build:.1f} s (`marketdata rollups`)")
    print(
        f"storage ({KEPT}): candles {base_bytes / 2**20:,.0f} MiB, rollups"
        f" {rollup_bytes / 2**20:,.1f} MiB ({rollup_rows:,} rows) ="
        f" {rollup_bytes / base_rows * 1e6 / 2**20:.1f} MiB"
        f" ({rollup_rows / base_rows * 1e6:,.0f} rows) per million base rows"
    )
    for name, times in (
        ("/candles?tf_min=60&limit=5000, a year of 1-minute candles", hourly),
        ("/candles/range daily in America/New_York, five years of 1-minute candles", daily),
    ):
        buckets = times.pop("buckets")[0]
        print(f"{name} ({buckets:.0f} buckets), {args.requests} requests each, in turn:")
        slow = statistics.median(times["on the fly"])
        for mode, values in times.items():
            ratio = slow / statistics.median(values)
            print(f"  {mode}: {ms(values)} ({ratio:.0f}x faster than on the fly)")
    if args.only is None:
        report_ingest(ingest_rates(args.admin_url, args.ingest_rows), args.ingest_rows)


def report_ingest(rates: dict[str, list[float]], rows: int) -> None:
    on, off = (statistics.median(v) for v in rates.values())
    print(f"ingest of {rows:,} 1-minute rows (10 tickers), 3 runs each, alternating:")
    for name, values in rates.items():
        print(
            f"  {name}: median {statistics.median(values):,.0f} rows/s"
            f" ({', '.join(f'{v:,.0f}' for v in values)})"
        )
    print(f"  rollups on / off: {on / off:.0%}")


if __name__ == "__main__":
    main()
