"""Time travel: a session is a moment of the past that moves forward at a chosen pace, the
simulated present every call made under it answers as of (REST, vendor protocols, streams).

A session is data, not a running task: its clock is an anchor (the simulated present at a
moment of the wall clock), a speed and whether it is paused; every instance computes the
same present from it, and each control (pause, resume, seek, speed) writes a new anchor.

    present(wall) = anchor_market + (wall - anchor_wall) * speed   (running)
                  = anchor_market                                  (paused)
                  at most `end`, when the session has one (then it has ended)

With `shift`, every time a client sees is moved by (wall - present): the past shown as
today, for clients that trust the wall clock; `unshift` reads a client's times back.
"""

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from marketdata.domain.candles import parse_timestamp, ticker_of
from marketdata.domain.errors import InvalidParameter, NotFound

State = Literal["running", "paused", "ended"]

MAX_SPEED = 1_000_000.0  # market seconds per wall second: a year in half a minute
MAX_TICKERS = 1000


class SessionClock(msgspec.Struct, frozen=True):
    """The clock of a session: `anchor_market` was the present at `anchor_wall`."""

    anchor_market: datetime
    anchor_wall: datetime
    speed: float
    paused: bool = False
    end: datetime | None = None

    def present(self, wall: datetime) -> datetime:
        if self.paused:
            at = self.anchor_market
        else:
            at = self.anchor_market + (wall - self.anchor_wall) * self.speed
        return min(at, self.end) if self.end is not None else at

    def ended(self, wall: datetime) -> bool:
        return self.end is not None and self.present(wall) >= self.end

    def wall_of(self, market: datetime) -> datetime | None:
        """When the present reaches `market` (now or past: at most `anchor_wall`...), None
        while paused or when the session ends before it."""
        if self.paused or (self.end is not None and market > self.end):
            return None
        return self.anchor_wall + (market - self.anchor_market) / self.speed

    # the controls: each a new anchor at `wall`

    def pause(self, wall: datetime) -> "SessionClock":
        return SessionClock(self.present(wall), wall, self.speed, True, self.end)

    def resume(self, wall: datetime) -> "SessionClock":
        return SessionClock(self.present(wall), wall, self.speed, False, self.end)

    def seek(self, wall: datetime, to: datetime) -> "SessionClock":
        return SessionClock(to, wall, self.speed, self.paused, self.end)

    def with_speed(self, wall: datetime, speed: float) -> "SessionClock":
        return SessionClock(self.present(wall), wall, speed_of(speed), self.paused, self.end)


class TravelSession(msgspec.Struct, frozen=True, kw_only=True):
    """A session as kept: its id, what it was made with, and its clock."""

    id: str
    start: datetime
    clock: SessionClock
    tickers: tuple[str, ...] = ()  # () for every ticker
    shift: bool = False
    created: datetime

    def present(self, wall: datetime) -> datetime:
        return self.clock.present(wall)

    def state(self, wall: datetime) -> State:
        if self.clock.ended(wall):
            return "ended"
        return "paused" if self.clock.paused else "running"

    def offset(self, wall: datetime) -> timedelta:
        """What a shifted session adds to every time it shows (zero without shift)."""
        return wall - self.present(wall) if self.shift else timedelta(0)

    def holds(self, ticker: str) -> bool:
        return not self.tickers or ticker in self.tickers

    def held(self, ticker: str) -> None:
        """NotFound for a ticker the session leaves out."""
        if not self.holds(ticker):
            raise NotFound(
                f"ticker {ticker!r} is not in this session (tickers: {', '.join(self.tickers)})"
            )


class NewSession(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of `POST /sessions`: where the present starts, how fast it moves (`speed`,
    market seconds per wall second, or `step_seconds`, wall seconds per bar of `tf_min`),
    where it stops, which tickers it holds, whether times are shifted to today."""

    start: str
    speed: float | None = None
    step_seconds: float | None = None
    tf_min: int | None = None
    end: str | None = None
    tickers: list[str] | str | None = None
    shift: bool = False


def speed_of(speed: float, name: str = "speed") -> float:
    if not (math.isfinite(speed) and 0 < speed <= MAX_SPEED):
        raise InvalidParameter(
            name, f"must be a number above 0 and at most {MAX_SPEED:g}, got {speed:g}"
        )
    return float(speed)


def pace_of(speed: float | None, step_seconds: float | None, tf_min: int) -> float:
    """A speed from either `speed` or `step_seconds` (wall seconds per bar of `tf_min`)."""
    if (speed is None) == (step_seconds is None):
        raise InvalidParameter("speed", "give either speed or step_seconds")
    if speed is not None:
        return speed_of(speed)
    assert step_seconds is not None
    if not (math.isfinite(step_seconds) and step_seconds > 0):
        raise InvalidParameter("step_seconds", f"must be above 0, got {step_seconds:g}")
    return speed_of(tf_min * 60 / step_seconds, "step_seconds")


def tickers_of(tickers: list[str] | str | None) -> tuple[str, ...]:
    if tickers is None:
        return ()
    items = tickers.split(",") if isinstance(tickers, str) else tickers
    found = tuple(dict.fromkeys(ticker_of(t.strip()) for t in items if t.strip()))
    if len(found) > MAX_TICKERS:
        raise InvalidParameter("tickers", f"at most {MAX_TICKERS}, got {len(found)}")
    return found


def new_session(asked: NewSession, wall: datetime, default_tf_min: int) -> TravelSession:
    """A session as asked, starting now at `start` (checked: each bad value named)."""
    start = parse_timestamp(asked.start, "start")
    end = parse_timestamp(asked.end, "end") if asked.end is not None else None
    if end is not None and end <= start:
        raise InvalidParameter("end", "must be after start")
    tf_min = default_tf_min if asked.tf_min is None else asked.tf_min
    if tf_min < 1:
        raise InvalidParameter("tf_min", f"must be at least 1, got {tf_min}")
    speed = pace_of(asked.speed, asked.step_seconds, tf_min)
    return TravelSession(
        id=uuid.uuid4().hex,
        start=start,
        clock=SessionClock(start, wall, speed, False, end),
        tickers=tickers_of(asked.tickers),
        shift=asked.shift,
        created=wall,
    )


def wall_now() -> datetime:
    return datetime.now(UTC)
