"""What a time-travel session costs: memory and database work per session and per client,
with 100 sessions of 10 clients each on one `marketdata serve`.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/travel_bench.py [--sessions 100] [--clients 10] [--seconds 60]
        [--runs distinct,shared,distinct] [--out /tmp/travel_results.md]
        [--setting KEY=VALUE ...] [--python-memory]

It creates `marketdata_travel_bench` on the local PostgreSQL (dropped at the end), migrates
it, and loads 20 tickers x 4 days of 1-minute candles (115,200 rows) with one plain
`INSERT ... SELECT`, as any writer may (the triggers keep the catalog and the rollups).
Then one `marketdata serve` (WORKERS=1, every setting at its default but the log level),
and, measuring the server's RSS, its CPU, PostgreSQL's work on this database and the
machine's load at each step:

1. idle, 10 s with nothing to do;
2. `--sessions` sessions (POST /sessions), each from its own start (13 minutes apart), at
   60, 80, 100 or 120 market seconds per wall second (a 1-minute bar every 1.0 to 0.5 s),
   then 10 s with sessions and no clients;
3. each run of `--runs`, in turn, on the same sessions: `--clients` WebSocket clients per
   session, held `--seconds` once all are connected, then closed; RSS after they left.
   - `distinct`: per session, 8 Binance kline streams
     (`/sessions/{id}/binance/ws/<symbol>@kline_1m`) and 2 of our own
     (`/sessions/{id}/ws/replay?ticker=...&tf_min=1`), each client on another ticker;
   - `shared`: every client of a session on the same Binance stream (does a session read
     once for all its clients, or each client for itself?).
   At most 1,000 connections (WS_MAX_SESSIONS' default); the open-files limit is raised
   for this process and the server it starts.

With `--python-memory` the server runs the same CLI under tracemalloc and, at each step,
collects its garbage and reports the memory Python holds and its gc-tracked objects: what
RSS, which keeps the allocator's freed memory, cannot tell (does memory come back?).

Every client's stream is checked: bars in order, one interval apart, none twice, none
missing; each bar's close price the one loaded; none sent before the session's present
reached its close (frame arrival against the session's clock: `created` + (close -
start) / speed, the clock every instance computes; and the Binance event time `E` against
the bar's close), and every bar received before a `GET /sessions/{id}` at the end closes at
or before the `present` it answers. Lateness is the frame's arrival after that moment.

PostgreSQL's work: pg_stat_statements is not preloaded on the development server (it would
need a restart), so every statement of the bench database is logged with its duration
(`ALTER DATABASE marketdata_travel_bench SET log_min_duration_statement = 0`, before the
service connects) and read back from the server's log (`--pg-log`), each by its time and
kind (a session read, a catalog read, a page of bars); pg_stat_database's committed
transactions are a cross-check. The CPU of the database's backends is read from /proc.
The load client runs in this process (bench/wsclient.py), on the same cores as the server
and PostgreSQL; the machine's other load is reported beside each window. Measures only.
"""

import argparse
import asyncio
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import psutil  # type: ignore[import-untyped]
import psycopg
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, free_port, fresh_database
from replay_bench import pct, pool_metrics, settle
from wsclient import Client

DB = "marketdata_travel_bench"
TICKERS = 20
DAYS = 4
DATA_START = datetime(2024, 3, 1, tzinfo=UTC)
MINUTE_MS = 60_000
SPEEDS = (60.0, 80.0, 100.0, 120.0)  # a 1-minute bar every 1.0, 0.75, 0.6, 0.5 s
EARLY_TOLERANCE = 0.002  # s: a frame this far before its bar's close counts as look-ahead


def ticker(t: int) -> str:
    return f"T{t:02d}USDT"


def expected_close(t: int, open_ms: int) -> float:
    """The close price loaded for ticker `t`'s bar opening at `open_ms` (see `load`)."""
    i = (open_ms - int(DATA_START.timestamp() * 1000)) // MINUTE_MS
    return 100.5 + (i * 7 + t * 13) % 97


def load(url: str) -> int:
    """20 tickers x DAYS of 1-minute candles, one INSERT: the triggers keep the rest."""
    per_ticker = DAYS * 1440
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)
            SELECT 'T' || lpad(t::text, 2, '0') || 'USDT', 1,
                   %(start)s + i * interval '1 minute',
                   100 + (i * 7 + t * 13) %% 97, 101 + (i * 7 + t * 13) %% 97,
                   99 + (i * 7 + t * 13) %% 97, 100.5 + (i * 7 + t * 13) %% 97, 1000 + i, 0
            FROM generate_series(0, %(tickers)s - 1) t, generate_series(0, %(n)s - 1) i
            """,
            {"start": DATA_START, "tickers": TICKERS, "n": per_ticker},
        )
        conn.execute("VACUUM ANALYZE")
    return TICKERS * per_ticker


# -- the server --


# --python-memory: `marketdata serve` with tracemalloc on, which on SIGUSR1 collects the
# garbage and appends [gc-tracked objects, traced bytes, traced peak since the last] to a file
_TRACED_SERVER = """
import gc, json, signal, sys, tracemalloc
dump = sys.argv[1]
def report(signum, frame):
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    with open(dump, "a") as f:
        f.write(json.dumps([len(gc.get_objects()), current, peak]) + "\\n")
signal.signal(signal.SIGUSR1, report)
from marketdata.entrypoints.cli import main
sys.argv = ["marketdata", "serve", "--no-migrate"]
sys.exit(main())
"""


def start_server(
    url: str, port: int, log: Path, dump: Path | None = None, **settings: str
) -> subprocess.Popen[bytes]:
    """`marketdata serve` (the venv's script) on `url`, once /health answers; its log
    (JSON lines, WARNING and up) in `log`. With `dump`, the same CLI under tracemalloc,
    reporting Python's memory to `dump` on SIGUSR1."""
    command = [str(Path(sys.executable).parent / "marketdata"), "serve", "--no-migrate"]
    if dump is not None:
        command = [sys.executable, "-X", "tracemalloc=1", "-c", _TRACED_SERVER, str(dump)]
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    with log.open("wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"server did not start; see {log}")


def http(method: str, url: str, body: object | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"content-type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


# -- measurements --

# A statement's line in PostgreSQL's log (log_min_duration_statement = 0, the Debian prefix
# '%m [%p] %q%u@%d '): when, which backend, which database, how long, what
_LOGGED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (\S+) \[(\d+)\] [^@ ]*@(\S+) LOG:  "
    r"duration: ([\d.]+) ms  (statement|execute|parse|bind)[^:]*: ?(.*)$"
)
_STAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
STEPS = ("parse", "bind", "execute", "statement")  # one statement: parse, bind, execute


class Logged(msgspec.Struct, frozen=True):
    wall: float
    pid: int
    step: str
    ms: float
    kind: str


def kind_of(text: str) -> str:
    """What a statement of the service does, from its text."""
    flat = " ".join(text.split())
    if "FROM travel_sessions WHERE id" in flat:
        return "session read"
    if "travel_sessions" in flat or "pg_notify" in flat or flat in ("BEGIN", "COMMIT"):
        return "session write"
    if "LEFT JOIN candle_series" in flat:
        return "catalog read"
    if "FROM candles WHERE ticker" in flat:
        return "page of bars"
    return flat[:60]


class StatementLog:
    """The statements of the bench database, from the server's log, where every statement
    of that database is logged with its duration (`ALTER DATABASE ... SET
    log_min_duration_statement = 0`, made before the service connects): what
    pg_stat_statements would count, with the time of each."""

    def __init__(self, path: Path, zone: str) -> None:
        self.path = path
        self.zone = ZoneInfo(zone)
        self.offset = path.stat().st_size
        self.entries: list[Logged] = []

    def read(self, exclude: set[int]) -> list[Logged]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        pending: list[Any] | None = None
        for raw in data.decode(errors="replace").splitlines():
            if pending is not None and raw.startswith("\t"):
                if len(pending[4]) < 2000:  # the statement's text, on the lines that follow
                    pending[4] += " " + raw
                continue
            if pending is not None:
                self._add(pending)
                pending = None
            if not _STAMPED.match(raw):
                continue
            m = _LOGGED.match(raw)
            if m is None or m[4] != DB or int(m[3]) in exclude:
                continue
            wall = datetime.fromisoformat(m[1]).replace(tzinfo=self.zone).timestamp()
            pending = [wall, int(m[3]), m[6], float(m[5]), m[7]]
        if pending is not None:
            self._add(pending)
        return self.entries

    def _add(self, entry: list[Any]) -> None:
        wall, pid, step, took, text = entry
        self.entries.append(Logged(wall, pid, step, took, kind_of(text)))


@dataclass
class Work:
    """PostgreSQL's work on the bench database between two moments, from the statement log."""

    statements: int  # executed (an extended-protocol execute, or a simple query)
    by_kind: dict[str, int]
    db_ms: float  # parse + bind + execute, as PostgreSQL timed them

    @classmethod
    def of(cls, entries: list[Logged], a: float, b: float) -> "Work":
        by_kind: dict[str, int] = defaultdict(int)
        statements = 0
        db_ms = 0.0
        for e in entries:
            if not a <= e.wall < b:
                continue
            db_ms += e.ms
            if e.step in ("execute", "statement"):
                statements += 1
                by_kind[e.kind] += 1
        return cls(statements, dict(by_kind), db_ms)

    def kinds(self, per: float = 1.0) -> str:
        return ", ".join(
            f"{kind} {n / per:,.2f}" if per != 1 else f"{kind} {n:,}"
            for kind, n in sorted(self.by_kind.items(), key=lambda kv: -kv[1])
        )


@dataclass
class Snapshot:
    """What the server, PostgreSQL and the machine had done by one moment."""

    label: str
    wall: float  # time.time()
    rss: int  # bytes, the server's
    server_cpu: float  # s, user + system
    client_cpu: float  # s, this process
    machine_busy: float  # s, every CPU of the machine, not idle
    load1: float
    xacts: int  # committed transactions of the bench database (pg_stat_database)
    backends_cpu: dict[int, float]  # the bench database's backends: pid -> CPU s
    # with --python-memory: gc-tracked objects after a collection, bytes traced, and the
    # peak traced since the snapshot before (-1: not measured)
    objects: int = -1
    traced: int = -1
    traced_peak: int = -1


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class Probe:
    """Snapshots of the server and of PostgreSQL's backends of the bench database, read
    from the admin database (nothing of the probe runs in the bench database)."""

    def __init__(self, admin_url: str, server: psutil.Process, dump: Path | None = None) -> None:
        self.admin = psycopg.connect(admin_url, autocommit=True)
        self.server = server
        self.dump = dump

    def _python_memory(self) -> tuple[int, int, int]:
        """The traced server's report, asked for with SIGUSR1."""
        dump = self.dump
        if dump is None:
            return -1, -1, -1

        def reports() -> list[str]:
            return dump.read_text().splitlines() if dump.exists() else []

        before = len(reports())
        self.server.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while len(reports()) <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = reports()
        if len(lines) <= before:
            return -1, -1, -1
        objects, traced, peak = json.loads(lines[-1])
        return objects, traced, peak

    def _server(self) -> tuple[int, float]:
        processes = [self.server, *self.server.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes), sum(_cpu(p) for p in processes)

    def take(self, label: str) -> Snapshot:
        objects, traced, peak = self._python_memory()
        rss, server_cpu = self._server()
        row = self.admin.execute(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = %(db)s),"
            " (SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity"
            "  WHERE datname = %(db)s)",
            {"db": DB},
        ).fetchone()
        assert row is not None
        backends: dict[int, float] = {}
        for pid in row[1]:
            try:
                backends[pid] = _cpu(psutil.Process(pid))
            except psutil.Error:
                continue
        return Snapshot(
            label=label,
            wall=time.time(),
            rss=rss,
            server_cpu=server_cpu,
            client_cpu=time.process_time(),
            machine_busy=_busy(),
            load1=os.getloadavg()[0],
            xacts=row[0] or 0,
            backends_cpu=backends,
            objects=objects,
            traced=traced,
            traced_peak=peak,
        )

    async def snap(self, label: str) -> Snapshot:
        return await asyncio.to_thread(self.take, label)

    def close(self) -> None:
        self.admin.close()


@dataclass
class Delta:
    """What the processes did between two snapshots."""

    seconds: float
    server_cpu: float
    client_cpu: float
    machine_busy: float
    postgres_cpu: float

    @classmethod
    def of(cls, a: Snapshot, b: Snapshot) -> "Delta":
        return cls(
            seconds=b.wall - a.wall,
            server_cpu=b.server_cpu - a.server_cpu,
            client_cpu=b.client_cpu - a.client_cpu,
            machine_busy=b.machine_busy - a.machine_busy,
            postgres_cpu=sum(
                cpu - a.backends_cpu.get(pid, 0.0) for pid, cpu in b.backends_cpu.items()
            ),
        )

    def cores(self, cpu: float) -> float:
        return cpu / self.seconds if self.seconds > 0 else float("nan")

    @property
    def others(self) -> float:
        """Cores the rest of the machine kept busy (other load), over the interval."""
        return self.cores(self.machine_busy - self.server_cpu - self.client_cpu - self.postgres_cpu)


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def clock(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%H:%M:%S")


# -- sessions and clients --


@dataclass
class Session:
    id: str
    start: float  # epoch s, market
    created: float  # epoch s, wall: the clock's anchor
    speed: float

    def due(self, close_ms: int) -> float:
        """When the present reaches a market time (ms), on the wall clock."""
        return self.created + (close_ms / 1000 - self.start) / self.speed

    def present_ms(self, wall: float) -> float:
        return (self.start + (wall - self.created) * self.speed) * 1000


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def make_sessions(base: str, count: int) -> list[Session]:
    sessions = []
    for i in range(count):
        start = DATA_START + timedelta(hours=6, minutes=13 * i, seconds=(17 * i) % 60)
        body = http(
            "POST",
            f"{base}/sessions",
            {"start": start.isoformat().replace("+00:00", "Z"), "speed": SPEEDS[i % 4]},
        )
        assert body["state"] == "running", body
        sessions.append(
            Session(body["id"], epoch(body["start"]), epoch(body["created"]), body["speed"])
        )
    return sessions


class Kline(msgspec.Struct):
    t: int
    T: int
    c: str
    x: bool


class BinanceMessage(msgspec.Struct):
    e: str | None = None
    E: int | None = None
    k: Kline | None = None
    error: dict[str, Any] | None = None


class Bar(msgspec.Struct):
    ticker: str
    ts: str
    close: float


class ReplayMessage(msgspec.Struct):
    type: str
    seq: int | None = None
    message: str | None = None
    error: str | None = None
    candle: Bar | None = None


decode_binance = msgspec.json.Decoder(BinanceMessage).decode
decode_replay = msgspec.json.Decoder(ReplayMessage).decode


@dataclass
class Tally:
    """One client: what it asked for, and every bar it got."""

    session: Session
    index: int  # of the session
    kind: str  # binance | replay
    t: int  # its ticker's number
    started: float = 0.0  # wall, the connection's start
    opened: float = 0.0  # wall, the handshake's answer
    opens: list[int] = field(default_factory=list)  # each bar's open, ms
    closes: list[float] = field(default_factory=list)  # each bar's close price
    arrivals: list[float] = field(default_factory=list)  # wall
    events: list[int] = field(default_factory=list)  # Binance E, ms
    seqs: list[int] = field(default_factory=list)  # replay seq
    forming: int = 0  # Binance klines not final (none expected: 1m is stored)
    statuses: list[str] = field(default_factory=list)
    live_at: float = 0.0  # wall, the arrival of STATUS live (ws/replay)
    errors: list[str] = field(default_factory=list)
    client: Client | None = None
    code: int | None = None

    @property
    def url_path(self) -> str:
        sid = self.session.id
        if self.kind == "binance":
            return f"/sessions/{sid}/binance/ws/{ticker(self.t).lower()}@kline_1m"
        return f"/sessions/{sid}/ws/replay?ticker={ticker(self.t)}&tf_min=1"

    def on_text(self, payload: bytes, now: float, to_wall: float) -> None:
        wall = now + to_wall
        if self.kind == "binance":
            b = decode_binance(payload)
            if b.k is not None:
                self.opens.append(b.k.t)
                self.closes.append(float(b.k.c))
                self.arrivals.append(wall)
                self.events.append(b.E or 0)
                self.forming += not b.k.x
            elif b.error is not None:
                self.errors.append(str(b.error))
            return
        r = decode_replay(payload)
        if r.type == "CANDLE" and r.candle is not None:
            self.opens.append(int(epoch(r.candle.ts) * 1000))
            self.closes.append(r.candle.close)
            self.arrivals.append(wall)
            self.seqs.append(r.seq if r.seq is not None else -1)
        elif r.type == "STATUS":
            self.statuses.append(r.message or "")
            if r.message == "live" and not self.live_at:
                self.live_at = wall
            if r.error:
                self.errors.append(r.error)


def plan_clients(sessions: list[Session], per_session: int, shared: bool) -> list[Tally]:
    tallies = []
    for s, session in enumerate(sessions):
        for j in range(per_session):
            if shared:
                tallies.append(Tally(session, s, "binance", s % TICKERS))
            else:
                kind = "replay" if j % 5 == 4 else "binance"  # 8 of 10 Binance
                tallies.append(Tally(session, s, kind, (s + 3 * j) % TICKERS))
    return tallies


async def connect_all(ws_base: str, tallies: list[Tally], to_wall: float) -> list[float]:
    """Every client connected, at most 100 handshakes at a time; handshake times (s)."""
    gate = asyncio.Semaphore(100)
    took: list[float] = []

    async def one(tally: Tally) -> None:
        async with gate:
            tally.started = time.time()
            try:
                tally.client = await asyncio.wait_for(
                    Client.connect(
                        ws_base + tally.url_path,
                        lambda payload, now: tally.on_text(payload, now, to_wall),
                        lambda now: setattr(tally, "opened", now + to_wall),
                    ),
                    30,
                )
                took.append(tally.opened - tally.started)
            except Exception as error:
                tally.errors.append(f"connect: {error!r}"[:200])

    await asyncio.gather(*(one(t) for t in tallies))
    return took


@dataclass
class Checked:
    frames: int = 0
    clients_bad: int = 0
    gaps: int = 0  # missing bars between two received
    repeated: int = 0  # a bar again, or one going back
    wrong_values: int = 0
    early: int = 0  # frames before the present reached their bar's close
    event_before_close: int = 0  # Binance E before the bar's close
    after_present: int = 0  # bars received before GET /sessions/{id} closing after its present
    forming: int = 0
    seq_breaks: int = 0
    no_frames: int = 0
    errors: list[str] = field(default_factory=list)
    late: list[float] = field(default_factory=list)  # s, every frame
    late_steady: list[float] = field(default_factory=list)  # s, frames in the window
    # bars that closed after the handshake's answer (after STATUS live, for ws/replay) and
    # before the first bar sent, never sent: one entry per client
    start_skips: list[int] = field(default_factory=list)
    live_skips: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


def check(
    tallies: list[Tally],
    window: tuple[float, float],
    presents: dict[str, tuple[float, float, float]],
) -> Checked:
    """Every client's bars: in order, one minute apart, right values, never early."""
    out = Checked()
    for tally in tallies:
        session = tally.session
        bad = False
        if tally.errors:
            out.errors.extend(tally.errors[:2])
            bad = True
        if not tally.opens:
            out.no_frames += 1
            bad = True
            continue
        out.frames += len(tally.opens)
        out.forming += tally.forming
        for previous, current in zip(tally.opens, tally.opens[1:], strict=False):
            step = current - previous
            if step > MINUTE_MS:
                out.gaps += step // MINUTE_MS - 1
                bad = True
                if len(out.examples) < 5:
                    out.examples.append(
                        f"gap: session {session.id[:8]} {tally.kind} {ticker(tally.t)}"
                        f" {previous} -> {current}"
                    )
            elif step <= 0:
                out.repeated += 1
                bad = True
                if len(out.examples) < 5:
                    out.examples.append(
                        f"repeat: session {session.id[:8]} {tally.kind} {ticker(tally.t)}"
                        f" {previous} -> {current}"
                    )
        if tally.seqs:
            out.seq_breaks += sum(1 for i, seq in enumerate(tally.seqs) if seq != tally.seqs[0] + i)
        for open_ms, close in zip(tally.opens, tally.closes, strict=True):
            if close != expected_close(tally.t, open_ms):
                out.wrong_values += 1
                bad = True
        asked_at, _, present = presents.get(session.id, (0.0, 0.0, float("inf")))
        for i, (open_ms, arrival) in enumerate(zip(tally.opens, tally.arrivals, strict=True)):
            close_ms = open_ms + MINUTE_MS
            late = arrival - session.due(close_ms)
            out.late.append(late)
            if window[0] <= arrival <= window[1]:
                out.late_steady.append(late)
            if late < -EARLY_TOLERANCE:
                out.early += 1
                bad = True
            if tally.events and tally.events[i] < close_ms:
                out.event_before_close += 1
                bad = True
            if arrival < asked_at and close_ms > present:
                out.after_present += 1
                bad = True
        # bars that closed between the handshake's answer and the first one sent: the
        # stream starts after the present it reads once subscribed (not an error)
        at_handshake = session.present_ms(tally.opened)
        first_close = tally.opens[0] + MINUTE_MS
        out.start_skips.append(max(0, int((first_close - at_handshake - 1) // MINUTE_MS)))
        if tally.live_at:
            at_live = session.present_ms(tally.live_at)
            out.live_skips.append(max(0, int((first_close - at_live - 1) // MINUTE_MS)))
        out.clients_bad += bad
    return out


async def read_presents(
    base: str, sessions: list[Session]
) -> dict[str, tuple[float, float, float]]:
    """GET /sessions/{id} for each: when it was asked, when answered (wall s), and the
    present it answered (market ms)."""
    presents: dict[str, tuple[float, float, float]] = {}
    for session in sessions:
        asked = time.time()
        body = await asyncio.to_thread(http, "GET", f"{base}/sessions/{session.id}")
        presents[session.id] = (asked, time.time(), epoch(body["present"]) * 1000)
    return presents


@dataclass
class Run:
    name: str
    shared: bool
    clients: int
    binance: int
    replay: int
    connected: int
    handshakes: list[float]
    ramp: float
    before: Snapshot
    window_start: Snapshot
    window_end: Snapshot
    after_leave: Snapshot
    checked: Checked
    steady_frames: int
    pool: str
    clock_skew_ms: float
    codes: dict[str, int]  # close codes the server answered with, by code


async def run_clients(
    name: str,
    shared: bool,
    base: str,
    port: int,
    sessions: list[Session],
    per_session: int,
    seconds: float,
    probe: Probe,
) -> Run:
    tallies = plan_clients(sessions, per_session, shared)
    ws_base = "ws" + base.removeprefix("http")
    to_wall = time.time() - time.monotonic()
    print(f"[{clock(time.time())}] {name}: connecting {len(tallies)} clients", flush=True)
    before = await probe.snap("before clients")
    started = time.monotonic()
    handshakes = await connect_all(ws_base, tallies, to_wall)
    ramp = time.monotonic() - started
    await asyncio.sleep(2)  # every stream subscribed, the first reads done
    window_start = await probe.snap("window start")
    print(f"[{clock(time.time())}] {name}: connected in {ramp:.1f} s; {seconds:g} s", flush=True)
    await asyncio.sleep(seconds)
    window_end = await probe.snap("window end")
    presents = await read_presents(base, sessions)
    skew = 0.0  # wall ms the present answered is outside what the clock here gives
    for session in sessions:
        asked, answered, present = presents[session.id]
        low, high = session.present_ms(asked), session.present_ms(answered)
        skew = max(skew, (low - present) / session.speed, (present - high) / session.speed)
    for tally in tallies:
        if tally.client is not None:
            tally.client.close()
    for tally in tallies:
        if tally.client is not None:
            try:
                tally.code = await asyncio.wait_for(tally.client.wait_closed(), 10)
            except TimeoutError:
                tally.errors.append("no close within 10 s")
                tally.client.abort()
    pool = await asyncio.to_thread(settle, port, 1)
    await asyncio.sleep(3)
    after_leave = await probe.snap("clients gone")
    window = (window_start.wall, window_end.wall)
    checked = check(tallies, window, presents)
    steady = sum(1 for t in tallies for a in t.arrivals if window[0] <= a <= window[1])
    codes: dict[str, int] = defaultdict(int)
    for tally in tallies:
        codes[str(tally.code)] += 1
    print(f"[{clock(time.time())}] {name}: done ({checked.frames:,} frames)", flush=True)
    return Run(
        name=name,
        shared=shared,
        clients=len(tallies),
        binance=sum(t.kind == "binance" for t in tallies),
        replay=sum(t.kind == "replay" for t in tallies),
        connected=sum(1 for t in tallies if t.client is not None),
        handshakes=handshakes,
        ramp=ramp,
        before=before,
        window_start=window_start,
        window_end=window_end,
        after_leave=after_leave,
        checked=checked,
        steady_frames=steady,
        pool=pool,
        clock_skew_ms=skew,
        codes=dict(codes),
    )


# -- the report --


def ms(values: list[float], q: float) -> str:
    return f"{pct(values, q) * 1000:.1f}" if values else "n/a"


@dataclass
class Before:
    """What was measured before any client."""

    rows: int
    idle: tuple[Snapshot, Snapshot]
    making: tuple[Snapshot, Snapshot]  # around the POSTs alone
    quiet: tuple[Snapshot, Snapshot]  # sessions, no client
    ended: Snapshot  # at the very end, the sessions deleted


def report(
    sessions: int,
    before: Before,
    runs: list[Run],
    entries: list[Logged],
    log_lines: list[str],
    preloaded: str,
) -> str:
    head: list[str] = []
    put = head.append
    idle_d = Delta.of(*before.idle)
    idle_w = Work.of(entries, before.idle[0].wall, before.idle[1].wall)
    make_d = Delta.of(*before.making)
    make_w = Work.of(entries, before.making[0].wall, before.making[1].wall)
    quiet_d = Delta.of(*before.quiet)
    quiet_w = Work.of(entries, before.quiet[0].wall, before.quiet[1].wall)
    put("| before any client | measured |")
    put("|---|---:|")
    put(f"| data | {before.rows:,} one-minute candles, {TICKERS} tickers x {DAYS} days |")
    put(f"| server RSS idle ({clock(before.idle[1].wall)}) | {mib(before.idle[1].rss)} MiB |")
    put(
        f"| idle {idle_d.seconds:.0f} s, no session: statements; server CPU |"
        f" {idle_w.statements}; {idle_d.server_cpu:.2f} s |"
    )
    put(
        f"| {sessions} x `POST /sessions`, one after the other ({clock(before.making[0].wall)}):"
        f" wall time; statements | {make_d.seconds:.2f} s ({make_d.seconds / sessions * 1000:.1f}"
        f" ms each); {make_w.statements} ({make_w.statements / sessions:.0f} each:"
        f" {make_w.kinds(sessions)}) |"
    )
    put(
        f"| server RSS after making them | {mib(before.making[1].rss)} MiB"
        f" ({(before.making[1].rss - before.idle[1].rss) / 1024 / sessions:+.1f} KiB"
        " per session) |"
    )
    put(
        f"| {quiet_d.seconds:.0f} s with {sessions} sessions and no client"
        f" ({clock(before.quiet[0].wall)}): statements; server CPU; RSS |"
        f" {quiet_w.statements}; {quiet_d.server_cpu:.2f} s; {mib(before.quiet[1].rss)} MiB |"
    )
    put(
        f"| server RSS at the very end, the sessions deleted ({clock(before.ended.wall)}) |"
        f" {mib(before.ended.rss)} MiB |"
    )
    if before.idle[1].traced >= 0:
        put(
            "| Python memory (tracemalloc) MiB; gc-tracked objects after a collection: idle /"
            " sessions made / the very end |"
            f" {mib(before.idle[1].traced)} / {mib(before.making[1].traced)} /"
            f" {mib(before.ended.traced)}; {before.idle[1].objects:,} /"
            f" {before.making[1].objects:,} / {before.ended.objects:,} |"
        )

    lines: list[str] = []
    add = lines.append
    add("| what | " + " | ".join(f"`{r.name}`" for r in runs) + " |")
    add("|---|" + "---:|" * len(runs))

    def row(what: str, values: list[str]) -> None:
        add(f"| {what} | " + " | ".join(values) + " |")

    connect = [Delta.of(r.before, r.window_start) for r in runs]
    connect_w = [Work.of(entries, r.before.wall, r.window_start.wall) for r in runs]
    steady = [Delta.of(r.window_start, r.window_end) for r in runs]
    steady_w = [Work.of(entries, r.window_start.wall, r.window_end.wall) for r in runs]
    both = list(zip(runs, steady, steady_w, strict=True))
    row(
        "window (UTC); load average (1 min) at its start / end",
        [
            f"{clock(r.window_start.wall)}-{clock(r.window_end.wall)};"
            f" {r.window_start.load1:.2f} / {r.window_end.load1:.2f}"
            for r in runs
        ],
    )
    row(
        "clients: Binance kline / our `ws/replay`; connected",
        [f"{r.binance} / {r.replay}; {r.connected}" for r in runs],
    )
    row(
        "connecting them all (100 handshakes at a time): s; handshake p50 / p99 ms",
        [f"{r.ramp:.1f} s; {ms(r.handshakes, 0.5)} / {ms(r.handshakes, 0.99)}" for r in runs],
    )
    row(
        "statements to connect (until 2 s after the last): per client, by kind",
        [
            f"{w.statements / max(1, r.connected):.2f}: {w.kinds(max(1, r.connected))}"
            for r, w in zip(runs, connect_w, strict=True)
        ],
    )
    row(
        "server CPU to connect, ms per client",
        [
            f"{d.server_cpu / max(1, r.connected) * 1000:.2f}"
            for r, d in zip(runs, connect, strict=True)
        ],
    )
    row(
        "frames in the window; frames/s; per client per s",
        [
            f"{r.steady_frames:,}; {r.steady_frames / d.seconds:,.0f};"
            f" {r.steady_frames / d.seconds / max(1, r.connected):.2f}"
            for r, d, _ in both
        ],
    )
    row(
        "lateness after the bar's close on the session's clock, p50 / p99 / max ms (window)",
        [
            f"{ms(r.checked.late_steady, 0.5)} / {ms(r.checked.late_steady, 0.99)}"
            f" / {max(r.checked.late_steady, default=0) * 1000:.1f}"
            for r in runs
        ],
    )
    row(
        "the same, every frame (the connection burst included)",
        [
            f"{ms(r.checked.late, 0.5)} / {ms(r.checked.late, 0.99)}"
            f" / {max(r.checked.late, default=0) * 1000:.1f}"
            for r in runs
        ],
    )
    row(
        "clients with a wrong stream; bars missing / repeated / wrong values / seq breaks",
        [
            f"**{c.clients_bad}**; {c.gaps} / {c.repeated} / {c.wrong_values} / {c.seq_breaks}"
            for c in (r.checked for r in runs)
        ],
    )
    row(
        "bars ahead of the present: frames early / Binance `E` before the close / past GET's",
        [
            f"{c.early} / {c.event_before_close} / {c.after_present}"
            for c in (r.checked for r in runs)
        ],
    )
    row(
        "clients without a frame; errors; close codes answered",
        [
            f"{r.checked.no_frames}; {len(r.checked.errors)}; "
            + ", ".join(f"{code}: {n}" for code, n in sorted(r.codes.items()))
            for r in runs
        ],
    )

    def skipped(skips: list[int]) -> str:
        if not skips:
            return "n/a"
        hit = [x for x in skips if x]
        return (
            f"{len(hit)} of {len(skips)}; {sum(hit):,} bars;"
            f" p50 / max {pct([float(x) for x in skips], 0.5):.0f} / {max(skips)}"
        )

    row(
        "bars closed after the handshake's answer, before the stream's start, never sent:"
        " clients; bars; per client",
        [skipped(r.checked.start_skips) for r in runs],
    )
    row(
        "  the same after `ws/replay`'s STATUS `live`",
        [skipped(r.checked.live_skips) for r in runs],
    )
    row(
        "server CPU in the window: cores; µs per client-frame",
        [
            f"{d.cores(d.server_cpu):.2f}; {d.server_cpu / max(1, r.steady_frames) * 1e6:.0f}"
            for r, d, _ in both
        ],
    )
    row(
        "statements in the window: per s; per session per min; per client per min",
        [
            f"{w.statements / d.seconds:.1f}; {w.statements / d.seconds * 60 / sessions:.2f};"
            f" {w.statements / d.seconds * 60 / max(1, r.connected):.3f}"
            for r, d, w in both
        ],
    )
    row(
        "  by kind, per client per min",
        [w.kinds(d.seconds / 60 * max(1, r.connected)) for r, d, w in both],
    )
    row(
        "  pages of bars read per 100 client-frames",
        [
            f"{w.by_kind.get('page of bars', 0) / max(1, r.steady_frames) * 100:.2f}"
            for r, _, w in both
        ],
    )
    row(
        "PostgreSQL in the window: statement time ms/s; µs per client-frame; backends' CPU cores",
        [
            f"{w.db_ms / d.seconds:.1f}; {w.db_ms * 1000 / max(1, r.steady_frames):.1f};"
            f" {d.cores(d.postgres_cpu):.2f}"
            for r, d, w in both
        ],
    )
    row(
        "CPU cores in the window: load client / the rest of the machine (other load)",
        [f"{d.cores(d.client_cpu):.2f} / {d.others:.2f}" for d in steady],
    )
    row(
        "server RSS MiB: before the clients / connected / window end / after they left",
        [
            f"{mib(r.before.rss)} / {mib(r.window_start.rss)} / {mib(r.window_end.rss)}"
            f" / {mib(r.after_leave.rss)} ({clock(r.after_leave.wall)})"
            for r in runs
        ],
    )
    if any(r.before.traced >= 0 for r in runs):
        row(
            "Python memory (tracemalloc) MiB: before / connected / window end / after they"
            " left; peak",
            [
                f"{mib(r.before.traced)} / {mib(r.window_start.traced)} /"
                f" {mib(r.window_end.traced)} / {mib(r.after_leave.traced)};"
                f" {mib(max(r.window_start.traced_peak, r.window_end.traced_peak))}"
                for r in runs
            ],
        )
        row(
            "gc-tracked objects after a collection: before / connected / after they left",
            [
                f"{r.before.objects:,} / {r.window_start.objects:,} / {r.after_leave.objects:,}"
                for r in runs
            ],
        )
    row(
        "server RSS per client KiB (connected - before)",
        [f"{(r.window_start.rss - r.before.rss) / 1024 / max(1, r.connected):.1f}" for r in runs],
    )
    row(
        "pool after the clients left (`/metrics`)",
        [r.pool.removeprefix("pool after the run: ") for r in runs],
    )
    row(
        "`GET /sessions/{id}` present outside the clock computed here (asked..answered), max"
        " wall ms",
        [f"{r.clock_skew_ms:.1f}" for r in runs],
    )

    notes: list[str] = []
    note = notes.append
    whole = [(r, Work.of(entries, r.before.wall, r.after_leave.wall)) for r in runs if r.connected]
    distinct = [(r, w) for r, w in whole if not r.shared]
    shared = [(r, w) for r, w in whole if r.shared]
    if distinct and shared:

        def per_client(pairs: list[tuple[Run, Work]], kind: str | None = None) -> float:
            n = sum(w.statements if kind is None else w.by_kind.get(kind, 0) for _, w in pairs)
            return n / sum(r.connected for r, _ in pairs)

        d_all, s_all = per_client(distinct), per_client(shared)
        d_pages, s_pages = per_client(distinct, "page of bars"), per_client(shared, "page of bars")
        verdict = (
            "each client reads for itself: no read is shared between the clients of a session"
            if s_all > 0.5 * d_all
            else "the clients of a session share their reads"
        )
        note(
            f"- Shared reads? Statements per client over a whole run (connect to leave):"
            f" {d_all:.2f} with every client of a session on its own ticker, {s_all:.2f} with"
            f" the 10 clients of a session on one stream (pages of bars: {d_pages:.2f} and"
            f" {s_pages:.2f}): {verdict}."
        )
    note(
        f"- pg_stat_statements: {preloaded or 'not preloaded'} (`shared_preload_libraries`"
        f" {'names it' if 'pg_stat_statements' in preloaded else 'does not name it'}). Statements"
        " are counted from PostgreSQL's log instead: `log_min_duration_statement = 0` set on the"
        " bench database only, so every statement of the service is logged with its duration"
        " (the logging costs PostgreSQL a little; nothing of this script runs in that database)."
    )
    if before.ended.xacts:
        first = runs[0].before if runs else before.idle[0]
        note(
            f"- Cross-check: pg_stat_database counted {before.ended.xacts - before.idle[0].xacts:,}"
            f" committed transactions from the idle start to the end; the log"
            f" {Work.of(entries, before.idle[0].wall, before.ended.wall).statements:,} statements"
            f" (a POST or DELETE of a session is 4 statements in one transaction; counts reach"
            f" pg_stat_database up to ~10 s late). First run started {clock(first.wall)}."
        )
    if log_lines:
        note(f"- Server log, WARNING and up: {len(log_lines)} lines; first: `{log_lines[0][:300]}`")
    else:
        note("- Server log, WARNING and up: empty.")
    for r in runs:
        for example in r.checked.examples + r.checked.errors[:3]:
            note(f"- `{r.name}`: {example}")
    return "\n".join([*head, "", *lines, "", *notes])


# -- main --


def raise_open_files(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))  # the server inherits it


def main() -> None:
    uvloop.install()
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--clients", type=int, default=10, help="per session")
    parser.add_argument("--seconds", type=float, default=60, help="each run's window")
    parser.add_argument(
        "--runs", default="distinct,shared,distinct", help="comma-separated: distinct, shared"
    )
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument(
        "--pg-log", default="/var/log/postgresql/postgresql-15-main.log", help="the server's log"
    )
    parser.add_argument("--out", default="/tmp/travel_results.md")
    parser.add_argument("--setting", action="append", default=[], help="KEY=VALUE for serve")
    parser.add_argument(
        "--python-memory",
        action="store_true",
        help="run the server under tracemalloc and report the memory Python holds and its"
        " gc-tracked objects at each step (slower; RSS then includes tracemalloc's own)",
    )
    args = parser.parse_args()
    if args.sessions * args.clients > 1000:
        raise SystemExit("at most 1,000 connections")
    kinds = args.runs.split(",")
    if not set(kinds) <= {"distinct", "shared"}:
        raise SystemExit("--runs: distinct or shared")
    raise_open_files(4 * args.sessions * args.clients + 256)
    began = time.time()
    print(f"[{clock(began)}] loading {DB}", flush=True)
    url = fresh_database(args.admin_url, DB)
    rows = load(url)
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        preloaded = str(conn.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]
        zone = str(conn.execute("SHOW log_timezone").fetchone()[0])  # type: ignore[index]
        conn.execute(f"ALTER DATABASE {DB} SET log_min_duration_statement = 0")
    statements = StatementLog(Path(args.pg_log), zone)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    scratch = Path(tempfile.mkdtemp(prefix="travel_bench_"))
    log = scratch / "server.log"
    dump = scratch / "python_memory.jsonl" if args.python_memory else None
    settings = dict(s.split("=", 1) for s in args.setting)
    server = start_server(url, port, log, dump, **settings)
    probe = Probe(args.admin_url, psutil.Process(server.pid), dump)
    try:
        time.sleep(2)
        idle_a = probe.take("idle")
        time.sleep(10)
        idle_b = probe.take("idle, 10 s later")
        print(f"[{clock(time.time())}] making {args.sessions} sessions", flush=True)
        sessions = make_sessions(base, args.sessions)
        made = probe.take("sessions made")
        time.sleep(10)
        quiet = probe.take("sessions, 10 s without clients")
        runs = []
        seen: dict[str, int] = defaultdict(int)
        for kind in kinds:
            seen[kind] += 1
            name = kind if seen[kind] == 1 else f"{kind} #{seen[kind]}"
            runs.append(
                asyncio.run(
                    run_clients(
                        name,
                        kind == "shared",
                        base,
                        port,
                        sessions,
                        args.clients,
                        args.seconds,
                        probe,
                    )
                )
            )
        for session in sessions:
            http("DELETE", f"{base}/sessions/{session.id}")
        time.sleep(11)  # pg_stat_database has every count
        ended = probe.take("sessions deleted")
        metrics = pool_metrics(port)
        log_lines = [line for line in log.read_text().splitlines() if line.strip()]
        entries = statements.read(set())
        table = report(
            args.sessions,
            Before(rows, (idle_a, idle_b), (idle_b, made), (made, quiet), ended),
            runs,
            entries,
            log_lines,
            preloaded,
        )
    finally:
        probe.close()
        server.terminate()
        server.wait(timeout=30)
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    command = shlex.join([".venv/bin/python", "bench/travel_bench.py", *sys.argv[1:]])
    header = (
        "# Time travel: what a session costs\n\n"
        f"Run of {datetime.fromtimestamp(began, UTC):%Y-%m-%d %H:%M} UTC on tree {commit}"
        f" ({os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the end).\n\n"
        f"```bash\n{command}\n```\n\n"
        f"{args.sessions} sessions x {args.clients} clients, a {args.seconds:g} s window per"
        " run once every client is connected, one `marketdata serve` (WORKERS=1, defaults:"
        " RESPONSE_CACHE_MB 64, pool 2-10, WS_MAX_SESSIONS 1000"
        + "".join(f"; {k}={v}" for k, v in settings.items())
        + (", under tracemalloc" if args.python_memory else "")
        + f"). Pool metrics at the very end: {metrics}.\n\n"
    )
    text = header + table + "\n"
    print(text)
    Path(args.out).write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
