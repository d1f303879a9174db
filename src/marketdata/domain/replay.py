"""The replay engine: candles re-emitted on an absolute, accelerated schedule.

Pure domain code over three ports (a ReplaySource of candle pages, a Clock, a ReplaySink),
so that hours of replay run in milliseconds on a virtual clock in the tests.

Schedule: step k (all candles sharing one timestamp) is due at anchor_t + (k - anchor_k) *
step_seconds, or, in speed mode, at the previous step's due time plus the market-time gap
divided by the speed (clamped to [min, max] step). The anchor moves only on pause/resume
(shifted by the time spent paused), seek, a pace change or a manual step, so nothing drifts
however long the replay runs: lateness of one step never delays the next one's due time.
"""

import asyncio
import contextlib
import enum
import math
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from marketdata.domain.candles import (
    Candle,
    Resample,
    parse_timestamp,
    source_timeframe,
    ticker_of,
    timeframe_of,
)
from marketdata.domain.errors import InvalidParameter, InvalidQuery, NotFound
from marketdata.domain.ports import Series

MAX_TICKERS = 20


class ReplaySelection(msgspec.Struct, frozen=True):
    """Which candles a replay plays: several tickers merge in (ts, ticker) order."""

    tickers: tuple[str, ...]
    tf_min: int
    start: datetime | None = None
    end: datetime | None = None
    # Per ticker, the stored timeframe its candles are made from (empty: tf_min for all);
    # a finer one is resampled into buckets aligned in `tz`, as for REST.
    source_tfs: tuple[int, ...] = ()
    tz: str = "UTC"

    def resample_of(self, ticker: str) -> Resample | None:
        if not self.source_tfs:
            return None
        source = self.source_tfs[self.tickers.index(ticker)]
        return None if source == self.tf_min else Resample(source, self.tz)

    @property
    def resampled(self) -> bool:
        return any(source != self.tf_min for source in self.source_tfs)

    def __post_init__(self) -> None:
        if not self.tickers:
            raise InvalidParameter("ticker", "at least one ticker is required")
        if len(self.tickers) > MAX_TICKERS:
            raise InvalidParameter("tickers", f"at most {MAX_TICKERS} tickers")
        for ticker in self.tickers:
            ticker_of(ticker)
        timeframe_of(self.tf_min)
        if self.start and self.end and self.start > self.end:
            raise InvalidQuery("start must not be after end")


def planned(selection: ReplaySelection, stored: list[Series]) -> tuple[ReplaySelection, int | None]:
    """The selection with each ticker's source timeframe (tf_min where it is stored or
    nothing is, else the finest stored timeframe dividing it), and its number of candles
    when the catalog tells it (stored series, whole or ranged over all they hold)."""
    by_ticker: dict[str, dict[int, Series]] = {}
    for entry in stored:
        by_ticker.setdefault(entry.ticker, {})[entry.tf_min] = entry
    sources = []
    total: int | None = 0
    for ticker in selection.tickers:
        held = by_ticker.get(ticker, {})
        if selection.tf_min in held:
            sources.append(selection.tf_min)
            entry = held[selection.tf_min]
            covered = (selection.start is None or selection.start <= entry.first) and (
                selection.end is None or selection.end >= entry.last
            )
            if total is not None:
                total = total + entry.count if covered else None
            continue
        source = source_timeframe(selection.tf_min, sorted(held))
        sources.append(source or selection.tf_min)
        if source is not None:
            total = None  # buckets are counted by the source
    if any(source != selection.tf_min for source in sources):
        selection = msgspec.structs.replace(selection, source_tfs=tuple(sources))
    return selection, total


class ReplayKey(msgspec.Struct, frozen=True, order=True):
    """A candle's place in the replay order."""

    ts: datetime
    ticker: str


def key_of(candle: Candle) -> ReplayKey:
    return ReplayKey(candle.ts, candle.ticker)


class ReplaySource(Protocol):
    async def series(self, tickers: Sequence[str]) -> list[Series]:
        """The catalog's entries of these tickers (every stored timeframe)."""
        ...

    async def count(self, selection: ReplaySelection) -> int:
        """How many candles the replay has."""
        ...

    async def count_before(self, selection: ReplaySelection, ts: datetime) -> int:
        """How many candles of the replay have a timestamp before `ts`."""
        ...

    async def key_at(self, selection: ReplaySelection, seq: int) -> ReplayKey | None:
        """The key of candle number `seq` (0-based) in replay order; None past the end."""
        ...

    async def page(
        self, selection: ReplaySelection, after: ReplayKey | None, size: int
    ) -> list[Candle]:
        """Up to `size` candles strictly after `after` (from the start when None)."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep_until(self, deadline: float, wake: asyncio.Event) -> None:
        """Return at `deadline`, or earlier as soon as `wake` is set."""
        ...


class ReplaySink(Protocol):
    async def candle(self, seq: int, candle: Candle) -> None: ...

    async def status(
        self, message: str, *, error: str | None = None, seq: int | None = None
    ) -> None: ...


class Pacing(msgspec.Struct, frozen=True):
    """Either a fixed `step_seconds` per step, or a `speed` (market seconds per wall second)
    whose steps are clamped to [min_step, max_step], so nights and weekends do not stall."""

    step_seconds: float | None = None
    speed: float | None = None
    min_step: float = 1.0
    max_step: float = 60.0

    def __post_init__(self) -> None:
        if (self.step_seconds is None) == (self.speed is None):
            raise InvalidParameter("step_seconds", "give either step_seconds or speed")
        if self.step_seconds is not None and not (
            math.isfinite(self.step_seconds) and self.min_step <= self.step_seconds <= self.max_step
        ):
            raise InvalidParameter(
                "step_seconds",
                f"must be between {self.min_step:g} and {self.max_step:g}, "
                f"got {self.step_seconds:g}",
            )
        if self.speed is not None and not (math.isfinite(self.speed) and self.speed > 0):
            raise InvalidParameter("speed", f"must be a positive number, got {self.speed:g}")

    def interval(self, previous: datetime, current: datetime) -> float:
        if self.step_seconds is not None:
            return self.step_seconds
        assert self.speed is not None
        gap = (current - previous).total_seconds() / self.speed
        return min(max(gap, self.min_step), self.max_step)

    def with_step(self, step_seconds: float) -> "Pacing":
        return Pacing(step_seconds, None, self.min_step, self.max_step)

    def with_speed(self, speed: float) -> "Pacing":
        return Pacing(None, speed, self.min_step, self.max_step)


# Control commands, decoded straight from the client's JSON: {"action": "pause"}, ...
class Pause(msgspec.Struct, tag_field="action", tag="pause", forbid_unknown_fields=True):
    pass


class Resume(msgspec.Struct, tag_field="action", tag="resume", forbid_unknown_fields=True):
    pass


class Stop(msgspec.Struct, tag_field="action", tag="stop", forbid_unknown_fields=True):
    pass


class Step(msgspec.Struct, tag_field="action", tag="step", forbid_unknown_fields=True):
    pass


class Ack(msgspec.Struct, tag_field="action", tag="ack", forbid_unknown_fields=True):
    pass


class Seek(msgspec.Struct, tag_field="action", tag="seek", forbid_unknown_fields=True):
    seq: int | None = None
    ts: str | None = None


class ChangePace(msgspec.Struct, tag_field="action", tag="speed", forbid_unknown_fields=True):
    step_seconds: float | None = None
    speed: float | None = None


Command = Pause | Resume | Stop | Step | Ack | Seek | ChangePace


class Outcome(enum.Enum):
    COMPLETED = "completed"
    STOPPED = "stopped"


class _Signal(enum.Enum):
    GO = enum.auto()
    SEEK = enum.auto()
    STOP = enum.auto()


async def stream(
    source: ReplaySource, selection: ReplaySelection, after: ReplayKey | None, page_size: int
) -> AsyncGenerator[Candle, None]:
    """Candles in replay order, read a page at a time; the next page is fetched while the
    current one plays, so at most two pages are in memory whatever the replay's length."""
    pending: asyncio.Task[list[Candle]] | None = asyncio.ensure_future(
        source.page(selection, after, page_size)
    )
    try:
        while pending is not None:
            page = await pending
            pending = None
            if len(page) == page_size:
                pending = asyncio.ensure_future(source.page(selection, key_of(page[-1]), page_size))
            for candle in page:
                yield candle
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending


async def steps(candles: AsyncIterator[Candle]) -> AsyncGenerator[list[Candle], None]:
    """Group consecutive candles sharing a timestamp: they go out together, in one step."""
    group: list[Candle] = []
    async for candle in candles:
        if group and candle.ts != group[0].ts:
            yield group
            group = []
        group.append(candle)
    if group:
        yield group


class ReplaySession:
    """One client's replay. `run()` plays it; `apply()` takes the client's commands while it
    plays (from another task) and acknowledges each through the sink."""

    def __init__(
        self,
        source: ReplaySource,
        clock: Clock,
        sink: ReplaySink,
        selection: ReplaySelection,
        pacing: Pacing,
        *,
        lockstep: bool = False,
        from_seq: int = 0,
        page_size: int = 100,
    ) -> None:
        if from_seq < 0:
            raise InvalidParameter("from_seq", f"must not be negative, got {from_seq}")
        if page_size < 1:
            raise InvalidParameter("page_size", "must be positive")
        self._source = source
        self._clock = clock
        self._sink = sink
        self.selection = selection
        self.pacing = pacing
        self.lockstep = lockstep
        self._from_seq = from_seq
        self._page_size = page_size
        self.total: int | None = None
        self._wake = asyncio.Event()
        self._paused = False
        self._pause_started = 0.0
        self._step_credit = 0
        self._acked = True
        self._seek: int | None = None
        self._stop = False
        # schedule state: see the module docstring
        self._k = 0
        # The schedule is anchored when the first step (of the replay, or after a seek) is
        # ready to go, not before its page has been read.
        self._anchor_pending = True
        self._anchor_k = 0
        self._anchor_t = 0.0
        self._prev_due = 0.0
        self._prev_ts: datetime | None = None

    async def prepare(self) -> int:
        """Resolve the source timeframes and count the candles (from the catalog where it
        can: one query for a stored series however long); NotFound when there are none.
        Call before run()."""
        self.selection, total = planned(
            self.selection, await self._source.series(self.selection.tickers)
        )
        if total is None:
            total = await self._source.count(self.selection)
        if total == 0:
            raise NotFound(
                f"No candles found for {','.join(self.selection.tickers)} with "
                f"tf_min={self.selection.tf_min}"
            )
        if self._from_seq > total:
            raise InvalidParameter("from_seq", f"must be at most {total}, got {self._from_seq}")
        self.total = total
        return total

    async def run(self) -> Outcome:
        if self.total is None:
            await self.prepare()
        await self._sink.status("replay_starting")
        seq = self._from_seq
        while True:
            after = await self._source.key_at(self.selection, seq - 1) if seq > 0 else None
            signal = _Signal.GO
            async with (
                contextlib.aclosing(
                    stream(self._source, self.selection, after, self._page_size)
                ) as candles,
                contextlib.aclosing(steps(candles)) as groups,
            ):
                async for group in groups:
                    signal = await self._wait(group[0].ts)
                    if signal is not _Signal.GO:
                        break
                    # Commit the step to the schedule before sending it: commands that
                    # arrive while it is being sent apply to the steps after it.
                    self._emitted(self._due(group[0].ts), group[0].ts)
                    for candle in group:
                        await self._sink.candle(seq, candle)
                        seq += 1
            if signal is _Signal.GO:
                signal = await self._settle()
            if signal is _Signal.STOP:
                await self._sink.status("replay_stopped", seq=seq)
                return Outcome.STOPPED
            if signal is _Signal.SEEK:
                assert self._seek is not None
                seq, self._seek = self._seek, None
                self._anchor_pending = True
                continue
            await self._sink.status("replay_complete", seq=seq)
            return Outcome.COMPLETED

    def _interrupted(self) -> _Signal | None:
        if self._stop:
            return _Signal.STOP
        if self._seek is not None:
            return _Signal.SEEK
        return None

    async def _settle(self) -> _Signal:
        """At the end: in lockstep, the last step's ack comes before replay_complete."""
        while True:
            self._wake.clear()
            if signal := self._interrupted():
                return signal
            if not self.lockstep or self._acked:
                return _Signal.GO
            await self._wake.wait()

    def _due(self, ts: datetime) -> float:
        if self.pacing.step_seconds is not None:
            return self._anchor_t + (self._k - self._anchor_k) * self.pacing.step_seconds
        if self._k == self._anchor_k or self._prev_ts is None:
            return self._anchor_t
        return self._prev_due + self.pacing.interval(self._prev_ts, ts)

    def _emitted(self, due: float, ts: datetime) -> None:
        if self._paused:  # a manual step: the schedule goes on from now once resumed
            now = self._clock.now()
            self._anchor_k, self._anchor_t, due = self._k, now, now
            self._pause_started = now
        self._prev_due, self._prev_ts = due, ts
        self._k += 1
        self._acked = False

    async def _wait(self, ts: datetime) -> _Signal:
        while True:
            self._wake.clear()
            if signal := self._interrupted():
                return signal
            if self._paused:
                if self._step_credit:
                    self._step_credit -= 1
                    return _Signal.GO
                await self._wake.wait()
                continue
            if self.lockstep and not self._acked:
                await self._wake.wait()
                continue
            if self._anchor_pending:
                self._anchor_pending = False
                self._anchor_k, self._anchor_t = self._k, self._clock.now()
            due = self._due(ts)
            if self._clock.now() >= due:
                return _Signal.GO
            await self._clock.sleep_until(due, self._wake)

    async def apply(self, command: Command) -> None:
        """Apply a control command and acknowledge it; an invalid one gets an error STATUS
        and changes nothing."""
        try:
            message, seq = await self._apply(command)
        except (InvalidParameter, InvalidQuery) as error:
            await self._sink.status("error", error=error.message)
            return
        # Acknowledge before the replay acts on it: in lockstep the ack precedes the next candle.
        try:
            await self._sink.status(message, seq=seq)
        finally:
            self._wake.set()

    async def _apply(self, command: Command) -> tuple[str, int | None]:
        now = self._clock.now()
        match command:
            case Pause():
                if not self._paused:
                    self._paused, self._pause_started = True, now
                return "paused", None
            case Resume():
                if self._paused:
                    shift = now - self._pause_started
                    self._anchor_t += shift
                    self._prev_due += shift
                    self._paused = False
                return "resumed", None
            case Stop():
                self._stop = True
                return "stopping", None
            case Step():
                if not self._paused:
                    raise InvalidQuery("step: only while paused (send pause first)")
                self._step_credit += 1
                return "stepping", None
            case Ack():
                if not self.lockstep:
                    raise InvalidQuery("ack: only in mode=lockstep")
                self._acked = True
                return "acknowledged", None
            case Seek(seq=seq, ts=ts):
                target = await self._seek_target(seq, ts)
                self._seek, self._acked = target, True
                if self._paused:
                    self._pause_started = now
                return "seeked", target
            case ChangePace(step_seconds=step, speed=speed):
                if (step is None) == (speed is None):
                    raise InvalidParameter("speed", "give either step_seconds or speed")
                self.pacing = (
                    self.pacing.with_step(step)
                    if step is not None
                    else self.pacing.with_speed(speed)  # type: ignore[arg-type]
                )
                if self._k > 0:  # the next step is one new interval after the last one
                    self._anchor_k, self._anchor_t = self._k - 1, self._prev_due
                return "speed_changed", None
        raise InvalidQuery(f"unknown command {command!r}")  # pragma: no cover

    async def _seek_target(self, seq: int | None, ts: str | None) -> int:
        assert self.total is not None
        if (seq is None) == (ts is None):
            raise InvalidParameter("seek", "give either seq or ts")
        if seq is not None:
            if not 0 <= seq <= self.total:
                raise InvalidParameter("seq", f"must be between 0 and {self.total}, got {seq}")
            return seq
        assert ts is not None
        return await self._source.count_before(self.selection, parse_timestamp(ts, "ts"))

    @property
    def paused(self) -> bool:
        return self._paused
