"""Candles: `/candles` (oldest or newest) and `/candles/range` (between two times, in pages),
as JSON or streamed (exports)."""

from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from dishka.integrations.litestar import FromDishka, inject
from litestar import Controller, Request, Response, delete, get, post
from litestar.openapi.spec import Example
from litestar.params import QueryParameter
from litestar.response import Stream

from marketdata.domain.bar_options import BarOptions, bar_options
from marketdata.domain.candles import Order, parse_timestamp
from marketdata.domain.imports import CandleImport
from marketdata.domain.ports import ColumnarReader
from marketdata.domain.queries import CandleQueries
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
        output = output_format(format, accept)
        options = bar_options(tz, day_start, session, fill, label)
        tag, kept = await _conditional(
            request, queries, settings, answers, output, ticker, tf_min, options
        )
        if isinstance(kept, Response):
            return kept
        if (wanted := columnar(output)) is not None:
            chunks = await queries.export_columns(wanted, ticker, tf_min, order, limit, options)
            return _tagged(streamed_columns(chunks, wanted), settings, tag)
        if output != "json":
            exported = await queries.export(ticker, tf_min, order, limit, options)
            return _tagged(streamed(exported, output, options), settings, tag)
        found = await queries.candles(ticker, tf_min, limit, order, options)
        return _answered(request, settings, answers, tag, CandlesBody(data=found, count=len(found)))

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
        start_ts = parse_timestamp(start, "start")
        end_ts = parse_timestamp(end, "end")
        after = decode_cursor(cursor) if cursor is not None else None
        output = output_format(format, accept)
        options = bar_options(tz, day_start, session, fill, label)
        tag, kept = await _conditional(
            request, queries, settings, answers, output, ticker, tf_min, options
        )
        if isinstance(kept, Response):
            return kept
        if (wanted := columnar(output)) is not None:
            chunks = await queries.export_columns(
                wanted, ticker, tf_min, Order.ASC, limit, options, start_ts, end_ts, after
            )
            return _tagged(streamed_columns(chunks, wanted), settings, tag)
        if output != "json":
            exported = await queries.export(
                ticker, tf_min, Order.ASC, limit, options, start_ts, end_ts, after
            )
            return _tagged(streamed(exported, output, options), settings, tag)
        page = await queries.candle_range(ticker, start_ts, end_ts, tf_min, limit, options, after)
        if not page.more or page.last is None:
            body = CandlesBody(data=page.candles, count=len(page.candles))
            return _answered(request, settings, answers, tag, body)
        next_cursor = encode_cursor(page.last)
        query = {k: v for k, v in request.query_params.items() if k != "cursor"}
        link = f"{request.url.path}?{urlencode({**query, 'cursor': next_cursor})}"
        body = CandlesBody(data=page.candles, count=len(page.candles), next=next_cursor)
        return _answered(request, settings, answers, tag, body, {"Link": f'<{link}>; rel="next"'})

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


_encode = msgspec.json.Encoder().encode


async def _conditional(
    request: Request[Any, Any, Any],
    queries: CandleQueries,
    settings: Settings,
    answers: Answers,
    output: str,
    ticker: str,
    tf_min: int | None,
    options: BarOptions,
) -> tuple[str | None, Response[Any] | None]:
    """The answer's ETag (None when there is nothing to answer: the query says why), and a
    response already: 304 when the client has it, or the answer kept for this URL."""
    version = await queries.version(ticker, tf_min, options)
    if version is None:
        return None, None
    # each representation its own tag: the JSON body, CSV, NDJSON, Parquet, Arrow
    tag = caching.etag(settings, version if output == "json" else f"{version}.{output}")
    if caching.matches(request.headers.get("if-none-match"), tag):
        return tag, caching.not_modified(settings, tag)
    if output == "json" and (kept := answers.get(_url(request), tag)) is not None:
        return tag, caching.answer(settings, tag, *kept)
    return tag, None


def _url(request: Request[Any, Any, Any]) -> str:
    return f"{request.url.path}?{request.scope['query_string'].decode('latin-1')}"


def _answered(
    request: Request[Any, Any, Any],
    settings: Settings,
    answers: Answers,
    tag: str | None,
    body: CandlesBody,
    extra: dict[str, str] | None = None,
) -> Response[Any]:
    encoded = _encode(body)
    if tag is None:
        return Response(encoded, media_type="application/json", headers=extra)
    answers.keep(_url(request), tag, encoded, extra or {})
    return caching.answer(settings, tag, encoded, extra)


def _tagged(response: Stream, settings: Settings, tag: str | None) -> Stream:
    if tag is not None:
        response.headers.update(caching.headers(settings, tag))
    return response
