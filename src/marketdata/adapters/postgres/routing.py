"""Where a candle read goes: a replica that has replayed far enough, else the primary
(replicas.py watches the replicas; this decides per read)."""

import asyncio
import contextlib
from typing import Any

from marketdata.adapters.postgres.pool import Database, Query
from marketdata.adapters.postgres.replicas import ReplicaSet, primary_lsn, replay_lsn
from marketdata.domain.errors import StoreUnavailable


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

    @classmethod
    def primary_only(cls, primary: Database) -> "Reads":
        """Every read on the primary (no replicas configured)."""
        return cls(primary, ReplicaSet((), primary.config))

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
                self._replicas.replayed(database, replayed)
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
