"""Replay benchmarks against a real `marketdata serve` on the `marketdata_bench` data.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/replay_bench.py paced --sessions 1000 --seconds 30 [--workers 2]
    .venv/bin/python bench/replay_bench.py burst --sessions 1000
    .venv/bin/python bench/replay_bench.py long
    .venv/bin/python bench/replay_bench.py maxspeed [--batch 100]

- paced: N sessions at 10 candles/s (step_seconds=0.1), for S seconds. Each CANDLE's
  lateness is arrival - (arrival of its session's first candle + seq x 0.1 s), measured in
  the client; also the final drift, and the server's RSS per session.
- burst: N replays opened at once; the time from each handshake to its first candle (and
  from the connection's start), then every client leaves.
- long: one replay of a 120,000-candle series, handshake to first candle, 20 times.
- maxspeed: step 0 (WS_MIN_STEP_SECONDS=0) as fast as the client reads, one client and
  10 at once, then lockstep with an immediate ack, each beside the NDJSON export of the
  same rows; with --batch N also the CANDLES frames of batch=N.

The load client (bench/wsclient.py) runs on the same 2 cores as the server and PostgreSQL;
it parses each message with msgspec. After every run the server's pool must be back to
idle: its metrics are printed (time to idle, in use, waiting, reclaimed). Measures only.
"""

import argparse
import asyncio
import os
import re
import resource
import signal
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, ensure_data, free_port, start_server
from wsclient import Client, decode

STEP = 0.1
LONG = "L120K.US"
LONG_COUNT = 120_000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_tree_kib(pid: int) -> int:
    """RSS of the server and its worker processes (WORKERS > 1)."""
    total = rss_kib(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += rss_kib(int(child))
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its worker processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL process on this machine (the server the bench uses)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, fields = stat.split("(", 1)[1].rsplit(")", 1)
        if name.startswith("postgres"):
            parts = fields.split()
            total += (int(parts[11]) + int(parts[12])) / tick
    return total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def pool_metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = re.findall(r"^marketdata_(db_pool_\w+|replay_sessions) (\S+)$", text, re.M)
    return {name: float(value) for name, value in found}


def settle(port: int, workers: int) -> str:
    """Poll the pool's metrics until nothing is lent out, nobody waits and no replay runs;
    with several workers each answers in turn, so several samples must agree."""
    started = time.monotonic()
    quiet = 0
    while time.monotonic() - started < 10:
        m = pool_metrics(port)
        idle = (m["db_pool_in_use"], m["db_pool_waiting"], m["replay_sessions"]) == (0, 0, 0)
        quiet = quiet + 1 if idle else 0
        if quiet >= 2 * workers:
            break
        time.sleep(0.05)
    return (
        f"pool after the run: idle {time.monotonic() - started:.2f} s after the clients left;"
        f" in use {m['db_pool_in_use']:g}, waiting {m['db_pool_waiting']:g},"
        f" sessions {m['replay_sessions']:g}, reclaimed {m['db_pool_reclaimed_total']:g}"
    )


def ensure_long(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count FROM candle_series WHERE ticker = %s AND tf_min = 5", (LONG,)
        ).fetchone()
        if row and row[0] == LONG_COUNT:
            return
        conn.execute("DELETE FROM candles WHERE ticker = %s", (LONG,))
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT %s, 5, timestamptz '2020-01-01 00:00+00' + i * interval '5 minutes',"
            " 100, 101, 99, 100.5, i FROM generate_series(0, %s - 1) i",
            (LONG, LONG_COUNT),
        )


async def paced(base: str, sessions: int, seconds: float, rss: Any) -> dict[str, Any]:
    lateness: list[tuple[float, float]] = []  # (arrival, lateness)
    drifts: list[float] = []
    firsts: list[float] = []
    first_arrivals: list[float] = []
    counts = {"messages": 0, "refused": 0, "dropped": 0}

    async def one(i: int) -> None:
        first: list[float] = []
        last = [0.0]
        opened = [0.0]

        def on_text(payload: bytes, now: float) -> None:
            m = decode(payload)
            if m.type == "STATUS":
                if m.message == "server_busy":
                    counts["refused"] += 1
                return
            if not first:
                first.append(now)
                firsts.append(now - opened[0])
                first_arrivals.append(now)
            assert m.seq is not None
            last[0] = now - (first[0] + m.seq * STEP)
            lateness.append((now, last[0]))
            counts["messages"] += 1

        url = f"{base}/ws/replay?ticker=T{i % 50 + 1:03d}.US&step_seconds={STEP}"
        try:
            client = await Client.connect(url, on_text, lambda now: opened.__setitem__(0, now))
            await asyncio.sleep(seconds)
            drifts.append(last[0])
            client.close()
            await asyncio.wait_for(client.wait_closed(), 10)
        except Exception:
            counts["dropped"] += 1

    tasks = []
    for i in range(sessions):
        tasks.append(asyncio.create_task(one(i)))
        if i % 100 == 99:
            await asyncio.sleep(0.1)  # handshakes in waves of 100
    rss_before = rss()
    await asyncio.sleep(seconds / 2)
    rss_during = rss()
    started, before = time.monotonic(), counts["messages"]
    await asyncio.sleep(min(5.0, seconds / 4))
    rate = (counts["messages"] - before) / (time.monotonic() - started)
    await asyncio.gather(*tasks)
    # once every session plays (1 s after the last first candle): the steady state
    steady_from = max(first_arrivals, default=0.0) + 1.0
    every = [late for _, late in lateness]
    steady = [late for at, late in lateness if at >= steady_from]
    return {
        "messages/s": rate,
        "lateness p50 / p99 / max ms, all candles": (
            f"{pct(every, 0.5) * 1000:.2f} / {pct(every, 0.99) * 1000:.2f}"
            f" / {max(every, default=float('nan')) * 1000:.2f}"
        ),
        "lateness p50 / p99 / max ms, steady state": (
            f"{pct(steady, 0.5) * 1000:.2f} / {pct(steady, 0.99) * 1000:.2f}"
            f" / {max(steady, default=float('nan')) * 1000:.2f} ({len(steady):,} candles)"
        ),
        "final drift median / max ms": (
            f"{statistics.median(drifts) * 1000:.2f} / {max(drifts) * 1000:.2f}"
            if drifts
            else "n/a"
        ),
        "first candle after handshake p50 / p99 ms": (
            f"{pct(firsts, 0.5) * 1000:.1f} / {pct(firsts, 0.99) * 1000:.1f}"
        ),
        **counts,
        "server RSS per session KiB": (rss_during - rss_before) / sessions,
    }


async def burst(base: str, sessions: int, ticker_of: Any) -> dict[str, Any]:
    after_handshake: list[float] = []
    after_connect: list[float] = []
    failed: list[str] = []

    async def one(i: int) -> None:
        got = asyncio.get_running_loop().create_future()

        def on_text(payload: bytes, now: float) -> None:
            m = decode(payload)
            if got.done():
                return
            if m.type in ("CANDLE", "CANDLES"):
                got.set_result(now)
            elif m.message not in ("replay_starting",):
                got.set_exception(RuntimeError(m.error or m.message))

        started = time.monotonic()
        opened = [0.0]
        try:
            client = await Client.connect(
                f"{base}/ws/replay?ticker={ticker_of(i)}",
                on_text,
                lambda now: opened.__setitem__(0, now),
            )
            arrived = await asyncio.wait_for(got, 60)
            after_handshake.append(arrived - opened[0])
            after_connect.append(arrived - started)
            client.close()
            await asyncio.wait_for(client.wait_closed(), 10)
        except Exception as error:
            failed.append(repr(error)[:100])

    await asyncio.gather(*(one(i) for i in range(sessions)))
    return {
        "sessions": sessions,
        "first candle after handshake p50 / p99 / max ms": (
            f"{pct(after_handshake, 0.5) * 1000:.1f} / {pct(after_handshake, 0.99) * 1000:.1f}"
            f" / {max(after_handshake, default=0) * 1000:.1f}"
        ),
        "first candle after connect start p50 / p99 ms": (
            f"{pct(after_connect, 0.5) * 1000:.1f} / {pct(after_connect, 0.99) * 1000:.1f}"
        ),
        "failed": len(failed),
        "failures": sorted(set(failed))[:3],
    }


async def drain(url: str, ack: bool = False) -> tuple[int, float]:
    """Candles received until replay_complete, and the seconds it took."""
    done = asyncio.get_running_loop().create_future()
    received = [0]
    client: list[Client] = []

    def on_text(payload: bytes, now: float) -> None:
        m = decode(payload)
        if m.type == "CANDLE":
            received[0] += 1
            if ack:
                client[0].send_text('{"action":"ack"}')
        elif m.type == "CANDLES":
            received[0] += len(m.candles or ())
            if ack:
                client[0].send_text('{"action":"ack"}')
        elif m.message == "replay_complete" and not done.done():
            done.set_result(now)

    started = time.monotonic()
    client.append(await Client.connect(url, on_text))
    closed = asyncio.ensure_future(client[0].wait_closed())
    await asyncio.wait([done, closed], return_when=asyncio.FIRST_COMPLETED)
    if not done.done():
        raise RuntimeError(f"closed with {closed.result()} before replay_complete")
    finished = done.result()
    await closed
    return received[0], finished - started


def export_rate(port: int, ticker: str) -> tuple[int, float]:
    started = time.monotonic()
    rows = 0
    url = f"http://127.0.0.1:{port}/candles?ticker={ticker}&format=ndjson"
    with urllib.request.urlopen(url, timeout=600) as response:
        while chunk := response.read(1 << 16):
            rows += chunk.count(b"\n")
    return rows, time.monotonic() - started


async def maxspeed(base: str, port: int, batch: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows, secs = await asyncio.to_thread(export_rate, port, LONG)
    out["NDJSON export, 1 client, rows/s"] = rows / secs
    print(f"NDJSON export, 1 client, rows/s: {rows / secs:,.0f}", flush=True)
    variants = [
        ("step 0", "step_seconds=0", False),
        ("lockstep, ack at once", "mode=lockstep&step_seconds=0", True),
    ]
    if batch:
        variants += [
            (f"step 0, batch={batch}", f"step_seconds=0&batch={batch}", False),
            (f"lockstep, batch={batch}", f"mode=lockstep&step_seconds=0&batch={batch}", True),
        ]
    for name, query, ack in variants:
        n, secs = await drain(f"{base}/ws/replay?ticker={LONG}&{query}", ack)
        out[f"{name}, 1 client, candles/s"] = n / secs
        print(f"{name}, 1 client, candles/s: {n / secs:,.0f} ({n:,} in {secs:.1f} s)", flush=True)
        started = time.monotonic()
        results = await asyncio.gather(
            *(drain(f"{base}/ws/replay?ticker={LONG}&{query}", ack) for _ in range(10))
        )
        total = sum(n for n, _ in results)
        out[f"{name}, 10 clients, candles/s (all)"] = total / (time.monotonic() - started)
    rows, secs = await asyncio.to_thread(export_rate, port, LONG)
    out["NDJSON export again, rows/s"] = rows / secs
    return out


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    uvloop.install()  # the load client on the server's event loop too: less of its CPU
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["paced", "burst", "long", "maxspeed"])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument(
        "--rounds", type=int, default=1, help="paced: run it again on the same server"
    )
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    dsn = ensure_data(args.admin_url)
    ensure_long(dsn)
    port = free_port()
    settings = {
        "LOG_LEVEL": "WARNING",
        "WS_MIN_STEP_SECONDS": "0" if args.what == "maxspeed" else str(STEP),
        "WS_MAX_SESSIONS": "5000",
        "WORKERS": str(args.workers),
    }
    server = start_server(dsn, port, **settings)
    base = f"ws://127.0.0.1:{port}"
    try:
        time.sleep(1)
        rss_before = rss_tree_kib(server.pid)
        cpu_before = (cpu_seconds(server.pid), postgres_cpu_seconds(), _own_cpu())
        wall_before = time.monotonic()
        if args.what == "paced":
            for round_ in range(1, args.rounds):
                asyncio.run(
                    paced(base, args.sessions, args.seconds, lambda: rss_tree_kib(server.pid))
                )
                print(settle(port, args.workers))
                rss = rss_tree_kib(server.pid) / 1024
                print(f"server RSS after round {round_}: {rss:.1f} MiB")
            run = asyncio.run(
                paced(base, args.sessions, args.seconds, lambda: rss_tree_kib(server.pid))
            )
        elif args.what == "burst":
            run = asyncio.run(burst(base, args.sessions, lambda i: f"T{i % 50 + 1:03d}.US"))
        elif args.what == "long":
            times = []
            for _ in range(20):
                result = asyncio.run(burst(base, 1, lambda i: LONG))
                times.append(result["first candle after handshake p50 / p99 / max ms"])
            run = {"first candle after handshake, 20 runs (ms)": [t.split(" / ")[0] for t in times]}
        else:
            run = asyncio.run(maxspeed(base, port, args.batch))
        wall = time.monotonic() - wall_before
        server_cpu, pg_cpu, client_cpu = (
            after - before
            for after, before in zip(
                (cpu_seconds(server.pid), postgres_cpu_seconds(), _own_cpu()),
                cpu_before,
                strict=True,
            )
        )
        run["CPU, cores busy over the run: server / PostgreSQL / load client"] = (
            f"{server_cpu / wall:.2f} / {pg_cpu / wall:.2f} / {client_cpu / wall:.2f}"
            f" ({wall:.1f} s)"
        )
        for name, value in run.items():
            print(f"{name}: {value:,.2f}" if isinstance(value, float) else f"{name}: {value}")
        print(settle(port, args.workers))
        rss_after = rss_tree_kib(server.pid) / 1024
        print(f"server RSS: {rss_before / 1024:.1f} MiB before the run, {rss_after:.1f} after")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
