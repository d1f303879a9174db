"""Live candles across processes, through PostgreSQL's own LISTEN/NOTIFY (see `changes`
for what each write announces).

Each process has one listener: a connection of its own, outside the pool, that reconnects
by itself. Coming back, it reads the changes of the transactions committed while it was
away from `candle_changes`, by snapshot: those its new snapshot sees and its last one did
not (and it has not already delivered). Its snapshot moves on every few seconds, once a
notification it sends itself proves that it has received everything committed before.

The candles of the notifications heard are read back from the table in one query, once per
process, and handed to the subscribers of those series, each with a bounded queue. A
notification names its tickers: what this process knows of them is forgotten at once.
"""

import asyncio
import contextlib
import select
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from marketdata.adapters.postgres import changes
from marketdata.adapters.postgres.buckets import CANDLE_ROWS, UTC_LABEL, bucketed
from marketdata.adapters.postgres.changes import Heard, Snapshot
from marketdata.adapters.postgres.channel import CHANNEL, FLUSH
from marketdata.adapters.postgres.known import KnownSeries
from marketdata.adapters.postgres.pool import Database, DatabaseConfig, connect
from marketdata.domain.candles import Candle
from marketdata.domain.errors import StoreUnavailable, TooSlow
from marketdata.domain.replay import Stream, Wake

log = structlog.get_logger(logger_name="marketdata.live")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ADVANCE_EVERY = 5.0  # seconds between moves of the listener's snapshot
_PRUNE_EVERY = 600.0
_CATCH_UP_CHUNK = 500  # changes read back at a time after an outage


def _readable(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the listener's socket holds something not read yet (a notification)."""
    try:
        return bool(select.select([conn.pgconn.socket], [], [], 0)[0])
    except (OSError, ValueError, psycopg.OperationalError):
        return True


class Subscription:
    """One client's live candles: a bounded queue, and a Wake set when something arrives."""

    def __init__(
        self, feed: "PostgresLiveFeed", streams: Sequence[Stream], capacity: int, wake: Wake
    ) -> None:
        self._feed = feed
        self.streams = tuple(streams)
        self.capacity = capacity
        self.wake = wake
        self._queue: deque[Candle] = deque()
        self.overflowed = False

    def put(self, candle: Candle) -> None:
        if self.overflowed:
            return
        if len(self._queue) >= self.capacity:
            self.overflowed = True
            self._queue.clear()  # nothing more is kept for a client that is cut
        else:
            self._queue.append(candle)
        self.wake.set()

    def take(self, most: int) -> list[Candle]:
        """What arrived, oldest first, at most `most`; raises TooSlow when cut."""
        if self.overflowed:
            raise TooSlow(
                f"the client reads too slowly: more than {self.capacity} candles waited for it"
                " (LIVE_QUEUE_MAX)"
            )
        taken: list[Candle] = []
        while self._queue and len(taken) < most:
            taken.append(self._queue.popleft())
        return taken

    def close(self) -> None:
        self._feed.unsubscribe(self)


class PostgresLiveFeed:
    """LiveFeed over LISTEN/NOTIFY; one per process."""

    def __init__(
        self, config: DatabaseConfig, database: Database, known: KnownSeries | None = None
    ) -> None:
        self.known = known or KnownSeries()
        self._config = config
        self._db = database
        self._subscribers: dict[tuple[str, int], set[Subscription]] = {}
        self._by_ticker: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._snapshot: Snapshot | None = None
        self._seen: set[int] = set()  # transactions delivered that the snapshot does not see
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

    def subscribe(self, streams: Sequence[Stream], capacity: int, wake: Wake) -> Subscription:
        subscription = Subscription(self, streams, capacity, wake)
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
            self._snapshot, self._seen = now, set()
            self.known.reset(enabled=True)
            self.known.pending = lambda: _readable(conn)
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
                            self._snapshot, self._seen = (
                                self._pending,
                                {x for x in self._seen if not self._pending.sees(x)},
                            )
                            marker = None
                        continue
                    if note.payload == FLUSH:
                        self.known.reset(enabled=True)
                        continue
                    await self._notified(note.payload)
                    heard = True
                if heard and marker is None and time.monotonic() - advanced > _ADVANCE_EVERY:
                    marker, advanced, heard = await self._advance(conn), time.monotonic(), False
                if time.monotonic() - pruned > _PRUNE_EVERY:
                    await changes.prune(conn)
                    pruned = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _advance(self, conn: psycopg.AsyncConnection[Any]) -> str:
        """Take a new snapshot and notify ourselves: when that notification arrives, every
        transaction the snapshot sees has been received."""
        self._pending = await changes.current(conn)
        marker = f"mark:{id(self)}:{time.monotonic_ns()}"
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, marker))
        return marker

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any], now: Snapshot) -> None:
        assert self._snapshot is not None
        missed = [
            c for c in await changes.missed(conn, now, self._snapshot) if c.xid not in self._seen
        ]
        if missed:
            log.info("live listener caught up", changes=len(missed))
        by_xid: dict[int, set[str]] = {}
        for change in missed:
            by_xid.setdefault(change.xid, set()).add(change.ticker)
        self.known.forget({c.ticker for c in missed})
        for xid, tickers in by_xid.items():
            self._heard.put_nowait(Heard(xid, frozenset(tickers)))

    async def _notified(self, payload: str) -> None:
        heard = changes.parse(payload)
        if heard.tickers is None:
            self.known.reset(enabled=True)
        else:
            self.known.forget(heard.tickers)
        if (self._snapshot is not None and self._snapshot.sees(heard.xid)) or (
            heard.xid in self._seen
        ):
            return  # delivered already (by the catch-up)
        self._seen.add(heard.xid)
        self._heard.put_nowait(heard)

    # delivery

    async def _deliver(self, heard: Sequence[Heard]) -> None:
        """Hand the candles of the transactions heard to their subscribers: stored series as
        written, resampled ones as the bar each candle forms (computed once for all who
        watch it). Nothing is read when nobody watches what they changed."""
        self.delivered += len(heard)
        named = set().union(*(h.tickers for h in heard if h.tickers is not None))
        every = any(h.tickers is None for h in heard)
        watched = [t for t in self._by_ticker if every or t in named]
        if not watched:
            return
        series: set[tuple[str, int]] = set()
        for ticker in watched:
            for subscription in self._by_ticker[ticker]:
                for stream in subscription.streams:
                    if stream.ticker == ticker:
                        source = stream.resample.source_tf if stream.resample else stream.tf_min
                        series.add((ticker, source))
        read = await changes.read_back(self._db, [h.xid for h in heard], sorted(series))
        for change, candles in read:
            if change.kind != "written" or not candles:
                continue
            for subscription in self._subscribers.get((change.ticker, change.tf_min), ()):
                for candle in candles:
                    subscription.put(candle)
            formed: dict[Stream, list[Subscription]] = {}
            for subscription in self._by_ticker.get(change.ticker, ()):
                for stream in subscription.streams:
                    if (
                        stream.ticker == change.ticker
                        and stream.resample is not None
                        and stream.resample.source_tf == change.tf_min
                    ):
                        key = Stream(stream.ticker, stream.tf_min, stream.resample)
                        formed.setdefault(key, []).append(subscription)
            for stream, subscriptions in formed.items():
                for candle in candles:
                    bar = await self._forming(stream, candle)
                    if bar is not None:
                        for subscription in subscriptions:
                            subscription.put(bar)

    async def _forming(self, stream: Stream, candle: Candle) -> Candle | None:
        """The bar of `stream` that holds `candle`, as it stands (UTC buckets); final when
        the candle is the last its bucket can hold."""
        assert stream.resample is not None
        rows = await self._db.fetch(
            _FORMING,
            {
                "ticker": stream.ticker,
                "source": stream.resample.source_tf,
                "at": candle.ts,
                "stride": timedelta(minutes=stream.tf_min),
                "epoch": EPOCH,
            },
        )
        if not rows:
            return None
        bucket, o, h, low, c, v, oi, _ = rows[0]
        closes = bucket + timedelta(minutes=stream.tf_min)
        final = candle.ts + timedelta(minutes=candle.tf_min) >= closes
        return Candle(
            stream.ticker, stream.tf_min, bucket, o, h, low, c, v, oi, ts_close=closes, final=final
        )


# The bucket (UTC, from the epoch) that holds %(at)s, made of its stored candles so far
_FORMING = bucketed(
    f"SELECT {CANDLE_ROWS} FROM candles WHERE ticker = %(ticker)s AND tf_min = %(source)s"
    f" AND ts >= {UTC_LABEL.replace('ts,', '%(at)s::timestamptz,')} AND ts <= %(at)s",
    UTC_LABEL,
).encode()
