"""REST handlers: the seed's contract, thin over the domain's use cases."""

import hmac
from datetime import datetime
from typing import Annotated, Any

import msgspec
from dishka.integrations.litestar import FromDishka, inject
from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from marketdata.adapters.settings import Settings
from marketdata.domain.candles import Order, parse_timestamp
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ingest import (
    BadFile,
    IngestOptions,
    Row,
    rows_from_csv,
    rows_from_json,
    rows_from_ndjson,
)
from marketdata.domain.ports import CandleWriter, StoreHealth
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


class WrittenBody(msgspec.Struct):
    rows: int
    inserted: int
    updated: int
    unchanged: int


def authorize(header: str | None, keys: list[str]) -> None:
    """Bearer API keys, compared in constant time; 401 without one, 403 with a wrong one."""
    if not keys:
        raise PermissionDeniedException("writes are disabled: no API_KEYS are configured")
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(
            "an API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    supplied = token.strip().encode()
    # every key is compared, so the time taken does not tell which one nearly matched
    matches = [hmac.compare_digest(supplied, key.encode()) for key in keys]
    if not any(matches):
        raise PermissionDeniedException("the API key is not valid")


def rows_of(body: bytes, media_type: str) -> list[Row]:
    if media_type in (
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/json-seq",
    ):
        return rows_from_ndjson(body)
    if media_type in ("text/csv", "application/csv", "text/plain"):
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadFile("body: not UTF-8 text") from None
        return rows_from_csv(text, IngestOptions())
    if media_type in ("application/json", ""):
        return rows_from_json(body)
    raise UnsupportedMediaType(media_type)


class UnsupportedMediaType(HTTPException):
    status_code = 415

    def __init__(self, media_type: str) -> None:
        super().__init__(
            f"Content-Type {media_type!r} is not supported: use application/json (a list of "
            "candles), application/x-ndjson or text/csv"
        )


@post(
    "/candles",
    summary="Write candles (upsert)",
    description="Insert or update candles, all or nothing: one bad row and nothing is written; "
    "candles equal to the stored ones change nothing. Bodies: `application/json` (a list of "
    "candles), `application/x-ndjson` (one candle per line) or `text/csv` (a header with "
    "ticker, tf_min, ts, open, high, low, close[, volume, openint]). Naive times are UTC. "
    "Needs `Authorization: Bearer <API key>`.",
    tags=["candles"],
    status_code=200,
    security=[{"bearer": []}],
    responses={
        401: _spec(ErrorBody, "No API key", {"error": "an API key is required: ..."}),
        403: _spec(
            ErrorBody, "Wrong API key, or writes disabled", {"error": "the API key is not valid"}
        ),
        413: _spec(ErrorBody, "Body over MAX_BODY_BYTES", {"error": "Request Entity Too Large"}),
        415: _spec(ErrorBody, "Unsupported Content-Type", {"error": "Content-Type ..."}),
        422: _spec(
            ValidationErrorBody,
            "A row cannot be read or fails OHLC sanity",
            {
                "error": "body:3: close: close 5 is outside low..high 0.5..2",
                "detail": [
                    {
                        "loc": ["body", "3", "close"],
                        "msg": "close 5 is outside low..high",
                        "type": "value_error",
                    }
                ],
            },
        ),
        500: INTERNAL,
        503: UNAVAILABLE,
    },
)
@inject
async def write_candles(
    request: Request[Any, Any, Any],
    settings: FromDishka[Settings],
    writer: FromDishka[CandleWriter],
) -> WrittenBody:
    authorize(request.headers.get("authorization"), settings.api_key_list)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    rows = rows_of(await request.body(), media_type)
    result = await writer.write(rows)
    return WrittenBody(result.rows, result.inserted, result.updated, result.unchanged)


ROUTES = [health, symbols, candles, candle_range, write_candles]
