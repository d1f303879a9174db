"""Replay load benchmark: N concurrent WebSocket sessions at 10 candles/s each.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/replay_bench.py --sessions 100 --seconds 30
    .venv/bin/python bench/replay_bench.py --sessions 1000 --seconds 30

It reuses the `marketdata_bench` database of http_bench.py (created if missing), starts
`marketdata serve` with WS_MIN_STEP_SECONDS=0.1, opens the sessions (step_seconds=0.1,
tickers spread over the 50 in the database), and for every CANDLE records its lateness
against the session's ideal schedule: arrival - (arrival of seq 0 + seq * 0.1 s), measured
in the client. Reports messages/s, lateness p50/p99, the drift of each session's last
candle, refused or dropped sessions, and the server's RSS per session. Measures only.
"""

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, ensure_data, free_port, start_server

STEP = 0.1


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def session(
    url: str, seconds: float, lateness: list[float], drifts: list[float], outcome: dict[str, int]
) -> None:
    try:
        async with connect(url, open_timeout=60, max_queue=None) as ws:
            first: float | None = None
            last = 0.0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic())
                except TimeoutError:
                    break
                now = time.monotonic()
                message = json.loads(raw)
                if message["type"] == "STATUS":
                    if message["message"] == "server_busy":
                        outcome["refused"] += 1
                        return
                    continue
                seq = message["seq"]
                if first is None:
                    first = now
                last = now - (first + seq * STEP)
                lateness.append(last)
                outcome["messages"] += 1
            drifts.append(last)
            outcome["completed"] += 1
    except Exception:  # a benchmark counts failures, it does not stop on them
        outcome["dropped"] += 1


async def run(base: str, sessions: int, seconds: float, server_pid: int) -> dict[str, float]:
    lateness: list[float] = []
    drifts: list[float] = []
    outcome = {"messages": 0, "completed": 0, "refused": 0, "dropped": 0}
    rss_before = rss_kib(server_pid)
    tasks = []
    for i in range(sessions):
        url = f"{base}/ws/replay?ticker=T{i % 50 + 1:03d}.US&step_seconds={STEP}"
        tasks.append(asyncio.create_task(session(url, seconds, lateness, drifts, outcome)))
        if i % 100 == 99:
            await asyncio.sleep(0.2)  # stagger the handshakes
    await asyncio.sleep(seconds / 2)
    rss_during = rss_kib(server_pid)
    started = time.monotonic()
    messages_before = outcome["messages"]
    await asyncio.sleep(min(5.0, seconds / 4))
    rate = (outcome["messages"] - messages_before) / (time.monotonic() - started)
    await asyncio.gather(*tasks)
    lateness.sort()
    return {
        "sessions": sessions,
        "messages/s": rate,
        "lateness p50 ms": statistics.median(lateness) * 1000 if lateness else float("nan"),
        "lateness p99 ms": lateness[int(len(lateness) * 0.99)] * 1000 if lateness else float("nan"),
        "final drift max ms": max(drifts) * 1000 if drifts else float("nan"),
        "final drift median ms": statistics.median(drifts) * 1000 if drifts else float("nan"),
        "completed": outcome["completed"],
        "refused": outcome["refused"],
        "dropped": outcome["dropped"],
        "server RSS before MiB": rss_before / 1024,
        "server RSS during MiB": rss_during / 1024,
        "KiB per session": (rss_during - rss_before) / sessions,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    dsn = ensure_data(args.admin_url)
    port = free_port()
    server = start_server(
        dsn, port, LOG_LEVEL="WARNING", WS_MIN_STEP_SECONDS=str(STEP), WS_MAX_SESSIONS="5000"
    )
    try:
        result = asyncio.run(run(f"ws://127.0.0.1:{port}", args.sessions, args.seconds, server.pid))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    for name, value in result.items():
        print(f"{name}: {value:,.2f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
