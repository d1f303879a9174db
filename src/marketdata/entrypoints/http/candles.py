"""Candles: `/candles` (oldest or newest) and `/candles/range` (between two times, in pages),
as JSON or streamed (exports)."""

from typing import Annotated, Any
from urllib.parse import urlencode

from dishka.integrations.litestar import FromDishka, inject
from litestar import Controller, Request, Response, delete, get, post
from litestar.openapi.spec import Example
from litestar.params import QueryParameter
from litestar.response import Stream

from marketdata.domain.bar_options import bar_options
from marketdata.domain.candles import Order, parse_timestamp
from marketdata.domain.imports import CandleImport
from marketdata.domain.ports import ColumnarReader
from marketdata.domain.queries import CandleQueries, CandleQuery
from marketdata.entrypoints.http import caching, writes
from marketdata.entrypoints.http.caching import Answers
from marketdata.entrypoints.http.cursor import decode_cursor, encode_cursor
from marketdata.entrypoints.http.docs import (
    BAD_REQUEST,
    INTERNAL,
    INVALID,
    NOT_FOUND,
    RESAMPLING,
    STREAMED,
    UNAVAILABLE,
    Accept,
    DayStart,
    FillMode,
    Format,
    Label,
    Session,
    TfMin,
    Ticker,
    Tz,
)
from marketdata.entrypoints.http.exports import (
    columnar,
    output_format,
    streamed,
    streamed_columns,
)
from marketdata.entrypoints.schemas import CandlesBody, DeletedBody, WrittenBody
from marketdata.entrypoints.settings import Settings

Datetime = Annotated[
    str,
    QueryParameter(
        description="ISO 8601 datetime or date, inclusive.",
        examples=[Example(value="2026-01-26T14:30:00Z")],
        max_length=64,
        format="date-time",
    ),
]


class CandlesController(Controller):
    path = "/candles"

    @get(
        "/",
        tags=["candles"],
        summary="Oldest or newest candles of a series",
        description="`order=asc` gives the oldest `limit` candles ascending; `order=desc` the "
        "newest `limit` candles, newest first." + RESAMPLING,
        responses={**STREAMED, 404: NOT_FOUND, 422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
    )
    @inject
    async def candles(
        self,
        request: Request[Any, Any, Any],
        queries: FromDishka[CandleQueries],
        settings: FromDishka[Settings],
        answers: FromDishka[Answers],
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
        day_start: DayStart = None,
        session: Session = None,
        fill: FillMode = None,
        label: Label = None,
        format: Format = None,
        accept: Accept = None,
    ) -> Response[CandlesBody] | Stream:
        query = CandleQuery(
            ticker=ticker,
            tf_min=tf_min,
            limit=limit,
            order=order,
            options=bar_options(tz, day_start, session, fill, label),
            export=output_format(format, accept) != "json",
        )
        return await _answer(request, queries, settings, answers, query, format, accept)

    @get(
        "/range",
        tags=["candles"],
        summary="Candles between two times",
        description="Candles with start <= ts <= end (both inclusive), ascending. Datetimes "
        "are ISO 8601; without an offset they mean UTC. When more candles remain than "
        '`limit`, the body has `next` (a cursor) and a `Link: <...>; rel="next"` header gives '
        "the URL of the next page; following it returns every candle once. Resampled buckets "
        "are returned only when they lie entirely inside [start, end]." + RESAMPLING,
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
        self,
        request: Request[Any, Any, Any],
        queries: FromDishka[CandleQueries],
        settings: FromDishka[Settings],
        answers: FromDishka[Answers],
        ticker: Ticker,
        start: Datetime,
        end: Datetime,
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
        day_start: DayStart = None,
        session: Session = None,
        fill: FillMode = None,
        label: Label = None,
        cursor: Annotated[
            str | None,
            QueryParameter(description="`next` of the previous page.", max_length=200),
        ] = None,
        format: Format = None,
        accept: Accept = None,
    ) -> Response[CandlesBody] | Stream:
        query = CandleQuery(
            ticker=ticker,
            tf_min=tf_min,
            limit=limit,
            start=parse_timestamp(start, "start"),
            end=parse_timestamp(end, "end"),
            after=decode_cursor(cursor) if cursor is not None else None,
            options=bar_options(tz, day_start, session, fill, label),
            export=output_format(format, accept) != "json",
        )
        return await _answer(request, queries, settings, answers, query, format, accept)

    @post(
        "/",
        summary="Write candles (upsert)",
        description="Insert or update candles, all or nothing: one bad row and nothing is "
        "written; candles equal to the stored ones change nothing. Bodies: `application/json` "
        "(a list of candles), `application/x-ndjson` (one candle per line), `text/csv` (a "
        "header with ticker, tf_min, ts, open, high, low, close[, volume, openint]) or "
        "`application/vnd.apache.arrow.stream` (an Arrow IPC stream with those columns; a "
        "bad row is named by its number from 1). Naive "
        "times are UTC. Needs `Authorization: Bearer <API key>`.",
        tags=["candles"],
        status_code=200,
        security=[{"bearer": []}],
        responses=writes.WRITE_RESPONSES,
    )
    @inject
    async def write(
        self,
        request: Request[Any, Any, Any],
        settings: FromDishka[Settings],
        imports: FromDishka[CandleImport],
        bodies: FromDishka[ColumnarReader],
    ) -> WrittenBody:
        return await writes.write(request, settings, imports, bodies)

    @delete(
        "/",
        summary="Delete candles of a series between two times",
        description="Delete the candles of one series with start <= ts <= end, all or nothing "
        "(the series catalog and the rollups follow in the same transaction); the body says "
        "how many. Needs `Authorization: Bearer <API key>`.",
        tags=["candles"],
        status_code=200,
        security=[{"bearer": []}],
        responses={**writes.WRITE_RESPONSES, 400: BAD_REQUEST},
    )
    @inject
    async def remove(
        self,
        request: Request[Any, Any, Any],
        settings: FromDishka[Settings],
        imports: FromDishka[CandleImport],
        ticker: Ticker,
        tf_min: Annotated[
            int,
            QueryParameter(description="Timeframe in minutes.", gt=0, le=2**31 - 1),
        ],
        start: Datetime,
        end: Datetime,
    ) -> DeletedBody:
        return await writes.delete(request, settings, imports, ticker, tf_min, start, end)


async def _answer(
    request: Request[Any, Any, Any],
    queries: CandleQueries,
    settings: Settings,
    answers: Answers,
    query: CandleQuery,
    format: str | None,
    accept: str | None,
) -> Response[Any] | Stream:
    """Every GET of candles: one plan, its ETag (a 304 before any read), the answer kept
    for the URL under that tag, or the read of the plan: JSON made by the database, or
    streamed as CSV, NDJSON, Parquet or Arrow. One round trip at most: a plan this process
    cannot check without one is checked by its read (the ETag decided after it)."""
    output = output_format(format, accept)
    plan = queries.draft(query)
    if not plan.checked and output != "json":
        plan = await queries.checked(plan)  # a stream's tag goes before its first bytes
    url = f"{request.url.path}?{request.scope['query_string'].decode('latin-1')}"
    if plan.checked:
        tag, cached = caching.conditional(request, settings, plan.version, output)
        if cached is not None:
            return cached
        if (wanted := columnar(output)) is not None:
            chunks = await queries.export_columns(wanted, plan)
            return _tagged(streamed_columns(chunks, wanted), settings, tag)
        if output != "json":
            stream = streamed(await queries.export(plan), output, plan.options)
            return _tagged(stream, settings, tag)
        if (kept := answers.get(url, tag)) is not None:
            return caching.answer(settings, tag, *kept)
    page = await queries.page(plan)
    if not plan.checked:
        plan = page.plan
        tag, cached = caching.conditional(request, settings, plan.version, output)
        if cached is not None:
            return cached
    count = min(page.bars.count, plan.limit) if plan.limit is not None else page.bars.count
    body = b'{"data":[' + page.bars.items + b'],"count":' + str(count).encode()
    extra: dict[str, str] = {}
    if page.more and page.last is not None:
        next_cursor = encode_cursor(page.last)
        params = {k: v for k, v in request.query_params.items() if k != "cursor"}
        link = f"{request.url.path}?{urlencode({**params, 'cursor': next_cursor})}"
        extra["Link"] = f'<{link}>; rel="next"'
        body += b',"next":"' + next_cursor.encode() + b'"'
    body += b"}"
    answers.keep(url, tag, body, extra)
    return caching.answer(settings, tag, body, extra)


def _tagged(response: Stream, settings: Settings, tag: str) -> Stream:
    response.headers.update(caching.headers(settings, tag))
    return response
