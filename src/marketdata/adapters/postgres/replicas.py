"""Streaming replicas for reads: which one may serve a read now, and which are out.

Freshness. A read may use a replica only once it has replayed the WAL of what the read depends
on. The caller names that as a WAL position (LSN) of the primary: `primary_lsn`, read after the
version its answer depends on was seen, is at or past that version's commit. `reader` picks,
round-robin, a replica in service whose replay LSN, as last polled, is at least that;
`reader_within` waits for one a bounded time. None from either: read the primary.

Faults. A monitor polls each replica every POLL_EVERY seconds on a connection of its own
(outside the pools, each replica in a task of its own, each poll bounded by PROBE_TIMEOUT),
and the primary's WAL position likewise. A replica that cannot be reached, is not (or no
longer) a standby, does not answer in time or lags more than `max_lag_seconds` is out; so
is one a read just failed on (`failed`), for HOLD_AFTER_FAILURE at least. It is back in as
soon as a poll finds it healthy.

Lag is measured on this process's clock, not from commit timestamps: it is the time since the
primary was first seen to have written WAL the replica has not replayed yet, 0 when the
replica has replayed all the primary had written when last sampled. An idle primary thus
never makes a replica that is missing nothing look late (its last commit may be hours old).
Where the samples kept do not reach back far enough (the replica was down, or this process
has just started), `now() - pg_last_xact_replay_timestamp()` on the replica is taken instead
when it is larger.

What a read on a replica raises: `Database.fetch` turns every driver and pool failure into
StoreUnavailable, as on the primary: `kind` "connection" (refused, lost, or cancelled by a
recovery conflict, SQLSTATE 40001), "pool_timeout" or "statement_timeout". A read that fails
with "connection" or "pool_timeout" may be retried on the primary (reads are idempotent); call
`failed(database, error)` first, so that the next reads go elsewhere.
"""

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import msgspec
import psycopg
import structlog

from marketdata.adapters.postgres.pool import (
    Connection,
    Database,
    DatabaseConfig,
    Query,
    location_of,
)
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ports import ReplicaStatus

log = structlog.get_logger(logger_name="marketdata.replicas")

T = TypeVar("T")

POLL_EVERY = 0.05  # seconds between two polls of one replica (and of the primary)
PROBE_TIMEOUT = 1.0  # a poll (connecting included) that takes longer marks the replica out
HOLD_AFTER_FAILURE = 1.0  # a replica a read failed on stays out at least this long
# How long a read waits for a replica's pool connection (at most; DB_POOL_TIMEOUT when
# shorter): a read that meets a replica that has just gone down fails fast, for the primary
POOL_TIMEOUT = 1.0
_HISTORY_SECONDS = 60.0  # the primary's WAL positions are kept this long (at least)

_PRIMARY_LSN = "SELECT pg_current_wal_lsn()::text"
_REPLAYED = "SELECT coalesce(pg_last_wal_replay_lsn(), '0/0')::text"
_REPLICA_STATE = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
    " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
)


def lsn_of(text: str) -> int:
    """A pg_lsn's text ('16/B374D848') as a number: (high << 32) | low."""
    high, slash, low = text.strip().partition("/")
    try:
        if slash:
            return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        pass
    raise ValueError(f"not a WAL position: {text!r}")


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


async def primary_lsn(source: Database | Connection) -> int:
    """The primary's current WAL write position. Every transaction committed before the call
    (with synchronous_commit on, PostgreSQL's default) has its commit record at or before
    it, so a replica that has replayed up to it sees all of them. Raises StoreUnavailable
    through a Database, the driver's errors through a bare connection."""
    if isinstance(source, Database):
        rows = await source.fetch(_PRIMARY_LSN, None)
        return lsn_of(rows[0][0])
    cursor = await source.execute(_PRIMARY_LSN)
    row = await cursor.fetchone()
    assert row is not None
    return lsn_of(row[0])


async def replay_lsn(database: Database) -> int:
    """How far a replica has replayed the primary's WAL, asked now (0 before it replayed
    any). Raises StoreUnavailable."""
    rows = await database.fetch(_REPLAYED, None)
    return lsn_of(rows[0][0])


class _PrimaryWal:
    """The primary's WAL position as sampled: (monotonic time, LSN), one sample each time
    it moved on, oldest first; kept `keep` seconds (the newest always)."""

    def __init__(self, keep: float) -> None:
        self._keep = keep
        self._times: list[float] = []
        self._lsns: list[int] = []

    def note(self, at: float, lsn: int) -> None:
        if self._lsns and lsn <= self._lsns[-1]:
            return
        self._times.append(at)
        self._lsns.append(lsn)
        old = bisect.bisect_left(self._times, at - self._keep)
        if old:
            old = min(old, len(self._times) - 1)
            del self._times[:old], self._lsns[:old]

    def lag(self, replayed: int, now: float, replay_age: float | None) -> float | None:
        """Seconds a replica that has replayed up to `replayed` has been behind; None before
        the primary was ever sampled."""
        if not self._lsns:
            return None
        if replayed >= self._lsns[-1]:
            return 0.0
        first_missing = bisect.bisect_right(self._lsns, replayed)
        since = now - self._times[first_missing]
        if first_missing > 0:  # the samples reach back to what it had replayed
            return max(since, 0.0)
        return max(since, replay_age or 0.0, 0.0)


class _Replica:
    def __init__(self, url: str, database: Database | None) -> None:
        location = location_of(url)
        self.url = url
        self.name = f"{location.host}:{location.port}"
        self.password = location.password
        self.database = database
        self.up = False
        self.reason: str | None = "not checked yet"
        self.lagging = False  # out because of its lag
        self.lag: float | None = None
        self.replay_lsn: int | None = None
        self.reads = 0
        self.polls = 0
        self.held_until = 0.0

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(
            name=self.name,
            up=self.up,
            reason=None if self.up else self.reason,
            lag_seconds=self.lag,
            replay_lsn=self.replay_lsn,
            reads=self.reads,
        )

    def redacted(self, text: str) -> str:
        return _redacted(text, self.password)

    def back(self) -> None:
        if not self.up:
            log.info("replica in service", replica=self.name, lag_seconds=self.lag)
        self.up, self.reason, self.lagging = True, None, False

    def out(self, reason: str, *, lagging: bool = False) -> None:
        if self.up or self.polls == 0:
            log.warning("replica out of service", replica=self.name, reason=reason)
        self.up, self.reason, self.lagging = False, reason, lagging


def _redacted(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _Silent(Exception):
    """A poll that took longer than PROBE_TIMEOUT."""


class _Monitor:
    """Polls the primary's WAL position and each replica's state; wakes waiters after each
    poll of a replica."""

    def __init__(
        self,
        replicas: Sequence[_Replica],
        config: DatabaseConfig,
        max_lag_seconds: float,
        poll_every: float,
        probe_timeout: float,
    ) -> None:
        self.replicas = replicas
        self._config = config
        self._primary_password = location_of(config.url).password
        self._max_lag = max_lag_seconds
        self._poll_every = poll_every
        self._probe_timeout = probe_timeout
        self._wal = _PrimaryWal(max(_HISTORY_SECONDS, 4 * max_lag_seconds))
        self._polled = asyncio.Event()
        self._primary_tried = asyncio.Event()  # replicas are judged once the primary was asked
        self._watching: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        if self.replicas and self._watching is None:
            self._watching = asyncio.create_task(self._watch(), name="marketdata-replicas")

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.wait([self._watching])
            self._watching = None
        for task in self._abandoned:  # polls given up on, still cancelling
            task.cancel()
        if self._abandoned:
            await asyncio.wait(self._abandoned, timeout=self._probe_timeout)

    async def next_poll(self, within: float) -> None:
        """Return after the next poll of any replica, or after `within` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._polled.wait(), within)

    def _wake(self) -> None:
        polled, self._polled = self._polled, asyncio.Event()
        polled.set()

    async def _watch(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_primary())
            for replica in self.replicas:
                group.create_task(self._watch_replica(replica))

    async def _watch_primary(self) -> None:
        conn: Connection | None = None
        failing = False
        try:
            while True:
                began = time.monotonic()
                try:
                    conn, row = await self._within(self._ask(self._config.url, conn, _PRIMARY_LSN))
                    self._wal.note(time.monotonic(), lsn_of(row[0]))
                    failing = False
                except Exception as error:  # the monitor never stops
                    conn = None
                    if not failing:  # replicas keep their state; their lag is not measured
                        reason = _redacted(_first_line(error), self._primary_password)
                        log.warning("replica monitor: the primary did not answer", error=reason)
                    failing = True
                self._primary_tried.set()
                await asyncio.sleep(max(0.0, self._poll_every - (time.monotonic() - began)))
        finally:
            if conn is not None:
                await conn.close()

    async def _watch_replica(self, replica: _Replica) -> None:
        conn: Connection | None = None
        await self._primary_tried.wait()
        try:
            while True:
                began = time.monotonic()
                try:
                    conn, row = await self._within(self._ask(replica.url, conn, _REPLICA_STATE))
                    self._judge(replica, row)
                except _Silent as error:
                    conn, replica.lag = None, None
                    replica.out(str(error))
                except (psycopg.Error, OSError) as error:
                    conn, replica.lag = None, None
                    replica.out(f"unreachable: {replica.redacted(_first_line(error))}")
                except Exception as error:  # a bug: logged, and the monitor goes on
                    conn, replica.lag = None, None
                    log.exception("replica poll failed", replica=replica.name)
                    replica.out(f"poll failed: {replica.redacted(_first_line(error))}")
                replica.polls += 1
                self._wake()
                await asyncio.sleep(max(0.0, self._poll_every - (time.monotonic() - began)))
        finally:
            if conn is not None:
                await conn.close()

    def _judge(self, replica: _Replica, row: tuple[Any, ...]) -> None:
        in_recovery, replayed, replay_age = row
        if not in_recovery:
            replica.replay_lsn = replica.lag = None
            replica.out("not a standby (pg_is_in_recovery() is false: promoted?)")
            return
        if replayed is None:
            replica.out("has replayed no WAL yet")
            return
        replica.replay_lsn = lsn_of(replayed)
        now = time.monotonic()
        replica.lag = lag = self._wal.lag(replica.replay_lsn, now, replay_age)
        if lag is not None and lag > self._max_lag:
            replica.out(
                f"lags {lag:.1f} s behind the primary (more than {self._max_lag:g} s)",
                lagging=True,
            )
        elif now >= replica.held_until:
            replica.back()

    async def _ask(
        self, url: str, conn: Connection | None, query: str
    ) -> tuple[Connection, tuple[Any, ...]]:
        """One row of `query` on `conn`, or on a new connection when it has none."""
        if conn is None or conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                url,
                autocommit=True,
                connect_timeout=max(2, math.ceil(self._probe_timeout)),
                application_name="marketdata-replica-monitor",
                options=f"-c statement_timeout={round(self._probe_timeout * 1000)}"
                " -c default_transaction_read_only=on",
            )
        try:
            cursor = await conn.execute(query)
            row = await cursor.fetchone()
        except BaseException:
            await conn.close()
            raise
        assert row is not None
        return conn, row

    async def _within(self, work: Coroutine[Any, Any, T]) -> T:
        """`work` in a task of its own, waited for PROBE_TIMEOUT at most. A poll given up on
        is cancelled but not waited for (psycopg may wait seconds for a silent server to
        acknowledge the cancel); a connection it makes afterwards is closed."""
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=self._probe_timeout)
        finally:
            if not task.done():
                task.cancel()
                self._abandoned.add(task)
                task.add_done_callback(self._given_up)
        if not done:
            raise _Silent(f"did not answer within {self._probe_timeout:g} s")
        return task.result()

    def _given_up(self, task: "asyncio.Task[Any]") -> None:
        self._abandoned.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        conn, _ = task.result()
        conn.pgconn.finish()  # closed without waiting: nobody uses it

    def settled(self) -> bool:
        """Every replica polled a few times, and none out for a lag that may be passing."""
        return all(r.polls >= 3 and not r.lagging for r in self.replicas)


class ReplicaSet:
    """The streaming replicas of the primary, one pool each, and their monitor. Built with no
    URLs it is empty: `reader` always gives None and nothing is polled."""

    def __init__(
        self,
        urls: Sequence[str],
        config: DatabaseConfig,
        *,
        max_lag_seconds: float = 5.0,
        wait_seconds: float = 0.05,
        poll_every: float = POLL_EVERY,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.wait_seconds = wait_seconds
        self._replicas = [
            _Replica(
                url,
                Database(
                    msgspec.structs.replace(
                        config,
                        url=url,
                        pool_min_size=1,
                        pool_timeout=min(config.wait_timeout, POOL_TIMEOUT),
                        read_only=True,
                    )
                ),
            )
            for url in urls
        ]
        self._monitor = _Monitor(self._replicas, config, max_lag_seconds, poll_every, probe_timeout)
        self._next = 0

    @property
    def configured(self) -> bool:
        return bool(self._replicas)

    async def open(self) -> None:
        """Open each replica's pool (without waiting for it) and start the monitor."""
        for replica in self._replicas:
            assert replica.database is not None
            await replica.database.open()
        await self._monitor.open()

    async def close(self) -> None:
        await self._monitor.close()
        for replica in self._replicas:
            assert replica.database is not None
            await replica.database.close()

    def in_service(self) -> list[tuple[Database, int]]:
        """The replicas in service, each with its replay position as last polled, starting
        with the next in turn."""
        count = len(self._replicas)
        turn = [self._replicas[(self._next + step) % count] for step in range(count)]
        return [
            (r.database, r.replay_lsn)
            for r in turn
            if r.up and r.database is not None and r.replay_lsn is not None
        ]

    def served(self, database: Database) -> None:
        """A read goes to `database`: counted, and the next read starts with the one after."""
        for index, replica in enumerate(self._replicas):
            if replica.database is database:
                replica.reads += 1
                self._next = (index + 1) % len(self._replicas)

    def reader(self, required_lsn: int) -> Database | None:
        """A replica in service that has replayed up to `required_lsn` (as last polled),
        round-robin among those that have; None when none has. The read is counted."""
        count = len(self._replicas)
        for step in range(count):
            replica = self._replicas[(self._next + step) % count]
            if replica.up and replica.replay_lsn is not None and replica.replay_lsn >= required_lsn:
                self._next = (self._next + step + 1) % count
                replica.reads += 1
                return replica.database
        return None

    async def reader_within(
        self, required_lsn: int, seconds: float | None = None
    ) -> Database | None:
        """`reader`, waiting up to `seconds` (default: `wait_seconds`, REPLICA_WAIT_MS) for
        a replica to replay that far, woken by each poll; None at once when no replica is
        in service."""
        deadline = time.monotonic() + (self.wait_seconds if seconds is None else seconds)
        while (found := self.reader(required_lsn)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not any(r.up for r in self._replicas):
                return None
            await self._monitor.next_poll(left)
        return found

    def failed(self, database: Database, error: BaseException) -> None:
        """A read on `database` (a replica's) failed: out until a poll finds it healthy, and
        for HOLD_AFTER_FAILURE at least."""
        for replica in self._replicas:
            if replica.database is database:
                replica.held_until = time.monotonic() + HOLD_AFTER_FAILURE
                reason = getattr(error, "message", None) or _first_line(error)
                replica.out(f"a read failed: {replica.redacted(reason)}")

    def status(self) -> list[ReplicaStatus]:
        return [replica.status() for replica in self._replicas]


async def check_replicas(
    urls: Sequence[str],
    config: DatabaseConfig,
    max_lag_seconds: float,
    *,
    poll_every: float = POLL_EVERY,
    probe_timeout: float = PROBE_TIMEOUT,
) -> list[ReplicaStatus]:
    """Each replica polled (no pools) until its state is clear: a few polls, and, for one
    out because of its lag, until that lag has been watched for `max_lag_seconds`."""
    replicas = [_Replica(url, None) for url in urls]
    monitor = _Monitor(replicas, config, max_lag_seconds, poll_every, probe_timeout)
    await monitor.open()
    try:
        deadline = time.monotonic() + max_lag_seconds + 2 * probe_timeout
        while not monitor.settled() and (left := deadline - time.monotonic()) > 0:
            await monitor.next_poll(left)
    finally:
        await monitor.close()
    return [replica.status() for replica in replicas]


class Reads:
    """Where a candle read goes: a replica that has replayed everything the primary had
    committed when the read began, else the primary.

    "When the read began" is a WAL position of the primary asked for after the read was
    asked for (`pg_current_wal_lsn()`, one short round trip to the primary); reads that wait
    for it together share one. Without replicas every read goes to the primary, with no such
    round trip. A read that fails on a replica for want of a connection is read again on the
    primary, and that replica is left out (`ReplicaSet.failed`)."""

    def __init__(self, primary: Database, replicas: ReplicaSet) -> None:
        self.primary = primary
        self._replicas = replicas
        self._asking: asyncio.Future[int] | None = None  # a question to the primary, asked
        self._next: asyncio.Future[int] | None = None  # the one to ask after it

    async def source(self) -> Database:
        """The database this read may use now: the first replica in service, in turn, that
        has replayed `required` (as last polled, or else as it says when asked now, one
        short round trip); then, with REPLICA_WAIT_MS, one that does within that time;
        else the primary."""
        if not self._replicas.configured:
            return self.primary
        required = await self._moment()
        for database, polled in self._replicas.in_service():
            if polled < required:
                try:
                    replayed = await replay_lsn(database)
                except StoreUnavailable as error:
                    self._replicas.failed(database, error)
                    continue
                if replayed < required:
                    continue
            self._replicas.served(database)
            return database
        if self._replicas.wait_seconds > 0:
            return await self._replicas.reader_within(required) or self.primary
        return self.primary

    def retry_on_primary(self, database: Database, error: StoreUnavailable) -> bool:
        """Whether a read that failed on `database` may be read again on the primary: it
        failed on a replica, for want of a connection (the replica is then left out)."""
        if database is self.primary or error.kind not in ("connection", "pool_timeout"):
            return False
        self._replicas.failed(database, error)
        return True

    async def fetch(self, query: Query, params: Any) -> list[tuple[Any, ...]]:
        """Database.fetch, on the database `source` picks."""
        database = await self.source()
        try:
            return await database.fetch(query, params)
        except StoreUnavailable as error:
            if not self.retry_on_primary(database, error):
                raise
        return await self.primary.fetch(query, params)

    async def _moment(self) -> int:
        """A WAL position of the primary read after this call: a question already on its
        way may have been answered before a commit this read must see, so a caller joins
        the question asked next, after it."""
        if self._next is None:
            self._next = asyncio.ensure_future(self._ask_after(self._asking))
        return await asyncio.shield(self._next)

    async def _ask_after(self, previous: "asyncio.Future[int] | None") -> int:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        self._asking, self._next = self._next, None
        return await primary_lsn(self.primary)
