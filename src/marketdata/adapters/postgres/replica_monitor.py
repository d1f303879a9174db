"""The replicas' monitor: each replica's state, polled on a connection of its own, and the
primary's WAL position, from which each replica's lag is measured (replicas.py says what
follows from them). Lag is measured on this process's clock, not from commit timestamps: it
is the time since the primary was first seen to have written WAL the replica has not
replayed yet, 0 when the replica has replayed all the primary had written when last sampled.
An idle primary thus never makes a replica that is missing nothing look late. Where the
samples kept do not reach back far enough (the replica was down, or this process has just
started), `now() - pg_last_xact_replay_timestamp()` on the replica is taken instead when it
is larger."""

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import psycopg
import structlog

from marketdata.adapters.postgres.pool import Connection, Database, DatabaseConfig, location_of
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

PRIMARY_LSN = "SELECT pg_current_wal_lsn()::text"
REPLAYED = "SELECT coalesce(pg_last_wal_replay_lsn(), '0/0')::text"
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


class PrimaryWal:
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


class Replica:
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


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _Silent(Exception):
    """A poll that took longer than PROBE_TIMEOUT."""


class Monitor:
    """Polls the primary's WAL position and each replica's state; wakes waiters after each
    poll of a replica."""

    def __init__(
        self,
        replicas: Sequence[Replica],
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
        self._wal = PrimaryWal(max(_HISTORY_SECONDS, 4 * max_lag_seconds))
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
                    conn, row = await self._within(self._ask(self._config.url, conn, PRIMARY_LSN))
                    self._wal.note(time.monotonic(), lsn_of(row[0]))
                    failing = False
                except Exception as error:  # the monitor never stops
                    conn = None
                    if not failing:  # replicas keep their state; their lag is not measured
                        reason = _redacted(first_line(error), self._primary_password)
                        log.warning("replica monitor: the primary did not answer", error=reason)
                    failing = True
                self._primary_tried.set()
                await asyncio.sleep(max(0.0, self._poll_every - (time.monotonic() - began)))
        finally:
            if conn is not None:
                await conn.close()

    async def _watch_replica(self, replica: Replica) -> None:
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
                    replica.out(f"unreachable: {replica.redacted(first_line(error))}")
                except Exception as error:  # a bug: logged, and the monitor goes on
                    conn, replica.lag = None, None
                    log.exception("replica poll failed", replica=replica.name)
                    replica.out(f"poll failed: {replica.redacted(first_line(error))}")
                replica.polls += 1
                self._wake()
                await asyncio.sleep(max(0.0, self._poll_every - (time.monotonic() - began)))
        finally:
            if conn is not None:
                await conn.close()

    def _judge(self, replica: Replica, row: tuple[Any, ...]) -> None:
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
