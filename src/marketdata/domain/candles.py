"""Candles and the value objects that describe which candles a caller wants."""

import enum
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from marketdata.domain.errors import InvalidParameter, InvalidQuery

MAX_TICKER_LENGTH = 64


class Candle(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One OHLCV bar. `ts` is the bar's open time, timezone-aware UTC (its close time when
    a caller asked for `label=close`). Its fields are scalars, so the garbage collector need
    not track it (gc=False): a replay holds pages of them, and a full collection then has
    fewer objects to walk.

    `ts_close` (the bar's close time), `filled` (a bucket with no candle, made up by
    `fill`), `final` (a forming bar of a replay: whether this is its last update) and
    `revision` (a live candle written again with other values: how many times) are set
    only where they apply: unset, a body is the seed's. A bar filled with nulls has NaN
    prices (JSON null)."""

    ticker: str
    tf_min: int
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    openint: int
    ts_close: datetime | None = None
    filled: bool = False
    final: bool | None = None
    revision: int = 0


class Removed(msgspec.Struct, frozen=True):
    """A live event: the bars of a series opening in [start, end] are gone (their candles
    deleted, by DELETE /candles or any writer); bars of that span still there are sent again
    after it."""

    ticker: str
    tf_min: int
    start: datetime
    end: datetime


LiveEvent = Candle | Removed


class Order(enum.StrEnum):
    ASC = "asc"
    DESC = "desc"


# C0 and C1 control characters (NUL among them, which PostgreSQL text cannot hold).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"  # the same rule, for OpenAPI


def text_of(name: str, value: str) -> str:
    """A free text parameter (ticker, prefix): bounded, no control characters."""
    if len(value) > MAX_TICKER_LENGTH:
        raise InvalidParameter(name, f"must be at most {MAX_TICKER_LENGTH} characters")
    if CONTROL_CHARACTERS.search(value):
        raise InvalidParameter(name, "must not contain control characters")
    return value


def ticker_of(value: str) -> str:
    """A ticker as the store keeps it: non-empty, bounded, no control characters."""
    if not value:
        raise InvalidParameter("ticker", "must not be empty")
    return text_of("ticker", value)


def timeframe_of(minutes: int) -> int:
    """A timeframe in minutes; the seed's column is `tf_min int (>0)`."""
    if minutes <= 0:
        raise InvalidParameter("tf_min", f"must be a positive number of minutes, got {minutes}")
    if minutes > 2**31 - 1:
        raise InvalidParameter("tf_min", "is too large")
    return minutes


def zone_of(name: str) -> str:
    """A time zone name that PostgreSQL and zoneinfo both know."""
    if not name or len(name) > 64 or not name.isprintable():
        raise InvalidParameter("tz", "must be an IANA time zone name such as America/New_York")
    if name.lower().startswith("right/"):
        # PostgreSQL counts these zones' leap seconds and Python's zoneinfo does not: every
        # bucket would be 27 s off (2024) in SQL and not in Python
        raise InvalidParameter("tz", f"{name!r} counts leap seconds; use {name[6:]!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidParameter("tz", f"{name!r} is not a known time zone") from None
    return name


# A fixed offset from UTC written as PostgreSQL reads a POSIX zone: `<+0545>-05:45` is 5 h 45
# min east of UTC (POSIX counts west). No IANA zone is such an offset for all its history
# (Asia/Kathmandu was +05:30 until 1986); a vendor's offsets of minutes are cut in these.
_FIXED = re.compile(r"<([+-])(\d\d)(\d\d)>[+-]\d\d:\d\d")


def fixed_zone(minutes: int) -> str:
    """The zone of a fixed offset `minutes` east of UTC, as PostgreSQL and `zone_info` read
    it."""
    (hours, rest), (sign, posix) = divmod(abs(minutes), 60), ("+-" if minutes >= 0 else "-+")
    return f"<{sign}{hours:02d}{rest:02d}>{posix}{hours:02d}:{rest:02d}"


def zone_info(name: str) -> tzinfo:
    """The zone a valid zone name (`zone_of`, `fixed_zone`) names, for Python's arithmetic."""
    fixed = _FIXED.fullmatch(name)
    if fixed is None:
        return ZoneInfo(name)
    minutes = (int(fixed[2]) * 60 + int(fixed[3])) * (1 if fixed[1] == "+" else -1)
    if name != fixed_zone(minutes) or abs(minutes) >= 24 * 60:
        raise ValueError(f"{name!r} is not a fixed offset")
    return timezone(timedelta(minutes=minutes), name)


def limit_of(value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise InvalidParameter("limit", f"must be between 1 and {maximum}, got {value}")
    return value


# An offset whose "+" became a space because the caller did not URL-encode it:
# "2024-01-01T00:00:00 03:00" means "2024-01-01T00:00:00+03:00".
_UNENCODED_PLUS = re.compile(r"(.+[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})")


def parse_timestamp(text: str, name: str) -> datetime:
    """Parse an ISO 8601 date or datetime; naive values mean UTC. Returns UTC.

    Raises InvalidQuery naming the parameter, as the seed answered 400 for a bad datetime.
    """
    value = text.strip()
    if match := _UNENCODED_PLUS.fullmatch(value):
        value = f"{match[1]}+{match[2]}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidQuery(
            f"{name}: {text!r} is not an ISO 8601 datetime (e.g. 2024-01-31T09:30:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidQuery(f"{name}: {text!r} is out of the supported range") from None


class TimeRange(msgspec.Struct, frozen=True):
    """An inclusive range of candle open times: start <= ts <= end, both UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InvalidQuery("start and end must carry a time zone")
        if self.start > self.end:
            raise InvalidQuery(
                f"start ({self.start.isoformat()}) must not be after end ({self.end.isoformat()})"
            )

    def after(self, cursor: datetime) -> "TimeRange | None":
        """What is left of the range after a page ending at `cursor` (candles are at most
        microsecond-precise); None when nothing is."""
        if cursor < self.start:
            return self
        if cursor >= self.end:
            return None
        return TimeRange(cursor + timedelta(microseconds=1), self.end)
