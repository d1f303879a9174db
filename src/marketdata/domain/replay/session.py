"""One client's replay: bars re-emitted on an absolute, accelerated schedule.

Schedule: step k (all bars that close together) is due at anchor_t + (k - anchor_k) *
step_seconds, or, in speed mode, at the previous step's due time plus the market-time gap
divided by the speed (clamped to [min, max] step). The anchor moves only on pause/resume
(shifted by the time spent paused), seek, a pace change or a manual step, so nothing drifts
however long the replay runs: lateness of one step never delays the next one's due time.

Bars go to the sink a step at a time; with `batch`, the steps that are due at once (at
step 0, or catching up) go together, up to `batch` bars: what is not yet sent is sent
before the replay waits for anything.
"""

import contextlib
import enum
from datetime import datetime

import msgspec

from marketdata.domain.candles import Candle, parse_timestamp
from marketdata.domain.errors import InvalidParameter, InvalidQuery, NotFound
from marketdata.domain.replay.commands import (
    Ack,
    ChangePace,
    Command,
    Pause,
    Resume,
    Seek,
    Step,
    Stop,
)
from marketdata.domain.replay.pacing import Pacing, Wake
from marketdata.domain.replay.paging import pages, steps
from marketdata.domain.replay.ports import Clock, ReplaySink, ReplaySource, ReplayStatus
from marketdata.domain.replay.selection import ReplayKey, ReplaySelection, key_of, planned
from marketdata.domain.timeframes import bar_close, labelled

MAX_BATCH = 1000


class Outcome(enum.Enum):
    COMPLETED = "completed"
    STOPPED = "stopped"


class _Signal(enum.Enum):
    GO = enum.auto()
    SEEK = enum.auto()
    STOP = enum.auto()


class ReplaySession:
    """One client's replay. `prepare()` then `run()` play it; `apply()` takes the client's
    commands while it plays (from another task) and acknowledges each through the sink."""

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
        prefetch_at: float = 0.5,
        batch: int | None = None,
    ) -> None:
        if from_seq < 0:
            raise InvalidParameter("from_seq", f"must not be negative, got {from_seq}")
        if page_size < 1:
            raise InvalidParameter("page_size", "must be positive")
        if batch is not None and not 1 <= batch <= MAX_BATCH:
            raise InvalidParameter("batch", f"must be between 1 and {MAX_BATCH}, got {batch}")
        self._source = source
        self._clock = clock
        self._sink = sink
        self.selection = selection
        self.pacing = pacing
        self.lockstep = lockstep
        self._from_seq = from_seq
        self._page_size = page_size
        self._prefetch_at = prefetch_at
        self._batch = batch
        self.total: int | None = None
        self._primed: tuple[ReplayKey | None, list[Candle]] | None = None
        self._wake = Wake()
        self._paused = False
        self._pause_started = 0.0
        self._step_credit = 0
        self._acked = True
        self._seek: int | None = None
        self._stop = False
        # bars emitted but not yet sent (with batch), and the seq after them
        self._frame: list[Candle] = []
        self._next_seq = from_seq
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
        """Everything the replay needs from the store before its first candle: the source
        timeframes and the count (from the catalog where it can: one query for a stored
        series however long), then the first page. NotFound when there are no candles."""
        self.selection, total = planned(
            self.selection, await self._source.holdings(self.selection.tickers)
        )
        if total is None:
            total = await self._source.count(self.selection)
        if total == 0:
            raise NotFound(
                f"No candles found for {','.join(self.selection.tickers)} with "
                f"tf_min={','.join(map(str, self.selection.tf_mins))}"
            )
        if self._from_seq > total:
            raise InvalidParameter("from_seq", f"must be at most {total}, got {self._from_seq}")
        self.total = total
        after = await self._after(self._from_seq)
        self._primed = (after, await self._source.page(self.selection, after, self._page_size))
        return total

    def status(
        self, message: str, *, error: str | None = None, seq: int | None = None
    ) -> ReplayStatus:
        return ReplayStatus(
            message=message,
            tickers=self.selection.tickers,
            tf_min=self.selection.tf_min,
            tf_mins=self.selection.tf_mins if len(self.selection.tf_mins) > 1 else (),
            step_seconds=self.pacing.step_seconds,
            speed=self.pacing.speed,
            total=self.total,
            seq=seq,
            error=error,
        )

    async def run(self) -> Outcome:
        if self.total is None:
            await self.prepare()
        await self._sink.status(self.status("replay_starting"))
        seq = self._from_seq
        while True:
            primed, self._primed = self._primed, None
            after, first = primed if primed is not None else (await self._after(seq), None)
            self._next_seq = seq
            signal = _Signal.GO
            async with (
                contextlib.aclosing(
                    pages(
                        self._source,
                        self.selection,
                        after,
                        self._page_size,
                        self._prefetch_at,
                        first,
                    )
                ) as bars,
                contextlib.aclosing(steps(bars)) as groups,
            ):
                async for group in groups:
                    close = key_of(group[0]).close
                    signal = await self._wait(close)
                    if signal is not _Signal.GO:
                        break
                    # Commit the step to the schedule before sending it: commands that
                    # arrive while it is being sent apply to the steps after it.
                    self._emitted(self._due(close), close)
                    await self._add(group)
            if signal is _Signal.SEEK:
                self._frame = []  # the client asked to be elsewhere
            else:
                await self._flush()
            seq = self._next_seq
            if signal is _Signal.GO:
                signal = await self._settle()
            if signal is _Signal.STOP:
                await self._sink.status(self.status("replay_stopped", seq=seq))
                return Outcome.STOPPED
            if signal is _Signal.SEEK:
                assert self._seek is not None
                seq, self._seek = self._seek, None
                self._anchor_pending = True
                continue
            await self._sink.status(self.status("replay_complete", seq=seq))
            return Outcome.COMPLETED

    async def _after(self, seq: int) -> ReplayKey | None:
        return await self._source.key_at(self.selection, seq - 1) if seq > 0 else None

    async def _add(self, group: list[Candle]) -> None:
        self._frame += group
        self._next_seq += len(group)
        if self._batch is None:
            await self._flush()
            return
        while len(self._frame) >= self._batch:
            await self._flush(self._batch)

    async def _flush(self, size: int | None = None) -> None:
        """Send what was emitted (at most `size` candles of it); in lockstep, the client's
        ack for it is awaited before the next step."""
        if not self._frame:
            return
        size = size or len(self._frame)
        sent, self._frame = self._frame[:size], self._frame[size:]
        self._acked = False
        label = self.selection.options.label
        if label is not None:
            sent = [labelled(self._closed(c), label) for c in sent]
        elif sent[0].ts_close is not None:  # a close time set for the order, not asked for
            sent = [msgspec.structs.replace(c, ts_close=None) for c in sent]
        await self._sink.candles(self._next_seq - len(self._frame) - len(sent), sent)

    def _closed(self, candle: Candle) -> Candle:
        """A forming bar is ordered by its source candle's close: shown with its own."""
        if candle.final is None:
            return candle
        closes = bar_close(candle.ts, candle.tf_min, self.selection.options.tz, resampled=True)
        return msgspec.structs.replace(candle, ts_close=closes)

    async def _flushed(self) -> bool:
        """Before waiting for anything: send what is pending; whether anything was."""
        if not self._frame:
            return False
        await self._flush()
        return True

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

    async def _wait(self, ts: datetime) -> _Signal:
        while True:
            self._wake.clear()
            if signal := self._interrupted():
                return signal
            if self._paused:
                if self._step_credit:
                    self._step_credit -= 1
                    return _Signal.GO
                if not await self._flushed():
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
            if not await self._flushed():
                await self._clock.sleep_until(due, self._wake)

    async def apply(self, command: Command) -> None:
        """Apply a control command and acknowledge it; an invalid one gets an error STATUS
        and changes nothing."""
        try:
            message, seq = await self._apply(command)
        except (InvalidParameter, InvalidQuery) as error:
            await self._sink.status(self.status("error", error=error.message))
            return
        # Acknowledge before the replay acts on it: in lockstep the ack precedes the next candle.
        try:
            await self._sink.status(self.status(message, seq=seq))
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
        return await self._source.seq_at(self.selection, parse_timestamp(ts, "ts"))

    @property
    def paused(self) -> bool:
        return self._paused
