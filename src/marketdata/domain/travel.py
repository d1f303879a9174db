"""What a time-travel session changes in a call made under it (domain/sessions.py): the
reads, as of the session's present (`TravelQueries`), and the live feed, the session's bars
as its present passes them (`TravelFeed`). A vendor protocol takes them in place of
CandleQueries and the LiveFeed, and answers as of the session without knowing it.

With `shift`, the times a client gives are read back by the session's offset (wall clock
minus present, at the call) and those it is given moved by it: the past shown as today.
The offset is taken once per call (a stream: once per bar); at a speed other than 1 it
grows between calls, so a time carried from one call to the next (a `since`) moves by as
much: page with cursors, or pause the session while paging."""

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime, timedelta

import msgspec

from marketdata.domain.candles import Candle, LiveEvent, Removed
from marketdata.domain.errors import DomainError, StoreUnavailable, TooSlow
from marketdata.domain.ports import CandleRepository, Coverage, Plan, Sessions
from marketdata.domain.queries import CandlePage, CandleQueries, CandleQuery, QueryLimits
from marketdata.domain.replay.pacing import Wake
from marketdata.domain.replay.ports import Clock, ReplaySource, ReplayStatus, Writes
from marketdata.domain.replay.selection import ReplaySelection, Stream
from marketdata.domain.replay.travel import TravelReplay
from marketdata.domain.sessions import TravelSession, wall_now
from marketdata.domain.timeframes import Served

MAX_WAITING = 10_000  # events a session's client may leave unread before it is cut


def shifted(candle: Candle, offset: timedelta) -> Candle:
    if not offset:
        return candle
    closes = candle.ts_close + offset if candle.ts_close is not None else None
    return msgspec.structs.replace(candle, ts=candle.ts + offset, ts_close=closes)


class TravelQueries(CandleQueries):
    """CandleQueries as of a session's present, taken at the call: every plan reads only
    what had closed by then (Plan.as_of); with shift, the client's times (start, end) are
    read back and the bars' moved. Cursors (`after`, `CandlePage.last`) are the store's
    own times, never shifted: a page token stays good whatever the offset does."""

    def __init__(
        self,
        repository: CandleRepository,
        limits: QueryLimits,
        session: TravelSession,
        wall: datetime,
    ) -> None:
        super().__init__(repository, limits)
        self.session = session
        self.as_of = self.present = session.present(wall)
        self.offset = session.offset(wall)

    def now(self) -> datetime:
        """The present as the client sees it (the wall clock itself, with shift)."""
        return self.present + self.offset

    def draft(self, query: CandleQuery) -> Plan:
        self.session.held(query.ticker)
        back = self.offset
        as_of = self.present if query.as_of is None else min(query.as_of, self.present)
        return super().draft(
            msgspec.structs.replace(
                query,
                start=query.start - back if query.start is not None else None,
                end=query.end - back if query.end is not None else None,
                as_of=as_of,
            )
        )

    async def symbols(self, prefix: str = "", limit: int | None = None) -> list[str]:
        wide = limit if not self.session.tickers else self._limits.max_limit
        found = await super().symbols(prefix, wide)
        return [t for t in found if self.session.holds(t)][:limit]

    async def coverage(self, ticker: str) -> tuple[list[Coverage], list[Served], str]:
        self.session.held(ticker)
        return await super().coverage(ticker)

    async def bars(self, plan: Plan, extra: int = 0) -> CandlePage:
        page = await super().bars(plan, extra)
        if not self.offset:
            return page
        return CandlePage([shifted(c, self.offset) for c in page.candles], page.more, page.last)

    async def export(self, plan: Plan) -> AsyncGenerator[Candle, None]:
        bars = await super().export(plan)
        return bars if not self.offset else _shifted_all(bars, self.offset)


async def _shifted_all(
    bars: AsyncGenerator[Candle, None], offset: timedelta
) -> AsyncGenerator[Candle, None]:
    async with contextlib.aclosing(bars):
        async for bar in bars:
            yield shifted(bar, offset)


class TravelFeed:
    """The LiveFeed of a session: each subscription's streams played by a TravelReplay each
    (the replay's bars: forming ones at each source candle), each bar arriving when the
    session's present reaches its close, as it stands then (`writes`: what is written ahead
    of the present is read again), shifted as the session says. Whatever follows a LiveFeed
    (a live-only replay, a vendor's stream) follows the session; `seen()` is its present as
    the client sees it, by the session as its streams last read it (a control made since
    the connection began included)."""

    def __init__(
        self,
        source: ReplaySource,
        clock: Clock,
        sessions: Sessions,
        session: TravelSession,
        *,
        writes: Writes | None = None,
        wall: Callable[[], datetime] = wall_now,
    ) -> None:
        self._source = source
        self._clock = clock
        self._sessions = sessions
        self.session = session
        self._writes = writes
        self._wall = wall

    def _follow(self, session: TravelSession) -> None:
        self.session = session

    def seen(self) -> datetime:
        wall = self._wall()
        return self.session.present(wall) + self.session.offset(wall)

    def subscribe(
        self, streams: Sequence[Stream], wake: Wake, cut: asyncio.Event
    ) -> "TravelSubscription":
        subscription = TravelSubscription(wake, cut)
        since = self._wall()  # every stream from the present of this moment on
        for stream in streams:
            selection = ReplaySelection(
                (stream.ticker,), (stream.tf_min,), options=stream.options, forming=stream.forming
            )
            sink = _Sink(subscription, self._wall)
            sink.replay = TravelReplay(
                self._source,
                self._clock,
                sink,
                selection,
                self._sessions,
                self.session.id,
                wall=self._wall,
                since=since,
                writes=self._writes,
                follow=self._follow,
            )
            subscription.start(sink.replay)
        return subscription


class TravelSubscription:
    """The Subscription of a session's streams: what their replays sent, waiting to be
    taken; cut when more than MAX_WAITING wait, or when the session ends (`reason`)."""

    def __init__(self, wake: Wake, cut: asyncio.Event) -> None:
        self._wake = wake
        self._cut = cut
        self._waiting: deque[LiveEvent] = deque()
        self._tasks: set[asyncio.Task[object]] = set()
        self.reason: str | None = None
        # raised as they are: the store failing is not the client's doing, nor a session
        # that ended (NotFound) its reading too slowly
        self._failure: DomainError | None = None

    def start(self, replay: TravelReplay) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(self._play(replay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _play(self, replay: TravelReplay) -> object:
        try:
            return await replay.run()
        except StoreUnavailable as error:  # the client's stream ends as on any live read
            self._failure = error
            self._end(error.message)
        except DomainError as error:  # the session ended (NotFound)
            self._failure = error
            self._end(f"the session's stream ended: {error.message}")
        return None

    def put(self, events: Sequence[LiveEvent]) -> None:
        self._waiting.extend(events)
        if len(self._waiting) > MAX_WAITING:
            self._end(f"more than {MAX_WAITING} bars waited unread")
        self._wake.set()

    def _end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._cut.set()
            self._wake.set()

    def take(self, most: int) -> list[LiveEvent]:
        if self._failure is not None:
            raise self._failure
        if self.reason is not None:
            raise TooSlow(self.reason)
        count = min(most, len(self._waiting))
        return [self._waiting.popleft() for _ in range(count)]

    def touch(self) -> None:
        return None

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


class _Sink:
    """A TravelReplay's sink: its bars into the subscription, shifted by the session's
    offset as the bar is sent."""

    replay: TravelReplay

    def __init__(self, subscription: TravelSubscription, wall: Callable[[], datetime]) -> None:
        self._subscription = subscription
        self._wall = wall

    async def candles(self, seq: int, candles: list[Candle]) -> None:
        session = self.replay.session
        offset = session.offset(self._wall()) if session is not None else timedelta(0)
        self._subscription.put([shifted(c, offset) for c in candles])

    async def removed(self, seq: int, removed: Removed) -> None:
        return None

    async def status(self, status: ReplayStatus) -> None:
        return None
