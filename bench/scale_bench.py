"""Scale benchmark: the same operations on tables of N five-minute candles (issue 28, item 5,
"costs flat in data size"), the sizes side by side, and a Markdown table of them.

Usage (from the repository root, with the project installed in .venv and PostgreSQL on
127.0.0.1:5432, user postgres):

    .venv/bin/python bench/scale_bench.py --sizes 1M,10M,100M [--tickers 2000] [--keep]
    .venv/bin/python bench/scale_bench.py --sizes 1M --merge   # replaces 1M in --out only

1. For each size N, one after the other: database `marketdata_scale_<N>` made anew,
   `marketdata migrate` (timed), then N candles of `--tickers` tickers (N / tickers
   consecutive five-minute bars each, from 2020-01-01) loaded the way another program would:
   plain SQL `INSERT ... SELECT ... FROM generate_series(...)`, one statement (and
   transaction) per group of `--group-tickers` tickers (20) and window of `--window-bars`
   bars (12,500), window after window, so that the statement-level triggers (series catalog,
   rollups, change feed) run as for any writer; each statement's rate is printed. Then
   `VACUUM (ANALYZE)`, the sizes of the tables and indexes, a second `migrate` (nothing to
   apply) and EXPLAIN (ANALYZE, BUFFERS) of a stored and a rollup read, cold and warm.
2. Every size at once, side by side (each batch, request or replay asked of every size in a
   random order before the next, so that the machine's noise falls on all of them alike):
   - COPY FROM STDIN through psycopg of fixed batches, each after the stored candles of its
     tickers, `--rounds` of each shape: 100,000 candles of 20 tickers (5,000 bars each, a
     file per ticker), 100,000 of every ticker (50 bars each), one bar of every ticker (a
     feed's time step);
   - one `marketdata serve` per size (WORKERS=1, RESPONSE_CACHE_MB=0: every answer read,
     WS_MIN_STEP_SECONDS=0): GET /candles of random tickers, stored (limit=200, oldest and
     newest), resampled (tf_min=10, not a rollup) and rollup-served (tf_min=60); POST /candles
     of one candle (a kept-alive connection); replay's first candle (`/ws/replay?...
     &step_seconds=0`, stored, rollup-served and resampled, from the TCP connect); live
     commit-to-frame (a `/ws/live` subscriber of 20 tickers; one-row plain SQL INSERTs by
     another connection, from the commit's return to the frame's arrival); then each pool
     idle (`/metrics`).
3. For each size: the commands that read the whole table, on a terminal (a pty) so that
   their progress bars show: `ROLLUP_TF_MINS=off marketdata rollups` (drop), `marketdata
   rollups` (build again: the rebuild) and `marketdata check`, each's wall time and the
   longest silence in its output; then every candle accounted for (count(*) and the
   catalog's sum against what was written).

Each step's wall-clock time and the load average are noted (the machine is shared). The
table is printed and written to `--out` (default /tmp/scale_results.md) with the command and
notes; `--merge` keeps the sizes of an earlier run of that file that this run does not
measure (measured apart, not side by side). The databases are dropped at the end unless
`--keep`. Measures only: nothing is asserted.
"""

import argparse
import asyncio
import http.client
import json
import os
import pty
import random
import re
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, free_port, start_server, url_of
from post_bench import KEY, post
from replay_bench import pct, settle
from wsclient import Client, decode

CLI = [sys.executable, "-m", "marketdata.entrypoints.cli"]
START = datetime(2020, 1, 1, tzinfo=UTC)
BAR = timedelta(minutes=5)
COLUMNS = "ticker, tf_min, ts, open, high, low, close, volume, openint"
DATA_BEGIN, DATA_END = "<!-- scale-bench-data", "scale-bench-data -->"

# One candle's values, the same in SQL (the load) and in Python (COPY, POST, live): a
# price that wanders per ticker, high and low around open and close.
_LOAD = f"""
INSERT INTO candles ({COLUMNS})
SELECT 'S' || lpad(t::text, 4, '0'), 5, %(start)s::timestamptz + i * interval '5 minutes',
       p.o, greatest(p.o, p.c) + 0.05, least(p.o, p.c) - 0.05, p.c, 1000 + i %% 500, 0
FROM generate_series(%(t0)s::int, %(t1)s::int - 1) t
CROSS JOIN LATERAL generate_series(%(i0)s::int, %(i1)s::int - 1) i
CROSS JOIN LATERAL (SELECT 100 + t %% 100 + (i * 7919 %% 200) * 0.01 AS o,
                           100 + t %% 100 + ((i + 1) * 7919 %% 200) * 0.01 AS c) p
"""


def name(t: int) -> str:
    return f"S{t:04d}"


def values(t: int, i: int) -> tuple[float, float, float, float, float]:
    o = 100 + t % 100 + (i * 7919 % 200) * 0.01
    c = 100 + t % 100 + ((i + 1) * 7919 % 200) * 0.01
    return o, max(o, c) + 0.05, min(o, c) - 0.05, c, float(1000 + i % 500)


def stamp(i: int) -> datetime:
    return START + i * BAR


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def size_of(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (1M, 500k, 2000000)")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match[2].lower()]
    return int(float(match[1]) * scale)


def label_of(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1_000}k" if n % 1_000 == 0 else str(n)


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def ms(values: list[float]) -> str:
    """p50 / p99 of seconds, in ms."""
    return f"{pct(values, 0.5) * 1000:.2f} / {pct(values, 0.99) * 1000:.2f}"


class Run:
    """What one size measured: the table's cells, the notes, and when each thing ran."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.cells: dict[str, str] = {}
        self.notes: list[str] = []
        self.timeline: list[str] = []

    def mark(self, what: str) -> None:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        line = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, load {load}: {what}"
        self.timeline.append(line)
        print(f"[{label_of(self.n)}] {line}", file=sys.stderr, flush=True)

    def cell(self, row: str, value: str) -> None:
        self.cells[row] = value
        print(f"[{label_of(self.n)}]   {row}: {value}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"[{label_of(self.n)}]   note: {text}", file=sys.stderr, flush=True)


# -- commands, on a terminal so that their progress bars show --

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_BAR = re.compile(r"[━╸╺╾╼]|\d+/\d+ +\d+:\d\d:\d\d")


def on_terminal(command: list[str], env: dict[str, str]) -> tuple[int, float, float, str]:
    """Run `command` on a pty: (exit status, wall seconds, longest silence in its output in
    seconds, its output without terminal control sequences, progress redraws left out)."""
    master, slave = pty.openpty()
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        env={**env, "COLUMNS": "120", "TERM": "xterm"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    last = started
    silence = 0.0
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        now = time.perf_counter()
        silence = max(silence, now - last)
        last = now
        chunks.append(data)
    status = process.wait()
    elapsed = time.perf_counter() - started
    silence = max(silence, elapsed - (last - started) if chunks else elapsed)
    os.close(master)
    text = _ANSI.sub(b"", b"".join(chunks)).decode(errors="replace").replace("\r", "\n")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # a progress bar redraws its line: keep its last state only
    kept = [line for line in lines if not _BAR.search(line)]
    bars = [line for line in lines if _BAR.search(line)]
    if bars:
        kept.append(f"(progress bar, {len(bars)} redraws; last: {bars[-1]})")
    return status, elapsed, silence, "\n".join(kept)


# -- the load --


def load(url: str, n: int, tickers: int, group: int, window: int, run: Run) -> list[int]:
    """N candles by plain SQL, a statement per group of tickers and window of bars; the next
    bar of each ticker."""
    bars = n // tickers
    statements = [
        (i0, min(bars, i0 + window), t0, min(tickers, t0 + group))
        for i0 in range(0, bars, window)
        for t0 in range(0, tickers, group)
    ]
    done = 0
    rates: list[tuple[int, str, float]] = []  # (rows before, new or append, rows/s)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for k, (i0, i1, t0, t1) in enumerate(statements, 1):
            rows = (i1 - i0) * (t1 - t0)
            began = time.perf_counter()
            conn.execute(_LOAD, {"start": START, "t0": t0, "t1": t1, "i0": i0, "i1": i1})
            took = time.perf_counter() - began
            rates.append((done, "new series" if i0 == 0 else "append", rows / took))
            done += rows
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (n - done) if done else 0.0
            print(
                f"[{label_of(n)}] load {k}/{len(statements)}: {done:,} rows"
                f" ({done / n:.0%}), this statement {rows:,} rows in {took:.2f} s"
                f" ({rows / took:,.0f} rows/s), overall {done / elapsed:,.0f} rows/s,"
                f" ETA {eta / 60:.1f} min",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - started
    run.cell("load: time (plain SQL INSERT ... SELECT)", f"{elapsed:,.1f} s")
    run.cell("load: rows/s overall", f"{n / elapsed:,.0f}")
    new = [r for _, kind, r in rates if kind == "new series"]
    appends = [(before, r) for before, kind, r in rates if kind == "append"]
    run.cell(
        "load: statements, rows each",
        f"{len(statements)} x {window * group if bars >= window else bars * group:,}",
    )
    run.cell(
        "load: rows/s of statements making new series (median)", f"{statistics.median(new):,.0f}"
    )
    if len(appends) >= 2:
        tenth = max(1, len(appends) // 10)
        first = statistics.median(r for _, r in appends[:tenth])
        last = statistics.median(r for _, r in appends[-tenth:])
        run.cell(
            "load: rows/s of appending statements, first / last tenth (median)",
            f"{first:,.0f} at {appends[0][0] / 1e6:,.1f}M / {last:,.0f} at"
            f" {appends[-tenth][0] / 1e6:,.1f}M+ ({last / first:.0%})",
        )
    return [bars] * tickers


# -- writes of fixed shape: COPY of candles after those stored --


class Target:
    """One size's database, what was written to it, and its server while one runs."""

    def __init__(self, n: int, admin_url: str, tickers: int) -> None:
        self.run = Run(n)
        self.database = f"marketdata_scale_{label_of(n).lower()}"
        self.url = url_of(admin_url, self.database)
        self.env = {**os.environ, "DATABASE_URL": self.url, "LOG_LEVEL": "WARNING"}
        self.next_bar = [0] * tickers
        self.written = 0
        self.server: subprocess.Popen[bytes] | None = None
        self.port = 0

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=30)
            self.server = None


def marked(targets: list[Target], what: str) -> None:
    for target in targets:
        target.run.mark(what)


def shuffled(targets: list[Target], rng: random.Random) -> list[Target]:
    """The sizes in a random order: each round of a side-by-side comparison."""
    return rng.sample(targets, len(targets))


# -- writes of fixed shape: COPY of candles after those stored --


def copy_batch(url: str, which: list[int], per: int, next_bar: list[int]) -> tuple[int, float]:
    """COPY `per` bars of each ticker of `which`, each after its stored candles, in one
    statement; (rows, seconds of the COPY and its commit). The data is made before the clock
    starts."""
    lines = []
    for t in which:
        for i in range(next_bar[t], next_bar[t] + per):
            o, h, low, c, v = values(t, i)
            lines.append(f"{name(t)}\t5\t{iso(stamp(i))}\t{o}\t{h}\t{low}\t{c}\t{v}\t0\n")
        next_bar[t] += per
    data = "".join(lines).encode()
    with psycopg.connect(url) as conn:
        began = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(f"COPY candles ({COLUMNS}) FROM STDIN") as copy:
            copy.write(data)
        conn.commit()
        took = time.perf_counter() - began
    return len(lines), took


def ingest(targets: list[Target], tickers: int, rounds: int) -> None:
    """The fixed batches, `rounds` of each shape, the sizes side by side batch by batch."""
    rng = random.Random(0)
    shapes = {
        "narrow": (20, 5_000),
        "wide": (tickers, 100_000 // tickers),
        "step": (tickers, 1),
    }
    took: dict[tuple[int, str], list[float]] = {}
    for r in range(rounds):
        for shape, (count, per) in shapes.items():
            which = [(count * r + k) % tickers for k in range(count)]
            for target in shuffled(targets, rng):
                rows, seconds = copy_batch(target.url, which, per, target.next_bar)
                target.written += rows
                took.setdefault((target.run.n, shape), []).append(seconds)
                print(
                    f"[{label_of(target.run.n)}]   COPY {shape}: {rows:,} rows in {seconds:.2f} s,"
                    f" {rows / seconds:,.0f} rows/s",
                    file=sys.stderr,
                    flush=True,
                )

    def rates(rows: int, times: list[float]) -> str:
        each = ", ".join(f"{rows / t:,.0f}" for t in times)
        return f"{rows / statistics.median(times):,.0f} ({each})"

    for target in targets:
        n = target.run.n
        count, per = shapes["wide"]
        target.run.cell(
            "ingest rows/s, COPY 100k: 20 tickers x 5,000 bars (median; each)",
            rates(20 * 5_000, took[(n, "narrow")]),
        )
        target.run.cell(
            f"ingest rows/s, COPY 100k: {count:,} tickers x {per} bars (median; each)",
            rates(count * per, took[(n, "wide")]),
        )
        steps = took[(n, "step")]
        target.run.cell(
            f"one time step, COPY of 1 bar x {tickers:,} tickers: s (median; each)",
            f"{statistics.median(steps):.2f} ({', '.join(f'{t:.2f}' for t in steps)})",
        )


# -- through the service, the sizes side by side --


class Getter:
    """GETs on one kept-alive connection: seconds per request, the body read."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> float:
        began = time.perf_counter()
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read()
        took = time.perf_counter() - began
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        if b'"count":0' in body:
            raise RuntimeError(f"GET {path}: no candles")
        return took

    def close(self) -> None:
        self.conn.close()


READS = {
    "GET /candles?limit=200 (stored, oldest)": "/candles?ticker={t}&limit=200",
    "GET /candles?limit=200&order=desc (stored, newest)": (
        "/candles?ticker={t}&limit=200&order=desc"
    ),
    "GET /candles?tf_min=10&limit=200&order=desc (resampled)": (
        "/candles?ticker={t}&tf_min=10&limit=200&order=desc"
    ),
    "GET /candles?tf_min=60&limit=40&order=desc (rollup-served)": (
        "/candles?ticker={t}&tf_min=60&limit=40&order=desc"
    ),
}


def reads(targets: list[Target], tickers: int, requests: int) -> None:
    """Each GET of READS `requests` times per size, request by request: a random ticker,
    asked of every size in a random order."""
    rng = random.Random(1)
    getters = {target.run.n: Getter(target.port) for target in targets}
    took: dict[tuple[int, str], list[float]] = {}
    try:
        for i in range(requests + 20):  # the first 20 of each warm up
            for case, path in READS.items():
                url = path.format(t=name(rng.randrange(tickers)))
                for target in shuffled(targets, rng):
                    seconds = getters[target.run.n].get(url)
                    if i >= 20:
                        took.setdefault((target.run.n, case), []).append(seconds)
    finally:
        for getter in getters.values():
            getter.close()
    for target in targets:
        for case in READS:
            target.run.cell(f"{case}: p50 / p99 ms", ms(took[(target.run.n, case)]))


def posts(targets: list[Target], tickers: int, count: int) -> None:
    """`count` POSTs of one candle to each size, one kept-alive connection each, in turn."""
    rng = random.Random(2)
    took: dict[int, list[float]] = {target.run.n: [] for target in targets}
    conns = {
        target.run.n: socket.create_connection(("127.0.0.1", target.port)) for target in targets
    }
    try:
        for k in range(count + 20):
            t = rng.randrange(tickers)
            for target in shuffled(targets, rng):
                i = target.next_bar[t]
                target.next_bar[t] += 1
                o, h, low, c, v = values(t, i)
                candle = {
                    "ticker": name(t),
                    "tf_min": 5,
                    "ts": iso(stamp(i)),
                    "open": o,
                    "high": h,
                    "low": low,
                    "close": c,
                    "volume": v,
                }
                body = json.dumps([candle]).encode()
                began = time.perf_counter()
                post(conns[target.run.n], body)
                if k >= 20:  # the first 20 warm up
                    took[target.run.n].append(time.perf_counter() - began)
                target.written += 1
    finally:
        for conn in conns.values():
            conn.close()
    for target in targets:
        target.run.cell("POST /candles, one candle: p50 / p99 ms", ms(took[target.run.n]))


async def first_candle(url: str) -> tuple[float, float]:
    """Seconds from the TCP connect to the first candle, and from the handshake's answer."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[float] = loop.create_future()
    opened = [0.0]

    def on_text(payload: bytes, now: float) -> None:
        m = decode(payload)
        if got.done():
            return
        if m.type in ("CANDLE", "CANDLES"):
            got.set_result(now)
        elif m.type == "STATUS" and m.message in ("error", "server_busy"):
            got.set_exception(RuntimeError(f"{url}: {m.error}"))

    began = time.monotonic()
    client = await Client.connect(url, on_text, lambda now: opened.__setitem__(0, now))
    try:
        arrival = await asyncio.wait_for(got, 60)
    finally:
        client.abort()
    return arrival - began, arrival - opened[0]


REPLAYS = {
    "replay first candle, stored 5 m": "tf_min=5",
    "replay first candle, rollup-served tf_min=60": "tf_min=60",
    "replay first candle, resampled tf_min=10": "tf_min=10",
}


async def replays(targets: list[Target], tickers: int, count: int) -> None:
    rng = random.Random(3)
    took: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for k in range(count + 3):
        for case, query in REPLAYS.items():
            t = name(rng.randrange(tickers))
            for target in shuffled(targets, rng):
                url = f"ws://127.0.0.1:{target.port}/ws/replay?ticker={t}&{query}&step_seconds=0"
                result = await first_candle(url)
                if k >= 3:  # the first 3 warm up
                    took.setdefault((target.run.n, case), []).append(result)
                await asyncio.sleep(0.02)
    for target in targets:
        for case in REPLAYS:
            samples = took[(target.run.n, case)]
            target.run.cell(
                f"{case}: from connect p50 / p99 ms (after the handshake p50)",
                f"{ms([a for a, _ in samples])} ({pct([b for _, b in samples], 0.5) * 1000:.2f})",
            )


class LiveCandle(msgspec.Struct):
    ticker: str
    ts: str


class LiveMessage(msgspec.Struct):
    type: str
    message: str | None = None
    error: str | None = None
    candle: LiveCandle | None = None


_live_decode = msgspec.json.Decoder(LiveMessage).decode


async def live(targets: list[Target], tickers: int, count: int) -> None:
    """One subscriber of 20 tickers per size; `count` one-row INSERTs into each size's
    database by a plain connection, one at a time, the sizes in turn: from the return of each
    (autocommit: its commit) to its frame's arrival."""
    loop = asyncio.get_running_loop()
    rng = random.Random(4)
    watched = rng.sample(range(tickers), 20)
    waiting: dict[tuple[int, str, str], asyncio.Future[float]] = {}
    to_frame: dict[int, list[float]] = {target.run.n: [] for target in targets}
    inserts: dict[int, list[float]] = {target.run.n: [] for target in targets}
    clients = []
    conns = {}
    query = f"tickers={','.join(name(t) for t in watched)}&tf_min=5"
    try:
        for target in targets:
            ready: asyncio.Future[None] = loop.create_future()

            def on_text(
                payload: bytes, now: float, n: int = target.run.n, ready: Any = ready
            ) -> None:
                m = _live_decode(payload)
                if m.type == "STATUS" and m.message == "live" and not ready.done():
                    ready.set_result(None)
                elif m.type == "CANDLE" and m.candle is not None:
                    future = waiting.pop((n, m.candle.ticker, m.candle.ts), None)
                    if future is not None and not future.done():
                        future.set_result(now)

            url = f"ws://127.0.0.1:{target.port}/ws/live?{query}"
            clients.append(await Client.connect(url, on_text))
            await asyncio.wait_for(ready, 30)
            conns[target.run.n] = await psycopg.AsyncConnection.connect(target.url, autocommit=True)
        for k in range(count + 5):
            t = rng.choice(watched)
            for target in shuffled(targets, rng):
                n = target.run.n
                i = target.next_bar[t]
                target.next_bar[t] += 1
                future: asyncio.Future[float] = loop.create_future()
                waiting[(n, name(t), iso(stamp(i)))] = future
                began = time.monotonic()
                await conns[n].execute(
                    f"INSERT INTO candles ({COLUMNS}) VALUES (%s, 5, %s, %s, %s, %s, %s, %s, 0)",
                    (name(t), stamp(i), *values(t, i)),
                )
                committed = time.monotonic()
                target.written += 1
                arrival = await asyncio.wait_for(future, 30)
                if k >= 5:  # the first 5 warm up
                    to_frame[n].append(arrival - committed)
                    inserts[n].append(committed - began)
                await asyncio.sleep(0.05)
    finally:
        for client in clients:
            client.abort()
        for conn in conns.values():
            await conn.close()
    for target in targets:
        n = target.run.n
        target.run.cell("live: commit-to-frame p50 / p99 ms", ms(to_frame[n]))
        target.run.cell(
            "live: that one-row INSERT by another program (its triggers included) p50 / p99 ms",
            ms(inserts[n]),
        )


# -- the database --


def sizes(url: str, run: Run, when: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('candles'), pg_relation_size('candles'),"
            " pg_indexes_size('candles'), pg_total_relation_size('candle_rollups'),"
            " pg_total_relation_size('candle_changes'), pg_total_relation_size('candle_series'),"
            " pg_database_size(current_database()),"
            " (SELECT reltuples FROM pg_class WHERE relname = 'candle_rollups'),"
            " (SELECT count(*) FROM candle_changes)"
        ).fetchone()
    assert row is not None
    total, heap, index, rollups, changes, catalog, database, rollup_rows, change_rows = row
    run.cell(
        f"candles: table + indexes ({when})",
        f"{mib(total)} (heap {mib(heap)}, index {mib(index)})",
    )
    run.cell(f"candle_rollups: table + index, rows ({when})", f"{mib(rollups)}, {rollup_rows:,.0f}")
    run.cell(
        f"candle_changes / candle_series ({when})",
        f"{mib(changes)} ({change_rows:,} rows) / {mib(catalog)}",
    )
    run.cell(f"database ({when})", mib(database))


def explain(url: str, statement: str, params: tuple[Any, ...]) -> tuple[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS)'s plan, run twice: the first (cold) and the second (warm)."""
    plans = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(2):
            rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params).fetchall()
            plans.append("\n".join(r[0] for r in rows))
    return plans[0], plans[1]


STORED_READ = (
    "SELECT ticker, tf_min, ts, open, high, low, close, volume, coalesce(openint, 0)"
    " FROM candles WHERE ticker = %s AND tf_min = 5 ORDER BY ts LIMIT 200"
)
ROLLUP_READ = (
    "SELECT ts, open, high, low, close, volume FROM candle_rollups"
    " WHERE ticker = %s AND tf_min = 60 AND tz = 'UTC' ORDER BY ts DESC LIMIT 40"
)


def explained(target: Target, sample: str) -> None:
    for what, statement in (("stored read", STORED_READ), ("rollup read", ROLLUP_READ)):
        cold, warm = explain(target.url, statement, (sample,))
        cells = []
        for plan in (cold, warm):
            execution = re.search(r"Execution Time: ([\d.]+) ms", plan)
            buffers = re.search(r"Buffers: ([^\n]+)", plan)
            cells.append(f"{execution[1] if execution else '?'} ({buffers[1] if buffers else '?'})")
        target.run.cell(f"EXPLAIN ANALYZE, {what} of one ticker: cold / warm ms", " / ".join(cells))
        target.run.note(f"EXPLAIN (ANALYZE, BUFFERS) of the {what} ({sample}), warm:\n{warm}")


def accounted(target: Target) -> None:
    with psycopg.connect(target.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM candles), (SELECT sum(count) FROM candle_series)"
        ).fetchone()
    assert row is not None
    table, catalog = int(row[0]), int(row[1])
    expected = target.written
    verdict = "all there" if table == catalog == expected else "MISMATCH"
    target.run.cell(
        "candles written / count(*) / catalog's sum",
        f"{expected:,} / {table:,} / {catalog:,}: {verdict}",
    )


# -- the phases --


def prepared(args: argparse.Namespace, target: Target, out: Callable[[], None]) -> None:
    """A size's database made, migrated and loaded; what the load left measured."""
    run = target.run
    run.mark(f"database {target.database}: made anew")
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {target.database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {target.database}")
    status, took, _, text = on_terminal([*CLI, "migrate"], target.env)
    run.cell("migrate, empty database: s", f"{took:.2f} (exit {status})")
    run.mark("load")
    target.next_bar = load(
        target.url, run.n, args.tickers, args.group_tickers, args.window_bars, run
    )
    target.written += run.n
    run.mark("VACUUM (ANALYZE)")
    began = time.perf_counter()
    with psycopg.connect(target.url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    run.cell("VACUUM (ANALYZE) after the load: s", f"{time.perf_counter() - began:,.1f}")
    sizes(target.url, run, "after the load")
    run.mark("migrate again (nothing to apply)")
    status, took, _, text = on_terminal([*CLI, "migrate"], target.env)
    first = text.splitlines()[0] if text else "no output"
    run.cell("migrate, nothing to apply: s", f"{took:.2f} (exit {status}: {first})")
    run.mark("EXPLAIN of the stored and the rollup read")
    explained(target, name(args.tickers // 2 + 1))
    out()


def side_by_side(args: argparse.Namespace, targets: list[Target], out: Callable[[], None]) -> None:
    """What must not grow with the table, every size in turn, request by request."""
    marked(targets, f"ingest: COPY of fixed batches, {args.rounds} rounds, sizes in turn")
    ingest(targets, args.tickers, args.rounds)
    out()
    marked(targets, "serve (one per size)")
    for target in targets:
        target.port = free_port()
        target.server = start_server(
            target.url,
            target.port,
            LOG_LEVEL="WARNING",
            API_KEYS=KEY,
            RESPONSE_CACHE_MB="0",
            WS_MIN_STEP_SECONDS="0",
            WORKERS="1",
        )
    time.sleep(1)
    marked(targets, f"GET reads ({args.requests} of each per size, sizes in turn)")
    reads(targets, args.tickers, args.requests)
    marked(targets, f"POST /candles ({args.posts} per size, sizes in turn)")
    posts(targets, args.tickers, args.posts)
    marked(targets, f"replays ({args.replays} of each per size, sizes in turn)")
    asyncio.run(replays(targets, args.tickers, args.replays))
    marked(targets, f"live ({args.live} INSERTs per size, sizes in turn)")
    asyncio.run(live(targets, args.tickers, args.live))
    for target in targets:
        state = settle(target.port, 1).removeprefix("pool after the run: ")
        target.run.cell("pool after the load", state)
        target.stop()
    out()


def whole_table(target: Target, out: Callable[[], None]) -> None:
    """The commands that must read every candle: timed, on a terminal (progress shown)."""
    run = target.run
    off = {**target.env, "ROLLUP_TF_MINS": "off"}
    run.mark("rollups dropped (ROLLUP_TF_MINS=off marketdata rollups)")
    status, took, silence, text = on_terminal([*CLI, "rollups"], off)
    run.cell("rollups dropped (ROLLUP_TF_MINS=off): s", f"{took:.1f} (exit {status})")
    run.mark("rollups built again (marketdata rollups)")
    status, took, silence, text = on_terminal([*CLI, "rollups"], target.env)
    run.cell(
        "rollup rebuild (`rollups` after they were dropped): s; longest silence s",
        f"{took:,.1f} (exit {status}); {silence:,.1f}",
    )
    run.note(f"`marketdata rollups` (rebuild) said:\n{text}")
    run.mark("check")
    status, took, silence, text = on_terminal([*CLI, "check"], target.env)
    run.cell("check: s; longest silence s", f"{took:,.1f} (exit {status}); {silence:,.1f}")
    run.note(f"`marketdata check` said:\n{text}")
    run.mark("counts")
    accounted(target)
    sizes(target.url, run, "at the end")
    run.mark("done")
    out()


# -- the report --


def table(runs: list[dict[str, Any]]) -> str:
    rows: list[str] = []
    for r in runs:
        rows += [row for row in r["cells"] if row not in rows]
    head = "| | " + " | ".join(f"{label_of(r['n'])} candles" for r in runs) + " |"
    lines = [head, "|---|" + "---:|" * len(runs)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(r["cells"].get(row, "") for r in runs) + " |")
    return "\n".join(lines)


def report(runs: list[dict[str, Any]]) -> str:
    code = os.environ.get("PYTHONPATH") or "the installed package (.venv, editable: src/)"
    parts = [
        "# Scale benchmark (bench/scale_bench.py)",
        "",
        table(runs),
        "",
        "## Commands",
        "",
        "```bash",
        *dict.fromkeys(r["command"] for r in runs),
        "```",
        "",
        f"Code measured: {code}.",
        "",
    ]
    for r in runs:
        parts += [f"## {label_of(r['n'])} candles: when each measurement ran", "", "```"]
        parts += r["timeline"]
        parts += ["```", "", f"## {label_of(r['n'])} candles: notes", ""]
        for note in r["notes"]:
            parts += ["```", note, "```", ""]
    parts += [DATA_BEGIN, json.dumps(runs), DATA_END, ""]
    return "\n".join(parts)


def earlier(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    start, end = text.find(DATA_BEGIN), text.find(DATA_END)
    if start < 0 or end < 0:
        return []
    found: list[dict[str, Any]] = json.loads(text[start + len(DATA_BEGIN) : end])
    return found


def main() -> None:
    uvloop.install()
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1M", help="comma-separated: 1M,10M,100M")
    parser.add_argument("--tickers", type=int, default=2000)
    parser.add_argument("--group-tickers", type=int, default=20, help="tickers per load statement")
    parser.add_argument("--window-bars", type=int, default=12_500, help="bars per load statement")
    parser.add_argument("--rounds", type=int, default=3, help="of each COPY shape")
    parser.add_argument("--requests", type=int, default=300, help="of each GET")
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--replays", type=int, default=30, help="of each replay")
    parser.add_argument("--live", type=int, default=50, help="INSERTs watched live")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--merge", action="store_true", help="keep other sizes of --out")
    parser.add_argument("--out", type=Path, default=Path("/tmp/scale_results.md"))
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    asked = [size_of(s) for s in args.sizes.split(",")]
    for n in asked:
        if n % args.tickers:
            raise SystemExit(f"{n:,} is not a multiple of --tickers {args.tickers}")
    runs = [r for r in earlier(args.out) if r["n"] not in asked] if args.merge else []
    prefix = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
    command = f"{prefix}.venv/bin/python bench/scale_bench.py {' '.join(sys.argv[1:])}"
    targets = [Target(n, args.admin_url, args.tickers) for n in asked]
    current = [
        {
            "n": t.run.n,
            "command": command,
            "cells": t.run.cells,
            "notes": t.run.notes,
            "timeline": t.run.timeline,
        }
        for t in targets
    ]  # the cells land in the report as they come: a run that fails keeps what it had

    def out() -> None:
        args.out.write_text(report(sorted([*runs, *current], key=lambda r: r["n"])))

    try:
        for target in targets:
            prepared(args, target, out)
        side_by_side(args, targets, out)
        for target in targets:
            whole_table(target, out)
    finally:
        for target in targets:
            target.stop()
            if not args.keep:
                with psycopg.connect(args.admin_url, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {target.database} WITH (FORCE)")
        out()
    print(table(sorted([*runs, *current], key=lambda r: r["n"])))
    print(f"\n(written to {args.out})", file=sys.stderr)


if __name__ == "__main__":
    main()
