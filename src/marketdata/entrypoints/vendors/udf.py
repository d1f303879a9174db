"""TradingView's UDF protocol under `/udf`, for the Charting Library's `UDFCompatibleDatafeed`
(`new UDFCompatibleDatafeed("http://host:8000/udf")`): `config`, `symbols`, `search`, `time`
and `history`. A thin translation: bars are those of `/candles` (`VendorReads`), times in
unix seconds, errors `{"s":"error","errmsg"}` (JSON on every status: the datafeed parses
any answer). Realtime is the datafeed's own pulse: it polls `history` with `countback=2`,
and the bar forming now comes as it stands."""

from datetime import timedelta
from typing import Annotated, Any, Literal

import msgspec
import structlog
from dishka.integrations.litestar import FromDishka, inject
from litestar import Controller, MediaType, Request, Router, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from marketdata.domain.candles import Candle, Order
from marketdata.domain.errors import InvalidParameter, NotFound
from marketdata.domain.queries import CandleQueries
from marketdata.domain.timeframes import COMMON_TF_MINS
from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.vendors.common import (
    CRYPTO_QUOTES,
    VENDOR_ROUTES,
    NotServed,
    Present,
    UnknownSymbol,
    VendorReads,
    at_ms,
    named_pairs,
    pair_of,
    resolution_minutes,
    resolution_of,
    wall_clock,
)
from marketdata.entrypoints.vendors.udf_errors import HANDLERS, ErrorBody, UdfError, decoded

log = structlog.get_logger(logger_name="marketdata.udf")

EXCHANGE = "MARKETDATA"  # the one exchange every symbol is listed on
DEFAULT_SEARCH = 30
_BEFORE = timedelta(microseconds=1)  # `to` is exclusive


# -- wire bodies --------------------------------------------------------------------------


class Exchange(msgspec.Struct):
    value: str
    name: str
    desc: str


class SymbolType(msgspec.Struct):
    name: str
    value: str


class Config(msgspec.Struct):
    supported_resolutions: list[str]
    exchanges: list[Exchange]
    symbols_types: list[SymbolType]
    supports_search: bool = True
    supports_group_request: bool = False
    supports_marks: bool = False
    supports_timescale_marks: bool = False
    supports_time: bool = True


class SymbolInfo(msgspec.Struct):
    """LibrarySymbolInfo; never an `s` key (the datafeed takes one for an error)."""

    name: str
    ticker: str
    description: str
    type: str
    supported_resolutions: list[str]
    intraday_multipliers: list[str]
    has_intraday: bool
    has_daily: bool
    has_weekly_and_monthly: bool
    pricescale: int
    volume_precision: int
    exchange: str = EXCHANGE
    listed_exchange: str = EXCHANGE
    session: str = "24x7"
    timezone: str = "Etc/UTC"
    format: str = "price"
    minmov: int = 1
    has_empty_bars: bool = False
    visible_plots_set: str = "ohlcv"
    data_status: str = "streaming"


class Found(msgspec.Struct):
    symbol: str
    full_name: str
    description: str
    exchange: str
    ticker: str
    type: str


class Bars(msgspec.Struct):
    s: str
    t: list[int]
    o: list[float]
    h: list[float]
    low: list[float] = msgspec.field(name="l")
    c: list[float] = []
    v: list[float] = []


class NoData(msgspec.Struct, omit_defaults=True):
    """No bar: `nextTime`, when set, is the time of the last bar before the range."""

    s: Literal["no_data"]
    nextTime: int | None = None  # the protocol's name


# -- queries ------------------------------------------------------------------------------


class HistoryQuery(msgspec.Struct, frozen=True):
    symbol: str
    resolution: str
    start: int = msgspec.field(name="from")
    to: int
    countback: int | None = None


class SearchQuery(msgspec.Struct, frozen=True):
    query: str = ""
    type: str = ""
    exchange: str = ""
    limit: int = DEFAULT_SEARCH


def _type_of(ticker: str, settings: Settings) -> str:
    """What kind of symbol a ticker looks like: `crypto` when priced in a crypto asset."""
    quote = pair_of(ticker, named_pairs(settings.vendor_assets)).quote
    return "crypto" if quote in CRYPTO_QUOTES else "stock"


def _decimals(values: list[float]) -> int:
    """The decimals the values show, at most 8 (what a float adds past them is noise)."""
    shown = [f"{v:.8f}".rstrip("0").partition(".")[2] for v in values if v == v]
    return max(map(len, shown), default=2)


def _bars(candles: list[Candle]) -> Bars:
    return Bars(
        "ok",
        [int(c.ts.timestamp()) for c in candles],
        [c.open for c in candles],
        [c.high for c in candles],
        [c.low for c in candles],
        [c.close for c in candles],
        [c.volume for c in candles],
    )


# -- handlers -----------------------------------------------------------------------------

ERROR = ResponseSpec(
    data_container=ErrorBody,
    description='`{"s":"error","errmsg"}`: a bad parameter (400), an unknown symbol '
    "(404), the database unavailable (503)",
    examples=[Example(value={"s": "error", "errmsg": "unknown_symbol"})],
)
ANSWERS = {400: ERROR, 404: ERROR, 503: ERROR}


def _param(name: str, description: str, example: object) -> Any:
    return QueryParameter(name=name, description=description, examples=[Example(value=example)])


class UdfController(Controller):
    path = "/"
    tags = ["udf"]  # noqa: RUF012 (Litestar's layer attribute)

    @get(
        "/config",
        summary="UDF: datafeed configuration",
        description="Search on, group requests off, server time on; `supported_resolutions`: "
        "the common ones (a symbol lists those it can serve). Calendar months (`1M`) are not "
        "served.",
        responses=ANSWERS,
    )
    async def config(self) -> Config:
        return Config(
            supported_resolutions=[resolution_of(tf) for tf in COMMON_TF_MINS],
            exchanges=[
                Exchange("", "All Exchanges", ""),
                Exchange(EXCHANGE, EXCHANGE, "This service"),
            ],
            symbols_types=[
                SymbolType("All types", ""),
                SymbolType("Crypto", "crypto"),
                SymbolType("Stock", "stock"),
            ],
        )

    @get(
        "/symbols",
        summary="UDF: resolve a symbol",
        description="`symbol` (a ticker, or `EXCHANGE:TICKER`) as LibrarySymbolInfo: its "
        "resolutions are the timeframes it can serve (`/symbols/{ticker}`'s `served`), "
        "`pricescale` and `volume_precision` the decimals of its latest candles, session "
        "24x7 in UTC. Unknown: 404 `unknown_symbol`.",
        responses=ANSWERS,
    )
    @inject
    async def symbols(
        self,
        queries: NamedDependency[CandleQueries],
        settings: FromDishka[Settings],
        symbol: Annotated[str, _param("symbol", "A ticker, or EXCHANGE:TICKER.", "BTCUSDT")],
    ) -> SymbolInfo:
        ticker, stored = await _resolved(queries, symbol)
        served = [s.tf_min for s in (await queries.coverage(ticker))[1]]
        latest = await queries.candles(ticker, stored[0], 10, Order.DESC)
        prices = [p for c in latest for p in (c.open, c.high, c.low, c.close)]
        intraday = [resolution_of(tf) for tf in served if tf < 1440]
        return SymbolInfo(
            name=ticker,
            ticker=ticker,
            description=ticker,
            type=_type_of(ticker, settings),
            supported_resolutions=[resolution_of(tf) for tf in served],
            intraday_multipliers=intraday,
            has_intraday=bool(intraday),
            has_daily=1440 in served,
            has_weekly_and_monthly=10080 in served,
            pricescale=10 ** _decimals(prices),
            volume_precision=_decimals([c.volume for c in latest]),
        )

    @get(
        "/search",
        summary="UDF: search symbols",
        description="Tickers starting with `query` (any case), at most `limit` (default 30), "
        "of `type` (`crypto` or `stock`) when given.",
        responses=ANSWERS,
    )
    @inject
    async def search(
        self,
        request: Request[Any, Any, Any],
        queries: NamedDependency[CandleQueries],
        settings: FromDishka[Settings],
        text: Annotated[str | None, _param("query", "Start of a ticker.", "BT")] = None,
        type: Annotated[str | None, _param("type", "crypto or stock.", "crypto")] = None,
        exchange: Annotated[str | None, _param("exchange", "MARKETDATA.", "")] = None,
        limit: Annotated[int | None, _param("limit", "Default 30.", 30)] = None,
    ) -> list[Found]:
        asked: SearchQuery = decoded(SearchQuery, request)
        if asked.exchange not in ("", EXCHANGE):
            return []
        tickers = await queries.symbols(asked.query, asked.limit)
        found = [(t, _type_of(t, settings)) for t in tickers]
        return [
            Found(t, f"{EXCHANGE}:{t}", t, EXCHANGE, t, kind)
            for t, kind in found
            if asked.type in ("", kind)
        ]

    @get(
        "/time",
        summary="UDF: server time",
        description="Unix seconds, as plain text: the wall clock (under a time-travel session "
        "too).",
        media_type=MediaType.TEXT,
        responses=ANSWERS,
    )
    async def time(self) -> str:
        return str(int(wall_clock().timestamp()))

    @get(
        "/history",
        summary="UDF: bars",
        description="Bars of `symbol` at `resolution` (minutes, `1D`, `1W`; others are made "
        "from the finest stored timeframe that divides them, as `/candles` does) opening in "
        "[`from`, `to`) (unix seconds), ascending; with `countback`, the last `countback` "
        "opening before `to`, whatever `from` says. At most MAX_LIMIT bars: the latest. "
        'None: `{"s":"no_data"}`, with `nextTime` (unix seconds) when an older bar exists.',
        responses=ANSWERS,
    )
    @inject
    async def history(
        self,
        request: Request[Any, Any, Any],
        queries: NamedDependency[CandleQueries],
        settings: FromDishka[Settings],
        present: NamedDependency[Present],
        symbol: Annotated[str, _param("symbol", "The symbol's ticker.", "BTCUSDT")],
        resolution: Annotated[str, _param("resolution", "5, 60, 1D, 1W.", "60")],
        start: Annotated[int, _param("from", "Unix seconds, inclusive.", 1659312000)],
        to: Annotated[int, _param("to", "Unix seconds, exclusive.", 1659398400)],
        countback: Annotated[int | None, _param("countback", "Bars before `to`.", 300)] = None,
    ) -> Bars | NoData:
        asked: HistoryQuery = decoded(HistoryQuery, request)
        tf_min = resolution_minutes(asked.resolution)
        if tf_min is None:
            raise UdfError(
                f"unsupported resolution {asked.resolution!r}: minutes, D or W (calendar "
                "months and seconds are not served)"
            )
        if asked.start > asked.to:
            raise UdfError("from must not be after to")
        if asked.countback is not None and asked.countback < 1:
            raise UdfError("countback must be at least 1")
        reads = VendorReads(queries, present, settings.max_limit)
        try:
            plan = await reads.plan(asked.symbol, tf_min)
        except UnknownSymbol:
            raise UdfError("unknown_symbol", 404) from None
        except NotServed:
            served = f"resolution {asked.resolution} is not served for {asked.symbol}"
            raise UdfError(served) from None
        until, since = at_ms(asked.to * 1000), at_ms(asked.start * 1000)
        if asked.countback is not None:
            found = await reads.last(plan, until - _BEFORE, asked.countback)
        else:
            found = await reads.last(plan, until - _BEFORE, reads.max_limit, since)
        if found:
            return _bars(found)
        if asked.countback is None and (older := await reads.before(plan, since)) is not None:
            return NoData("no_data", int(older.ts.timestamp()))
        return NoData("no_data")


async def _resolved(queries: CandleQueries, symbol: str) -> tuple[str, list[int]]:
    """The ticker a UDF symbol names (itself, or after an `EXCHANGE:` prefix), and its
    stored timeframes."""
    names = [symbol] + ([symbol.partition(":")[2]] if ":" in symbol else [])
    for name in names:
        try:
            return name, [c.tf_min for c in (await queries.coverage(name))[0]]
        except (NotFound, InvalidParameter):
            continue
    raise UdfError("unknown_symbol", 404)


def router() -> Router:
    """The protocol's routes (served at its prefix, and again under each time-travel
    session: entrypoints/travel.py)."""
    return Router(
        path="/udf",
        route_handlers=[UdfController],
        exception_handlers=HANDLERS,
        opt=VENDOR_ROUTES,
    )


UDF = router()
