"""What a caller may ask of bars: in which zone their buckets are counted and from which
origin, the session they keep, how gaps are filled, which end labels them. Checked here once
for REST, exports and replays (`bar_options`); made in SQL by `adapters/postgres/bars.py`.
"""

import enum
from datetime import UTC, datetime, timedelta

import msgspec

from marketdata.domain.candles import Candle, zone_info, zone_of
from marketdata.domain.errors import InvalidParameter

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 10080
EPOCH = datetime(1970, 1, 1)
MONDAY = datetime(1970, 1, 5)


def origin_of(tf_min: int) -> datetime:
    """The local time buckets of `tf_min` count from: weeks start on a Monday."""
    return MONDAY if tf_min % MINUTES_PER_WEEK == 0 else EPOCH


class Session(msgspec.Struct, frozen=True):
    """Local hours of trading, [start, end) in minutes after midnight; a start after the
    end wraps midnight (18:00-17:00)."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class Fill(enum.StrEnum):
    NONE = "none"
    NULL = "null"  # prices and volume null
    PREV = "prev"  # a flat candle at the previous close, volume 0


class Label(enum.StrEnum):
    OPEN = "open"
    CLOSE = "close"


class BarOptions(msgspec.Struct, frozen=True):
    """How a caller wants bars cut and shown: buckets in local time of `tz`, days starting
    `day_start` minutes after local midnight, only candles inside `session` (before they
    are aggregated), missing buckets filled (`fill`), and `ts` the open or the close
    (`label`; given either way, bars carry `ts_close`). The defaults are the seed's."""

    tz: str = "UTC"
    day_start: int = 0
    session: Session | None = None
    fill: Fill = Fill.NONE
    label: Label | None = None

    @property
    def shaped(self) -> bool:
        """Whether bars differ from the stored candles served as they are."""
        return self.session is not None or self.fill is not Fill.NONE or self.label is not None

    def origin(self, tf_min: int) -> datetime:
        """The local time buckets of `tf_min` count from."""
        return origin_of(tf_min) + timedelta(minutes=self.day_start)


PLAIN = BarOptions()


def bar_options(
    tz: str | None = None,
    day_start: str | None = None,
    session: str | None = None,
    fill: str | None = None,
    label: str | None = None,
) -> BarOptions:
    """A caller's bar options, each checked by its value object; absent ones the seed's."""
    try:
        filled, labelled_ = Fill(fill or "none"), Label(label) if label else None
    except ValueError as error:
        name = "fill" if fill and fill not in tuple(Fill) else "label"
        raise InvalidParameter(name, str(error)) from None
    return BarOptions(
        tz=zone_of(tz) if tz else "UTC",
        day_start=hours_of(day_start, "day_start") if day_start else 0,
        session=session_of(session) if session else None,
        fill=filled,
        label=labelled_,
    )


def hours_of(text: str, name: str) -> int:
    """`HH:MM` as minutes after midnight."""
    hours, colon, minutes = text.strip().partition(":")
    if not (colon and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise InvalidParameter(name, f"{text!r} is not a time of day HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(hours) > 23 or int(minutes) > 59:
        raise InvalidParameter(name, f"{text!r} is not a time of day HH:MM")
    return value


def session_of(text: str) -> Session:
    """`HH:MM-HH:MM`: local trading hours."""
    start, dash, end = text.partition("-")
    if not dash:
        raise InvalidParameter("session", f"{text!r} is not HH:MM-HH:MM, e.g. 09:30-16:00")
    session = Session(hours_of(start, "session"), hours_of(end, "session"))
    if session.start == session.end:
        raise InvalidParameter("session", f"{text!r} is empty: start and end are the same")
    return session


def local_to_utc(naive: datetime, tz: str) -> datetime:
    """When a local time of `tz` happens (buckets.instant, in SQL): a time that happens twice
    (clocks going back) is the later one, standard time, as PostgreSQL reads it; a time that
    does not happen (clocks going forward) is when the gap ends, the first whole minute
    whose local time is past it."""
    zone = zone_info(tz)
    early, late = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if early.utcoffset() == late.utcoffset():
        return early.astimezone(UTC)
    if early.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
        return late.astimezone(UTC)
    at = min(early.astimezone(UTC), late.astimezone(UTC))
    while at.astimezone(zone).replace(tzinfo=None) < naive:
        at += timedelta(minutes=1)
    return at


def bar_close(ts: datetime, tf_min: int, options: BarOptions, resampled: bool) -> datetime:
    """When the bar opening at `ts` closes: a stored bar `tf_min` later; a resampled one
    when the next bucket starts, in local time (days of 23 or 25 hours; after a bucket that
    began late, in a gap of local time, the next on the grid)."""
    stride = timedelta(minutes=tf_min)
    if not resampled or options.tz == "UTC":
        return ts + stride
    return local_to_utc(_local_start(ts, tf_min, options) + stride, options.tz)


def bucket_start(ts: datetime, tf_min: int, options: BarOptions) -> datetime:
    """When the bucket of `tf_min` that holds the instant `ts` starts, cut as `options`
    say (buckets.label, in SQL); `ts` itself where that start is before the year 1."""
    try:
        return local_to_utc(_local_start(ts, tf_min, options), options.tz)
    except OverflowError:
        return ts


def _local_start(ts: datetime, tf_min: int, options: BarOptions) -> datetime:
    stride, origin = timedelta(minutes=tf_min), options.origin(tf_min)
    local = ts.astimezone(zone_info(options.tz)).replace(tzinfo=None)
    return origin + (local - origin) // stride * stride


def labelled(candle: Candle, label: Label | None) -> Candle:
    """A bar as a caller asked to see it: with `label=close`, `ts` is its close time."""
    if label is Label.CLOSE and candle.ts_close is not None:
        return msgspec.structs.replace(candle, ts=candle.ts_close)
    return candle
