"""REST handlers: the seed's contract, thin over the domain's use cases."""

import base64
import binascii
import csv
import hmac
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import msgspec
from dishka.integrations.litestar import FromDishka, inject
from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import HeaderParameter, PathParameter, QueryParameter
from litestar.response import Stream

from marketdata.adapters.settings import Settings
from marketdata.domain.candles import NO_CONTROL_CHARACTERS, Candle, Order, parse_timestamp
from marketdata.domain.errors import InvalidQuery, StoreUnavailable
from marketdata.domain.ingest import (
    BadFile,
    IngestOptions,
    Row,
    rows_from_csv,
    rows_from_json,
    rows_from_ndjson,
)
from marketdata.domain.ports import CandleWriter, Coverage, StoreHealth
from marketdata.domain.queries import CandleQueries, GapReport
from marketdata.entrypoints.metrics import CONTENT_TYPE
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


_encode = msgspec.json.Encoder().encode

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
        pattern=NO_CONTROL_CHARACTERS,
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


class ProbeBody(msgspec.Struct, omit_defaults=True):
    status: Literal["alive", "ready", "not_ready"]
    reason: str | None = None


@get("/health/live", summary="Liveness: the process answers", tags=["health"])
async def live() -> ProbeBody:
    return ProbeBody(status="alive")


@get(
    "/health/ready",
    summary="Readiness: the database answers and its schema is up to date",
    tags=["health"],
    responses={
        503: _spec(
            ProbeBody,
            "The database is unreachable, or migrations are pending",
            {"status": "not_ready", "reason": "pending migrations: 0002_timescaledb"},
        )
    },
)
@inject
async def ready(store: FromDishka[StoreHealth]) -> Response[ProbeBody]:
    try:
        await store.ping()  # pending_migrations() stops asking once the schema is up to date
        pending = await store.pending_migrations()
    except StoreUnavailable as error:
        return Response(ProbeBody(status="not_ready", reason=error.message), status_code=503)
    if pending:
        reason = f"pending migrations: {', '.join(pending)}"
        return Response(ProbeBody(status="not_ready", reason=reason), status_code=503)
    return Response(ProbeBody(status="ready"))


@get(
    "/metrics",
    summary="Prometheus metrics",
    description="Requests by route and status with latency histograms, the database pool "
    "(size, in use, waiting), database errors by kind, replay sessions, candles sent and "
    "rows written, in the Prometheus text format.",
    tags=["health"],
    media_type=CONTENT_TYPE,
)
async def metrics(request: Request[Any, Any, Any]) -> bytes:
    rendered: bytes = request.app.state.metrics.render()
    return rendered


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
            pattern=NO_CONTROL_CHARACTERS,
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


Tz = Annotated[
    str | None,
    QueryParameter(
        description="Time zone that aligns resampled daily and weekly buckets (IANA name); "
        "default UTC. Stored timeframes are served as stored.",
        max_length=64,
        examples=[Example(value="America/New_York")],
    ),
]
Format = Annotated[
    Literal["json", "csv", "ndjson"] | None,
    QueryParameter(
        description="`json` (default), or `csv` / `ndjson` streamed row by row without the "
        "MAX_LIMIT cap; also chosen by `Accept: text/csv` or `application/x-ndjson`.",
    ),
]
Accept = Annotated[
    str | None,
    HeaderParameter(
        name="Accept",
        required=False,
        description="text/csv or application/x-ndjson stream the result (as format does).",
    ),
]
RESAMPLING = (
    " When `tf_min` is not stored but a finer stored timeframe divides it, candles are "
    "aggregated from the finest such one (open of the first, max high, min low, close of the "
    "last, sum of volume, last openint), in buckets aligned on the UTC epoch (weeks on a "
    "Monday), or on local time with `tz`."
)
STREAMED = {
    200: ResponseSpec(
        data_container=CandlesBody,
        description="JSON body; with format=csv or ndjson a text/csv or application/x-ndjson "
        "stream of the same candles, one per line",
    )
}


def _format(requested: str | None, accept: str | None) -> str:
    if requested is not None:
        return requested
    accepted = (accept or "").lower()
    if "text/csv" in accepted:
        return "csv"
    if "ndjson" in accepted or "jsonl" in accepted:
        return "ndjson"
    return "json"


_CSV_HEADER = b"ticker,tf_min,ts,open,high,low,close,volume,openint\n"
_BATCH = 1000


async def _csv_lines(candles: AsyncIterator[Candle]) -> AsyncIterator[bytes]:
    yield _CSV_HEADER
    batch: list[tuple[object, ...]] = []
    async for c in candles:
        stamp = c.ts.isoformat().replace("+00:00", "Z")
        batch.append(
            (c.ticker, c.tf_min, stamp, c.open, c.high, c.low, c.close, c.volume, c.openint)
        )
        if len(batch) >= _BATCH:
            yield _csv_chunk(batch)
            batch.clear()
    if batch:
        yield _csv_chunk(batch)


def _csv_chunk(rows: list[tuple[object, ...]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


async def _ndjson_lines(candles: AsyncIterator[Candle]) -> AsyncIterator[bytes]:
    batch: list[bytes] = []
    async for candle in candles:
        batch.append(_encode(candle))
        if len(batch) >= _BATCH:
            yield b"\n".join(batch) + b"\n"
            batch.clear()
    if batch:
        yield b"\n".join(batch) + b"\n"


def _stream(candles: AsyncIterator[Candle], output: str) -> Stream:
    if output == "csv":
        return Stream(_csv_lines(candles), media_type="text/csv; charset=utf-8")
    return Stream(_ndjson_lines(candles), media_type="application/x-ndjson")


def encode_cursor(after: datetime) -> str:
    return base64.urlsafe_b64encode(f"v1|{after.isoformat()}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> datetime:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, stamp = text.partition("|")
        if version != "v1":
            raise ValueError(version)
        return parse_timestamp(stamp, "cursor")
    except (ValueError, InvalidQuery, binascii.Error):
        raise InvalidQuery("cursor: not a cursor this service gave out") from None


@get(
    "/candles",
    summary="Oldest or newest candles of a series",
    description="`order=asc` gives the oldest `limit` candles ascending; `order=desc` the "
    "newest `limit` candles, newest first." + RESAMPLING,
    tags=["candles"],
    responses={**STREAMED, 404: NOT_FOUND, 422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
)
@inject
async def candles(
    queries: FromDishka[CandleQueries],
    ticker: Ticker,
    tf_min: TfMin = None,
    limit: Annotated[
        int | None,
        QueryParameter(
            description="1..MAX_LIMIT, default 200 (csv/ndjson: no cap, default all).",
            ge=1,
            examples=[Example(value=200)],
        ),
    ] = None,
    order: Annotated[
        Order, QueryParameter(description="`asc` (oldest first) or `desc` (newest first).")
    ] = Order.ASC,
    tz: Tz = None,
    format: Format = None,
    accept: Accept = None,
) -> Response[CandlesBody] | Stream:
    output = _format(format, accept)
    if output != "json":
        return _stream(await queries.export(ticker, tf_min, order, limit, tz), output)
    found = await queries.candles(ticker, tf_min, limit, order, tz)
    return Response(CandlesBody(data=found, count=len(found)))


@get(
    "/candles/range",
    summary="Candles between two times",
    description="Candles with start <= ts <= end (both inclusive), ascending. Datetimes are "
    "ISO 8601; without an offset they mean UTC. When more candles remain than `limit`, the "
    'body has `next` (a cursor) and a `Link: <...>; rel="next"` header gives the URL of '
    "the next page; following it returns every candle once. Resampled buckets are returned "
    "only when they lie entirely inside [start, end]." + RESAMPLING,
    tags=["candles"],
    responses={
        **STREAMED,
        400: BAD_REQUEST,
        404: NOT_FOUND,
        422: INVALID,
        500: INTERNAL,
        503: UNAVAILABLE,
    },
)
@inject
async def candle_range(
    request: Request[Any, Any, Any],
    queries: FromDishka[CandleQueries],
    ticker: Ticker,
    start: Annotated[
        str,
        QueryParameter(
            description="ISO 8601 datetime or date, inclusive.",
            examples=[Example(value="2026-01-26T14:30:00Z")],
            max_length=64,
            format="date-time",
        ),
    ],
    end: Annotated[
        str,
        QueryParameter(
            description="ISO 8601 datetime or date, inclusive.",
            examples=[Example(value="2026-01-27T21:00:00Z")],
            max_length=64,
            format="date-time",
        ),
    ],
    tf_min: TfMin = None,
    limit: Annotated[
        int | None,
        QueryParameter(
            description="1..MAX_LIMIT, default MAX_LIMIT (csv/ndjson: no cap, default all).",
            ge=1,
            examples=[Example(value=1000)],
        ),
    ] = None,
    tz: Tz = None,
    cursor: Annotated[
        str | None,
        QueryParameter(description="`next` of the previous page.", max_length=200),
    ] = None,
    format: Format = None,
    accept: Accept = None,
) -> Response[CandlesBody] | Stream:
    start_ts = parse_timestamp(start, "start")
    end_ts = parse_timestamp(end, "end")
    after = decode_cursor(cursor) if cursor is not None else None
    output = _format(format, accept)
    if output != "json":
        if after is not None and after >= start_ts:
            start_ts = after + timedelta(microseconds=1)
        exported = await queries.export(ticker, tf_min, Order.ASC, limit, tz, start_ts, end_ts)
        return _stream(exported, output)
    page = await queries.candle_range(ticker, start_ts, end_ts, tf_min, limit, tz, after)
    if not page.more:
        return Response(CandlesBody(data=page.candles, count=len(page.candles)))
    next_cursor = encode_cursor(page.candles[-1].ts)
    query = {k: v for k, v in request.query_params.items() if k != "cursor"}
    link = f"{request.url.path}?{urlencode({**query, 'cursor': next_cursor})}"
    return Response(
        CandlesBody(data=page.candles, count=len(page.candles), next=next_cursor),
        headers={"Link": f'<{link}>; rel="next"'},
    )


class CoverageBody(msgspec.Struct):
    ticker: str
    timeframes: list[Coverage]


@get(
    "/symbols/{ticker:str}",
    summary="What is stored for a ticker",
    description="For each stored timeframe: the first and last candle's `ts` and the count.",
    tags=["coverage"],
    responses={404: NOT_FOUND, 422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
)
@inject
async def symbol_coverage(
    queries: FromDishka[CandleQueries],
    ticker: Annotated[
        str,
        PathParameter(
            description="Ticker exactly as stored.", max_length=64, pattern=NO_CONTROL_CHARACTERS
        ),
    ],
) -> CoverageBody:
    return CoverageBody(ticker=ticker, timeframes=await queries.coverage(ticker))


@get(
    "/symbols/{ticker:str}/gaps",
    summary="Holes in a series",
    description="Pairs of consecutive candles further apart than `min_gap` minutes (default: "
    "tf_min, i.e. any missing candle), oldest first: nights, weekends, holidays and feed "
    "outages, so that missing data shows before a backtest meets it.",
    tags=["coverage"],
    responses={404: NOT_FOUND, 422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
)
@inject
async def symbol_gaps(
    queries: FromDishka[CandleQueries],
    ticker: Annotated[
        str,
        PathParameter(
            description="Ticker exactly as stored.", max_length=64, pattern=NO_CONTROL_CHARACTERS
        ),
    ],
    tf_min: TfMin = None,
    min_gap: Annotated[
        int | None,
        QueryParameter(
            description="Minutes; default tf_min.",
            ge=1,
            le=10_000_000,
            examples=[Example(value=60)],
        ),
    ] = None,
    limit: Annotated[
        int | None,
        QueryParameter(description="1..MAX_LIMIT gaps, default 1000.", ge=1),
    ] = None,
) -> GapReport:
    return await queries.gaps(ticker, tf_min, min_gap, limit)


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
    request.app.state.metrics.rows_ingested.inc(result.inserted + result.updated)
    return WrittenBody(result.rows, result.inserted, result.updated, result.unchanged)


ROUTES = [
    health,
    live,
    ready,
    metrics,
    symbols,
    symbol_coverage,
    symbol_gaps,
    candles,
    candle_range,
    write_candles,
]
