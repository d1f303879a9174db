"""Soak: mixed REST load plus 200 replays that restart as they finish, for N minutes.

Usage (from the repository root; uses the `marketdata_bench` data of http_bench.py):

    .venv/bin/python bench/soak_bench.py --minutes 10

Reports per minute: requests, errors by status, p99 latency; server RSS after a 30 s
warm-up and at the end. Load goes to 127.0.0.1 only and stops by itself. Measures only.
"""

import argparse
import asyncio
import collections
import statistics
import sys
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, ensure_data, free_port, start_server
from replay_bench import rss_kib

URLS = [
    "/candles?ticker=T{n:03d}.US&limit=200",
    "/candles/range?ticker=T{n:03d}.US&start=2024-02-01T00:00:00Z&end=2024-02-07T23:55:00Z",
    "/symbols?prefix=T0",
    "/symbols/T{n:03d}.US",
    "/candles?ticker=T{n:03d}.US&tf_min=60&limit=100",
    "/health/ready",
]


async def rest_worker(base: str, until: float, log: list[tuple[float, float, int]], i: int) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        n = i
        while time.monotonic() < until:
            n += 1
            path = URLS[n % len(URLS)].format(n=n % 50 + 1)
            started = time.monotonic()
            try:
                status = (await client.get(base + path)).status_code
            except httpx.HTTPError:
                status = 0
            log.append((started, time.monotonic() - started, status))


async def replayer(ws_base: str, until: float, counts: collections.Counter[str], i: int) -> None:
    while time.monotonic() < until:
        uri = (
            f"{ws_base}/ws/replay?ticker=T{i % 50 + 1:03d}.US&step_seconds=0.1"
            f"&start=2024-03-01T00:00:00Z&end=2024-03-01T{1 + i % 10:02d}:00:00Z"
        )
        try:
            async with connect(uri, open_timeout=30) as ws:
                async for raw in ws:
                    if '"replay_complete"' in str(raw):
                        counts["completed"] += 1
                    if time.monotonic() >= until:
                        break
        except Exception as error:  # counted, not fatal
            counts[type(error).__name__] += 1


async def soak(port: int, minutes: float, pid: int) -> None:
    base = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    until = start + minutes * 60
    log: list[tuple[float, float, int]] = []
    counts: collections.Counter[str] = collections.Counter()
    tasks = [asyncio.create_task(rest_worker(base, until, log, i)) for i in range(8)]
    tasks += [
        asyncio.create_task(replayer(f"ws://127.0.0.1:{port}", until, counts, i))
        for i in range(200)
    ]
    await asyncio.sleep(30)
    rss_start = rss_kib(pid)
    await asyncio.gather(*tasks)
    rss_end = rss_kib(pid)
    print("| minute | requests | non-200 by status | p99 ms |")
    print("|---:|---:|---|---:|")
    for minute in range(int(minutes)):
        window = [(d, s) for t, d, s in log if start + 60 * minute <= t < start + 60 * (minute + 1)]
        if not window:
            continue
        bad = collections.Counter(s for _, s in window if s != 200)
        p99 = sorted(d for d, _ in window)[int(len(window) * 0.99)] * 1000
        print(f"| {minute + 1} | {len(window):,} | {dict(bad) or '-'} | {p99:.0f} |")
    statuses = collections.Counter(s for _, _, s in log)
    print(f"\nrequests: {len(log):,}; by status: {dict(statuses)}")
    print(
        f"replays completed: {counts['completed']:,}; other outcomes: "
        f"{ {k: v for k, v in counts.items() if k != 'completed'} or '-' }"
    )
    print(f"median latency {statistics.median(d for _, d, _ in log) * 1000:.1f} ms")
    print(
        f"server RSS after 30 s warm-up {rss_start / 1024:.0f} MiB, at the end "
        f"{rss_end / 1024:.0f} MiB ({(rss_end - rss_start) / rss_start:+.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    dsn = ensure_data(args.admin_url)
    port = free_port()
    server = start_server(dsn, port, LOG_LEVEL="WARNING", WS_MIN_STEP_SECONDS="0.1")
    try:
        asyncio.run(soak(port, args.minutes, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
