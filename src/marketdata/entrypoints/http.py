"""REST handlers: the seed's contract, thin over the domain's use cases."""

from datetime import datetime
from typing import Annotated

from dishka.integrations.litestar import FromDishka, inject
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from marketdata.domain.candles import Order, parse_timestamp
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ports import StoreHealth
from marketdata.domain.queries import CandleQueries
from marketdata.entrypoints.schemas import (
    CandlesBody,
    ErrorBody,
    HealthBody,
    SymbolsBody,
    UnavailableBody,
    ValidationErrorBody,
)


def _spec(model: type, description: str, example: dict[str, object]) -> ResponseSpec:
    return ResponseSpec(
        data_container=model,
        description=description,
        examples=[Example(summary=description, value=example)],
    )


UNAVAILABLE = _spec(
    UnavailableBody,
    "PostgreSQL cannot be reached, or the query exceeded DB_COMMAND_TIMEOUT",
    {
        "error": "Service Unavailable",
        "message": "database at db:5432 is unavailable: connection refused",
        "type": "database_connection_error",
    },
)
INVALID = _spec(
    ValidationErrorBody,
    "A parameter is missing, of the wrong type or out of bounds",
    {
        "error": "limit: must be between 1 and 5000, got 0",
        "detail": [
            {
                "loc": ["query", "limit"],
                "msg": "must be between 1 and 5000, got 0",
                "type": "value_error",
            }
        ],
    },
)
NOT_FOUND = _spec(
    ErrorBody,
    "No candles for that ticker, timeframe or range",
    {"error": "No candles found for ticker 'XYZ' with tf_min=5"},
)
BAD_REQUEST = _spec(
    ErrorBody,
    "A datetime is not ISO 8601, or start is after end",
    {"error": "start: 'yesterday' is not an ISO 8601 datetime (e.g. 2024-01-31T09:30:00Z)"},
)
INTERNAL = _spec(
    ErrorBody,
    "Unexpected failure; details are in the server log only",
    {"error": "Internal Server Error"},
)

Ticker = Annotated[
    str,
    QueryParameter(
        description="Ticker exactly as stored, e.g. `AMZN.US`.",
        min_length=1,
        max_length=64,
        examples=[Example(value="AMZN.US")],
    ),
]
TfMin = Annotated[
    int | None,
    QueryParameter(
        description="Timeframe in minutes; DEFAULT_TF_MIN (5) when omitted.",
        gt=0,
        le=2**31 - 1,
        examples=[Example(value=5)],
    ),
]


@get(
    "/health",
    summary="Service and database health",
    tags=["health"],
    responses={
        503: _spec(
            HealthBody,
            "The database is unreachable",
            {
                "status": "degraded",
                "database": "disconnected",
                "error": "database at db:5432 is unavailable: connection refused",
            },
        )
    },
)
@inject
async def health(store: FromDishka[StoreHealth]) -> Response[HealthBody]:
    try:
        await store.ping()
    except StoreUnavailable as error:
        return Response(
            HealthBody(status="degraded", database="disconnected", error=error.message),
            status_code=503,
        )
    return Response(HealthBody(status="ok", database="connected"))


@get(
    "/symbols",
    summary="List tickers",
    description="Distinct tickers, sorted. `prefix` matches the start of the ticker "
    "case-insensitively and literally (`%` and `_` match themselves).",
    tags=["candles"],
    responses={422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
)
@inject
async def symbols(
    queries: FromDishka[CandleQueries],
    prefix: Annotated[
        str,
        QueryParameter(
            description="Start of the ticker, any case.",
            max_length=64,
            examples=[Example(value="am")],
        ),
    ] = "",
    limit: Annotated[
        int | None,
        QueryParameter(
            description="1..MAX_LIMIT, default 100.", ge=1, examples=[Example(value=100)]
        ),
    ] = None,
) -> SymbolsBody:
    found = await queries.symbols(prefix, limit)
    return SymbolsBody(symbols=found, count=len(found))


@get(
    "/candles",
    summary="Oldest or newest candles of a series",
    description="`order=asc` gives the oldest `limit` candles ascending; `order=desc` the "
    "newest `limit` candles, newest first.",
    tags=["candles"],
    responses={404: NOT_FOUND, 422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
)
@inject
async def candles(
    queries: FromDishka[CandleQueries],
    ticker: Ticker,
    tf_min: TfMin = None,
    limit: Annotated[
        int | None,
        QueryParameter(
            description="1..MAX_LIMIT, default 200.", ge=1, examples=[Example(value=200)]
        ),
    ] = None,
    order: Annotated[
        Order, QueryParameter(description="`asc` (oldest first) or `desc` (newest first).")
    ] = Order.ASC,
) -> CandlesBody:
    found = await queries.candles(ticker, tf_min, limit, order)
    return CandlesBody(data=found, count=len(found))


@get(
    "/candles/range",
    summary="Candles between two times",
    description="Candles with start <= ts <= end (both inclusive), ascending. Datetimes are "
    "ISO 8601; without an offset they mean UTC.",
    tags=["candles"],
    responses={400: BAD_REQUEST, 404: NOT_FOUND, 422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
)
@inject
async def candle_range(
    queries: FromDishka[CandleQueries],
    ticker: Ticker,
    start: Annotated[
        str,
        QueryParameter(
            description="ISO 8601 datetime or date, inclusive.",
            examples=[Example(value="2026-01-26T14:30:00Z")],
            max_length=64,
        ),
    ],
    end: Annotated[
        str,
        QueryParameter(
            description="ISO 8601 datetime or date, inclusive.",
            examples=[Example(value="2026-01-27T21:00:00Z")],
            max_length=64,
        ),
    ],
    tf_min: TfMin = None,
    limit: Annotated[
        int | None,
        QueryParameter(
            description="1..MAX_LIMIT, default MAX_LIMIT.", ge=1, examples=[Example(value=1000)]
        ),
    ] = None,
) -> CandlesBody:
    start_ts: datetime = parse_timestamp(start, "start")
    end_ts: datetime = parse_timestamp(end, "end")
    found = await queries.candle_range(ticker, start_ts, end_ts, tf_min, limit)
    return CandlesBody(data=found, count=len(found))


ROUTES = [health, symbols, candles, candle_range]
