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
