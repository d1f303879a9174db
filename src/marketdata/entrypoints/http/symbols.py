"""What is stored: `/symbols`, `/symbols/{ticker}` (coverage) and its gaps."""

from typing import Annotated, Any

from dishka.integrations.litestar import FromDishka, inject
from litestar import Controller, Request, Response, get
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from marketdata.domain.candles import NO_CONTROL_CHARACTERS
from marketdata.domain.queries import CandleQueries, GapReport
from marketdata.entrypoints.http import caching
from marketdata.entrypoints.http.docs import (
    INTERNAL,
    INVALID,
    NOT_FOUND,
    UNAVAILABLE,
    TfMin,
    TickerPath,
)
from marketdata.entrypoints.schemas import CoverageBody, SymbolsBody
from marketdata.entrypoints.settings import Settings


class SymbolsController(Controller):
    path = "/symbols"

    @get(
        "/",
        summary="List tickers",
        description="Distinct tickers, sorted. `prefix` matches the start of the ticker "
        "case-insensitively and literally (`%` and `_` match themselves).",
        tags=["candles"],
        responses={422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
    )
    @inject
    async def symbols(
        self,
        request: Request[Any, Any, Any],
        queries: FromDishka[CandleQueries],
        settings: FromDishka[Settings],
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
    ) -> Response[SymbolsBody]:
        tag, cached = caching.conditional(request, settings, await queries.symbols_version())
        if cached is not None:
            return cached
        found = await queries.symbols(prefix, limit)
        body = SymbolsBody(symbols=found, count=len(found))
        return Response(body, headers=caching.headers(settings, tag))

    @get(
        "/{ticker:str}",
        summary="What is stored for a ticker, and what can be served",
        description="`timeframes`: for each stored timeframe, the first and last candle's `ts` "
        "and the count. `served`: the stored timeframes and the common ones (1, 2, 3, 5, 10, "
        "15 and 30 minutes; 1, 2, 4, 6 and 12 hours; a day; a week) that can be served, finest "
        "first, each with its `source`: `stored`, `rollup` (resampled, read from a rollup kept "
        "at write time) or `resampled` (from the stored candles), and `from_tf_min`, the stored "
        "timeframe its bars are made of. Any other multiple of a stored timeframe can be "
        "served too.",
        tags=["coverage"],
        responses={404: NOT_FOUND, 422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
    )
    @inject
    async def coverage(
        self,
        request: Request[Any, Any, Any],
        queries: FromDishka[CandleQueries],
        settings: FromDishka[Settings],
        ticker: TickerPath,
    ) -> Response[CoverageBody]:
        stored, served, version = await queries.coverage(ticker)
        tag, cached = caching.conditional(request, settings, version)
        if cached is not None:
            return cached
        body = CoverageBody(ticker=ticker, timeframes=stored, served=served)
        return Response(body, headers=caching.headers(settings, tag))

    @get(
        "/{ticker:str}/gaps",
        summary="Holes in a series",
        description="Pairs of consecutive candles further apart than `min_gap` minutes "
        "(default: tf_min, i.e. any missing candle), oldest first: nights, weekends, holidays "
        "and feed outages, so that missing data shows before a backtest meets it.",
        tags=["coverage"],
        responses={404: NOT_FOUND, 422: INVALID, 500: INTERNAL, 503: UNAVAILABLE},
    )
    @inject
    async def gaps(
        self,
        queries: FromDishka[CandleQueries],
        ticker: TickerPath,
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
