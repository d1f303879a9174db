"""A session's stream on a virtual clock: each bar sent when the session's present reaches
its close, never before; pause, seek and speed made meanwhile (by anyone) followed."""

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from marketdata.domain.candles import Candle
from marketdata.domain.errors import NotFound, StoreUnavailable
from marketdata.domain.replay import ReplaySelection, Stop, Stream, key_of
from marketdata.domain.replay.pacing import Wake
from marketdata.domain.replay.travel import TravelReplay
from marketdata.domain.sessions import SessionClock, TravelSession
from marketdata.domain.timeframes import Holdings
from marketdata.domain.travel import TravelFeed
from tests.factories import series
from tests.fakes import FakeClock, InMemoryReplaySource, RecordingSink

OPEN = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
WALL = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
MINUTES = series("X", 60, tf_min=1, start=OPEN)  # 10:00 to 10:59


class FakeSessions:
    """The Sessions port over one session in memory; a change wakes its watchers."""

    def __init__(self, session: TravelSession) -> None:
        self.session: TravelSession | None = session
        self.watchers: set[Callable[[], None]] = set()

    async def get(self, sid: str) -> TravelSession:
        if self.session is None:
            raise NotFound("ended")
        return self.session

    def change(self, clock: SessionClock) -> None:
        assert self.session is not None
        self.session = TravelSession(
            id="s", start=self.session.start, clock=clock, created=self.session.created
        )
        for wake in list(self.watchers):
            wake()

    def watch(self, sid: str, wake: Callable[[], None]) -> Callable[[], None]:
        self.watchers.add(wake)
        return lambda: self.watchers.discard(wake)


class FakeWrites:
    """The Writes port: `wrote(ticker)` wakes who watches it."""

    def __init__(self) -> None:
        self.watchers: dict[str, set[Callable[[], None]]] = {}

    def watch(self, ticker: str, wake: Callable[[], None]) -> Callable[[], None]:
        self.watchers.setdefault(ticker, set()).add(wake)
        return lambda: self.watchers[ticker].discard(wake)

    def wrote(self, ticker: str) -> None:
        for wake in list(self.watchers.get(ticker, ())):
            wake()


def travel(
    start: datetime,
    speed: float,
    since: datetime | None = None,
    source: InMemoryReplaySource | None = None,
    writes: FakeWrites | None = None,
) -> tuple[TravelReplay, FakeSessions, RecordingSink]:
    clock = FakeClock(0.0)
    session = TravelSession(
        id="s", start=start, clock=SessionClock(start, WALL, speed), created=WALL
    )
    sessions = FakeSessions(session)
    sink = RecordingSink(clock)
    replay = TravelReplay(
        source or InMemoryReplaySource(MINUTES),
        clock,
        sink,
        ReplaySelection(("X",), (1,)),
        sessions,  # type: ignore[arg-type]
        "s",
        wall=lambda: WALL + timedelta(seconds=clock.now()),
        since=since,
        writes=writes,
    )
    return replay, sessions, sink


async def test_each_bar_comes_when_the_present_reaches_its_close() -> None:
    replay, sessions, sink = travel(OPEN + timedelta(minutes=10, seconds=30), speed=60.0)

    async def stop_after(seq: int, _: object) -> None:
        if seq == 9:
            await replay.apply(Stop())

    sink.on_candle = stop_after
    await asyncio.wait_for(replay.run(), 5)
    bars = [c for _, _, c in sink.received]
    assert bars == MINUTES[10:20]  # the first: the minute of 10:10, closing at 10:11
    for t, _, bar in sink.received:  # sent exactly when the present reached its close
        assert sessions.session is not None
        assert sessions.session.present(WALL + timedelta(seconds=t)) == key_of(bar).close


async def test_a_stream_starts_at_the_present_of_when_it_was_asked_for() -> None:
    """Bars that close while the stream reads the session and the catalog are sent too: a
    client that read REST up to the present, then subscribed, misses none."""
    replay, _, sink = travel(OPEN + timedelta(minutes=10, seconds=30), speed=60.0, since=WALL)
    sink.clock.advance(150)  # 2.5 bars of wall time went by before it ran

    async def stop_after(seq: int, _: object) -> None:
        if seq == 4:
            await replay.apply(Stop())

    sink.on_candle = stop_after
    await asyncio.wait_for(replay.run(), 5)
    assert [c for _, _, c in sink.received] == MINUTES[10:15]  # from 10:10, closing 10:11
    assert sink.times[:3] == [150.0, 150.0, 150.0]  # the three already closed: at once


async def test_pause_seek_and_speed_are_followed() -> None:
    replay, sessions, sink = travel(OPEN, speed=60.0)

    async def control(seq: int, bar: object) -> None:
        assert sessions.session is not None
        now = WALL + timedelta(seconds=sink.clock.now())
        clock = sessions.session.clock
        if seq == 4:  # pause for a minute of wall time, then resume
            sessions.change(clock.pause(now))
            sink.clock.advance(60)
            later = WALL + timedelta(seconds=sink.clock.now())
            sessions.change(sessions.session.clock.resume(later))
        elif seq == 9:  # seek to 10:40: on from there
            sessions.change(clock.seek(now, OPEN + timedelta(minutes=40)))
        elif seq == 14:  # ten times faster
            sessions.change(clock.with_speed(now, 600.0))
        elif seq == 19:
            await replay.apply(Stop())

    sink.on_candle = control
    await asyncio.wait_for(replay.run(), 5)
    bars = [c for _, _, c in sink.received]
    assert bars == MINUTES[0:10] + MINUTES[40:50]
    times = sink.times
    assert times[4] == 5.0
    assert times[5] == 66.0  # after the minute paused
    assert times[14] - times[13] == 1.0
    assert times[15] - times[14] == pytest.approx(0.1)  # faster
    assert times[10] == times[9] + 1.0  # 10:40 to 10:41 after the seek


class SeekWhileReading(InMemoryReplaySource):
    """A catalog read during which another client seeks the session."""

    def __init__(self, candles: list[Candle]) -> None:
        super().__init__(candles)
        self.during: Callable[[], None] = lambda: None

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        self.during()
        return await super().holdings(tickers)


async def test_a_control_made_while_a_stream_starts_is_followed() -> None:
    """A seek made after the stream read the session but before it listened for changes
    (while it reads the catalog) is not lost: the stream goes on from the new present."""
    source = SeekWhileReading(MINUTES)
    replay, sessions, sink = travel(OPEN, speed=60.0, source=source)

    def seek() -> None:
        assert sessions.session is not None
        sessions.change(sessions.session.clock.seek(WALL, OPEN + timedelta(minutes=40)))

    source.during = seek

    async def stop_after(seq: int, _: object) -> None:
        if seq == 1:
            await replay.apply(Stop())

    sink.on_candle = stop_after
    await asyncio.wait_for(replay.run(), 5)
    assert [c for _, _, c in sink.received] == MINUTES[40:42]


async def test_a_stream_ends_with_its_session() -> None:
    replay, sessions, sink = travel(OPEN, speed=60.0)

    async def end(seq: int, _: object) -> None:
        if seq == 2:
            sessions.session = None
            for wake in list(sessions.watchers):
                wake()

    sink.on_candle = end
    with pytest.raises(NotFound):
        await asyncio.wait_for(replay.run(), 5)
    assert len(sink.received) == 3
    assert not sessions.watchers  # nothing left behind


class DownSource(InMemoryReplaySource):
    async def page(self, *args: object, **kwargs: object) -> list[Candle]:
        raise StoreUnavailable("127.0.0.1", "5432", "connection refused")


async def test_a_stream_that_cannot_read_ends_as_the_database_s_failure_not_the_client_s() -> None:
    """The client's socket closes 1011 (the store), not 1008 (too slow), as live reads do."""
    session = TravelSession(id="s", start=OPEN, clock=SessionClock(OPEN, WALL, 60.0), created=WALL)
    feed = TravelFeed(DownSource(MINUTES), FakeClock(0.0), FakeSessions(session), session)  # type: ignore[arg-type]
    cut = asyncio.Event()
    subscription = feed.subscribe([Stream("X", 1)], Wake(), cut)
    await asyncio.wait_for(cut.wait(), 5)
    with pytest.raises(StoreUnavailable):
        subscription.take(10)
    subscription.close()


async def test_what_is_written_ahead_of_the_present_comes_as_it_stands_when_due() -> None:
    """A bar inserted, and one corrected, after the stream read them ahead (its page) and
    before their close: each comes when due as the table then holds it, as REST says."""
    gap = MINUTES[5]
    source = InMemoryReplaySource([c for c in MINUTES if c is not gap])
    writes = FakeWrites()
    replay, _, sink = travel(OPEN, speed=60.0, source=source, writes=writes)
    corrected = msgspec.structs.replace(MINUTES[7], high=MINUTES[7].high + 50)

    async def write_ahead(seq: int, _: object) -> None:
        if seq == 2:  # the present is 10:03; 10:05 and 10:07 are ahead
            source.stored = sorted(
                [c for c in source.stored if c.ts != corrected.ts] + [gap, corrected],
                key=lambda c: (c.ts, c.ticker),
            )
            writes.wrote("X")
        if seq == 9:
            await replay.apply(Stop())

    sink.on_candle = write_ahead
    await asyncio.wait_for(replay.run(), 5)
    assert [c for _, _, c in sink.received] == [*MINUTES[:7], corrected, *MINUTES[8:10]]
    assert not any(writes.watchers.values())  # nothing left behind


async def test_a_feed_s_present_follows_the_controls_its_streams_read() -> None:
    """A vendor's stream stamps events with the feed's present (Binance's `E`): after a
    seek or a change of speed made during the connection, the session's new present."""
    session = TravelSession(id="s", start=OPEN, clock=SessionClock(OPEN, WALL, 60.0), created=WALL)
    sessions = FakeSessions(session)
    wall = WALL
    feed = TravelFeed(
        InMemoryReplaySource(MINUTES), FakeClock(0.0), sessions, session, wall=lambda: wall
    )  # type: ignore[arg-type]
    subscription = feed.subscribe([Stream("X", 1)], Wake(), asyncio.Event())
    await asyncio.sleep(0.01)
    assert feed.seen() == OPEN
    sessions.change(session.clock.seek(WALL, OPEN + timedelta(minutes=40)))
    await asyncio.sleep(0.01)
    assert feed.seen() == OPEN + timedelta(minutes=40)
    subscription.close()
