"""Export benchmark: one series of N candles exported as NDJSON, CSV, Parquet and an Arrow IPC
stream by one server process, turn by turn, with the server's memory watched.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/export_bench.py [--rows 1000000] [--rounds 3]

Creates `marketdata_bench_export` on the local PostgreSQL with one 1-minute series of N
candles (SQL, then the catalog refreshed), starts `marketdata serve` (WORKERS=1), then
`rounds` times in turn: GET /candles?ticker=X&format=F with no limit, read to the end by a
client that counts the bytes (rows/s = N / the time to the last byte). The server's RSS is
sampled every 10 ms during each export; its peak over the one before the exports is the
memory an export took. Checks each body: NDJSON lines, Parquet and Arrow rows = N.
Measures only; the database is dropped at the end.
"""

import argparse
import io
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, free_port, fresh_database, start_server

DB = "marketdata_bench_export"
FORMATS = ("ndjson", "csv", "parquet", "arrow")


def prepare(admin_url: str, rows: int) -> str:
    url = fresh_database(admin_url, DB)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)
            SELECT 'X', 1, timestamptz '2020-01-01 00:00+00' + i * interval '1 minute',
                   100 + i %% 97 + 0.25, 101 + i %% 97 + 0.5, 99 + i %% 97, 100.5 + i %% 97,
                   1000 + i, i %% 7
            FROM generate_series(0, %s - 1) i
            """,
            (rows,),
        )
        conn.execute("VACUUM ANALYZE candles")
    return url


def rss_mib(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(True)]) / 2**20


def export(port: int, output: str, pid: int) -> tuple[float, bytes, float]:
    """Seconds to the last byte, the body, the server's peak RSS during it."""
    peak, done = [0.0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    url = f"http://127.0.0.1:{port}/candles?ticker=X&tf_min=1&format={output}"
    with urllib.request.urlopen(url) as response:
        body = response.read()
    took = time.perf_counter() - started
    done.set()
    watcher.join()
    return took, body, peak[0]


def rows_in(body: bytes, output: str) -> int:
    if output == "ndjson":
        return body.count(b"\n")
    if output == "csv":
        return body.count(b"\n") - 1
    if output == "parquet":
        return int(pq.read_metadata(io.BytesIO(body)).num_rows)
    return int(ipc.open_stream(body).read_all().num_rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    url = prepare(args.admin_url, args.rows)
    port = free_port()
    server = start_server(url, port, WORKERS="1")
    try:
        export(port, "arrow", server.pid)  # warm-up: first connections, caches
        idle = rss_mib(server.pid)
        times: dict[str, list[float]] = {f: [] for f in FORMATS}
        peaks: dict[str, list[float]] = {f: [] for f in FORMATS}
        sizes: dict[str, int] = {}
        for _ in range(args.rounds):
            for output in FORMATS:
                took, body, peak = export(port, output, server.pid)
                assert rows_in(body, output) == args.rows, output
                times[output].append(took)
                peaks[output].append(peak - idle)
                sizes[output] = len(body)
        after = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait()
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    ndjson = args.rows / statistics.median(times["ndjson"])
    print(f"rows: {args.rows:,}; rounds: {args.rounds}; server RSS idle {idle:.0f} MiB")
    for output in FORMATS:
        rate = args.rows / statistics.median(times[output])
        print(
            f"{output:8} {rate:>12,.0f} rows/s ({rate / ndjson:.1f}x NDJSON)"
            f"  body {sizes[output] / 2**20:7.1f} MiB"
            f"  server RSS growth, peak: {statistics.median(peaks[output]):5.1f} MiB"
        )
    print(f"server RSS after all exports: {after:.0f} MiB (idle before: {idle:.0f} MiB)")


if __name__ == "__main__":
    main()
