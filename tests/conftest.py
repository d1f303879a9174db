"""Fixtures: throwaway PostgreSQL databases (created and dropped by the suite), data loaders.

The suite uses the server named by MARKETDATA_TEST_DATABASE_URL (an admin connection that may
create databases); without one it starts its own (the embedded server, in a temporary
folder), so it passes on a machine with no PostgreSQL. It never touches a database it did
not create: each is named md_test_<random> and dropped at the end.
"""

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from marketdata.adapters.embedded_postgres import embedded_database
from marketdata.adapters.postgres.catalog import REFRESH_STATEMENTS
from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.candles import Candle
from tests.proxy import TcpProxy


@contextlib.contextmanager
def embedded_home() -> Iterator[Path]:
    """A folder for an embedded server, outside pytest's tmp tree: pytest makes its root
    0700 again when another run starts, which locks out the server's own OS user."""
    home = Path(tempfile.mkdtemp(prefix="md-embedded-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    given = os.environ.get("MARKETDATA_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with embedded_home() as home, embedded_database(home, exclusive=True) as url:
        yield url


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


@pytest.fixture(scope="session")
def database_factory(admin_url: str) -> Iterator[Callable[[], str]]:
    """Creates empty databases on demand; drops them all when the session ends."""
    created: list[str] = []

    def admin() -> psycopg.Connection[Any]:
        return psycopg.connect(admin_url, autocommit=True, connect_timeout=5)

    def create() -> str:
        name = f"md_test_{uuid.uuid4().hex[:12]}"
        with admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return as_url(make_conninfo(admin_url, dbname=name))

    yield create
    with admin() as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_url(database_factory: Callable[[], str]) -> str:
    url = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    return url


@pytest.fixture
def db_url(migrated_url: str) -> str:
    """The session's migrated database, emptied before the test."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("TRUNCATE candles, candle_series")
    return migrated_url


def insert(url: str, candles: list[Candle]) -> None:
    """Rows written straight into the table, as another tool would, then the series catalog
    mended (`marketdata catalog --refresh`); the write path has tests of its own."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (c.ticker, c.tf_min, c.ts, c.open, c.high, c.low, c.close, c.volume, c.openint)
                for c in candles
            ],
        )
    refresh_catalog(url)


def refresh_catalog(url: str) -> None:
    with psycopg.connect(url) as conn:
        for statement in REFRESH_STATEMENTS:
            conn.execute(statement)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def unused_port() -> int:
    return free_port()


def database_proxy(admin_url: str) -> TcpProxy:
    """A proxy (not started: use it in a `with`) in front of the tests' PostgreSQL server."""
    params = conninfo_to_dict(admin_url)
    return TcpProxy(str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))


@pytest.fixture
def proxy(admin_url: str) -> Iterator[TcpProxy]:
    with database_proxy(admin_url) as p:
        yield p


def through(proxy: TcpProxy, url: str, password: str | None = None) -> str:
    """The same database reached through the proxy (optionally with a password in the URL)."""
    extra = {"password": password} if password else {}
    return as_url(make_conninfo(url, host="127.0.0.1", port=str(proxy.port), **extra))
