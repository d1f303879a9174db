"""One client's replay: bars re-emitted on an absolute, accelerated schedule (a step, all
bars that close together, at a time: see pacing.Schedule), then, when asked, the candles
committed since, live. The client's commands (commands.Controls) act at the next step.

Bars go to the sink a step at a time; with `batch`, the steps that are due at once (at
step 0, or catching up) go together, up to `batch` bars: what is not yet sent is sent
before the replay waits for anything.
"""

import asyncio
import contextlib
import enum
from datetime import datetime

from marketdata.domain.candles import Candle, LiveEvent, Removed, parse_timestamp
from marketdata.domain.errors import InvalidParameter, InvalidQuery, no_candles
from marketdata.domain.replay.commands import Command, Controls
from marketdata.domain.replay.frames import frames, shown
from marketdata.domain.replay.pacing import Pacing, Schedule, Wake
from marketdata.domain.replay.paging import pages, steps
from marketdata.domain.replay.ports import (
    Clock,
    LiveFeed,
    ReplaySink,
    ReplaySource,
    ReplayStatus,
)
from marketdata.domain.replay.selection import ReplayKey, ReplaySelection, key_of, planned
from marketdata.domain.replay.tail import LiveTail, live_bound

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
        live: LiveFeed | None = None,
        history: bool = True,
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
        self._from_seq = from_seq
        self._page_size = page_size
        self._prefetch_at = prefetch_at
        self._batch = batch
        # Live: after the history (`history` false: none), the candles committed since.
        self._history = history
        self._wake = Wake()
        self._tail = LiveTail(live, self._wake) if live is not None else None
        # set when a live client is cut for reading too slowly (whatever the replay is doing)
        self.cut = self._tail.cut if self._tail is not None else asyncio.Event()
        self._last: ReplayKey | None = None
        # with live: where the history ends (what the catalog showed at the start, then, once
        # subscribed, what it shows then: the catch-up's end)
        self._until: ReplayKey | None = None
        self.total: int | None = None
        self._primed: tuple[ReplayKey | None, list[Candle]] | None = None
        self._schedule = Schedule(pacing)
        self._controls = Controls(self._schedule, clock, self._wake, lockstep)
        # bars (and live Removed events) emitted but not yet sent (with batch), and the
        # seq after them
        self._frame: list[LiveEvent] = []
        self._next_seq = from_seq

    @property
    def cut_reason(self) -> str | None:
        """Why a live client was cut (`cut` set), once it is."""
        return self._tail.reason if self._tail is not None else None

    @property
    def pacing(self) -> Pacing:
        return self._schedule.pacing

    @property
    def lockstep(self) -> bool:
        return self._controls.lockstep

    @property
    def paused(self) -> bool:
        return self._controls.paused

    async def prepare(self) -> int:
        """Everything the replay needs from the store before its first candle: the source
        timeframes and the count (from the catalog where it can: one query for a stored
        series however long), then the first page. NotFound when there are no candles."""
        held = await self._source.holdings(self.selection.tickers)
        self.selection, total = planned(self.selection, held)
        if self._tail is not None:  # the history is what is there now: the rest comes live
            self._until = live_bound(self.selection, held)
        if not self._history:  # live only: what is committed from now on
            self.total = 0
            return 0
        if total is None:
            total = await self._source.count(self.selection)
        if total == 0:  # nothing to replay (a live subscription alone: WS /ws/live)
            raise no_candles(
                ",".join(self.selection.tickers), ",".join(map(str, self.selection.tf_mins))
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
        try:
            return await self._run()
        finally:
            if self._tail is not None:
                self._tail.close()

    async def _run(self) -> Outcome:
        if not self._history:  # live only: from now on
            assert self._tail is not None
            self._tail.subscribe(self.selection.streams)
            self._next_seq = self._from_seq
            await self._play_live()  # a seek is refused here: only a stop ends it
            await self._sink.status(self.status("replay_stopped", seq=self._next_seq))
            return Outcome.STOPPED
        await self._sink.status(self.status("replay_starting"))
        seq = self._from_seq
        resume: ReplayKey | None = None  # set: read on after this bar (no seek)
        while True:
            primed, self._primed = self._primed, None
            if primed is not None:
                after, first = primed
            elif resume is not None:
                after, first = resume, None
            else:
                after, first = await self._after(seq), None
            resume = None
            self._next_seq = seq
            played = 0
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
                        self._until,
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
                    self._emitted(self._schedule.due(close), close)
                    played += len(group)
                    await self._add(group)
            if signal is _Signal.SEEK:
                self._frame = []  # the client asked to be elsewhere
            else:
                await self._flush()
            seq = self._next_seq
            if signal is _Signal.GO and self._tail is not None:
                if not self._tail.subscribed:
                    # what was committed while the history played, up to what was there
                    # once subscribed (read after subscribing): the rest comes live, so
                    # the replay goes live however fast candles keep coming
                    self._tail.subscribe(self.selection.streams)
                    held = await self._source.holdings(self.selection.tickers)
                    self._until = live_bound(self.selection, held)
                    resume = self._last
                    continue
                signal = await self._play_live()
                seq = self._next_seq
            if signal is _Signal.GO:
                signal = await self._settle()
            if signal is _Signal.STOP:
                await self._sink.status(self.status("replay_stopped", seq=seq))
                return Outcome.STOPPED
            if signal is _Signal.SEEK:
                assert self._controls.seek is not None
                seq, self._controls.seek = self._controls.seek, None
                self._schedule.restart()
                if self._tail is not None:  # back to the history; live again at its end
                    self._tail.close()
                    self._until = None
                continue
            await self._sink.status(self.status("replay_complete", seq=seq))
            return Outcome.COMPLETED

    async def _play_live(self) -> _Signal:
        """The candles committed from now on, each sent as it arrives (paused, stepped or
        acknowledged as a replay's), until a stop or a seek."""
        assert self._tail is not None
        await self._sink.status(self.status("live", seq=self._next_seq))
        while True:
            self._wake.clear()
            if signal := self._interrupted():
                return signal
            controls = self._controls
            if controls.paused and not controls.step_credit:
                await self._wake.wait()
                continue
            if controls.lockstep and not controls.acked:
                await self._wake.wait()
                continue
            most = 1 if controls.paused or controls.lockstep else (self._batch or self._page_size)
            arrived = self._tail.arrived(most)
            if not arrived:
                await self._wake.wait()
                continue
            if controls.paused:
                controls.take_step()
            bars = [event for event in arrived if isinstance(event, Candle)]
            if bars:
                self._last = key_of(bars[-1])
            self._frame += arrived
            self._next_seq += len(arrived)
            await self._flush()

    async def _after(self, seq: int) -> ReplayKey | None:
        return await self._source.key_at(self.selection, seq - 1) if seq > 0 else None

    async def _add(self, group: list[Candle]) -> None:
        self._frame += group
        self._next_seq += len(group)
        self._last = key_of(group[-1])
        if self._tail is not None:
            self._tail.played(group)
        if self._batch is None:
            await self._flush()
            return
        while len(self._frame) >= self._batch:
            await self._flush(self._batch)

    async def _flush(self, size: int | None = None) -> None:
        """Send what was emitted (at most `size` of it): bars in frames, a live Removed on
        its own; in lockstep, the client's ack for it is awaited before the next step."""
        if not self._frame:
            return
        size = size or len(self._frame)
        sent, self._frame = self._frame[:size], self._frame[size:]
        self._controls.acked = False
        seq = self._next_seq - len(self._frame) - len(sent)
        for at, frame in frames(sent):
            if isinstance(frame, Removed):
                await self._sink.removed(seq + at, frame)
            else:
                await self._sink.candles(seq + at, shown(frame, self.selection.options))

    async def _flushed(self) -> bool:
        """Before waiting for anything: send what is pending; whether anything was."""
        if not self._frame:
            return False
        await self._flush()
        return True

    def _interrupted(self) -> _Signal | None:
        if self._controls.stop:
            return _Signal.STOP
        if self._controls.seek is not None:
            return _Signal.SEEK
        return None

    async def _settle(self) -> _Signal:
        """At the end: in lockstep, the last step's ack comes before replay_complete."""
        while True:
            self._wake.clear()
            if signal := self._interrupted():
                return signal
            if not self.lockstep or self._controls.acked:
                return _Signal.GO
            await self._wake.wait()

    def _emitted(self, due: float, at: datetime) -> None:
        if self._controls.paused:  # a manual step: the schedule goes on from now once resumed
            now = self._clock.now()
            self._schedule.sent(due, at, by_hand=now)
            self._controls.pause_started = now
        else:
            self._schedule.sent(due, at)

    async def _wait(self, at: datetime) -> _Signal:
        controls = self._controls
        while True:
            self._wake.clear()
            if signal := self._interrupted():
                return signal
            if controls.paused:
                if controls.take_step():
                    return _Signal.GO
                if not await self._flushed():
                    await self._wake.wait()
                continue
            if controls.lockstep and not controls.acked:
                await self._wake.wait()
                continue
            self._schedule.anchor(self._clock.now())
            due = self._schedule.due(at)
            if self._clock.now() >= due:
                return _Signal.GO
            if not await self._flushed():
                await self._clock.sleep_until(due, self._wake)

    async def apply(self, command: Command) -> None:
        """Apply a control command and acknowledge it; an invalid one gets an error STATUS
        and changes nothing."""
        try:
            message, seq = await self._controls.apply(
                command, self._seek_target, live_only=not self._history
            )
        except (InvalidParameter, InvalidQuery) as error:
            await self._sink.status(self.status("error", error=error.message))
            return
        # Acknowledge before the replay acts on it: in lockstep the ack precedes the next candle.
        try:
            await self._sink.status(self.status(message, seq=seq))
        finally:
            self._wake.set()

    async def _seek_target(self, seq: int | None, ts: str | None) -> int:
        assert self.total is not None
        if seq is not None:
            if not 0 <= seq <= self.total:
                raise InvalidParameter("seq", f"must be between 0 and {self.total}, got {seq}")
            return seq
        assert ts is not None
        return await self._source.seq_at(self.selection, parse_timestamp(ts, "ts"))
