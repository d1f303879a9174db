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

How lag is measured: replica_monitor.py.

What a read on a replica raises: `Database.fetch` turns every driver and pool failure into
StoreUnavailable, as on the primary: `kind` "connection" (refused, lost, or cancelled by a
recovery conflict, SQLSTATE 40001), "pool_timeout" or "statement_timeout". A read that fails
with "connection" or "pool_timeout" may be retried on the primary (reads are idempotent); call
`failed(database, error)` first, so that the next reads go elsewhere.
"""

import time
from collections.abc import Sequence

import msgspec

from marketdata.adapters.postgres.pool import Connection, Database, DatabaseConfig
from marketdata.adapters.postgres.replica_monitor import (
    HOLD_AFTER_FAILURE,
    POLL_EVERY,
    POOL_TIMEOUT,
    PRIMARY_LSN,
    PROBE_TIMEOUT,
    REPLAYED,
    Monitor,
    Replica,
    first_line,
    lsn_of,
    lsn_text,
)
from marketdata.domain.ports import ReplicaStatus

__all__ = ["ReplicaSet", "check_replicas", "lsn_of", "lsn_text", "primary_lsn", "replay_lsn"]


async def primary_lsn(source: Database | Connection) -> int:
    """The primary's current WAL write position. Every transaction committed before the call
    (with synchronous_commit on, PostgreSQL's default) has its commit record at or before
    it, so a replica that has replayed up to it sees all of them. Raises StoreUnavailable
    through a Database, the driver's errors through a bare connection."""
    if isinstance(source, Database):
        rows = await source.fetch(PRIMARY_LSN, None)
        return lsn_of(rows[0][0])
    cursor = await source.execute(PRIMARY_LSN)
    row = await cursor.fetchone()
    assert row is not None
    return lsn_of(row[0])


async def replay_lsn(database: Database) -> int:
    """How far a replica has replayed the primary's WAL, asked now (0 before it replayed
    any). Raises StoreUnavailable."""
    rows = await database.fetch(REPLAYED, None)
    return lsn_of(rows[0][0])


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
            Replica(
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
        self._monitor = Monitor(self._replicas, config, max_lag_seconds, poll_every, probe_timeout)
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

    def replayed(self, database: Database, lsn: int) -> None:
        """`database` said it has replayed up to `lsn`: the reads after this one need not
        ask it again until the primary has moved past that."""
        for replica in self._replicas:
            if replica.database is database and lsn > (replica.replay_lsn or 0):
                replica.replay_lsn = lsn

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
                reason = getattr(error, "message", None) or first_line(error)
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
    replicas = [Replica(url, None) for url in urls]
    monitor = Monitor(replicas, config, max_lag_seconds, poll_every, probe_timeout)
    await monitor.open()
    try:
        deadline = time.monotonic() + max_lag_seconds + 2 * probe_timeout
        while not monitor.settled() and (left := deadline - time.monotonic()) > 0:
            await monitor.next_poll(left)
    finally:
        await monitor.close()
    return [replica.status() for replica in replicas]
