"""Live candles across processes, through PostgreSQL's own LISTEN/NOTIFY (see `changes`
for what each write announces, whoever writes).

Each process has one listener: a connection of its own, outside the pool, that reconnects
by itself. Coming back, it reads the changes of the transactions committed while it was
away from `candle_changes`, by snapshot: those its new snapshot sees and its last one did
not (and it has not already delivered). Its snapshot moves on every few seconds, once a
notification it sends itself proves that it has received everything committed before.

The changes of the notifications heard are read back from the table in one query, once per
process; each stream built otherwise than as stored (resampled, or kept to a session) then
gets its bars from the same statements as history (`bars.py`), one query per group of
streams built alike and change. A notification names its tickers: what this process knows
of them is forgotten at once.
"""

import asyncio
import contextlib
import heapq
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import structlog

from marketdata.adapters.postgres import changes
from marketdata.adapters.postgres.bars import bars_params, bars_sql, shape_of
from marketdata.adapters.postgres.changes import Change, Delivered, Heard, Snapshot
from marketdata.adapters.postgres.channel import CHANNEL, FLUSH, CandleWatch, readable
from marketdata.adapters.postgres.forming import forming_sql
from marketdata.adapters.postgres.known import KnownSeries
from marketdata.adapters.postgres.live_events import (
    Built,
    as_stored,
    delivery_order,
    formed,
    sent_as_written,
    stored_in_session,
)
from marketdata.adapters.postgres.pool import Database, DatabaseConfig, connect
from marketdata.adapters.postgres.reads import holdings_of
from marketdata.adapters.postgres.sessions import SessionWatch, changed_session
from marketdata.adapters.postgres.subscriptions import LiveLimits, Subscription
from marketdata.domain.candles import Candle, LiveEvent, Order, TimeRange
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.replay import ReplaySelection, Stream, Wake
from marketdata.domain.replay.selection import planned_stream
from marketdata.domain.timeframes import Resample

log = structlog.get_logger(logger_name="marketdata.live")

_ADVANCE_EVERY = 5.0  # seconds between moves of the listener's snapshot
_PRUNE_EVERY = 600.0


class PostgresLiveFeed:
    """LiveFeed over LISTEN/NOTIFY; one per process."""

    def __init__(
        self,
        config: DatabaseConfig,
        database: Database,
        known: KnownSeries | None = None,
        limits: LiveLimits | None = None,
        sessions: SessionWatch | None = None,
        written: CandleWatch | None = None,
    ) -> None:
        self.known = known or KnownSeries()
        self.sessions = sessions or SessionWatch()
        self.written = written or CandleWatch()
        self.limits = limits or LiveLimits()
        self._config = config
        self._db = database
        self._subscribers: dict[tuple[str, int], set[Subscription]] = {}
        self._by_ticker: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._snapshot: Snapshot | None = None
        self._seen = Delivered()  # what was delivered that the snapshot does not see
        self.connected = asyncio.Event()
        self.delivered = 0  # changes delivered (for metrics and tests)
        # what was heard, in order, for the delivery task: the listener goes straight back
        # to listening, so that every notification waiting is heard (and the tickers it
        # names forgotten) before a request trusts what this process knows
        self._heard: asyncio.Queue[Heard] = asyncio.Queue()
        self._delivering: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="marketdata-live")
        self._delivering = asyncio.create_task(self._deliver_forever(), name="marketdata-live-out")

    async def close(self) -> None:
        for task in (self._task, self._delivering):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])

    async def _deliver_forever(self) -> None:
        while True:
            changed = [await self._heard.get()]
            while not self._heard.empty():  # all that waits, in one read
                changed.append(self._heard.get_nowait())
            for pause in (0.2, 0.4, 0.8, 1.6, 3.2, None):  # the pool may be coming back
                try:
                    await self._deliver(changed)
                    break
                except (psycopg.Error, StoreUnavailable, OSError) as error:
                    if pause is None:
                        log.error("live candles not sent: reading them failed", error=str(error))
                    else:
                        await asyncio.sleep(pause)

    # subscriptions

    def subscribe(
        self, streams: Sequence[Stream], wake: Wake, cut: asyncio.Event | None = None
    ) -> Subscription:
        subscription = Subscription(
            self.unsubscribe, streams, self.limits, wake, cut or asyncio.Event()
        )
        for stream in subscription.streams:
            self._subscribers.setdefault((stream.ticker, stream.tf_min), set()).add(subscription)
            self._by_ticker.setdefault(stream.ticker, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        for stream in subscription.streams:
            series = (stream.ticker, stream.tf_min)
            self._subscribers.get(series, set()).discard(subscription)
            if not self._subscribers.get(series, True):
                del self._subscribers[series]
            self._by_ticker.get(stream.ticker, set()).discard(subscription)
            if not self._by_ticker.get(stream.ticker, True):
                del self._by_ticker[stream.ticker]

    @property
    def subscribers(self) -> int:
        return len({s for held in self._by_ticker.values() for s in held})

    # the listener

    async def _listen_forever(self) -> None:
        pause = 0.2
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, StoreUnavailable, OSError) as error:
                if self.connected.is_set():  # it was up: a new outage starts with short pauses
                    pause = 0.2
                self.connected.clear()
                self.known.reset(enabled=False)  # changes may go unheard meanwhile
                self.known.pending = None
                self.sessions.reset()
                log.warning("live listener lost its connection; reconnecting", error=str(error))
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
            else:  # pragma: no cover (the loop ends only by cancellation or an error)
                pause = 0.2

    async def _listen(self) -> None:
        conn = await connect(self._config, "marketdata-live")
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            now = await changes.current(conn)
            if self._snapshot is not None:
                await self._catch_up(conn, now)
            self._snapshot, self._seen = now, Delivered()
            self.known.reset(enabled=True)
            self.known.pending = lambda: readable(conn)
            self.sessions.reset()
            self.written.reset()
            self.connected.set()
            log.info("live listener listening")
            marker: str | None = None
            advanced = pruned = time.monotonic()
            heard = False  # a change since the snapshot last moved
            while True:
                # notifies() ends a second after it began (its timeout is a deadline): the
                # listener then does its chores and listens again, on the same connection
                async for note in conn.notifies(timeout=1.0, stop_after=None):
                    if note.payload.startswith("mark:"):
                        if note.payload == marker:  # everything committed before it arrived
                            self._snapshot = self._pending
                            self._seen = self._seen.past(self._pending)
                            marker = None
                        continue
                    if note.payload == FLUSH:
                        self.known.reset(enabled=True)
                        continue
                    if (session := changed_session(note.payload)) is not None:
                        self.sessions.changed(session)
                        continue
                    await self._notified(note.payload)
                    heard = True
                if heard and marker is None and time.monotonic() - advanced > _ADVANCE_EVERY:
                    marker, advanced, heard = await self._advance(conn), time.monotonic(), False
                if time.monotonic() - pruned > _PRUNE_EVERY:
                    await changes.prune(conn)
                    pruned = time.monotonic()
                self._sweep()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    def _sweep(self) -> None:
        """Cut the subscribers that have stopped taking what waits for them."""
        now = time.monotonic()
        for held in list(self._by_ticker.values()):
            for subscription in list(held):
                subscription.stalled(now)

    async def _advance(self, conn: psycopg.AsyncConnection[Any]) -> str:
        """Take a new snapshot and notify ourselves: when that notification arrives, every
        transaction the snapshot sees has been received."""
        self._pending = await changes.current(conn)
        marker = f"mark:{id(self)}:{time.monotonic_ns()}"
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, marker))
        return marker

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any], now: Snapshot) -> None:
        assert self._snapshot is not None
        found = await changes.missed(conn, now, self._snapshot)
        missed = [c for c in found if not self._seen.sent(c)]
        if missed:
            log.info("live listener caught up", changes=len(missed))
        by_xid: dict[int, set[str]] = {}
        for change in missed:
            by_xid.setdefault(change.xid, set()).add(change.ticker)
        self.known.forget({c.ticker for c in missed})
        self.written.committed({c.ticker for c in missed})
        for xid, tickers in by_xid.items():
            self._heard.put_nowait(Heard(xid, frozenset(tickers)))

    async def _notified(self, payload: str) -> None:
        heard = changes.parse(payload)
        self.written.committed(heard.tickers)  # who reads these tickers ahead reads again
        if heard.tickers is None:
            self.known.reset(enabled=True)
        else:
            self.known.forget(heard.tickers)
        if self._snapshot is not None and self._snapshot.sees(heard.xid):
            return  # delivered already (by the catch-up)
        if (fresh := self._seen.fresh(heard)) is not None:  # what it names not heard yet
            self._heard.put_nowait(fresh)

    # delivery

    async def _deliver(self, heard: Sequence[Heard]) -> None:
        """Hand the changes of the transactions heard to their subscribers, each in its own
        streams' bars (built as history builds them), in replay order within the delivery.
        Nothing is read when nobody watches what they changed."""
        self.delivered += len(heard)
        named = set().union(*(h.tickers for h in heard if h.tickers is not None))
        every = any(h.tickers is None for h in heard)
        watched = [t for t in self._by_ticker if every or t in named]
        if not watched:
            return
        await self._planned(watched)
        built: dict[Built, dict[str, list[Subscription]]] = {}
        series: set[tuple[str, int]] = set()
        for ticker in watched:
            for subscription in self._by_ticker[ticker]:
                for stream in subscription.streams:
                    if stream.ticker != ticker:
                        continue
                    if sent_as_written(stream):
                        series.add((ticker, stream.tf_min))
                    else:
                        group = Built.of(stream)
                        built.setdefault(group, {}).setdefault(ticker, []).append(subscription)
                        series.add((ticker, group.reads))
        read = await changes.read_back(self._db, [h.xid for h in heard], sorted(series))
        read = [(change, candles) for change, candles in read if changes.named(heard, change)]
        out: dict[Subscription, list[LiveEvent]] = {}
        for change, candles in read:
            for subscription in self._subscribers.get((change.ticker, change.tf_min), ()):
                plain = [s for s in subscription.streams if s.tf_min == change.tf_min]
                if plain and sent_as_written(plain[0]):
                    out.setdefault(subscription, []).extend(as_stored(change, candles))
        for group, watchers in built.items():
            altered = [
                (change, candles)
                for change, candles in read
                if change.ticker in watchers
                and change.tf_min == group.reads
                and change.kind != "mended"
            ]
            if not altered:
                continue
            for (change, _), events in zip(altered, await self._bars(group, altered), strict=True):
                for subscription in watchers[change.ticker]:
                    out.setdefault(subscription, []).extend(events)
        for subscription, events in out.items():
            subscription.put(heapq.nsmallest(len(events), events, key=delivery_order))

    async def _planned(self, tickers: list[str]) -> None:
        """Streams subscribed before anything could make them (a ticker with no candles
        yet), planned again as history would now, once their ticker's candles arrive."""
        waiting = [
            sub
            for t in tickers
            for sub in self._by_ticker[t]
            if any(not s.available and s.ticker == t for s in sub.streams)
        ]
        if not waiting:
            return
        held = await holdings_of(
            self._db, sorted({s.ticker for sub in waiting for s in sub.streams})
        )
        for sub in waiting:
            sub.streams = tuple(
                s
                if s.available
                else planned_stream(
                    s.ticker,
                    s.tf_min,
                    ReplaySelection((s.ticker,), (s.tf_min,), options=s.options, forming=True),
                    held.of(s.ticker),
                    held.rollups,
                )
                for s in sub.streams
            )

    async def _bars(
        self, group: Built, altered: list[tuple[Change, list[Candle]]]
    ) -> list[list[LiveEvent]]:
        """The bars of a group of streams that each change alters, from one statement for
        them all: for candles appended, each one's bar as it stands (a bar before them now
        final too); otherwise each bar changed as it stands now, with the change's version
        as its revision; a removed span first as a Removed of the buckets it touched."""
        if group.source_tf is None:  # a stored timeframe kept to a session
            return [
                stored_in_session(await self._read_stored(group, change), change, candles)
                for change, candles in altered
            ]
        resample = Resample(group.source_tf)
        rows = await self._db.fetch(
            forming_sql(
                shape_of(group.tf_min, resample, group.options, Order.ASC, False, live=True)
            ),
            bars_params("", group.tf_min, resample, group.options, limit=None, forming=True)
            | {
                "tickers": [c.ticker for c, _ in altered],
                "firsts": [c.first for c, _ in altered],
                "lasts": [c.last for c, _ in altered],
                "xids": [str(c.xid) for c, _ in altered],
                # what committed before each: heard before it, or seen by the snapshot
                "befores": [self._seen.before(c.xid) for c, _ in altered],
                "seen": (self._snapshot or Snapshot(1, 1, frozenset())).text(),
            },
        )
        each: dict[int, list[tuple[Any, ...]]] = {}
        for row in rows:
            each.setdefault(row[0], []).append(row[1:])
        return [
            formed(group, change, candles, each.get(i, []))
            for i, (change, candles) in enumerate(altered, 1)
        ]

    async def _read_stored(self, group: Built, change: Change) -> list[tuple[Any, ...]]:
        if change.kind != "written":
            return []
        return await self._db.fetch(
            bars_sql(shape_of(group.tf_min, None, group.options, Order.ASC, ranged=True)),
            bars_params(
                change.ticker,
                group.tf_min,
                None,
                group.options,
                limit=None,
                time_range=TimeRange(change.first, change.last),
            ),
        )
