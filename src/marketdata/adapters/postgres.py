"""PostgreSQL: the connection pool, the read queries and the migrations.

Driver errors never leave this module: connection failures, pool time-outs and statement
time-outs become the domain's StoreUnavailable, carrying host and port but no credentials.
"""

import math
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from typing import Any

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ingest import BadFile, Row, WriteResult
from marketdata.domain.replay import ReplayKey, ReplaySelection

# pg_advisory_lock key held while migrating, so that replicas starting together take turns.
MIGRATION_LOCK_KEY = 0x6D61726B657464  # "marketd"


class DatabaseConfig(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    connect_timeout: float = 5.0
    command_timeout: float = 30.0
    pool_min_size: int = 2
    pool_max_size: int = 10
    pool_timeout: float | None = None  # None: connect_timeout

    @property
    def wait_timeout(self) -> float:
        return self.pool_timeout or self.connect_timeout


class Location(msgspec.Struct, frozen=True):
    host: str
    port: str
    password: str | None

    def unavailable(self, reason: str) -> StoreUnavailable:
        if self.password:
            reason = reason.replace(self.password, "***")
        return StoreUnavailable(self.host, self.port, reason)


def location_of(url: str) -> Location:
    params = conninfo_to_dict(url)
    return Location(
        host=str(params.get("host") or "localhost"),
        port=str(params.get("port") or "5432"),
        password=str(params["password"]) if params.get("password") else None,
    )


def connection_kwargs(config: DatabaseConfig) -> dict[str, Any]:
    return {
        # libpq takes whole seconds and psycopg enforces at least 2.
        "connect_timeout": max(2, math.ceil(config.connect_timeout)),
        "options": (f"-c statement_timeout={round(config.command_timeout * 1000)} -c TimeZone=UTC"),
        "application_name": "marketdata",
        "autocommit": True,
    }


def _connection_lost(error: psycopg.OperationalError) -> bool:
    """The connection itself failed (no SQLSTATE, or 57P0x: the server shut it down),
    as opposed to the statement (57014 statement timeout, and so on)."""
    if isinstance(error, PoolTimeout):  # no connection at all: nothing to retry on
        return False
    return error.sqlstate is None or error.sqlstate.startswith("57P")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@asynccontextmanager
async def translated_errors(location: Location, config: DatabaseConfig) -> AsyncIterator[None]:
    """Turn the driver's and the pool's failures into StoreUnavailable."""
    try:
        yield
    except PoolTimeout:
        raise location.unavailable(
            f"no connection could be had within {config.wait_timeout:g} s"
        ) from None
    except pg_errors.QueryCanceled:
        raise location.unavailable(
            f"the query did not finish within DB_COMMAND_TIMEOUT ({config.command_timeout:g} s)"
        ) from None
    except pg_errors.UndefinedTable:
        raise location.unavailable(
            "the candles table does not exist: run `marketdata migrate`"
        ) from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        raise location.unavailable(_first_line(error)) from None


async def open_pool(config: DatabaseConfig) -> AsyncConnectionPool:
    """A pool that opens without waiting, so the service starts (degraded) during an outage.

    `pool_timeout` bounds how long a request waits for a connection; `reconnect_timeout` is short
    so that a failed reconnection gives up quickly and the next request tries again at once:
    the pool recovers within about a second of the server's return instead of backing off.
    """
    pool: AsyncConnectionPool = AsyncConnectionPool(
        config.url,
        min_size=config.pool_min_size,
        max_size=config.pool_max_size,
        kwargs=connection_kwargs(config),
        timeout=config.wait_timeout,
        reconnect_timeout=1.0,
        open=False,
        name="marketdata",
    )
    await pool.open(wait=False)
    return pool


Query = str | bytes | sql.SQL | sql.Composed

_COLUMNS = (
    "ticker, tf_min, ts, open::float8, high::float8, low::float8, close::float8,"
    " volume::float8, coalesce(openint, 0)::int8"
)

# A loose index scan: one index probe per distinct ticker instead of a DISTINCT over the table.
# The prefix is compared literally (no LIKE patterns) and case-insensitively.
_SYMBOLS = """
WITH RECURSIVE tickers(ticker, n) AS (
    SELECT min(ticker), 1 FROM candles
  UNION ALL
    SELECT (SELECT min(c.ticker) FROM candles c WHERE c.ticker > t.ticker), t.n + 1
    FROM tickers t WHERE t.ticker IS NOT NULL
)
SELECT ticker FROM (
    SELECT ticker, n FROM tickers
    WHERE ticker IS NOT NULL
      AND lower(left(ticker, char_length(%(prefix)s))) = lower(%(prefix)s)
    LIMIT %(limit)s
) found ORDER BY n
"""

_CANDLES = {
    Order.ASC: f"SELECT {_COLUMNS} FROM candles WHERE ticker = %s AND tf_min = %s"
    " ORDER BY ts ASC LIMIT %s",
    Order.DESC: f"SELECT {_COLUMNS} FROM candles WHERE ticker = %s AND tf_min = %s"
    " ORDER BY ts DESC LIMIT %s",
}

_RANGE = (
    f"SELECT {_COLUMNS} FROM candles WHERE ticker = %s AND tf_min = %s"
    " AND ts >= %s AND ts <= %s ORDER BY ts ASC LIMIT %s"
)


class _PooledReader:
    """Runs read-only statements on a pooled connection, translating failures."""

    def __init__(self, pool: AsyncConnectionPool, config: DatabaseConfig) -> None:
        self._pool = pool
        self._config = config
        self._location = location_of(config.url)

    async def _fetch(self, query: Query, params: Any) -> list[tuple[Any, ...]]:
        async with translated_errors(self._location, self._config):
            try:
                return await self._fetch_once(query, params)
            except psycopg.OperationalError as error:
                if not _connection_lost(error):
                    raise
                # Idle pooled connections die with the server (restart, network cut) and
                # fail on first use. Reads are idempotent: weed the dead ones out and retry
                # once, instead of checking every connection before every query.
                await self._pool.check()
                return await self._fetch_once(query, params)

    async def _fetch_once(self, query: Query, params: Any) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            # Binary results: about twice as fast to load as text for float8/timestamptz.
            cursor = conn.cursor(binary=True)
            await cursor.execute(query, params)
            return await cursor.fetchall()


class PostgresCandleRepository(_PooledReader):
    """CandleRepository and StoreHealth over a psycopg pool; plain SQL returning Structs."""

    async def symbols(self, prefix: str, limit: int) -> list[str]:
        rows = await self._fetch(_SYMBOLS, {"prefix": prefix, "limit": limit})
        return [row[0] for row in rows]

    async def candles(self, ticker: str, tf_min: int, limit: int, order: Order) -> list[Candle]:
        rows = await self._fetch(_CANDLES[order], (ticker, tf_min, limit))
        return [Candle(*row) for row in rows]

    async def candle_range(
        self, ticker: str, tf_min: int, time_range: TimeRange, limit: int
    ) -> list[Candle]:
        rows = await self._fetch(_RANGE, (ticker, tf_min, time_range.start, time_range.end, limit))
        return [Candle(*row) for row in rows]

    async def ping(self) -> None:
        await self._fetch("SELECT 1", None)


_SELECTED = (
    "ticker = ANY(%(tickers)s) AND tf_min = %(tf_min)s"
    " AND ts >= coalesce(%(start)s::timestamptz, '-infinity')"
    " AND ts <= coalesce(%(end)s::timestamptz, 'infinity')"
)


def _selection_params(selection: ReplaySelection) -> dict[str, Any]:
    return {
        "tickers": list(selection.tickers),
        "tf_min": selection.tf_min,
        "start": selection.start,
        "end": selection.end,
    }


class PostgresReplaySource(_PooledReader):
    """ReplaySource: keyset pages on (ts, ticker), each on a pooled connection of its own,
    so a replay holds no connection between pages whatever its length."""

    async def count(self, selection: ReplaySelection) -> int:
        rows = await self._fetch(
            f"SELECT count(*) FROM candles WHERE {_SELECTED}", _selection_params(selection)
        )
        return int(rows[0][0])

    async def count_before(self, selection: ReplaySelection, ts: datetime) -> int:
        rows = await self._fetch(
            f"SELECT count(*) FROM candles WHERE {_SELECTED} AND ts < %(before)s",
            {**_selection_params(selection), "before": ts},
        )
        return int(rows[0][0])

    async def key_at(self, selection: ReplaySelection, seq: int) -> ReplayKey | None:
        rows = await self._fetch(
            f"SELECT ts, ticker FROM candles WHERE {_SELECTED}"
            " ORDER BY ts, ticker OFFSET %(seq)s LIMIT 1",
            {**_selection_params(selection), "seq": seq},
        )
        return ReplayKey(rows[0][0], rows[0][1]) if rows else None

    async def page(
        self, selection: ReplaySelection, after: ReplayKey | None, size: int
    ) -> list[Candle]:
        # One index range scan per ticker, merged: "ticker = ANY(...) ORDER BY ts" would
        # read every row of the range before sorting. (ts, ticker) > after becomes, for a
        # given ticker, ts >= after.ts when the ticker sorts after after.ticker, else ts >.
        parts: list[sql.Composable] = []
        params: list[Any] = []
        for ticker in selection.tickers:
            bound: sql.Composable = sql.SQL("")
            if after is not None:
                op = ">=" if ticker > after.ticker else ">"
                bound = sql.SQL(" AND ts {} %s").format(sql.SQL(op))
            parts.append(
                sql.SQL(
                    "(SELECT {} FROM candles WHERE ticker = %s AND tf_min = %s"
                    " AND ts >= coalesce(%s::timestamptz, '-infinity')"
                    " AND ts <= coalesce(%s::timestamptz, 'infinity'){} ORDER BY ts LIMIT %s)"
                ).format(sql.SQL(_COLUMNS), bound)
            )
            params += [ticker, selection.tf_min, selection.start, selection.end]
            if after is not None:
                params.append(after.ts)
            params.append(size)
        query = sql.SQL("SELECT * FROM ({}) merged ORDER BY ts, ticker LIMIT %s").format(
            sql.SQL(" UNION ALL ").join(parts)
        )
        rows = await self._fetch(query, [*params, size])
        return [Candle(*row) for row in rows]


_STAGING = (
    "CREATE TEMP TABLE candles_staging (ticker text, tf_min int4, ts timestamptz,"
    " open float8, high float8, low float8, close float8, volume float8, openint int8)"
    " ON COMMIT DROP"
)
_STAGING_TYPES = [
    "text",
    "int4",
    "timestamptz",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "int8",
]
_KEY = "c.ticker = s.ticker AND c.tf_min = s.tf_min AND c.ts = s.ts"
_DUPLICATE = """
SELECT ticker, tf_min, ts FROM candles_staging
GROUP BY ticker, tf_min, ts HAVING count(*) > 1 LIMIT 1
"""
# Changed candles first, then the new ones with a plain INSERT: about twice as fast as
# INSERT ... ON CONFLICT on this machine (bench/README.md). Rows go in key order.
_UPDATE = f"""
UPDATE candles c SET open = s.open, high = s.high, low = s.low, close = s.close,
    volume = s.volume, openint = s.openint
FROM candles_staging s
WHERE {_KEY}
  AND (c.open, c.high, c.low, c.close, c.volume, c.openint)
      IS DISTINCT FROM (s.open, s.high, s.low, s.close, s.volume, s.openint)
"""
_INSERT = f"""
INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)
SELECT s.ticker, s.tf_min, s.ts, s.open, s.high, s.low, s.close, s.volume, s.openint
FROM candles_staging s
WHERE NOT EXISTS (SELECT 1 FROM candles c WHERE {_KEY})
ORDER BY s.ticker, s.tf_min, s.ts
"""
# When another writer inserted some of the same new candles meanwhile, the plain INSERT
# meets them: this upsert then settles the rest (a candle equal to the stored one is not
# rewritten).
_UPSERT = """
WITH written AS (
    INSERT INTO candles AS c (ticker, tf_min, ts, open, high, low, close, volume, openint)
    SELECT ticker, tf_min, ts, open, high, low, close, volume, openint
    FROM candles_staging ORDER BY ticker, tf_min, ts
    ON CONFLICT (ticker, tf_min, ts) DO UPDATE SET
        open = excluded.open, high = excluded.high, low = excluded.low,
        close = excluded.close, volume = excluded.volume, openint = excluded.openint
    WHERE (c.open, c.high, c.low, c.close, c.volume, c.openint)
        IS DISTINCT FROM (excluded.open, excluded.high, excluded.low, excluded.close,
                          excluded.volume, excluded.openint)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
"""


async def write_rows(conn: psycopg.AsyncConnection[Any], rows: Iterable[Row]) -> WriteResult:
    """COPY the rows into a staging table, then merge them into candles, in one
    transaction: a bad row (raised by `rows`) or any failure leaves candles untouched."""
    count = 0
    async with conn.transaction(), conn.cursor() as cursor:
        await cursor.execute(_STAGING)
        async with cursor.copy("COPY candles_staging FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_STAGING_TYPES)
            for row in rows:
                await copy.write_row(row)
                count += 1
        await cursor.execute("ANALYZE candles_staging")
        await cursor.execute(_DUPLICATE)
        if twice := await cursor.fetchone():
            raise BadFile(
                f"the data holds the candle {twice[0]} tf_min={twice[1]}"
                f" ts={twice[2].isoformat()} more than once"
            )
        await cursor.execute(_UPDATE)
        updated = cursor.rowcount
        try:
            async with conn.transaction():  # a savepoint
                await cursor.execute(_INSERT)
                inserted = cursor.rowcount
        except pg_errors.UniqueViolation:
            await cursor.execute(_UPSERT)
            settled = await cursor.fetchone() or (0, 0)
            inserted, updated = int(settled[0]), updated + int(settled[1])
    return WriteResult(rows=count, inserted=inserted, updated=updated)


class PostgresCandleWriter:
    """CandleWriter on a pooled connection (for the HTTP write API)."""

    def __init__(self, pool: AsyncConnectionPool, config: DatabaseConfig) -> None:
        self._pool = pool
        self._config = config
        self._location = location_of(config.url)

    async def write(self, rows: Iterable[Row]) -> WriteResult:
        async with translated_errors(self._location, self._config), self._pool.connection() as conn:
            return await write_rows(conn, rows)


async def connect(config: DatabaseConfig, name: str = "marketdata") -> psycopg.AsyncConnection[Any]:
    """One connection outside the pool, with no statement timeout (long imports)."""
    async with translated_errors(location_of(config.url), config):
        return await _connect(config, name)


async def _connect(config: DatabaseConfig, name: str) -> psycopg.AsyncConnection[Any]:
    """One connection outside the pool, with no statement timeout (migrations may be long)."""
    return await psycopg.AsyncConnection.connect(
        config.url,
        autocommit=True,
        connect_timeout=max(2, math.ceil(config.connect_timeout)),
        application_name=name,
    )


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every migration, in the order they apply."""
    folder = resources.files("marketdata.adapters") / "migrations"
    return sorted(
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )


async def migrate(config: DatabaseConfig) -> list[str]:
    """Apply each pending migration once, in its own transaction, under an advisory lock.

    Works on a database laid out by the seed: the table is kept, `numeric` columns too.
    Returns the versions applied by this call (empty when up to date).
    """
    location = location_of(config.url)
    applied_now: list[str] = []
    async with (
        translated_errors(location, config),
        await _connect(config, "marketdata-migrate") as conn,
    ):
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            for version, sql in migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
                    )
                applied_now.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


async def pending_migrations(config: DatabaseConfig) -> list[str]:
    """Versions not yet applied; raises StoreUnavailable when the database cannot be reached."""
    location = location_of(config.url)
    async with (
        translated_errors(location, config),
        await _connect(config, "marketdata-check") as conn,
    ):
        cursor = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = await cursor.fetchone()
        done: set[str] = set()
        if row and row[0]:
            cursor = await conn.execute("SELECT version FROM schema_migrations")
            done = {r[0] for r in await cursor.fetchall()}
    return [version for version, _ in migration_files() if version not in done]
