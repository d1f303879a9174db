"""Binance's spot market data under `/binance`, for Binance's own clients (ccxt and
ccxt.pro are tested): REST `/binance/api/v3/{ping,time,exchangeInfo,klines,uiKlines}` here,
the streams in `binance_ws`. A thin translation: every read is one of `VendorReads`
(CandleQueries: the read plan of `/candles`), every error Binance's `{"code","msg"}`.

Symbols are our tickers that are valid Binance symbols (`common.binance_symbol`: BTCUSDT
stays BTCUSDT); their assets come from `common.pair_of`. A kline is a bar of `/candles`:
times in ms, prices and volume as strings, the close time the open + interval - 1 ms,
and what we do not store (quote volume, trades, taker volumes) "0" or 0."""

from typing import Annotated, Any

import structlog
from dishka.integrations.litestar import FromDishka, inject
from litestar import Controller, Request, Response, Router, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from marketdata.domain.bar_options import BarOptions
from marketdata.domain.errors import NotFound
from marketdata.domain.queries import CandleQueries, CandleQuery
from marketdata.entrypoints.http import caching
from marketdata.entrypoints.http.caching import Answers
from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.vendors.binance_errors import (
    HANDLERS,
    BinanceError,
    decoded,
    invalid_interval,
    invalid_symbol,
    not_valid,
)
from marketdata.entrypoints.vendors.binance_wire import (
    SPOT,
    SYMBOL_STATUSES,
    ExchangeInfo,
    ExchangeInfoQuery,
    KlinesQuery,
    ServerTime,
    SymbolInfo,
    kline_rows,
    micro_unit,
    permissions_param,
    symbols_param,
    ticker_of,
)
from marketdata.entrypoints.vendors.binance_ws import combined_streams, raw_streams
from marketdata.entrypoints.vendors.common import (
    BINANCE_INTERVALS,
    LATEST,
    VENDOR_ROUTES,
    NotServed,
    Present,
    UnknownSymbol,
    VendorReads,
    at_time,
    binance_symbol,
    named_pairs,
    pair_of,
    time_of,
    wall_clock,
    zone_of_offset,
)

log = structlog.get_logger(logger_name="marketdata.binance")

# -- handlers -----------------------------------------------------------------------------

ERROR = ResponseSpec(
    data_container=dict[str, Any],
    description="Binance's error: -1100 illegal characters, -1101 duplicate parameter, "
    "-1102 missing parameter, -1120 invalid interval, -1121 invalid symbol, -1130 invalid "
    "value, -1023 start after end",
    examples=[Example(value={"code": -1121, "msg": "Invalid symbol."})],
)
UNAVAILABLE = ResponseSpec(
    data_container=dict[str, Any],
    description="The database is unavailable (-1001)",
    examples=[
        Example(
            value={
                "code": -1001,
                "msg": "Internal error; unable to process your request. Please try again.",
            }
        )
    ],
)
ANSWERS = {400: ERROR, 503: UNAVAILABLE}
KLINES = {
    200: ResponseSpec(
        data_container=list[list[int | str]],
        description="Kline rows, ascending",
        examples=[
            Example(
                value=[
                    [
                        *(1659312000000, "23290.1", "23290.1", "23260.0", "23275.8", "893.652"),
                        *(1659312059999, "0", 0, "0", "0", "0"),
                    ]
                ]
            )
        ],
    ),
    **ANSWERS,
}
KLINES_DOC = (
    "Binance's `GET /api/v3/klines`: bars of `symbol` (one of our tickers, see exchangeInfo) "
    "at `interval` (1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w; bars not stored at that "
    "timeframe are resampled as `/candles` does; `1s` and `1M` are not served: -1120), "
    "ascending. With `startTime`, the first `limit` bars opening at or after it (and by "
    "`endTime`); otherwise the last `limit` opening by `endTime` (default now). `limit` "
    "500, at most 1000. `timeZone` (a UTC offset from -12:00 to +14:00: `+08:00`, `-5`, "
    "`05:45`) cuts bars in that offset. Each row: [open time ms, open, high, low, close, volume, "
    'close time ms (open + interval - 1), "0" (quote volume: not stored), 0 (trades), '
    '"0" (taker buy base), "0" (taker buy quote), "0"]; the bar forming now comes as it '
    "stands. `uiKlines` (which Binance tunes for charts) answers the same."
)


def _param(name: str, description: str, example: object) -> Any:
    return QueryParameter(name=name, description=description, examples=[Example(value=example)])


class BinanceRest(Controller):
    path = "/api/v3"
    tags = ["binance"]  # noqa: RUF012 (Litestar's layer attribute)

    @get("/ping", summary="Binance: connectivity", description="Answers `{}`.", responses=ANSWERS)
    async def ping(self) -> dict[str, Any]:
        return {}

    @get(
        "/time",
        responses=ANSWERS,
        summary="Binance: server time",
        description='`{"serverTime": ms}`: the wall clock (under a time-travel session too: '
        "a bot compares it with its own clock).",
    )
    async def time(self, request: Request[Any, Any, Any]) -> ServerTime:
        return ServerTime(time_of(wall_clock(), _micro(request)))

    @get(
        "/exchangeInfo",
        responses=ANSWERS,
        summary="Binance: every series as a spot symbol",
        description="Each stored ticker that is a valid Binance symbol, as a `TRADING` spot "
        "symbol: its base and quote assets (as VENDOR_ASSETS names them, else a common "
        "quote suffix, BTCUSDT: BTC and USDT, else the ticker in USD), 8-decimal precisions, "
        "`PRICE_FILTER` and `LOT_SIZE`. `symbol` or `symbols` (a JSON array) narrow it; "
        "`permissions` without SPOT, or `symbolStatus` HALT or BREAK, leave none. At most "
        "MAX_LIMIT symbols.",
    )
    @inject
    async def exchange_info(
        self,
        request: Request[Any, Any, Any],
        queries: NamedDependency[CandleQueries],
        settings: FromDishka[Settings],
        symbol: Annotated[str | None, _param("symbol", "One symbol.", "BTCUSDT")] = None,
        symbols: Annotated[
            str | None, _param("symbols", "A JSON array of symbols.", '["BTCUSDT","ETHUSDT"]')
        ] = None,
        permissions: Annotated[
            str | None, _param("permissions", "One, or a JSON array of them.", "SPOT")
        ] = None,
        symbol_status: Annotated[
            str | None, _param("symbolStatus", "TRADING, HALT or BREAK.", "TRADING")
        ] = None,
        show_permission_sets: Annotated[
            str | None, _param("showPermissionSets", "Fill permissionSets.", "true")
        ] = None,
    ) -> ExchangeInfo:
        query: ExchangeInfoQuery = decoded(ExchangeInfoQuery, request)
        named = (query.symbol, query.symbols, query.permissions)
        if sum(given is not None for given in named) > 1 or (
            query.symbol_status is not None and (query.symbol or query.symbols)
        ):
            raise BinanceError(-1128, "Combination of optional parameters invalid.")
        if query.symbol_status is not None and query.symbol_status not in SYMBOL_STATUSES:
            raise BinanceError(-1122, "Invalid symbolStatus.")
        # every symbol here is a TRADING spot symbol: other filters keep none
        kept = query.symbol_status in (None, "TRADING") and (
            query.permissions is None or "SPOT" in permissions_param(query.permissions)
        )
        if query.symbol is not None:
            wanted: tuple[str, ...] | None = (ticker_of(query.symbol),)
        elif query.symbols is not None:
            wanted = symbols_param(query.symbols)
        else:
            wanted = None
        if wanted is None:
            tickers = await queries.symbols("", settings.max_limit)
        else:
            for ticker in wanted:
                try:
                    await queries.coverage(ticker)
                except NotFound:
                    raise invalid_symbol() from None
            tickers = list(wanted)
        assets = named_pairs(settings.vendor_assets)
        sets = SPOT if query.show_permission_sets else ()
        listed = []
        for ticker in tickers if kept else ():
            if binance_symbol(ticker) is not None:
                pair = pair_of(ticker, assets)
                listed.append(SymbolInfo(ticker, pair.base, pair.quote, permission_sets=sets))
        return ExchangeInfo(time_of(wall_clock(), _micro(request)), listed)

    @get(
        ["/klines", "/uiKlines"],
        summary="Binance: klines (and uiKlines, the same here)",
        description=KLINES_DOC,
        responses=KLINES,
    )
    @inject
    async def klines(
        self,
        request: Request[Any, Any, Any],
        queries: NamedDependency[CandleQueries],
        settings: FromDishka[Settings],
        present: NamedDependency[Present],
        answers: FromDishka[Answers],
        symbol: Annotated[str, _param("symbol", "A symbol of exchangeInfo.", "BTCUSDT")],
        interval: Annotated[str, _param("interval", "1m .. 1w.", "1m")],
        start_time: Annotated[int | None, _param("startTime", "ms, inclusive.", 0)] = None,
        end_time: Annotated[int | None, _param("endTime", "ms, inclusive.", 1659398340000)] = None,
        limit: Annotated[int | None, _param("limit", "1..1000, default 500.", 500)] = None,
        time_zone: Annotated[str | None, _param("timeZone", "UTC offset.", "+08:00")] = None,
    ) -> Response[bytes]:
        reads = VendorReads(queries, present, settings.max_limit)
        return await _klines(request, reads, queries, settings, answers)


async def _klines(
    request: Request[Any, Any, Any],
    reads: VendorReads,
    queries: CandleQueries,
    settings: Settings,
    answers: Answers,
) -> Response[bytes]:
    query: KlinesQuery = decoded(KlinesQuery, request)
    micro = _micro(request)
    ticker = ticker_of(query.symbol)
    tf_min = BINANCE_INTERVALS.get(query.interval)
    if tf_min is None:
        raise invalid_interval()
    tz = zone_of_offset(query.time_zone)
    if tz is None:
        raise not_valid("timeZone")
    start, end = query.start_time, query.end_time
    if start is not None and end is not None and at_time(start) > at_time(end):
        raise BinanceError(-1023, "Start time is greater than end time.")
    try:
        plan = await reads.plan(ticker, tf_min, BarOptions(tz=tz))
    except UnknownSymbol:
        raise invalid_symbol() from None
    except NotServed:
        raise invalid_interval() from None
    # Kept as /candles keeps its answers (RESPONSE_CACHE_MB), by URL and the series'
    # version: while the present cuts nothing off the series, nothing else decides them.
    url, tag = f"{request.url.path}?{request.scope['query_string'].decode('latin-1')}", None
    url += "#us" if micro else ""  # the times of the body
    if queries.as_of is None and reads.present() >= plan.last:
        series = CandleQuery(ticker=ticker, tf_min=tf_min, options=plan.options)
        tag = caching.etag(settings, (await queries.plan(series)).version)
        if tag is not None and (kept := answers.get(url, tag)) is not None:
            return Response(kept[0], media_type="application/json")
    until = at_time(end) if end is not None else LATEST
    if start is not None:
        found = await reads.first(plan, at_time(start), until, query.limit)
    else:
        found = await reads.last(plan, until, query.limit)
    body = kline_rows(found, tf_min, micro)
    if tag is not None:
        answers.keep(url, tag, body, {})
    return Response(body, media_type="application/json")


def _micro(request: Request[Any, Any, Any]) -> bool:
    """Whether the answer's times are asked for in µs (`X-MBX-TIME-UNIT: MICROSECOND`)."""
    return micro_unit(request.headers.get("x-mbx-time-unit"), "X-MBX-TIME-UNIT")


def router() -> Router:
    """The protocol's routes (served at its prefix, and again under each time-travel
    session: entrypoints/travel.py)."""
    return Router(
        path="/binance",
        route_handlers=[BinanceRest, raw_streams, combined_streams],
        exception_handlers=HANDLERS,
        opt=VENDOR_ROUTES,
    )


BINANCE = router()
