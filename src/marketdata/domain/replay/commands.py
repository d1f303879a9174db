"""The client's control messages, decoded straight from its JSON: {"action": "pause"}, ...,
and what they do to a replay (Controls)."""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from marketdata.domain.errors import InvalidParameter, InvalidQuery
from marketdata.domain.replay.pacing import Schedule, Wake

if TYPE_CHECKING:
    from marketdata.domain.replay.ports import Clock


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


class Controls:
    """What a client's commands ask of a replay while it plays, and their effect on its
    schedule: a command changes state here and wakes the replay, which acts on it at its
    next step. `seek` takes a position resolver (a seq, or the seq of a time)."""

    def __init__(self, schedule: Schedule, clock: "Clock", wake: Wake, lockstep: bool) -> None:
        self.schedule = schedule
        self.lockstep = lockstep
        self._clock = clock
        self._wake = wake
        self.paused = False
        self.pause_started = 0.0
        self.step_credit = 0
        self.acked = True
        self.seek: int | None = None
        self.stop = False

    def take_step(self) -> bool:
        """While paused: whether a step was asked for (and use it)."""
        if not self.step_credit:
            return False
        self.step_credit -= 1
        return True

    async def apply(
        self,
        command: Command,
        resolve: Callable[[int | None, str | None], Awaitable[int]],
        live_only: bool,
    ) -> tuple[str, int | None]:
        """The acknowledgement (STATUS message and seq) of a command applied; raises
        InvalidParameter or InvalidQuery for one that cannot be (nothing changes)."""
        now = self._clock.now()
        match command:
            case Pause():
                if not self.paused:
                    self.paused, self.pause_started = True, now
                return "paused", None
            case Resume():
                if self.paused:
                    self.schedule.shift(now - self.pause_started)
                    self.paused = False
                return "resumed", None
            case Stop():
                self.stop = True
                return "stopping", None
            case Step():
                if not self.paused:
                    raise InvalidQuery("step: only while paused (send pause first)")
                self.step_credit += 1
                return "stepping", None
            case Ack():
                if not self.lockstep:
                    raise InvalidQuery("ack: only in mode=lockstep")
                self.acked = True
                return "acknowledged", None
            case Seek() if live_only:
                raise InvalidQuery("seek: a live subscription has no history to seek in")
            case Seek(seq=seq, ts=ts):
                if (seq is None) == (ts is None):
                    raise InvalidParameter("seek", "give either seq or ts")
                target = await resolve(seq, ts)
                self.seek, self.acked = target, True
                if self.paused:
                    self.pause_started = now
                return "seeked", target
            case ChangePace() if live_only:
                raise InvalidQuery("speed: a live subscription sends candles as they come")
            case ChangePace(step_seconds=step, speed=speed):
                if (step is None) == (speed is None):
                    raise InvalidParameter("speed", "give either step_seconds or speed")
                pacing = self.schedule.pacing
                self.schedule.repace(
                    pacing.with_step(step) if step is not None else pacing.with_speed(speed)  # type: ignore[arg-type]
                )
                return "speed_changed", None
        raise InvalidQuery(f"unknown command {command!r}")  # pragma: no cover
