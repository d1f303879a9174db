"""Polygon's aggregates, translated: the wire (aggregates, bodies, errors, the query, the
cursor), the path's timespan and bounds, its tickers as stored tickers, and one page read
through CandleQueries (the reads of our own API, with the same bar options) with the next
page's URL. The handlers are in `polygon`, the stream in `polygon_stream`."""

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

import msgspec
import structlog
from litestar import Request

from marketdata.domain.bar_options import (
    MINUTES_PER_DAY,
    MINUTES_PER_WEEK,
    BarOptions,
    bucket_start,
)
from marketdata.domain.candles import Candle
from marketdata.domain.errors import InvalidParameter, InvalidQuery
from marketdata.domain.queries import CandleQueries
from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.vendors.alpaca_polygon_common import (
    MICROSECOND,
    NEW_YORK,
    Microseconds,
    bar_options_for,
    decode_token,
    encode_token,
    from_microseconds,
    microseconds,
    read_slice,
    resolved,
    window,
)

PREFIX = "/polygon"
MAX_LIMIT = 50_000  # Polygon's largest `limit`
DEFAULT_LIMIT = 5_000
# Polygon's market prefixes: crypto, forex, indices (their days are UTC's)
_MARKETS = re.compile(r"(X|C|I):(.+)")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- the wire ------------------------------------------------------------------------------


class Agg(
    msgspec.Struct,
    rename={
        "volume": "v",
        "open": "o",
        "close": "c",
        "high": "h",
        "low": "l",
        "timestamp": "t",
    },
):
    """An aggregate as Polygon sends it: `t` its window's start in milliseconds. `vw`
    (volume weighted price) and `n` (transactions) are not stored: left out."""

    volume: float
    open: float
    close: float
    high: float
    low: float
    timestamp: int


class AggsBody(msgspec.Struct, omit_defaults=True):
    """`results` is left out when there are none; `next_url` on the last page."""

    ticker: str
    queryCount: int
    resultsCount: int
    adjusted: bool
    status: str
    request_id: str
    count: int
    results: list[Agg] | None = None
    next_url: str | None = None


class PolygonError(msgspec.Struct):
    status: str
    request_id: str
    error: str


class PolygonNotFound(msgspec.Struct):
    status: str
    request_id: str
    message: str


class AggsQuery(msgspec.Struct, frozen=True, kw_only=True):
    adjusted: bool = True
    sort: Literal["asc", "desc"] = "asc"
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    cursor: str | None = None


class Cursor(msgspec.Struct, frozen=True, rename={"at": "a", "sort": "s", "limit": "l"}):
    """A next page: the query it was asked with, and the open time of the last bar sent
    (microseconds since the epoch): the page goes on after it (`asc`) or before it
    (`desc`)."""

    at: Microseconds
    sort: Literal["asc", "desc"]
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
    adjusted: bool


# -- the path ------------------------------------------------------------------------------

_TIMESPANS = {"minute": 1, "hour": 60, "day": MINUTES_PER_DAY, "week": MINUTES_PER_WEEK}
_NOT_SERVED = frozenset({"second", "month", "quarter", "year"})


def minutes_of(multiplier: str, timespan: str) -> int:
    """`5/minute`, `1/hour`, `1/day`, `1/week` (any multiple) in minutes. Seconds, months,
    quarters and years are not served: the store keeps whole minutes, and calendar months
    are no fixed number of them."""
    if not multiplier.isdigit() or not 1 <= int(multiplier) <= 100_000:
        raise InvalidParameter("multiplier", f"{multiplier!r} is not a positive whole number")
    if timespan in _NOT_SERVED:
        raise InvalidParameter("timespan", f"{timespan!r} is not served (minute, hour, day, week)")
    if timespan not in _TIMESPANS:
        raise InvalidParameter(
            "timespan", f"{timespan!r} is not one of minute, hour, day, week, month, quarter, year"
        )
    return int(multiplier) * _TIMESPANS[timespan]


def bound(text: str, name: str, zone: str, *, end: bool) -> datetime:
    """A `from` or `to`: a date (its day in `zone`: from its start, or to its end) or a Unix
    time in milliseconds."""
    try:
        if text.isdigit() and len(text) <= 15:
            return EPOCH + timedelta(milliseconds=int(text))
        day = date.fromisoformat(text) if len(text) == 10 else None
        if day is not None and end:
            day += timedelta(days=1)
    except (ValueError, OverflowError):
        day = None
    if day is None:
        raise InvalidQuery(
            f"Could not parse the time parameter: '{name}'. Use YYYY-MM-DD or Unix MS Timestamps"
        )
    midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    return midnight - MICROSECOND if end else midnight


def polygon_options(tf_min: int, zone: str, days: bool = False) -> BarOptions:
    """Bars cut as Polygon cuts them: days in `zone` from its midnight, weeks from Sunday's
    ("weekly bars begin Sunday at 12:00:00 AM EST", Polygon's knowledge base: their origin
    a day before the Monday ours count from), shorter bars on the UTC epoch; made of
    stored days (`days`), by their dates (`bar_options_for`)."""
    options = bar_options_for(tf_min, zone, days)
    if tf_min % MINUTES_PER_WEEK == 0:
        return msgspec.structs.replace(options, day_start=-MINUTES_PER_DAY)
    return options


def tickers_of(ticker: str) -> tuple[list[str], str]:
    """The stored tickers a Polygon ticker may name, and the zone of its days: `X:BTCUSD`
    as stored, else `BTCUSD` (crypto, forex and indices: UTC days); a stock as it is (New
    York's days)."""
    if market := _MARKETS.fullmatch(ticker):
        return list(dict.fromkeys([ticker, market[2]])), "UTC"
    return [ticker], NEW_YORK


def agg_of(candle: Candle) -> Agg:
    return Agg(
        candle.volume,
        candle.open,
        candle.close,
        candle.high,
        candle.low,
        microseconds(candle.ts) // 1000,
    )


class AggsPath(msgspec.Struct, frozen=True):
    """The path's parameters, as they came."""

    ticker: str
    multiplier: str
    timespan: str
    start: str
    end: str


async def answer(
    request: Request[Any, Any, Any],
    queries: CandleQueries,
    settings: Settings,
    now: datetime,
    path: AggsPath,
    query: AggsQuery,
) -> AggsBody:
    """A page of aggregates: at most `limit` of them, read from the series through
    CandleQueries at most MAX_LIMIT at a time, and the next page's URL when more remain."""
    resume: datetime | None = None
    if query.cursor is not None:
        token = decode_token(Cursor, query.cursor, "cursor")
        query = AggsQuery(adjusted=token.adjusted, sort=token.sort, limit=token.limit)
        resume = from_microseconds(token.at)
    tf_min = minutes_of(path.multiplier, path.timespan)
    candidates, zone = tickers_of(path.ticker)
    start, end = bound(path.start, "from", zone, end=False), bound(path.end, "to", zone, end=True)
    held = await resolved(queries, path.ticker, candidates)
    days = held.of_days(tf_min)
    options = polygon_options(tf_min, zone, days)
    # `from` is taken back to the start of the bar it falls in, as Polygon does
    start = bucket_start(start, tf_min, options)
    span = window(start, end, now, tf_min, tf_min in held.tf_mins, zone, days)
    found: list[Candle] = []
    more: datetime | None = None
    # A page holds what `limit` asks: get_aggs of Polygon's clients does not follow
    # next_url. It is read MAX_LIMIT bars at a time.
    while span is not None and len(found) < query.limit:
        got = await read_slice(
            queries,
            held.ticker,
            tf_min,
            span,
            options,
            min(query.limit - len(found), settings.max_limit),
            descending=query.sort == "desc",
            resume=resume,
        )
        found += got.bars
        more = resume = got.resume
        if more is None:
            break
    body = AggsBody(
        ticker=path.ticker,
        queryCount=len(found),
        resultsCount=len(found),
        adjusted=query.adjusted,
        status="OK",
        request_id=request_id(),
        count=len(found),
        results=[agg_of(c) for c in found] or None,
    )
    if more is not None:
        after = Cursor(microseconds(more), query.sort, query.limit, query.adjusted)
        body.next_url = _next_url(request, path, after)
    return body


def _next_url(request: Request[Any, Any, Any], path: AggsPath, cursor: Cursor) -> str:
    """The next page's absolute URL where the protocol was asked (`/polygon`, or under a
    time-travel session `/sessions/{id}/polygon`: a client that follows it stays in the
    session): the path as asked, the cursor."""
    origin = f"{request.base_url.scheme}://{request.base_url.netloc}"
    asked = request.url.path
    mount = asked[: asked.index(PREFIX + "/") + len(PREFIX)]
    parts = (path.ticker, path.multiplier, path.timespan, path.start, path.end)
    ticker, multiplier, timespan, start, end = (quote(p, safe=":") for p in parts)
    return (
        f"{origin}{mount}/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}"
        f"?cursor={encode_token(cursor)}"
    )


def request_id() -> str:
    """The request's id (the one in X-Request-ID and in the log lines)."""
    bound_ = structlog.contextvars.get_contextvars()
    return str(bound_.get("request_id", ""))
