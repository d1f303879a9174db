"""REST load benchmark: wrk against a running `marketdata serve`, pgbench for the same SELECT.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/http_bench.py [--duration 10] [--admin-url postgresql://...]

It creates (once) a database `marketdata_bench` with 2,000,000 five-minute candles for 50
tickers, starts the service on a free port, runs wrk (Debian package `wrk`) at 1 and 32
connections for each URL, runs pgbench with the statement /candles?limit=200 executes, and
prints a Markdown table. Nothing is asserted: this is a measurement, not a test.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

# the local server this machine runs; the benchmarks create and drop their own databases
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TICKERS = 50
PER_TICKER = 40_000  # 50 x 40,000 = 2,000,000 candles
DB = "marketdata_bench"


def url_of(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server of `admin_url`."""
    params = psycopg.conninfo.conninfo_to_dict(make_conninfo(admin_url, dbname=name))
    return (
        f"postgresql://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', 5432)}/{name}"
    )


def migrate(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "marketdata.entrypoints.cli", "migrate"],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def fresh_database(admin_url: str, name: str) -> str:
    """Database `name` made anew and migrated; its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = url_of(admin_url, name)
    migrate(url)
    return url


def ensure_data(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {DB}")
    dsn = url_of(admin_url, DB)
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM candles WHERE ticker LIKE 'T%'").fetchone()
        if row is None or row[0] != TICKERS * PER_TICKER:
            print(f"loading {TICKERS * PER_TICKER:,} candles ...", file=sys.stderr)
            conn.execute("TRUNCATE candles")
            conn.execute(
                """
                INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)
                SELECT 'T' || lpad(t::text, 3, '0') || '.US', 5,
                       timestamptz '2024-01-01 00:00+00' + i * interval '5 minutes',
                       100 + i %% 97, 101 + i %% 97, 99 + i %% 97, 100.5 + i %% 97, 1000 + i, 0
                FROM generate_series(1, %s) t, generate_series(0, %s - 1) i
                """,
                (TICKERS, PER_TICKER),
            )
            conn.execute("VACUUM ANALYZE candles")
    return dsn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(dsn: str, port: int, **settings: str) -> subprocess.Popen[bytes]:
    """`marketdata serve` on `dsn` (already migrated), once /health answers."""
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "LOG_FORMAT": "json", **settings}
    server = subprocess.Popen(
        [sys.executable, "-m", "marketdata.entrypoints.cli", "serve", "--no-migrate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("server did not start")


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, duration: int) -> dict[str, float]:
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "non2xx": float(non2xx[1]) if non2xx else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def pgbench(dsn: str, sql: str, connections: int, duration: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(sql)
    out = subprocess.run(
        [
            "pgbench",
            "-n",
            "-M",
            "prepared",
            "-f",
            script.name,
            f"-c{connections}",
            f"-j{min(2, connections)}",
            f"-T{duration}",
            dsn,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    return float(re.search(r"tps = ([\d.]+)", out)[1])  # type: ignore[index]


SELECT_COLUMNS = (
    "SELECT ticker, tf_min, ts, open::float8, high::float8, low::float8, close::float8,"
    " volume::float8, coalesce(openint, 0)::int8 FROM candles"
)
# each request, and the statement it makes the database run (pgbench runs it alone)
CASES = {
    "/candles?limit=200": (
        "/candles?ticker=T025.US&limit=200",
        f"{SELECT_COLUMNS} WHERE ticker = 'T025.US' AND tf_min = 5 ORDER BY ts ASC LIMIT 200;\n",
    ),
    "/candles?limit=5000": (
        "/candles?ticker=T025.US&limit=5000",
        f"{SELECT_COLUMNS} WHERE ticker = 'T025.US' AND tf_min = 5 ORDER BY ts ASC LIMIT 5000;\n",
    ),
    "/candles/range (1 week of 5m)": (
        "/candles/range?ticker=T025.US&start=2024-02-01T00:00:00Z&end=2024-02-07T23:55:00Z",
        f"{SELECT_COLUMNS} WHERE ticker = 'T025.US' AND tf_min = 5"
        " AND ts >= '2024-02-01T00:00:00Z' AND ts <= '2024-02-07T23:55:00Z'"
        " ORDER BY ts ASC LIMIT 5001;\n",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--only", help="a substring of the requests to run")
    parser.add_argument("--setting", action="append", default=[], help="KEY=VALUE for serve")
    args = parser.parse_args()
    settings = dict(s.split("=", 1) for s in args.setting)
    dsn = ensure_data(args.admin_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cases = {k: v for k, v in CASES.items() if args.only is None or args.only in k}
    rows = []
    for name, (path, sql) in cases.items():
        # the database alone, at its best client count, then the service, side by side
        best = max((pgbench(dsn, sql, c, args.duration), c) for c in (2, 4, 8, args.connections))
        server = start_server(dsn, port, WORKERS=str(args.workers), **settings)
        try:
            wrk(base + path, args.connections, 2)  # warm-up
            result = wrk(base + path, args.connections, args.duration)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
        rows.append((name, best, result))
        print(f"{name}: pgbench {best}, service {result}", file=sys.stderr)
    print(
        f"WORKERS={args.workers}, {args.connections} connections, {args.duration} s per run"
        f" {settings or ''}"
    )
    print("| request | pgbench tps (clients) | service req/s | ratio | p50 ms | p99 ms | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (tps, clients), r in rows:
        print(
            f"| {name} | {tps:,.0f} ({clients}) | {r['rps']:,.0f} | {r['rps'] / tps:.0%} |"
            f" {r['p50']:.2f} | {r['p99']:.2f} | {r['non2xx']:.0f} |"
        )


if __name__ == "__main__":
    main()
