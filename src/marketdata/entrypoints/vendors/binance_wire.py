"""Binance's REST in its own words: the query strings of `klines` and `exchangeInfo`, a
kline row (times in ms, prices and volume as strings), the symbols' descriptions and the
server time."""

import functools
from datetime import timedelta
from itertools import repeat
from operator import add, attrgetter, floordiv, sub
from typing import Annotated, Any

import msgspec

from marketdata.domain.candles import Candle
from marketdata.entrypoints.vendors.binance_errors import illegal, not_valid
from marketdata.entrypoints.vendors.common import BINANCE_SYMBOL, EPOCH

DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
# What we cannot know of a series, said as a spot market with 8 decimals: the smallest tick
# and lot; Binance's clients take their precision from these.
TICK, MOST = "0.00000001", "9000000000.00000000"


Millis = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class KlinesQuery(msgspec.Struct, frozen=True, rename="camel"):
    symbol: str
    interval: str
    start_time: Millis | None = None
    end_time: Millis | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    time_zone: str = "0"


class ExchangeInfoQuery(msgspec.Struct, frozen=True, rename="camel"):
    symbol: str | None = None
    symbols: str | None = None  # a JSON array of symbols
    permissions: str | None = None  # one permission, or a JSON array of them
    symbol_status: str | None = None  # TRADING, HALT or BREAK
    show_permission_sets: bool = True


SYMBOL_STATUSES = ("TRADING", "HALT", "BREAK")  # what symbolStatus may filter by
SPOT: tuple[tuple[str, ...], ...] = (("SPOT",),)  # every symbol's permission sets


_encode = msgspec.json.Encoder().encode


# Rows are encoded by msgspec with a marker string around the numbers Binance sends as
# strings, which one replace per marker then turns into quotes: no Python string per price.
_MARKED = (("A", b',"A",', b',"'), ("B", b',"B",', b'","'), ("C", b',"C",', b'",'))
_MS, _US = timedelta(milliseconds=1), timedelta(microseconds=1)
_TS, _OPEN, _HIGH, _LOW, _CLOSE, _VOLUME = map(
    attrgetter, ("ts", "open", "high", "low", "close", "volume")
)


def micro_unit(text: str | None, name: str) -> bool:
    """Whether times are asked for in µs (`timeUnit`, `X-MBX-TIME-UNIT`: MICROSECOND or
    MILLISECOND, either case, as Binance takes them; ms when not given)."""
    if text is None or text.upper() == "MILLISECOND":
        return False
    if text.upper() == "MICROSECOND":
        return True
    raise not_valid(name)


def kline_rows(candles: list[Candle], tf_min: int, micro: bool = False) -> bytes:
    """Bars as Binance's kline rows: [open time, "open", "high", "low", "close", "volume"
    (to 8 decimals, as `number_text`), close time, "0" (quote volume), 0 (trades), "0"
    (taker buy base volume), "0" (taker buy quote volume), "0"], times in ms (µs with
    `micro`). Built column by column, without a
    Python loop over the bars nor a string per price: a third less than rows of `repr`s,
    though still about three times /candles' JSON for the same bars (bench/README.md)."""
    unit, per_ms = (_US, 1000) if micro else (_MS, 1)
    eight = repeat(8)
    opens = list(map(floordiv, map(sub, map(_TS, candles), repeat(EPOCH)), repeat(unit)))
    closes = map(add, opens, repeat(tf_min * 60_000 * per_ms - 1))
    a, b, c = (repeat(marker) for marker, _, _ in _MARKED)
    rows = zip(
        opens,
        a,
        map(round, map(_OPEN, candles), eight),
        b,
        map(round, map(_HIGH, candles), eight),
        b,
        map(round, map(_LOW, candles), eight),
        b,
        map(round, map(_CLOSE, candles), eight),
        b,
        map(round, map(_VOLUME, candles), eight),
        c,
        closes,
        *(repeat(value) for value in ("0", 0, "0", "0", "0")),
        strict=False,  # the markers and constants repeat without end
    )
    encoded = _encode(list(rows))
    for _, marked, quotes in _MARKED:
        encoded = encoded.replace(marked, quotes)
    return encoded


FILTERS = [
    {"filterType": "PRICE_FILTER", "minPrice": TICK, "maxPrice": MOST, "tickSize": TICK},
    {"filterType": "LOT_SIZE", "minQty": TICK, "maxQty": MOST, "stepSize": TICK},
]


class SymbolInfo(msgspec.Struct, rename="camel"):
    """A spot symbol as exchangeInfo lists it, with what ccxt's market parser reads."""

    symbol: str
    base_asset: str
    quote_asset: str
    status: str = "TRADING"
    base_asset_precision: int = 8
    quote_precision: int = 8
    quote_asset_precision: int = 8
    order_types: tuple[str, ...] = ("LIMIT", "MARKET")
    iceberg_allowed: bool = False
    oco_allowed: bool = False
    is_spot_trading_allowed: bool = True
    is_margin_trading_allowed: bool = False
    filters: list[dict[str, str]] = msgspec.field(default_factory=lambda: FILTERS)
    permissions: tuple[str, ...] = ("SPOT",)
    permission_sets: tuple[tuple[str, ...], ...] = SPOT


class ExchangeInfo(msgspec.Struct, rename="camel"):
    server_time: int
    symbols: list[SymbolInfo]
    timezone: str = "UTC"
    rate_limits: tuple[Any, ...] = ()
    exchange_filters: tuple[Any, ...] = ()


class ServerTime(msgspec.Struct, rename="camel"):
    server_time: int


def ticker_of(symbol: str) -> str:
    """The ticker a symbol names (itself); -1100 for what is no symbol."""
    if not BINANCE_SYMBOL.fullmatch(symbol):
        raise illegal("symbol", "^[A-Z0-9-_.]{1,20}$")
    return symbol


def permissions_param(text: str) -> tuple[str, ...]:
    """`SPOT`, or a JSON array of permissions (`["MARGIN","LEVERAGED"]`)."""
    if not text.startswith("["):
        return (text,)
    try:
        return tuple(msgspec.json.decode(text, type=list[str]))
    except msgspec.MsgspecError:
        raise illegal("permissions", r'^\["[A-Z0-9_]{1,20}"(,"[A-Z0-9_]{1,20}"){0,}\]$') from None


@functools.lru_cache(maxsize=64)
def symbols_param(text: str) -> tuple[str, ...]:
    try:
        symbols = msgspec.json.decode(text, type=list[str])
    except msgspec.MsgspecError:
        raise illegal("symbols", r'^\["[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}\]$') from None
    return tuple(ticker_of(s) for s in symbols)
