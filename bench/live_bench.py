"""Live benchmark: subscribers on two instances, a writer posting candles, latency from the
write to the frame, every candle checked by key and revision, memory per subscriber.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/live_bench.py [--subscribers 1000] [--rate 1000] [--seconds 20]

Creates `marketdata_bench_live` on the local PostgreSQL, starts two `marketdata serve`
processes on it (WORKERS=1 each), opens the subscribers (`WS /ws/live`), half on each
instance, each on one of `tickers` (50); with `--resampled-every N`, every Nth subscriber
watches its ticker's minutes as 5-minute bars in New York's time, labelled by their close
(forming bars: one query per write builds them for every such subscriber of a ticker, and
their last versions are checked against REST afterwards). It then posts `rate` candles a
second, 10 per request
(one candle each for 10 tickers), to the two instances in turn; one write in a hundred
rewrites the candles of a write half a second before with another close (a correction:
revision 1). Each candle's volume is
the writer's clock just before its request is sent: frame arrival minus that includes the
whole write (an upper bound of commit-to-frame); frame arrival minus the arrival of the
write's answer (sent after the commit) is the commit-to-frame latency, a little less.
The load client runs in this process, on the same 2 cores as the servers and PostgreSQL.
Measures only; the database is dropped at the end.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, free_port, fresh_database, start_server
from replay_bench import cpu_seconds, pct, postgres_cpu_seconds, rss_kib, settle
from wsclient import Client

DB = "marketdata_bench_live"
KEY = "bench"
START = datetime(2030, 1, 1, tzinfo=UTC)


class Candle(msgspec.Struct):
    ticker: str
    ts: str
    close: float
    volume: float


class Message(msgspec.Struct):
    type: str
    seq: int | None = None
    message: str | None = None
    error: str | None = None
    candle: Candle | None = None
    revision: int | None = None
    final: bool | None = None


RESAMPLED = "tf_min=5&tz=America/New_York&label=close"


decode = msgspec.json.Decoder(Message).decode


def prepare(admin_url: str) -> str:
    return fresh_database(admin_url, DB)


class Writer:
    """POSTs on kept-alive connections to each instance, several in flight: a write waits
    for nothing but a free connection, as independent producers would."""

    def __init__(self, ports: list[int], per_instance: int = 8) -> None:
        self.ports = ports
        self.per_instance = per_instance
        self.free: list[asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = []
        self.latency: list[float] = []  # of the requests
        self.timeline: list[tuple[float, float]] = []
        self.answered: dict[float, float] = {}  # the candles' volume: when the answer came
        self.tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        for port in self.ports:
            queue: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
                asyncio.Queue()
            )
            for _ in range(self.per_instance):
                queue.put_nowait(await asyncio.open_connection("127.0.0.1", port))
            self.free.append(queue)

    def post(self, which: int, rows: list[dict[str, Any]]) -> None:
        task = asyncio.create_task(self._post(self.free[which % len(self.free)], rows))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post(
        self,
        free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
        rows: list[dict[str, Any]],
    ) -> None:
        reader, writer = await free.get()
        body = json.dumps(rows).encode()
        started = time.time()
        writer.write(
            b"POST /candles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        answer = await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200"), head + answer
        now = time.time()
        self.latency.append(now - started)
        self.answered[rows[0]["volume"]] = now
        self.timeline.append((started, now - started))
        free.put_nowait((reader, writer))

    async def close(self) -> None:
        await asyncio.gather(*self.tasks)
        for queue in self.free:
            while not queue.empty():
                queue.get_nowait()[1].close()


def candle(ticker: str, ts: str, close: float, stamp: float) -> dict[str, Any]:
    return {
        "ticker": ticker,
        "tf_min": 1,
        "ts": ts,
        "open": 100.0,
        "high": max(close, 100.0) + 1,
        "low": 99.0,
        "close": close,
        "volume": stamp,
    }


async def write_for(
    ports: list[int],
    names: list[str],
    rate: int,
    seconds: float,
    minute: int,
    written: dict[str, list[tuple[str, int, float]]],
) -> tuple[Writer, float]:
    """Post `rate` candles a second for `seconds`, from `minute` + 1 on, noting each candle
    in `written` (ticker: ts, revision, close); the writer and the time it took, once
    every answer came."""
    writer = Writer(ports)
    await writer.open()
    per_request = 10
    requests = int(rate * seconds / per_request)
    fresh = 0  # requests of new candles so far
    started = time.monotonic()
    for r in range(requests):
        due = started + r * per_request / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        rows = []
        if r % 100 == 99:  # a correction of the candles written half a second before
            earlier = ((r - rate // per_request // 2) * per_request) % len(names)
            for ticker in names[earlier : earlier + per_request]:
                ts, _, close = written[ticker][-1]
                revision = sum(1 for w in written[ticker] if w[0] == ts)
                rows.append((ticker, ts, close + 0.5))
                written[ticker].append((ts, revision, close + 0.5))
        else:  # the next tickers in turn (a correction takes no one's turn)
            offset = (fresh * per_request) % len(names)
            fresh += 1
            if offset == 0:
                minute += 1
            for ticker in names[offset : offset + per_request]:
                ts = (START + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
                rows.append((ticker, ts, 100.0))
                written[ticker].append((ts, 0, 100.0))
        stamp = time.time()
        writer.post(r, [candle(t, ts, close, stamp) for t, ts, close in rows])
    elapsed = time.monotonic() - started
    await writer.close()
    return writer, elapsed


def rest_bars(port: int, ticker: str) -> dict[str, float]:
    """The 5-minute bars REST answers for a ticker since START (close by label)."""
    query = f"/candles/range?ticker={ticker}&{RESAMPLED}&start=2030-01-01T00:00:00Z"
    query += "&end=2031-01-01T00:00:00Z"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{query}", timeout=10) as r:
        return {c["ts"]: c["close"] for c in json.loads(r.read())["data"]}


async def run(
    ports: list[int],
    tickers: int,
    subscribers: int,
    rate: int,
    seconds: float,
    rss: Any,
    cpu: Any,
    resampled_every: int = 0,
) -> dict[str, Any]:
    names = [f"L{i:04d}" for i in range(tickers)]
    received: dict[int, list[tuple[str, int, float]]] = defaultdict(list)
    bars: dict[int, dict[str, float]] = defaultdict(dict)  # resampled: last close by bar
    resampled = {i for i in range(subscribers) if resampled_every and i % resampled_every == 0}
    arrivals: list[tuple[float, float]] = []  # (when, the candle's volume)
    refused: list[str] = []
    clients = []
    # every ticker's series exists, and the servers have written for a while, before the
    # subscribers come (minutes before the first measured): what is measured is live data
    # on known series, on warm servers
    await write_for(ports, names, rate, 2.0, -100_000, defaultdict(list))
    before = rss()
    for i in range(subscribers):
        ticker = names[i % len(names)]

        def on_text(payload: bytes, _: float, i: int = i) -> None:
            now = time.time()
            m = decode(payload)
            if m.type == "CANDLE" and m.candle is not None:
                if i in resampled:
                    bars[i][m.candle.ts] = m.candle.close
                else:
                    received[i].append((m.candle.ts, m.revision or 0, m.candle.close))
                    arrivals.append((now, m.candle.volume))
            elif m.type == "STATUS" and m.message == "error":
                refused.append(m.error or "")

        port = ports[i % len(ports)]
        query = RESAMPLED if i in resampled else "tf_min=1"
        clients.append(
            await Client.connect(
                f"ws://127.0.0.1:{port}/ws/live?ticker={ticker}&{query}", on_text, lambda _: None
            )
        )
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.sleep(2)  # every subscription in place
    connected = rss()
    written: dict[str, list[tuple[str, int, float]]] = defaultdict(list)
    cpu_before = cpu()
    writer, elapsed = await write_for(ports, names, rate, seconds, 0, written)
    used = [(b - a) / elapsed for a, b in zip(cpu_before, cpu(), strict=True)]
    await asyncio.sleep(2)  # the last frames
    # Each write commits on its own: two in flight may commit in either order, a correction
    # then takes the revision its commit gives it. A revision overwritten before the
    # listeners read it back is sent at its newer revision only (superseded). Checked:
    # every candle written arrives, ends at its last revision, never goes back to an older
    # one, and no (ts, revision) comes twice.
    lost = repeated = wrong = superseded = 0
    for i in range(subscribers):
        if i in resampled:
            continue
        book = written[names[i % len(names)]]
        last: dict[str, int] = {}
        for ts, _, _ in book:
            last[ts] = last.get(ts, -1) + 1
        got = [(ts, rev) for ts, rev, _ in received[i]]
        seen: dict[str, int] = {}
        backwards = False
        for ts, rev in got:
            backwards |= rev <= seen.get(ts, -1)
            seen[ts] = rev
        missing = len(last.keys() - seen.keys()) + sum(
            1 for ts, rev in last.items() if ts in seen and seen[ts] != rev
        )
        if missing or backwards or len(got) != len(set(got)):
            wrong += 1
            lost += missing
            repeated += len(got) - len(set(got))
        superseded += len(book) - len(got)
    # the resampled: each bar's last version (by its close time) as REST builds it
    truth = {t: rest_bars(ports[0], t) for t in {names[i % len(names)] for i in resampled}}
    checked = sum(len(truth[names[i % len(names)]]) for i in resampled)
    bars_wrong = sum(
        1
        for i in resampled
        for ts, close in truth[names[i % len(names)]].items()
        if bars[i].get(ts) != close
    )
    for client in clients:
        client.close()
    ms = sorted((now - stamp) * 1000 for now, stamp in arrivals)
    after = sorted((now - writer.answered[stamp]) * 1000 for now, stamp in arrivals)
    request_ms = sorted(x * 1000 for x in writer.latency)
    return {
        "written candles/s": sum(len(w) for w in written.values()) / elapsed,
        "frames": len(arrivals),
        "write-to-frame ms p50 / p99 / max, from the request sent (includes the write)": (
            f"{pct(ms, 0.5):.1f} / {pct(ms, 0.99):.1f} / {ms[-1]:.1f}"
        ),
        "commit-to-frame ms p50 / p99 / max, from the answer received (negative: before)": (
            f"{pct(after, 0.5):.1f} / {pct(after, 0.99):.1f} / {after[-1]:.1f}"
        ),
        "write request latency p50 / p99 ms": (
            f"{pct(request_ms, 0.5):.1f} / {pct(request_ms, 0.99):.1f}"
        ),
        "subscribers with a wrong stream (lost / repeated candles)": (
            f"{wrong} ({lost} / {repeated})"
        ),
        "revisions superseded before they were read back": superseded,
        "subscribers cut": len(refused),
        "resampled subscribers; bars whose last version differs from REST": (
            f"{len(resampled)}; {bars_wrong} of {checked}"
        ),
        "server RSS per subscriber KiB": (connected - before) / subscribers,
        "CPU cores busy while writing: servers / PostgreSQL / this client": (
            " / ".join(f"{u:.2f}" for u in used)
        ),
    }


def main() -> None:
    uvloop.install()
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--tickers", type=int, default=50, help="a multiple of 10")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--resampled-every", type=int, default=0)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    url = prepare(args.admin_url)
    ports = [free_port(), free_port()]
    servers = [
        start_server(url, port, LOG_LEVEL="WARNING", API_KEYS=KEY, WS_MAX_SESSIONS="5000")
        for port in ports
    ]
    try:
        time.sleep(1)
        result = asyncio.run(
            run(
                ports,
                args.tickers,
                args.subscribers,
                args.rate,
                args.seconds,
                lambda: sum(rss_kib(s.pid) for s in servers),
                lambda: (
                    sum(cpu_seconds(s.pid) for s in servers),
                    postgres_cpu_seconds(),
                    time.process_time(),
                ),
                args.resampled_every,
            )
        )
        for name, value in result.items():
            print(f"{name}: {value:,.2f}" if isinstance(value, float) else f"{name}: {value}")
        for port in ports:
            print(f"instance {port}: {settle(port, 1)}")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            subs = [
                line
                for line in text.splitlines()
                if line.startswith("marketdata_live_subscribers ")
            ]
            print(f"instance {port}: {subs[0] if subs else 'no metric'} after the clients left")
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    main()
