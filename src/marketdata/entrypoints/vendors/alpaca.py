"""Alpaca market data v2 under `/alpaca`: stock and crypto bars as Alpaca answers them, so
that alpaca-py (`url_override=".../alpaca"`) and Alpaca's other clients read our candles.

The router: the handlers decode the vendor's query into its Struct at the edge and answer
a page of `alpaca_bars` (the translation, reading through CandleQueries), and its
exception handlers give every error Alpaca's body. The stream is `alpaca_stream`.
"""

from typing import Annotated, Any

from dishka.integrations.litestar import FromDishka, inject
from litestar import Request, Response, Router, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import PathParameter, QueryParameter

from marketdata.domain.errors import DomainError, InvalidParameter
from marketdata.domain.queries import CandleQueries
from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.vendors.alpaca_bars import (
    AlpacaError,
    BarsBody,
    BarsQuery,
    SymbolBarsBody,
    bars_page,
    crypto_tickers,
    stock_tickers,
)
from marketdata.entrypoints.vendors.alpaca_polygon_common import (
    NEW_YORK,
    decoded,
    failure_of,
    symbols_of,
)
from marketdata.entrypoints.vendors.alpaca_stream import stock_stream
from marketdata.entrypoints.vendors.common import VENDOR_ROUTES, Present


def _doc(description: str, example: str | int | None = None) -> QueryParameter:
    return QueryParameter(
        description=description,
        examples=[Example(value=example)] if example is not None else None,
    )


Symbols = Annotated[
    str | None,
    _doc("Comma-separated symbols: stored tickers (required).", "AAPL,MSFT"),
]
Timeframe = Annotated[
    str | None,
    _doc(
        "`[1-59]Min`, `[1-23]Hour`, `1Day`, `1Week` (also `T`, `H`, `D`, `W`); required. "
        "Months are not served (the store has no calendar months): 422.",
        "5Min",
    ),
]
Start = Annotated[
    str | None,
    _doc(
        "RFC 3339 datetime or date, inclusive; default the start of the present's day "
        "(New York's for stocks, UTC for crypto).",
        "2024-01-02T00:00:00Z",
    ),
]
End = Annotated[
    str | None,
    _doc("RFC 3339 datetime or date, inclusive; default (and at most) the present.", None),
]
Limit = Annotated[
    str | None,
    _doc(
        "Bars on a page across all symbols, 1..10000 (default 1000); a page holds at most "
        "MAX_LIMIT.",
        1000,
    ),
]
PageTokenParam = Annotated[
    str | None, _doc("`next_page_token` of the previous page (opaque).", None)
]
Sort = Annotated[str | None, _doc("`asc` (default) or `desc`, by time within each symbol.")]
Ignored = Annotated[str | None, _doc("Accepted; changes nothing here.")]


def _error_spec(description: str, code: int, message: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=AlpacaError,
        description=description,
        examples=[Example(summary=description, value={"code": code, "message": message})],
        generate_examples=False,
    )


ERRORS = {
    422: _error_spec("An invalid parameter or an unknown symbol", 42210000, "invalid symbol: NOPE"),
    500: _error_spec("A bug (details in the log)", 50010000, "internal server error"),
    503: _error_spec(
        "The database does not answer",
        50310000,
        "service unavailable: the database does not answer",
    ),
}
_BARS = (
    " Bars are our candles (stored, or resampled as `/candles/range` resamples them; a bar "
    "comes when it opens in [start, end] and, resampled, is complete by the present; days "
    "and weeks of stocks are New York's, from its midnight). `n` and `vw` are not stored: "
    "null."
)


@get(
    "/v2/stocks/bars",
    tags=["alpaca"],
    summary="Alpaca: bars of several stocks",
    description="Alpaca market data v2 `GET /v2/stocks/bars`. Pages hold at most `limit` "
    "bars across the symbols, in symbol order then time; `next_page_token` resumes. Any "
    "API key is accepted (or none)." + _BARS,
    responses=ERRORS,
)
@inject
async def stock_bars(
    queries: NamedDependency[CandleQueries],
    settings: FromDishka[Settings],
    present: NamedDependency[Present],
    symbols: Symbols = None,
    timeframe: Timeframe = None,
    start: Start = None,
    end: End = None,
    limit: Limit = None,
    page_token: PageTokenParam = None,
    sort: Sort = None,
    feed: Ignored = None,
    adjustment: Ignored = None,
    asof: Ignored = None,
    currency: Ignored = None,
) -> BarsBody:
    query = decoded(
        BarsQuery,
        timeframe=timeframe,
        start=start,
        end=end,
        limit=limit,
        page_token=page_token,
        sort=sort,
        feed=feed,
        adjustment=adjustment,
        asof=asof,
        currency=currency,
    )
    names = _required(symbols)
    found, token = await bars_page(
        queries, settings, present, query, names, stock_tickers, NEW_YORK
    )
    return BarsBody(found, token)


@get(
    "/v2/stocks/{symbol:str}/bars",
    tags=["alpaca"],
    summary="Alpaca: bars of one stock",
    description="Alpaca market data v2 `GET /v2/stocks/{symbol}/bars`: `bars` is a list." + _BARS,
    responses=ERRORS,
)
@inject
async def stock_symbol_bars(
    queries: NamedDependency[CandleQueries],
    settings: FromDishka[Settings],
    present: NamedDependency[Present],
    symbol: Annotated[str, PathParameter(description="A stored ticker.", max_length=64)],
    timeframe: Timeframe = None,
    start: Start = None,
    end: End = None,
    limit: Limit = None,
    page_token: PageTokenParam = None,
    sort: Sort = None,
    feed: Ignored = None,
    adjustment: Ignored = None,
    asof: Ignored = None,
    currency: Ignored = None,
) -> SymbolBarsBody:
    query = decoded(
        BarsQuery,
        timeframe=timeframe,
        start=start,
        end=end,
        limit=limit,
        page_token=page_token,
        sort=sort,
        feed=feed,
        adjustment=adjustment,
        asof=asof,
        currency=currency,
    )
    found, token = await bars_page(
        queries, settings, present, query, [symbol], stock_tickers, NEW_YORK
    )
    return SymbolBarsBody(found.get(symbol, []), symbol, token)


@get(
    "/v1beta3/crypto/us/bars",
    tags=["alpaca"],
    summary="Alpaca: bars of crypto pairs",
    description="Alpaca market data `GET /v1beta3/crypto/us/bars`. A pair `BTC/USD` is the "
    "ticker `BTC/USD` when stored, else `BTCUSD`; days are UTC's. No key is needed."
    + _BARS.replace("days and weeks of stocks are New York's, from its midnight", "UTC days"),
    responses=ERRORS,
)
@inject
async def crypto_bars(
    queries: NamedDependency[CandleQueries],
    settings: FromDishka[Settings],
    present: NamedDependency[Present],
    symbols: Symbols = None,
    timeframe: Timeframe = None,
    start: Start = None,
    end: End = None,
    limit: Limit = None,
    page_token: PageTokenParam = None,
    sort: Sort = None,
) -> BarsBody:
    query = decoded(
        BarsQuery,
        timeframe=timeframe,
        start=start,
        end=end,
        limit=limit,
        page_token=page_token,
        sort=sort,
    )
    names = _required(symbols)
    found, token = await bars_page(queries, settings, present, query, names, crypto_tickers, "UTC")
    return BarsBody(found, token)


def _required(symbols: str | None) -> list[str]:
    names = symbols_of(symbols or "")
    if not names:
        raise InvalidParameter("symbols", "required")
    return names


# -- errors --------------------------------------------------------------------------------

_STATUS = {"symbol": 422, "request": 422, "unavailable": 503, "internal": 500}


def alpaca_error(request: Request[Any, Any, Any], error: Exception) -> Response[AlpacaError]:
    """Every error under /alpaca in Alpaca's body, `{"code", "message"}` (alpaca-py reads
    both): invalid parameters and unknown symbols 422, the database 503, a bug 500."""
    failure = failure_of(request, error)
    status = _STATUS.get(failure.kind, failure.status)
    message = f"invalid symbol: {failure.message}" if failure.kind == "symbol" else failure.message
    return Response(AlpacaError(status * 100_000 + 10_000, message), status_code=status)


def router() -> Router:
    """The protocol's routes (served at its prefix, and again under each time-travel
    session: entrypoints/travel.py)."""
    return Router(
        path="/alpaca",
        route_handlers=[stock_bars, stock_symbol_bars, crypto_bars, stock_stream],
        opt=VENDOR_ROUTES,
        exception_handlers={
            DomainError: alpaca_error,
            ValidationException: alpaca_error,
            HTTPException: alpaca_error,
            Exception: alpaca_error,
        },
    )


ROUTER = router()
