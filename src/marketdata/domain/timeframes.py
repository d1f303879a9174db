"""How a timeframe is served: as stored, or resampled from a finer source, buckets aligned
how. One rule for REST, exports and replay (`serving`).

Buckets are aligned with `date_bin` on an epoch origin (1970-01-01 00:00; for whole weeks
1970-01-05, a Monday) in local time of a zone: `America/New_York` keeps a US session in one
day. Rollups are kept in UTC buckets from the same origins, or, for whole days and weeks,
in the local days of a zone (`1440@America/New_York`); a rollup serves a resampled timeframe only
where each of its buckets falls whole into one bucket of that timeframe. Which rollups a
ticker keeps, and how, is the database's rule (`candle_rollup_levels`, kept by the triggers
of `candles` for every writer).
"""

import functools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from marketdata.domain.bar_options import (
    MINUTES_PER_DAY,
    BarOptions,
    origin_of,
)
from marketdata.domain.candles import zone_info, zone_of
from marketdata.domain.errors import InvalidParameter, NotFound, no_candles


class Series(msgspec.Struct, frozen=True):
    """A stored series as the catalog knows it; `version` changes whenever it does."""

    ticker: str
    tf_min: int
    first: datetime
    last: datetime
    count: int
    version: int = 0


class Rollup(msgspec.Struct, frozen=True, order=True):
    """A rollup kept: buckets of `tf_min` minutes from the epoch (whole weeks: from a
    Monday) in UTC, or in local time of `tz` (whole days and weeks only: a zone's hours are
    the UTC hours or half hours)."""

    tf_min: int
    tz: str = "UTC"

    def __str__(self) -> str:
        return str(self.tf_min) if self.tz == "UTC" else f"{self.tf_min}@{self.tz}"


def rollup_of(text: str) -> Rollup:
    """`15`, `1440` or `1440@America/New_York`, as ROLLUP_TF_MINS lists them."""
    minutes, _, tz = text.strip().partition("@")
    try:
        tf_min = int(minutes)
    except ValueError:
        raise InvalidParameter("rollup", f"{text!r} is not minutes[@zone]") from None
    if not 1 < tf_min <= 2**31 - 1:
        raise InvalidParameter("rollup", f"{text!r}: minutes must be above 1")
    if not tz or tz == "UTC":
        return Rollup(tf_min)
    if tf_min % MINUTES_PER_DAY:
        raise InvalidParameter("rollup", f"{text!r}: rollups in a zone are whole days or weeks")
    try:
        zone_of(tz)
    except InvalidParameter as error:
        raise InvalidParameter("rollup", f"{text!r}: {error.reason}") from None
    return Rollup(tf_min, tz)


class Holdings(msgspec.Struct, frozen=True):
    """What is stored for some tickers (the catalog's series) and which rollups are kept
    and complete."""

    series: tuple[Series, ...] = ()
    rollups: tuple[Rollup, ...] = ()

    def of(self, ticker: str) -> tuple[Series, ...]:
        return tuple(s for s in self.series if s.ticker == ticker)


class Resample(msgspec.Struct, frozen=True):
    """What a resampled timeframe is read from.

    `source_tf` is the stored timeframe the buckets are made of (the finest that divides
    the requested one): it decides which candles a bucket holds and whether a bucket lies
    whole inside a range. `rollup`, when set, is a coarser timeframe kept at write time
    from `source_tf` (in UTC buckets, or the local days of `rollup_tz`), read instead of
    it: the same buckets from fewer rows.
    """

    source_tf: int
    rollup: int | None = None
    rollup_tz: str = "UTC"

    @property
    def read_tf(self) -> int:
        """The timeframe of the rows actually read."""
        return self.rollup or self.source_tf


class Serving(msgspec.Struct, frozen=True):
    """How one timeframe of one ticker is served: as stored, or resampled (`resample`) from a
    finer stored timeframe; or not at all (`available` false), with what is stored."""

    tf_min: int
    stored: tuple[int, ...]
    resample: Resample | None = None

    @property
    def available(self) -> bool:
        return self.resample is not None or self.tf_min in self.stored

    def not_found(self, ticker: str) -> NotFound:
        return no_candles(ticker, self.tf_min, stored=self.stored)


def serving(
    tf_min: int,
    series: Iterable[Series],
    options: BarOptions | None = None,
    rollups: Iterable[Rollup] = (),
) -> Serving:
    """The one rule for every reader: a stored timeframe is served as stored; otherwise it
    is made from the finest stored timeframe that divides it, buckets cut as `options`
    say, read from the coarsest kept rollup of that timeframe whose buckets fall whole into
    the requested ones (and into or out of the session) over the series' span: the answer
    is the same, only cheaper."""
    options = options or BarOptions()
    held = {s.tf_min: s for s in series}
    stored = tuple(sorted(held))
    if tf_min in held:
        return Serving(tf_min, stored)
    divisors = [tf for tf in stored if tf < tf_min and tf_min % tf == 0]
    if not divisors:
        return Serving(tf_min, stored)
    base = held[divisors[0]]
    usable = [
        r
        for r in rollups
        if r.tf_min not in held and _fits(r, tf_min, options, base.tf_min, base.first, base.last)
    ]
    if not usable:
        return Serving(tf_min, stored, Resample(base.tf_min))
    best = max(usable)
    return Serving(tf_min, stored, Resample(base.tf_min, best.tf_min, best.tz))


def _fits(
    rollup: Rollup, tf_min: int, options: BarOptions, base_tf: int, first: datetime, last: datetime
) -> bool:
    """Whether `rollup`, made of `base_tf` candles, holds whole buckets of `tf_min` cut as
    `options` say between `first` and `last`: each of its buckets inside one of theirs, and
    inside or outside the session."""
    if not (base_tf < rollup.tf_min <= tf_min and tf_min % rollup.tf_min == 0):
        return False
    step = rollup.tf_min
    # the requested buckets' origin, from the rollup's own (a rollup of weeks counts from a
    # Monday, as weeks do)
    origin = int((options.origin(tf_min) - origin_of(step)).total_seconds()) // 60
    edges = (origin, *((options.session.start, options.session.end) if options.session else ()))
    if rollup.tf_min % base_tf or any(edge % step for edge in edges):
        return False
    if rollup.tz == "UTC":
        return aligned(rollup.tf_min, options.tz, first, last)
    # local days of the same zone, counted from the same local midnight
    return rollup.tz == options.tz


# The timeframes a client is offered besides the stored ones, when they can be served:
# the minutes, hours, days and week that charting tools list.
COMMON_TF_MINS = (1, 2, 3, 5, 10, 15, 30, 60, 120, 240, 360, 720, 1440, 10080)
Source = Literal["stored", "rollup", "resampled"]


class Served(msgspec.Struct, frozen=True):
    """A timeframe a ticker can be served at, and how: as `stored`, read from a `rollup`,
    or `resampled` from the stored candles of `from_tf_min` (a rollup is made of them too;
    for a stored timeframe, itself)."""

    tf_min: int
    source: Source
    from_tf_min: int


def servable(
    series: Iterable[Series],
    rollups: Iterable[Rollup] = (),
    candidates: Iterable[int] = COMMON_TF_MINS,
) -> list[Served]:
    """The stored timeframes and those of `candidates` that `serving` can serve, finest
    first, each with how it serves them in UTC buckets. A zone, day start or session may
    take another rollup, or none, but never changes which timeframes can be served."""
    held, kept = tuple(series), tuple(rollups)
    served: list[Served] = []
    for tf_min in sorted({s.tf_min for s in held} | set(candidates)):
        plan = serving(tf_min, held, rollups=kept)
        if plan.resample is not None:
            source: Source = "rollup" if plan.resample.rollup is not None else "resampled"
            served.append(Served(tf_min, source, plan.resample.source_tf))
        elif plan.available:
            served.append(Served(tf_min, "stored", tf_min))
    return served


def aligned(rollup: int, tz: str, first: datetime, last: datetime) -> bool:
    """Whether every UTC bucket of `rollup` minutes (counted from its origin) between `first`
    and `last` starts on a whole multiple of the rollup in local time of `tz`: every UTC
    offset the zone uses then is a whole multiple of the rollup, and every change of offset
    happens on a rollup boundary."""
    step = rollup * 60
    if tz == "UTC":
        return True
    for year in range(first.year, last.year + 1):
        offsets, changes = _zone_year(tz, year)
        if any(offset % step for offset in offsets) or any(at % step for at in changes):
            return False
    return True


@functools.lru_cache(maxsize=1024)
def _zone_year(tz: str, year: int) -> tuple[frozenset[int], tuple[int, ...]]:
    """The UTC offsets (seconds) `tz` uses in `year`, and the instants (seconds since the
    epoch) its offset changes, found day by day and then to the second."""
    zone = zone_info(tz)

    def offset(at: datetime) -> int:
        delta = at.astimezone(zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    day = timedelta(days=1)
    at = datetime(year, 1, 1, tzinfo=UTC) if year > 1 else datetime(1, 1, 2, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else datetime.max.replace(tzinfo=UTC)
    offsets = {offset(at)}
    changes: list[int] = []
    while at < end:
        after = min(at + day, end)
        if offset(after) != offset(at):
            lo, hi = at, after  # the change is in (lo, hi]
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (lo, mid) if offset(mid) != offset(lo) else (mid, hi)
            changes.append(int(hi.timestamp()))
            offsets.add(offset(after))
        at = after
    return frozenset(offsets), tuple(changes)
