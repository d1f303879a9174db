"""How fast a replay plays, and what wakes it."""

import asyncio
import math
from datetime import datetime

import msgspec

from marketdata.domain.errors import InvalidParameter


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


class Wake:
    """What wakes a replay: its next step falling due, or a client's command. An
    asyncio.Event for the one waiter it has (the replay's own task), without the Event's
    list of waiters and loop checks: it is set and cleared once per step of every session."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class Schedule:
    """When each step of a replay is due, on an absolute schedule: step k at
    anchor_t + (k - anchor_k) * step_seconds, or in speed mode the previous step's due time
    plus the market-time gap divided by the speed (clamped). The anchor moves only when
    the schedule restarts (a seek: anchored when the next step is ready), shifts (a pause),
    changes pace, or a step is sent by hand; so nothing drifts however long a replay runs,
    and lateness of one step never delays the next one's due time."""

    def __init__(self, pacing: Pacing) -> None:
        self.pacing = pacing
        self._k = 0
        self._pending = True  # anchored when the first step is ready, not before
        self._anchor_k = 0
        self._anchor_t = 0.0
        self._prev_due = 0.0
        self._prev_at: datetime | None = None

    def restart(self) -> None:
        self._pending = True

    def anchor(self, now: float) -> None:
        if self._pending:
            self._pending = False
            self._anchor_k, self._anchor_t = self._k, now

    def due(self, at: datetime) -> float:
        """When the next step, whose bars close `at`, is due."""
        if self.pacing.step_seconds is not None:
            return self._anchor_t + (self._k - self._anchor_k) * self.pacing.step_seconds
        if self._k == self._anchor_k or self._prev_at is None:
            return self._anchor_t
        return self._prev_due + self.pacing.interval(self._prev_at, at)

    def sent(self, due: float, at: datetime, by_hand: float | None = None) -> None:
        """The step due at `due` was sent; `by_hand`: sent then by a client's step (the
        schedule goes on from there once resumed)."""
        if by_hand is not None:
            self._anchor_k, self._anchor_t, due = self._k, by_hand, by_hand
        self._prev_due, self._prev_at = due, at
        self._k += 1

    def shift(self, seconds: float) -> None:
        """Everything later by `seconds` (the time spent paused)."""
        self._anchor_t += seconds
        self._prev_due += seconds

    def repace(self, pacing: Pacing) -> None:
        """A new pace: the next step comes one new interval after the last one."""
        self.pacing = pacing
        if self._k > 0:
            self._anchor_k, self._anchor_t = self._k - 1, self._prev_due
