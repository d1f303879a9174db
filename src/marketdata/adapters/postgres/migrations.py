"""Schema migrations: plain SQL files applied in order, each once, under an advisory lock;
and the store's health as the probes see it."""

import asyncio
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec
import psycopg
import structlog

from marketdata.adapters.postgres.pool import (
    Database,
    DatabaseConfig,
    connect,
    location_of,
    translated_errors,
)
from marketdata.domain.errors import StoreUnavailable

log = structlog.get_logger(logger_name="marketdata.migrations")

# pg_advisory_lock key held while migrating, so that replicas starting together take turns.
MIGRATION_LOCK_KEY = 0x6D61726B657464  # "marketd"

Fetch = Callable[[str], Awaitable[list[tuple[Any, ...]]]]


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every migration, in the order they apply."""
    folder = resources.files("marketdata.adapters.postgres") / "migrations"
    return sorted(
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )


async def _pending(fetch: Fetch) -> list[str]:
    done: set[str] = set()
    if (await fetch("SELECT to_regclass('schema_migrations') IS NOT NULL"))[0][0]:
        done = {row[0] for row in await fetch("SELECT version FROM schema_migrations")}
    return [version for version, _ in migration_files() if version not in done]


# TimescaleDB gives hypertables statement triggers with transition tables from 2.18 (its pull
# request 6901); the triggers of migration 0006 need them.
TIMESCALE_TRIGGERS = (2, 18)


async def timescale_refusal(config: DatabaseConfig) -> str | None:
    """Why the triggers cannot be on `candles` (a hypertable of an older TimescaleDB), or
    None; said by `check`, as the migration that would add them says it at start-up."""
    async with (
        await connect(config, "marketdata-check") as conn,
        translated_errors(location_of(config.url), config),
    ):
        row = await (
            await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        ).fetchone()
        if row is None:
            return None
        hyper = await (
            await conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables"
                " WHERE hypertable_name = 'candles'"
            )
        ).fetchone()
    return timescale_message(str(row[0]), bool(hyper and hyper[0]))


def timescale_message(installed: str, hypertable: bool) -> str | None:
    """The refusal for TimescaleDB `installed` (its `extversion`, e.g. 2.17.2 or 2.18.0-dev)
    when candles is a hypertable, or None."""
    numbers = tuple(int(n) for n in installed.split("-")[0].split(".") if n.isdigit())
    if not hypertable or numbers >= TIMESCALE_TRIGGERS:
        return None
    return (
        f"TimescaleDB {installed} is installed and candles is a hypertable: the triggers that"
        " keep the series catalog, the rollups and the change feed need TimescaleDB 2.18 or"
        " newer (ALTER EXTENSION timescaledb UPDATE)"
    )


async def pending_migrations(config: DatabaseConfig) -> list[str]:
    """Versions not yet applied; raises StoreUnavailable when the database cannot be reached."""
    async with (
        await connect(config, "marketdata-check") as conn,
        translated_errors(location_of(config.url), config),
    ):

        async def fetch(query: str) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query)).fetchall()

        return await _pending(fetch)


class Migrated(msgspec.Struct, frozen=True):
    """What `migrate` did: the versions it applied (empty when up to date), and what they
    mended on the way (a series whose catalog row disagreed with its candles, say)."""

    applied: list[str]
    mended: list[str]


async def migrate(config: DatabaseConfig) -> Migrated:
    """Apply each pending migration once, in its own transaction, under an advisory lock.

    Works on a database laid out by the seed: the table is kept, `numeric` columns too; one
    of an earlier version or with rows written around the service is mended on the way (the
    migrations say so in NOTICEs beginning with "mended").
    """
    applied_now: list[str] = []
    mended: list[str] = []

    def noted(notice: psycopg.errors.Diagnostic) -> None:
        if (text := notice.message_primary or "").startswith("mended"):
            mended.append(text)

    async with (
        await connect(config, "marketdata-migrate") as conn,
        translated_errors(location_of(config.url), config),
    ):
        conn.add_notice_handler(noted)
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            for version, text in migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(text.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
                    )
                applied_now.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    for text in mended:
        log.warning("migration mended what was written around the service", mended=text)
    return Migrated(applied_now, mended)


async def migrate_when_reachable(config: DatabaseConfig) -> Migrated:
    """Apply the migrations as soon as the database answers, retrying with growing pauses
    (1 s up to 10 s) while it does not. For start-up during an outage: run in the
    background, the service serves (and says it is not ready) meanwhile."""
    pause = 1.0
    while True:
        try:
            return await migrate(config)
        except StoreUnavailable:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)


class PostgresHealth:
    """StoreHealth over the pool."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._migrated = False

    async def ping(self) -> None:
        await self._db.fetch("SELECT 1", None)

    async def pending_migrations(self) -> list[str]:
        if self._migrated:  # migrations are never undone: once up to date, stay so
            return []

        async def fetch(query: str) -> list[tuple[Any, ...]]:
            return await self._db.fetch(query, None)

        pending = await _pending(fetch)
        self._migrated = not pending
        return pending
