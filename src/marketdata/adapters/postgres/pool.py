"""The connection pool, and how its connections are lent out so that none is ever lost.

psycopg_pool loses a connection when the task holding it is cancelled at the wrong moment:
inside `putconn` while it waits for the pool's lock (seen here: a replay's page read,
cancelled because its client left, lost its connection that way), or around the hand-over
in `getconn` (psycopg issues 509, 1208, 1275, 1345). So the pool's own calls never run in a
task that can be cancelled: each hand-over (getconn, putconn, check) runs in a task of its
own, which the caller awaits through `asyncio.shield`. A cancelled caller stops waiting; the
hand-over still completes, and a connection it produced for nobody goes straight back.

Every connection lent out is a `_Lease` naming the task that holds it. A lease whose task
has ended without giving it back (an abandoned async generator, say) is found by a sweep,
logged once, and taken back: the connection is closed, and the pool replaces it.
"""

import asyncio
import math
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import psycopg
import structlog
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from marketdata.domain.errors import StoreUnavailable

log = structlog.get_logger(logger_name="marketdata.pool")

Connection = psycopg.AsyncConnection[Any]
Query = str | bytes | sql.SQL | sql.Composed
T = TypeVar("T")


class DatabaseConfig(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    connect_timeout: float = 5.0
    command_timeout: float = 30.0
    pool_min_size: int = 2
    pool_max_size: int = 10
    pool_timeout: float | None = None  # None: connect_timeout
    # A streaming replica's pool: every transaction read-only by default (a replica that was
    # promoted meanwhile still refuses writes through it)
    read_only: bool = False

    @property
    def wait_timeout(self) -> float:
        return self.pool_timeout or self.connect_timeout


class Location(msgspec.Struct, frozen=True):
    host: str
    port: str
    password: str | None

    def unavailable(self, reason: str, kind: str = "connection") -> StoreUnavailable:
        if self.password:
            reason = reason.replace(self.password, "***")
        return StoreUnavailable(self.host, self.port, reason, kind)


def location_of(url: str) -> Location:
    params = conninfo_to_dict(url)
    return Location(
        host=str(params.get("host") or "localhost"),
        port=str(params.get("port") or "5432"),
        password=str(params["password"]) if params.get("password") else None,
    )


# What the service's SQL relies on, whatever a database or role sets by default (`ALTER
# DATABASE ... SET`): instants in UTC and written as ISO 8601 (JSON made by the database,
# `bodies.py`), floats written as their shortest text that reads back as the same float.
SESSION = "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=1"


def _options(url: str, ours: str) -> str:
    """The URL's own `options` (a search_path, say), then ours: psycopg's `options` argument
    takes the URL's place."""
    given = conninfo_to_dict(url).get("options")
    return f"{given} {ours}" if given else ours


def _connect_timeout(config: DatabaseConfig) -> int:
    # libpq takes whole seconds and psycopg enforces at least 2.
    return max(2, math.ceil(config.connect_timeout))


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
            f"no connection could be had within {config.wait_timeout:g} s", "pool_timeout"
        ) from None
    except pg_errors.QueryCanceled:
        raise location.unavailable(
            f"the query did not finish within DB_COMMAND_TIMEOUT ({config.command_timeout:g} s)",
            "statement_timeout",
        ) from None
    except pg_errors.UndefinedTable:
        raise location.unavailable(
            "the candles table does not exist: run `marketdata migrate`", "schema"
        ) from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        raise location.unavailable(_first_line(error)) from None


async def connect(config: DatabaseConfig, name: str) -> Connection:
    """One connection outside the pool, with no statement timeout (migrations and imports
    may be long); raises StoreUnavailable."""
    async with translated_errors(location_of(config.url), config):
        return await psycopg.AsyncConnection.connect(
            config.url,
            autocommit=True,
            connect_timeout=_connect_timeout(config),
            application_name=name,
            options=_options(config.url, SESSION),
        )


class _Lease:
    __slots__ = ("conn", "owner", "since")

    def __init__(self, conn: Connection, owner: "asyncio.Task[Any] | None") -> None:
        self.conn = conn
        self.owner = owner
        self.since = time.monotonic()


class Database:
    """The pool of one process, lent out through hand-overs a cancellation cannot cut.

    The pool opens without waiting, so the service starts (degraded) during an outage.
    `pool_timeout` bounds how long a caller waits for a connection; `reconnect_timeout` is
    short, so that a failed reconnection gives up quickly and the next request tries again
    at once instead of waiting out a backoff.
    """

    def __init__(self, config: DatabaseConfig, sweep_every: float = 1.0) -> None:
        self.config = config
        self.location = location_of(config.url)
        name = "marketdata-replica" if config.read_only else "marketdata"
        read_only = " -c default_transaction_read_only=on" if config.read_only else ""
        self._pool: AsyncConnectionPool = AsyncConnectionPool(
            config.url,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            kwargs={
                "connect_timeout": _connect_timeout(config),
                # work_mem: the sorts of resampling and of keeping rollups (a day of
                # one-minute candles, a year of hourly ones) fit in memory instead of
                # spilling to disk: 15-25 % faster, measured (bench/README.md)
                "options": _options(
                    config.url,
                    f"-c statement_timeout={round(config.command_timeout * 1000)}"
                    f" {SESSION} -c work_mem=32MB{read_only}",
                ),
                "application_name": name,
                "autocommit": True,
            },
            timeout=config.wait_timeout,
            reconnect_timeout=1.0,
            open=False,
            name=name,
        )
        self._sweep_every = sweep_every
        self._leases: dict[int, _Lease] = {}
        self._handovers: set[asyncio.Task[Any]] = set()
        self._weeding: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.reclaimed = 0  # leases taken back from owners that had ended

    async def open(self) -> None:
        await self._pool.open(wait=False)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="marketdata-lease-sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait([self._sweeper])
        await self._pool.close()

    async def filled(self, within: float) -> None:
        """Return once the pool holds its minimum of connections (else PoolTimeout)."""
        await self._pool.wait(timeout=within)

    def stats(self) -> dict[str, int]:
        """The pool's own figures, plus the leases this process holds and has reclaimed."""
        return {**self._pool.get_stats(), "leases": len(self._leases), "reclaimed": self.reclaimed}

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection for the block; given back however the block ends."""
        conn = await self._acquire()
        # No await between the hand-over and the lease: nothing can cut in here.
        lease = _Lease(conn, asyncio.current_task())
        self._leases[id(conn)] = lease
        try:
            yield conn
        finally:
            await self._give_back(lease)

    async def fetch(self, query: Query, params: Any) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement, with binary results (5,000 rows loaded in 9.8 ms
        against 17 ms as text, measured here); failures become StoreUnavailable."""
        async with translated_errors(self.location, self.config):
            try:
                return await self._fetch_once(query, params)
            except psycopg.OperationalError as error:
                if not _connection_lost(error):
                    raise
                # Idle pooled connections die with the server (restart, network cut) and
                # fail on first use. Reads are idempotent: weed the dead ones out and retry
                # once, instead of checking every connection before every query.
                await self._weed()
                return await self._fetch_once(query, params)

    async def _fetch_once(self, query: Query, params: Any) -> list[tuple[Any, ...]]:
        async with self.connection() as conn:
            cursor = conn.cursor(binary=True)
            await cursor.execute(query, params)
            return await cursor.fetchall()

    def _handover(self, work: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
        """Run one of the pool's own calls in a task that nothing cancels."""
        task = asyncio.ensure_future(work)
        self._handovers.add(task)
        task.add_done_callback(self._handover_done)
        return task

    def _handover_done(self, task: "asyncio.Task[Any]") -> None:
        self._handovers.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # PoolTimeout and the like reach the caller that waited; this is for the others
            log.debug("pool hand-over failed", error=repr(error))

    async def _acquire(self) -> Connection:
        getting = self._handover(self._pool.getconn())
        try:
            return await asyncio.shield(getting)
        except BaseException:
            # Cancelled while waiting, or right after the pool handed it over: whatever
            # getconn produces goes back to the pool.
            getting.add_done_callback(self._unclaimed)
            raise

    def _unclaimed(self, getting: "asyncio.Task[Connection]") -> None:
        if not getting.cancelled() and getting.exception() is None:
            self._handover(self._pool.putconn(getting.result()))

    async def _give_back(self, lease: _Lease) -> None:
        if self._leases.pop(id(lease.conn), None) is not lease:
            return  # already reclaimed by the sweep
        await asyncio.shield(self._handover(self._pool.putconn(lease.conn)))

    async def _weed(self) -> None:
        """pool.check() takes every idle connection out of the pool while it tests them:
        one check at a time, in a task of its own."""
        if self._weeding is None or self._weeding.done():
            self._weeding = self._handover(self._pool.check())
        await asyncio.shield(self._weeding)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            await self.sweep()

    async def sweep(self) -> int:
        """Take back connections whose holder has ended without giving them back; how many.
        Not one in the middle of an operation (another task's: a generator the event loop
        closes after its reader ended, closing its cursor): closing it under that task
        left libpq working on a freed connection, and the process died. The next sweep
        sees it again."""
        orphans = [
            lease
            for lease in self._leases.values()
            if (lease.owner is None or lease.owner.done()) and not lease.conn.lock.locked()
        ]
        for lease in orphans:
            del self._leases[id(lease.conn)]
            self.reclaimed += 1
            log.warning(
                "reclaimed a pool connection whose holder ended without giving it back",
                holder=lease.owner.get_name() if lease.owner is not None else None,
                held_seconds=round(time.monotonic() - lease.since, 3),
            )
            # Closed first: whatever still refers to it can no longer use it.
            await asyncio.shield(self._handover(self._discard(lease.conn)))
        return len(orphans)

    async def _discard(self, conn: Connection) -> None:
        await conn.close()
        await self._pool.putconn(conn)  # a closed connection: the pool opens another
