"""A session's clock: the present it gives at each wall time, and each control's new anchor."""

from datetime import UTC, datetime, timedelta

import pytest

from marketdata.domain.errors import InvalidParameter, InvalidQuery
from marketdata.domain.sessions import NewSession, SessionClock, new_session, pace_of

PAST = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
WALL = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def later(seconds: float) -> datetime:
    return WALL + timedelta(seconds=seconds)


def test_the_present_moves_at_its_speed_and_stops_at_the_end() -> None:
    clock = SessionClock(PAST, WALL, speed=600.0, end=PAST + timedelta(hours=1))
    assert clock.present(WALL) == PAST
    assert clock.present(later(1)) == PAST + timedelta(minutes=10)
    assert clock.present(later(7)) == PAST + timedelta(hours=1)  # the end, not past it
    assert clock.ended(later(6))
    assert not clock.ended(later(5.9))
    assert clock.wall_of(PAST + timedelta(minutes=5)) == later(0.5)
    assert clock.wall_of(PAST + timedelta(hours=2)) is None  # after the end: never


def test_pause_resume_seek_and_speed_keep_the_present_continuous() -> None:
    clock = SessionClock(PAST, WALL, speed=60.0)
    paused = clock.pause(later(10))
    assert paused.present(later(10)) == paused.present(later(1000)) == PAST + timedelta(minutes=10)
    assert paused.wall_of(PAST + timedelta(hours=1)) is None
    resumed = paused.resume(later(100))
    assert resumed.present(later(101)) == PAST + timedelta(minutes=11)
    faster = resumed.with_speed(later(101), 3600.0)
    assert faster.present(later(101)) == PAST + timedelta(minutes=11)
    assert faster.present(later(102)) == PAST + timedelta(minutes=71)
    there = faster.seek(later(102), PAST - timedelta(days=1))
    assert there.present(later(102)) == PAST - timedelta(days=1)
    assert there.present(later(103)) == PAST - timedelta(days=1) + timedelta(hours=1)
    assert clock.pause(later(1)).seek(later(2), PAST).paused  # a seek keeps a pause


def test_a_pace_is_a_speed_or_a_step_per_bar() -> None:
    assert pace_of(120.0, None, 5) == 120.0
    assert pace_of(None, 0.5, 5) == 600.0  # a 5-minute bar every half second
    for speed, step in [(None, None), (1.0, 1.0), (0.0, None), (float("nan"), None), (None, -1)]:
        with pytest.raises(InvalidParameter):
            pace_of(speed, step, 5)


def test_a_new_session_checks_what_it_is_made_with() -> None:
    asked = NewSession(start="2024-03-01T14:30:00Z", speed=60, tickers="A, B,A")
    made = new_session(asked, WALL, 5)
    assert made.tickers == ("A", "B")
    assert made.present(WALL) == PAST
    assert len(made.id) == 32
    with pytest.raises(InvalidParameter, match="end"):
        new_session(NewSession(start="2024-03-01", end="2024-02-01", speed=1), WALL, 5)
    with pytest.raises(InvalidQuery, match="start"):
        new_session(NewSession(start="yesterday", speed=1), WALL, 5)
