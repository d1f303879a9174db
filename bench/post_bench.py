"""Write benchmark: `POST /candles` of one candle at a time, its latency, and what the
database sends for it (notifications per statement, and their size).

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/post_bench.py [--posts 500] [--rows 1] [--rounds 3]

Creates `marketdata_bench_post` (20 tickers of 5-minute candles, 2,000 each, default
rollups), starts `marketdata serve` (WORKERS=1), then POSTs `rows` candles of one ticker
(each after the last stored one) `posts` times, one request at a time on one kept-alive
connection, round-robin over the tickers, and prints the latency's p50/p90/p99 per round
(medians over rounds). A LISTEN connection counts the notifications and their largest
payload. With PYTHONPATH pointing at another tree's src/, the same run measures that code
(its own migrations). Measures only; the database is dropped at the end.
"""

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, free_port, fresh_database, start_server
from replay_bench import cpu_seconds, postgres_cpu_seconds

DB = "marketdata_bench_post"
KEY = "bench"
TICKERS = 20
START = datetime(2024, 1, 1, tzinfo=UTC)


def prepare(admin_url: str) -> str:
    url = fresh_database(admin_url, DB)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT 'P' || t, 5, %s::timestamptz + i * interval '5 minutes', 1, 2, 0.5, 1.5, i"
            " FROM generate_series(1, %s) t, generate_series(0, 1999) i",
            (START, TICKERS),
        )
        conn.execute("VACUUM ANALYZE candles")
    return url


def body(ticker: int, at: int, rows: int, spread: bool) -> bytes:
    """`rows` candles after the stored ones: of one ticker, or (`spread`) one each of
    `rows` tickers, as a feed's write of one time step."""
    candles = [
        {
            "ticker": f"P{(ticker + i - 1) % TICKERS + 1}" if spread else f"P{ticker}",
            "tf_min": 5,
            "ts": (START + timedelta(minutes=5 * (at if spread else at + i))).isoformat(),
            "open": 1.0,
            "high": 2.0,
            "low": 0.5,
            "close": 1.5,
            "volume": 7.0,
        }
        for i in range(rows)
    ]
    return json.dumps(candles).encode()


def post(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(
        b"POST /candles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += conn.recv(65536)
    head, _, rest = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if b"content-length" in line.lower()
    )
    while len(rest) < length:
        rest += conn.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=500)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spread", action="store_true", help="one candle each of --rows tickers")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    url = prepare(args.admin_url)
    port = free_port()
    server = start_server(url, port, LOG_LEVEL="WARNING", API_KEYS=KEY)
    notes: list[int] = []
    stop = threading.Event()

    def listen() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LISTEN marketdata_candles")
            while not stop.is_set():
                for note in conn.notifies(timeout=0.2):
                    notes.append(len(note.payload.encode()))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        time.sleep(1)
        at = 2000
        rounds: list[list[float]] = []
        with socket.create_connection(("127.0.0.1", port)) as conn:
            for _ in range(20):  # warm-up
                post(conn, body(1, at, args.rows, args.spread))
                at += 1 if args.spread else args.rows
            time.sleep(0.5)
            notes.clear()
            cpu = (postgres_cpu_seconds(), cpu_seconds(server.pid))
            for _ in range(args.rounds):
                took: list[float] = []
                for n in range(args.posts):
                    step = 1 if args.spread else args.rows
                    ticker = 1 if args.spread else n % TICKERS + 1
                    moment = at + n * step if args.spread else at + (n // TICKERS) * step
                    payload = body(ticker, moment, args.rows, args.spread)
                    started = time.perf_counter()
                    post(conn, payload)
                    took.append((time.perf_counter() - started) * 1000)
                at += args.posts + 1 if args.spread else (args.posts // TICKERS + 1) * args.rows
                rounds.append(sorted(took))
            used = (postgres_cpu_seconds() - cpu[0], cpu_seconds(server.pid) - cpu[1])
        time.sleep(0.5)
        stop.set()
        listener.join()

        def pct(xs: list[float], q: float) -> float:
            return xs[min(len(xs) - 1, int(q * len(xs)))]

        for i, took in enumerate(rounds, 1):
            print(
                f"round {i}: p50 {pct(took, 0.5):.2f} ms, p90 {pct(took, 0.9):.2f} ms,"
                f" p99 {pct(took, 0.99):.2f} ms"
            )
        print(
            f"median of rounds: p50 {statistics.median(pct(t, 0.5) for t in rounds):.2f} ms,"
            f" p99 {statistics.median(pct(t, 0.99) for t in rounds):.2f} ms"
        )
        posts = args.posts * args.rounds
        print(
            f"CPU per POST: PostgreSQL {used[0] / posts * 1000:.2f} ms,"
            f" the server {used[1] / posts * 1000:.2f} ms"
        )
        print(
            f"notifications: {len(notes)} for {posts} POSTs of {args.rows} candle(s);"
            f" largest payload {max(notes, default=0)} bytes"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    main()
