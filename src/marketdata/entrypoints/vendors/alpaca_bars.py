"""Alpaca's bars, translated: the wire (bars, bodies, errors, the query, the page token),
its timeframes in minutes, its symbols as stored tickers, and one page of bars of several
symbols read through CandleQueries (the reads of our own API, with the same bar options).
The handlers are in `alpaca`, the stream in `alpaca_stream`."""

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from marketdata.domain.bar_options import MINUTES_PER_DAY, MINUTES_PER_WEEK
from marketdata.domain.candles import Candle, parse_timestamp
from marketdata.domain.errors import InvalidParameter
from marketdata.domain.queries import CandleQueries
from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.vendors.alpaca_polygon_common import (
    Microseconds,
    bar_options_for,
    day_start,
    decode_token,
    encode_token,
    from_microseconds,
    microseconds,
    read_slice,
    resolved,
    window,
)
from marketdata.entrypoints.vendors.common import Present

MAX_PAGE = 10_000  # Alpaca's largest `limit`
DEFAULT_PAGE = 1_000


# -- the wire ------------------------------------------------------------------------------


class AlpacaBar(
    msgspec.Struct,
    rename={
        "time": "t",
        "open": "o",
        "high": "h",
        "low": "l",
        "close": "c",
        "volume": "v",
        "trades": "n",
        "vwap": "vw",
    },
):
    """A bar as Alpaca sends it: `t` its open time (RFC 3339). `n` (trades) and `vw` (volume
    weighted price) are not stored here: always present (alpaca-py requires the keys), null."""

    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int | None = None
    vwap: float | None = None


class BarsBody(msgspec.Struct):
    """Several symbols' bars: the symbols with bars on this page, in symbol order."""

    bars: dict[str, list[AlpacaBar]]
    next_page_token: str | None = None


class SymbolBarsBody(msgspec.Struct):
    bars: list[AlpacaBar]
    symbol: str
    next_page_token: str | None = None


class AlpacaError(msgspec.Struct):
    """Alpaca's error body: `code` is the HTTP status x 100000 + 10000."""

    code: int
    message: str


class BarsQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The query of a bars request, as Alpaca documents it. `feed`, `adjustment`, `asof`
    and `currency` are accepted and change nothing: one feed, prices as stored, in the
    currency they were stored in."""

    timeframe: str | None = None
    start: str | None = None
    end: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE
    page_token: str | None = None
    sort: Literal["asc", "desc"] = "asc"
    feed: str | None = None
    adjustment: str | None = None
    asof: str | None = None
    currency: str | None = None


class PageToken(msgspec.Struct, frozen=True, rename={"symbol": "s", "at": "a"}):
    """Where the next page starts: the symbol (of the request's, in symbol order) and, in
    it, after (`sort=asc`) or before (`desc`) the bar opening at `at` (microseconds since
    the epoch; none: from the symbol's first bar)."""

    symbol: str
    at: Microseconds | None = None


# -- timeframes ----------------------------------------------------------------------------

_TIMEFRAME = re.compile(r"([1-9][0-9]{0,2})(Min|T|Hour|H|Day|D|Week|W|Month|M)")
_UNITS = {
    "Min": (1, 59),
    "T": (1, 59),
    "Hour": (60, 23),
    "H": (60, 23),
    "Day": (MINUTES_PER_DAY, 1),
    "D": (MINUTES_PER_DAY, 1),
    "Week": (MINUTES_PER_WEEK, 1),
    "W": (MINUTES_PER_WEEK, 1),
}


def minutes_of(timeframe: str | None) -> int:
    """An Alpaca timeframe (`5Min`, `1Hour`, `1Day`, `1Week`; `T`, `H`, `D`, `W` too) in
    minutes, in the ranges Alpaca allows. Months are not served: the store keeps bars of a
    fixed number of minutes, and a calendar month has none."""
    if not timeframe:
        raise InvalidParameter("timeframe", "required")
    match = _TIMEFRAME.fullmatch(timeframe)
    if match is None:
        raise InvalidParameter("timeframe", f"{timeframe!r} is not e.g. 5Min, 1Hour, 1Day")
    amount, unit = int(match[1]), match[2]
    if unit in ("Month", "M"):
        raise InvalidParameter("timeframe", f"{timeframe!r}: calendar months are not served")
    minutes, most = _UNITS[unit]
    if amount > most:
        raise InvalidParameter("timeframe", f"{timeframe!r}: at most {most}{unit}")
    return amount * minutes


def stock_tickers(symbol: str) -> list[str]:
    return [symbol]


def crypto_tickers(symbol: str) -> list[str]:
    """`BTC/USD` as stored, else as `BTCUSD` (the pair's usual ticker elsewhere)."""
    return list(dict.fromkeys([symbol, symbol.replace("/", "")]))


# -- the reads -----------------------------------------------------------------------------


def bar_of(candle: Candle) -> AlpacaBar:
    return AlpacaBar(candle.ts, candle.open, candle.high, candle.low, candle.close, candle.volume)


async def bars_page(
    queries: CandleQueries,
    settings: Settings,
    present: Present,
    query: BarsQuery,
    symbols: list[str],
    tickers_of: Callable[[str], list[str]],
    day_zone: str,
) -> tuple[dict[str, list[AlpacaBar]], str | None]:
    """One page of bars of `symbols`, in symbol order then time (oldest or newest first),
    at most `limit` (and MAX_LIMIT) across them: one read per symbol it reaches, each the
    read of our own API. The token says where the next page resumes."""
    tf_min = minutes_of(query.timeframe)
    now = present()
    start = parse_timestamp(query.start, "start") if query.start else day_start(now, day_zone)
    end = parse_timestamp(query.end, "end") if query.end else now
    held = {s: await resolved(queries, s, tickers_of(s)) for s in symbols}
    first, resume = 0, None
    if query.page_token:
        token = decode_token(PageToken, query.page_token, "page_token")
        if token.symbol not in held:
            raise InvalidParameter("page_token", "is not a token of this request")
        first = symbols.index(token.symbol)
        resume = from_microseconds(token.at) if token.at is not None else None
    found: dict[str, list[AlpacaBar]] = {}
    left = min(query.limit, settings.max_limit)
    for at, symbol in enumerate(symbols[first:], start=first):
        days = held[symbol].of_days(tf_min)
        options = bar_options_for(tf_min, day_zone, days)
        span = window(start, end, now, tf_min, tf_min in held[symbol].tf_mins, day_zone, days)
        if span is None:
            continue
        if left == 0:
            return found, encode_token(PageToken(symbol))
        got = await read_slice(
            queries,
            held[symbol].ticker,
            tf_min,
            span,
            options,
            left,
            descending=query.sort == "desc",
            resume=resume if at == first else None,
        )
        if got.bars:
            found[symbol] = [bar_of(c) for c in got.bars]
            left -= len(got.bars)
        if got.resume is not None:
            return found, encode_token(PageToken(symbol, microseconds(got.resume)))
    return found, None
