"""What the Alpaca and Polygon (Massive) protocols share: the present they answer as of,
their query strings decoded at the edge, vendor symbols resolved to stored tickers, a page
of one series' bars in either order through CandleQueries, resume tokens, the errors they
report. A stream connection's live bars are in `alpaca_polygon_live`."""

import base64
import binascii
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import msgspec
import structlog
from litestar import Request
from litestar.exceptions import HTTPException, ValidationException

from marketdata.domain.bar_options import MINUTES_PER_DAY, PLAIN, BarOptions, bucket_start
from marketdata.domain.candles import Candle, Order, TimeRange, ticker_of
from marketdata.domain.errors import DomainError, InvalidParameter, NotFound, StoreUnavailable
from marketdata.domain.queries import CandleQueries, CandleQuery

log = structlog.get_logger(logger_name="marketdata.vendors")

S = TypeVar("S")

NEW_YORK = "America/New_York"
MICROSECOND = timedelta(microseconds=1)


# -- the edge --------------------------------------------------------------------------------


def decoded(kind: type[S], **values: str | None) -> S:
    """Query parameters as they came (text) into their Struct, each converted and checked
    there; a bad one raises InvalidParameter naming it. Absent and empty ones take the
    Struct's defaults; parameters the Struct does not name are not given here."""
    given = {name: value for name, value in values.items() if value}
    try:
        return msgspec.convert(given, kind, strict=False)
    except msgspec.ValidationError as error:
        detail, _, at = str(error).partition(" - at `$.")
        name = at.rstrip("`") or "query"
        shown = f"{given[name]!r} " if name in given else ""
        raise InvalidParameter(name, f"{shown}is not valid ({detail.replace('`', '')})") from None


def day_start(at: datetime, zone: str) -> datetime:
    """When `at`'s day in `zone` starts (its local midnight: bar_options.bucket_start)."""
    return bucket_start(at, MINUTES_PER_DAY, BarOptions(tz=zone))


def bar_options_for(tf_min: int, day_zone: str, days: bool = False) -> BarOptions:
    """Days and weeks made from finer candles are cut in `day_zone` (an equity's day is New
    York's, from its midnight, as both vendors stamp it); shorter bars on the UTC epoch.
    Made of stored days (`days`: dates, each stamped at its UTC midnight or at its
    market's), by their dates: weeks from Monday's, in UTC. Stored timeframes are served
    as stored either way."""
    if tf_min < MINUTES_PER_DAY:
        return PLAIN
    return BarOptions(tz="UTC" if days else day_zone)


class Window(msgspec.Struct, frozen=True):
    """The bars a vendor asks for: those opening in [start, end] (its bounds; `end` at most
    the present, after which no bar opens). Our range reads return a resampled bar only
    when its whole bucket lies in the range, so they read up to `reads_to`, a bucket (and an
    hour) past `end` (never past the present), and the bars opening after `end` are left out.
    `dated`: the window is of stored days read by their dates (`dated_days`), shown at
    their midnight in this zone."""

    start: datetime
    end: datetime
    reads_to: datetime
    dated: str | None = None


def window(
    start: datetime,
    end: datetime,
    present: datetime,
    tf_min: int,
    stored: bool,
    day_zone: str = "UTC",
    days: bool = False,
) -> Window | None:
    """The window of a vendor's [start, end] (start after end is the caller's error) for
    bars of `tf_min`, stored or made of finer candles (`days`: made of stored days, read by
    their dates as stored days are). None when nothing is left of it."""
    TimeRange(start, end)
    last = min(end, present)
    if start > last:
        return None
    if (days or (stored and tf_min % MINUTES_PER_DAY == 0)) and day_zone != "UTC":
        span = dated_days(start, last, day_zone)
        if span is None or stored:
            return span
        # a bar of days opening on the last date: read its whole bucket
        return msgspec.structs.replace(span, reads_to=span.end + timedelta(minutes=tf_min))
    if stored or end >= present:
        return Window(start, last, last)
    # a bucket past `end`, and an hour more: a local day may last 25 hours
    past = timedelta(minutes=tf_min, hours=1) - MICROSECOND
    return Window(start, last, min(end + past, present))


def dated_days(start: datetime, last: datetime, zone: str) -> Window | None:
    """Stored days (or weeks) are dates: a daily file stamps each at its UTC midnight (or at
    the market's midnight, or its close), where the vendor stamps that day at its midnight in
    `zone` and its clients read it there (at 00:00 UTC it is New York's evening before). The
    bars opening in [start, last] are those of the dates from the first midnight of `zone` in
    it to the date `last` falls on: read by their stamps, all of each date's UTC day."""
    here = ZoneInfo(zone)
    first = start.astimezone(here).date()
    if datetime(first.year, first.month, first.day, tzinfo=here) < start:
        first += timedelta(days=1)
    final = last.astimezone(here).date() + timedelta(days=1)
    if first >= final:
        return None
    lo = datetime(first.year, first.month, first.day, tzinfo=UTC)
    hi = datetime(final.year, final.month, final.day, tzinfo=UTC) - MICROSECOND
    return Window(lo, hi, hi, dated=zone)


def shown(bar: Candle, span: Window) -> Candle:
    """A bar as the vendor stamps it: a stored day of a dated window that sits at 00:00 UTC
    at its date's midnight in the window's zone; any other as it is."""
    if span.dated is None or bar.ts.astimezone(UTC).time() != datetime.min.time():
        return bar
    at = bar.ts.astimezone(UTC)
    midnight = datetime(at.year, at.month, at.day, tzinfo=ZoneInfo(span.dated))
    return msgspec.structs.replace(bar, ts=midnight.astimezone(UTC))


# -- symbols ---------------------------------------------------------------------------------


class UnknownSymbol(NotFound):
    """A vendor symbol that names no stored ticker."""

    def __init__(self, symbol: str) -> None:
        super().__init__(f"no stored ticker for the symbol {symbol!r}")
        self.symbol = symbol


def symbols_of(text: str) -> list[str]:
    """`A,B,A` as its distinct symbols, sorted (the vendors answer in symbol order)."""
    return sorted({s.strip() for s in text.split(",") if s.strip()})


class Held(msgspec.Struct, frozen=True):
    """The stored ticker a vendor symbol names, and the timeframes it stores."""

    ticker: str
    tf_mins: frozenset[int]

    def of_days(self, tf_min: int) -> bool:
        """Whether bars of `tf_min` are stored days, or made of them (the finest stored
        timeframe that divides it is whole days): dates, cut by their dates."""
        sources = [s for s in self.tf_mins if tf_min % s == 0]
        return bool(sources) and min(sources) % MINUTES_PER_DAY == 0


async def resolved(queries: CandleQueries, symbol: str, candidates: Sequence[str]) -> Held:
    """The first of `candidates` (the stored tickers a vendor symbol may name, in order of
    preference) that is stored; UnknownSymbol when none is. The catalog answers it, from
    what this process knows when it can."""
    for ticker in candidates:
        ticker_of(ticker)
        with contextlib.suppress(NotFound):
            stored, _, _ = await queries.coverage(ticker)
            return Held(ticker, frozenset(s.tf_min for s in stored))
    raise UnknownSymbol(symbol)


# -- pages -----------------------------------------------------------------------------------


class Slice(msgspec.Struct, frozen=True):
    """Bars of one series for a page, and where its next page resumes (the open time of the
    last bar sent; None: the series is done)."""

    bars: list[Candle]
    resume: datetime | None = None


# bars a descending read may meet past `end` before its first: a bucket opening in the
# window's last bucket-length (two with a 23-hour day)
_PAST_END = 2


async def read_slice(
    queries: CandleQueries,
    ticker: str,
    tf_min: int,
    span: Window,
    options: BarOptions,
    limit: int,
    *,
    descending: bool,
    resume: datetime | None = None,
) -> Slice:
    """Up to `limit` bars of a series opening in `span`, oldest or newest first, after (or
    before) `resume`: the page reads of our own API, so the same bars. Ascending pages are
    `/candles/range`'s (its cursor); descending ones its export's newest-first read, with
    the range ending before `resume`. No bars (nothing in the span, or a timeframe the
    stored candles cannot make) is an empty slice."""
    if not descending:
        try:
            page = await queries.candle_range(
                ticker, span.start, span.reads_to, tf_min, limit, options, after=resume
            )
        except NotFound:
            return Slice([])
        kept = [bar for bar in page.candles if bar.ts <= span.end]
        more = page.more and len(kept) == len(page.candles)
        return Slice([shown(bar, span) for bar in kept], page.last if more else None)
    reads_to = span.reads_to if resume is None else min(span.reads_to, resume - MICROSECOND)
    if reads_to < span.start:
        return Slice([])
    query = CandleQuery(
        ticker=ticker,
        tf_min=tf_min,
        limit=limit + 1 + _PAST_END,
        order=Order.DESC,
        start=span.start,
        end=reads_to,
        options=options,
        export=True,
    )
    try:
        newest = await queries.export(await queries.plan(query))
    except NotFound:
        return Slice([])
    found: list[Candle] = []
    async with contextlib.aclosing(newest):
        async for bar in newest:
            if bar.ts <= span.end:
                found.append(bar)
                if len(found) > limit:
                    break
    bars = found[:limit]
    resume_at = bars[-1].ts if len(found) > limit else None
    return Slice([shown(bar, span) for bar in bars], resume_at)


# an instant in a token: microseconds since the epoch, within the years datetime holds
Microseconds = Annotated[int, msgspec.Meta(ge=-62135596800000000, le=253402300799999999)]


def microseconds(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // MICROSECOND


def from_microseconds(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + value * MICROSECOND


def encode_token(value: msgspec.Struct) -> str:
    """A resume token: the Struct as JSON in URL-safe base64 (opaque to clients)."""
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


def decode_token(kind: type[S], text: str, name: str) -> S:
    padded = text + "=" * (-len(text) % 4)
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(padded.encode()), type=kind)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidParameter(name, "is not a token this service issued") from None


# -- errors ----------------------------------------------------------------------------------


class Failure(msgspec.Struct, frozen=True):
    """An error as a vendor's handler reports it: what kind of failure, its HTTP status
    (for `http`) and the words. Each vendor shapes and numbers it its own way."""

    kind: Literal["symbol", "request", "unavailable", "internal", "http"]
    message: str
    status: int = 400


def failure_of(request: Request[Any, Any, Any], error: Exception) -> Failure:
    """Any error of a vendor's handler, classified once for both vendors: an unknown symbol
    or another fault of the request (4xx), or ours (5xx: the store's outages counted in the
    metrics as our own API's are; anything else logged, its details in the log only)."""
    if isinstance(error, StoreUnavailable):
        log.warning("database unavailable", reason=error.message, kind=error.kind)
        request.app.state.metrics.db_errors.labels(error.kind).inc()
        return Failure("unavailable", "service unavailable: the database does not answer", 503)
    if isinstance(error, UnknownSymbol):
        return Failure("symbol", error.symbol)
    if isinstance(error, InvalidParameter):
        return Failure("request", f"invalid {error.name}: {error.reason}")
    if isinstance(error, DomainError):
        return Failure("request", error.message)
    if isinstance(error, ValidationException):
        return Failure("request", f"invalid request: {error.detail}")
    if isinstance(error, HTTPException):
        return Failure("http", str(error.detail), error.status_code)
    log.exception("unhandled error", path=request.url.path)
    return Failure("internal", "internal server error", 500)
