"""Fixtures: throwaway PostgreSQL databases (created and dropped by the suite), the app on
them, proxies. Helper functions are in tests/support.py.

The suite uses the server named by MARKETDATA_TEST_DATABASE_URL (an admin connection that may
create databases); without one it starts its own (the embedded server, in a temporary
folder), so it passes on a machine with no PostgreSQL. It never touches a database it did
not create: each is named md_test_<random> and dropped at the end.
"""

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from dishka import Provider
from litestar.testing import TestClient
from psycopg.conninfo import make_conninfo

from marketdata.adapters.embedded_postgres import embedded_database
from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.entrypoints.app import create_app
from tests.proxy import TcpProxy
from tests.replication import Replication, primary_and_replica
from tests.support import (
    AppFactory,
    Client,
    as_url,
    database_proxy,
    embedded_home,
    free_port,
    reset,
    suite_settings,
)


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    given = os.environ.get("MARKETDATA_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with embedded_home() as home, embedded_database(home, exclusive=True) as url:
        yield url


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
    reset(migrated_url)
    return migrated_url


@pytest.fixture
def app_factory(db_url: str) -> AppFactory:
    """Litestar's test client of the app on the test database (or `url`), with the suite's
    settings and `overrides`; `providers` override the composition root (fakes). Use it in a
    `with`: that starts the app and stops it."""

    def make(*providers: Provider, url: str | None = db_url, **overrides: Any) -> Client:
        return TestClient(create_app(suite_settings(url, **overrides), *providers))

    return make


@pytest.fixture
def client(app_factory: AppFactory) -> Iterator[Client]:
    with app_factory() as started:
        yield started


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture
def proxy(admin_url: str) -> Iterator[TcpProxy]:
    with database_proxy(admin_url) as p:
        yield p


@pytest.fixture(scope="session")
def replication() -> Iterator[Replication]:
    """A primary and its streaming replica of their own (tests/replication.py), started once
    per session (2-3 s), with the service's schema in their database `marketdata`."""
    with primary_and_replica("marketdata") as pair:
        asyncio.run(migrate(DatabaseConfig(url=pair.primary_url())))
        yield pair


@pytest.fixture
def replicated(replication: Replication) -> Replication:
    """The pair as every test starts with it: the replica running and replaying, the tables
    emptied, the replica caught up."""
    replication.ready()
    reset(replication.primary_url())
    replication.caught_up()
    return replication
