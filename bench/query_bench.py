"""Query-power benchmark: resampling latency and streaming export throughput.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/query_bench.py [--admin-url postgresql://...]

Creates a database `marketdata_bench_query` with a year of 1-minute candles for one ticker
(527,040 rows, 2024) and 1,000,000 1-minute candles for another, starts `marketdata serve`,
then measures (1) /candles/range resampling the year to 1 hour (limit 5000 buckets, the
first page) over 30 sequential requests: p50 and p90; (2) one NDJSON export of the
1,000,000 rows: rows/s, and the server's peak RSS sampled every 20 ms. Measures only.
"""

import argparse
import signal
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, free_port, fresh_database, start_server
from replay_bench import rss_kib

DB = "marketdata_bench_query"


def prepare(admin_url: str) -> str:
    url = fresh_database(admin_url, DB)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT 'YEAR', 1, timestamptz '2024-01-01 00:00+00' + i * interval '1 minute',"
            " 100 + i % 7, 101 + i % 7, 99 + i % 7, 100.5 + i % 7, i % 1000"
            " FROM generate_series(0, 527039) i"
        )
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT 'MILLION', 1, timestamptz '2020-01-01 00:00+00' + i * interval '1 minute',"
            " 100, 101, 99, 100.5, i FROM generate_series(0, 999999) i"
        )
        conn.execute("VACUUM ANALYZE candles")  # (the triggers kept the catalog and rollups)
    return url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    url = prepare(args.admin_url)
    port = free_port()
    # every request read (answers kept would answer the 29 repeats from memory)
    server = start_server(url, port, LOG_LEVEL="WARNING", RESPONSE_CACHE_MB="0")
    base = f"http://127.0.0.1:{port}"
    try:
        resample = (
            f"{base}/candles/range?ticker=YEAR&tf_min=60"
            "&start=2024-01-01T00:00:00Z&end=2024-12-31T23:59:00Z"
        )
        times = []
        for _ in range(31):
            started = time.perf_counter()
            with urllib.request.urlopen(resample, timeout=60) as response:
                body = response.read()
            times.append(time.perf_counter() - started)
        times = sorted(times[1:])  # the first warms the caches
        buckets = body.count(b'"ticker"')
        peak = [rss_kib(server.pid)]
        before = peak[0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(server.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        rows = 0
        with urllib.request.urlopen(
            f"{base}/candles?ticker=MILLION&tf_min=1&format=ndjson", timeout=600
        ) as response:
            while chunk := response.read(1 << 20):
                rows += chunk.count(b"\n")
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    print(
        f"resample 527,040 1-minute rows to 1 hour, first page ({buckets} buckets):"
        f" p50 {statistics.median(times) * 1000:.0f} ms,"
        f" p90 {times[int(len(times) * 0.9)] * 1000:.0f} ms over {len(times)} requests"
    )
    print(
        f"NDJSON export: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s;"
        f" server RSS {before / 1024:.0f} MiB before, peak {peak[0] / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
