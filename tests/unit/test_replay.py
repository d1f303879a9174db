"""The replay engine on a virtual clock: schedules are checked exactly, not approximately."""

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from marketdata.domain.candles import Candle, Removed
from marketdata.domain.errors import InvalidParameter, NotFound
from marketdata.domain.replay import (
    Ack,
    ChangePace,
    Outcome,
    Pacing,
    Pause,
    ReplaySelection,
    ReplaySession,
    Resume,
    Seek,
    Step,
    Stop,
)
from marketdata.domain.replay.frames import frames
from tests.factories import series
from tests.fakes import FakeClock, InMemoryReplaySource, RecordingSink

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
T0 = 1000.0


def make(
    candles: list[Candle],
    tickers: tuple[str, ...] = ("AAA",),
    pacing: Pacing | None = None,
    **options: object,
) -> tuple[ReplaySession, FakeClock, RecordingSink, InMemoryReplaySource]:
    clock = FakeClock(T0)
    sink = RecordingSink(clock)
    source = InMemoryReplaySource(candles)
    session = ReplaySession(
        source,
        clock,
        sink,
        ReplaySelection(tickers, (5,)),
        pacing or Pacing(step_seconds=15),
        **options,  # type: ignore[arg-type]
    )
    return session, clock, sink, source


async def test_ten_thousand_candles_follow_the_ideal_schedule_exactly() -> None:
    session, _, sink, source = make(series("AAA", 10_000), page_size=250)
    started = time.perf_counter()
    assert await session.run() is Outcome.COMPLETED
    wall = time.perf_counter() - started
    assert sink.times == [T0 + i * 15 for i in range(10_000)]
    assert sink.seqs == list(range(10_000))
    expected_ts = [START + timedelta(minutes=5 * i) for i in range(10_000)]
    assert [c.ts for _, _, c in sink.received] == expected_ts
    assert sink.messages == ["replay_starting", "replay_complete"]
    assert sink.statuses[-1][3] == 10_000
    assert source.pages_read == 10_000 // 250 + 1  # read a page at a time, never all at once
    assert wall < 10, "the virtual clock never sleeps for real"


async def test_fractional_steps_do_not_accumulate_rounding() -> None:
    session, _, sink, _ = make(series("AAA", 1000), pacing=Pacing(step_seconds=0.1, min_step=0))
    await session.run()
    assert sink.times == [T0 + i * 0.1 for i in range(1000)]


async def test_a_late_send_does_not_delay_the_schedule() -> None:
    session, clock, sink, _ = make(series("AAA", 10))

    async def slow(seq: int, candle: Candle) -> None:
        if seq == 3:
            clock.advance(40)  # the client took 40 s to read candle 3

    sink.on_candle = slow
    await session.run()
    # candles 4 and 5 (due at 1060 and 1075) are late and go at once, at 1085; from
    # candle 6 (due at 1090) on, the schedule is the one it always was
    assert sink.times[:4] == [T0, T0 + 15, T0 + 30, T0 + 45]
    assert sink.times[4:6] == [T0 + 85, T0 + 85]
    assert sink.times[6:] == [T0 + 90, T0 + 105, T0 + 120, T0 + 135]


async def test_pause_for_x_shifts_everything_after_it_by_x() -> None:
    session, clock, sink, _ = make(series("AAA", 20))
    paused = asyncio.Event()

    async def pause_at_5(seq: int, candle: Candle) -> None:
        if seq == 5:
            await session.apply(Pause())
            paused.set()

    sink.on_candle = pause_at_5
    run = asyncio.create_task(session.run())
    await paused.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(sink.received) == 6  # nothing while paused
    clock.advance(100)
    await session.apply(Resume())
    await run
    expected = [T0 + i * 15 for i in range(6)] + [T0 + i * 15 + 100 for i in range(6, 20)]
    assert sink.times == expected
    assert "paused" in sink.messages
    assert "resumed" in sink.messages


async def test_step_while_paused_sends_exactly_one_step() -> None:
    candles = series("AAA", 10) + series("BBB", 10)
    session, clock, sink, _ = make(candles, tickers=("AAA", "BBB"))
    paused = asyncio.Event()

    async def pause_at_first(seq: int, candle: Candle) -> None:
        if seq == 1:  # after the first step (two tickers at one timestamp)
            await session.apply(Pause())
            paused.set()

    sink.on_candle = pause_at_first
    run = asyncio.create_task(session.run())
    await paused.wait()
    await asyncio.sleep(0)
    clock.advance(500)
    await session.apply(Step())
    for _ in range(10):
        await asyncio.sleep(0)
    assert sink.seqs == [0, 1, 2, 3]  # one more step: both tickers' candles at one ts
    assert sink.times[2:] == [T0 + 500, T0 + 500]
    clock.advance(7)
    await session.apply(Resume())
    await run
    # the schedule goes on one step after the manual step, shifted by the pause after it
    assert sink.times[4] == T0 + 500 + 7 + 15
    assert len(sink.received) == 20


async def test_step_is_refused_unless_paused_and_the_replay_goes_on() -> None:
    session, _, sink, _ = make(series("AAA", 3))

    async def bad(seq: int, candle: Candle) -> None:
        if seq == 0:
            await session.apply(Step())

    sink.on_candle = bad
    assert await session.run() is Outcome.COMPLETED
    errors = [(m, e) for _, m, e, _ in sink.statuses if m == "error"]
    assert len(errors) == 1
    assert "only while paused" in str(errors[0][1])
    assert sink.seqs == [0, 1, 2]


async def test_seek_by_seq_continues_seq_from_the_target() -> None:
    session, _, sink, _ = make(series("AAA", 50))

    async def seek(seq: int, candle: Candle) -> None:
        if seq == 3:
            await session.apply(Seek(seq=40))

    sink.on_candle = seek
    await session.run()
    assert sink.seqs == [0, 1, 2, 3, *range(40, 50)]
    assert [c.ts for _, s, c in sink.received if s >= 40] == [
        START + timedelta(minutes=5 * i) for i in range(40, 50)
    ]
    # the target plays at once, then one step apart
    assert sink.times[4:6] == [T0 + 45, T0 + 60]
    assert ("seeked", 40) in [(m, s) for _, m, _, s in sink.statuses]


async def test_seek_by_timestamp_goes_to_the_first_candle_at_or_after_it() -> None:
    session, _, sink, _ = make(series("AAA", 50))

    async def seek(seq: int, candle: Candle) -> None:
        if seq == 0:
            target = START + timedelta(minutes=5 * 20, seconds=30)  # between 20 and 21
            await session.apply(Seek(ts=target.isoformat()))

    sink.on_candle = seek
    await session.run()
    assert sink.seqs == [0, *range(21, 50)]


async def test_invalid_seeks_are_refused() -> None:
    session, _, sink, _ = make(series("AAA", 5))

    async def seek(seq: int, candle: Candle) -> None:
        if seq == 0:
            await session.apply(Seek(seq=99))
            await session.apply(Seek(ts="not a time"))
            await session.apply(Seek())

    sink.on_candle = seek
    await session.run()
    assert sink.seqs == [0, 1, 2, 3, 4]
    assert sink.messages.count("error") == 3


async def test_speed_change_mid_replay() -> None:
    session, _, sink, _ = make(series("AAA", 10))

    async def faster(seq: int, candle: Candle) -> None:
        if seq == 4:
            await session.apply(ChangePace(step_seconds=2))

    sink.on_candle = faster
    await session.run()
    assert sink.times == [T0 + i * 15 for i in range(5)] + [T0 + 60 + i * 2 for i in range(1, 6)]


async def test_speed_mode_scales_market_time_and_caps_gaps() -> None:
    base = series("AAA", 3)
    after_night = [
        Candle(
            c.ticker,
            c.tf_min,
            c.ts + timedelta(hours=17),
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            c.openint,
        )
        for c in series("AAA", 2)
    ]
    candles = base + [c for c in after_night if c.ts > base[-1].ts]
    session, _, sink, _ = make(candles, pacing=Pacing(speed=60, min_step=1, max_step=30))
    await session.run()
    # 5 minutes of market time at 60x is 5 s; the 17-hour night is capped at 30 s
    assert sink.times == [T0, T0 + 5, T0 + 10, T0 + 40, T0 + 45]


async def test_speed_mode_never_steps_faster_than_the_minimum() -> None:
    session, _, sink, _ = make(series("AAA", 4), pacing=Pacing(speed=3600, min_step=1))
    await session.run()
    assert sink.times == [T0, T0 + 1, T0 + 2, T0 + 3]


async def test_switching_between_step_and_speed() -> None:
    session, _, sink, _ = make(series("AAA", 6))

    async def switch(seq: int, candle: Candle) -> None:
        if seq == 1:
            await session.apply(ChangePace(speed=30))  # 5 min / 30 = 10 s

    sink.on_candle = switch
    await session.run()
    assert sink.times == [T0, T0 + 15, T0 + 25, T0 + 35, T0 + 45, T0 + 55]


async def test_several_tickers_merge_by_timestamp_and_share_a_step() -> None:
    a = series("AAA", 5)
    b = series("BBB", 3, start=START + timedelta(minutes=5))
    session, _, sink, _ = make(a + b, tickers=("BBB", "AAA"))
    await session.run()
    order = [(c.ts, c.ticker) for _, _, c in sink.received]
    assert order == sorted(order)
    assert sink.seqs == list(range(8))
    by_ts: dict[datetime, set[float]] = {}
    for t, _, c in sink.received:
        by_ts.setdefault(c.ts, set()).add(t)
    assert all(len(times) == 1 for times in by_ts.values())  # one step per timestamp
    assert sorted(t for times in by_ts.values() for t in times) == [T0 + i * 15 for i in range(5)]


async def test_lockstep_sends_nothing_before_the_ack() -> None:
    session, _, sink, _ = make(
        series("AAA", 5), pacing=Pacing(step_seconds=0, min_step=0), lockstep=True
    )
    run = asyncio.create_task(session.run())
    for expected in range(1, 6):
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(sink.received) == expected, "exactly one candle per ack"
        await session.apply(Ack())
    assert await run is Outcome.COMPLETED
    assert sink.seqs == list(range(5))


async def test_ack_outside_lockstep_is_an_error() -> None:
    session, _, sink, _ = make(series("AAA", 2))

    async def ack(seq: int, candle: Candle) -> None:
        await session.apply(Ack())

    sink.on_candle = ack
    await session.run()
    assert sink.messages.count("error") == 2


@pytest.mark.parametrize("seed", range(5))
async def test_from_seq_resumes_exactly_where_a_replay_was_cut(seed: int) -> None:
    rng = random.Random(seed)
    candles = [
        c
        for t in ("AAA", "BBB", "CCC")
        for c in series(t, 60)
        if rng.random() > 0.3  # holes, so tickers do not always share timestamps
    ]
    tickers = ("AAA", "BBB", "CCC")
    whole, _, whole_sink, _ = make(candles, tickers=tickers, page_size=7)
    await whole.run()
    cut = rng.randrange(1, len(whole_sink.received))

    first, _, first_sink, _ = make(candles, tickers=tickers, page_size=7)

    async def disconnect(seq: int, candle: Candle) -> None:
        if seq == cut - 1:
            raise ConnectionError("client went away")

    first_sink.on_candle = disconnect
    with pytest.raises(ConnectionError):
        await first.run()
    resumed, _, resumed_sink, _ = make(candles, tickers=tickers, page_size=7, from_seq=cut)
    await resumed.run()
    joined = [(s, c) for _, s, c in first_sink.received + resumed_sink.received]
    assert joined == [(s, c) for _, s, c in whole_sink.received]


async def test_stop_ends_the_replay() -> None:
    session, _, sink, _ = make(series("AAA", 10))

    async def stop(seq: int, candle: Candle) -> None:
        if seq == 2:
            await session.apply(Stop())

    sink.on_candle = stop
    assert await session.run() is Outcome.STOPPED
    assert sink.seqs == [0, 1, 2]
    assert sink.messages[-2:] == ["stopping", "replay_stopped"]


async def test_nothing_to_replay_is_not_found_and_from_seq_is_bounded() -> None:
    session, _, _, _ = make(series("AAA", 3), tickers=("ZZZ",))
    with pytest.raises(NotFound):
        await session.prepare()
    session, _, _, _ = make(series("AAA", 3), from_seq=4)
    with pytest.raises(InvalidParameter, match="from_seq"):
        await session.prepare()


def test_pacing_validates_its_bounds() -> None:
    with pytest.raises(InvalidParameter, match="between 1 and 60"):
        Pacing(step_seconds=0.5)
    with pytest.raises(InvalidParameter, match="either"):
        Pacing(step_seconds=5, speed=10)
    with pytest.raises(InvalidParameter, match="positive"):
        Pacing(speed=0)
    with pytest.raises(InvalidParameter, match="positive"):
        Pacing(speed=float("inf"))
    assert Pacing(step_seconds=0, min_step=0).step_seconds == 0


def test_selection_validates_tickers() -> None:
    with pytest.raises(InvalidParameter):
        ReplaySelection((), (5,))
    with pytest.raises(InvalidParameter):
        ReplaySelection(tuple(f"T{i}" for i in range(21)), (5,))
    with pytest.raises(InvalidParameter):
        ReplaySelection(("AAA",), (0,))


async def test_a_whole_series_starts_from_the_catalog_without_counting() -> None:
    candles = series("AAA", 500) + series("BBB", 300)
    session, _, _, source = make(candles, tickers=("AAA", "BBB"))
    assert await session.prepare() == 800
    assert source.counted == 0
    # a range that holds all of each series: the catalog still tells
    covering = ReplaySelection(("AAA",), (5,), START - timedelta(days=1), START + timedelta(days=9))
    whole, _, _, source = make(candles)
    whole.selection = covering
    assert await whole.prepare() == 500
    assert source.counted == 0


async def test_a_range_inside_the_series_is_counted_by_the_source() -> None:
    candles = series("AAA", 500)
    session, _, _, source = make(candles)
    session.selection = ReplaySelection(("AAA",), (5,), START + timedelta(minutes=50), None)
    assert await session.prepare() == 490
    assert source.counted == 1


async def test_batch_at_step_zero_sends_frames_of_n_with_gap_free_seqs() -> None:
    session, _, sink, _ = make(
        series("AAA", 23), pacing=Pacing(step_seconds=0, min_step=0), batch=5, page_size=4
    )
    assert await session.run() is Outcome.COMPLETED
    assert [(seq, n) for _, seq, n in sink.frames] == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 3)]
    assert sink.seqs == list(range(23))
    assert sink.statuses[-1][1:] == ("replay_complete", None, 23)


async def test_batch_keeps_the_pace_a_step_per_frame_when_steps_are_apart() -> None:
    session, _, sink, _ = make(series("AAA", 6), batch=50)
    await session.run()
    assert [(t, seq, n) for t, seq, n in sink.frames] == [(T0 + 15 * i, i, 1) for i in range(6)]


async def test_lockstep_with_batch_takes_one_ack_per_frame() -> None:
    session, _, sink, _ = make(
        series("AAA", 10), pacing=Pacing(step_seconds=0, min_step=0), lockstep=True, batch=4
    )
    run = asyncio.create_task(session.run())
    for expected in (4, 8, 10):
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(sink.received) == expected, "one frame per ack"
        await session.apply(Ack())
    assert await run is Outcome.COMPLETED
    assert [n for _, _, n in sink.frames] == [4, 4, 2]


async def test_a_bad_batch_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="batch"):
        make(series("AAA", 2), batch=0)


async def test_prepare_reads_the_first_page_so_the_first_candle_needs_no_read() -> None:
    session, _, sink, source = make(series("AAA", 10), page_size=4)
    await session.prepare()
    assert source.pages_read == 1
    first = asyncio.Event()

    async def seen(seq: int, candle: Candle) -> None:
        if seq == 0:
            assert source.pages_read == 1  # nothing more was read before candle 0 went out
            first.set()

    sink.on_candle = seen
    await session.run()
    assert first.is_set()
    assert sink.seqs == list(range(10))


def test_frames_keep_runs_of_bars_together_and_each_removed_alone() -> None:
    bars = series("F", 5, tf_min=1, start=datetime(2024, 1, 2, tzinfo=UTC))
    gone = Removed("F", 1, bars[0].ts, bars[1].ts)
    events = [bars[0], bars[1], gone, gone, bars[2], bars[3], bars[4]]
    assert list(frames(events)) == [
        (0, bars[0:2]),
        (2, gone),
        (3, gone),
        (4, bars[2:5]),
    ]
    assert list(frames([])) == []
