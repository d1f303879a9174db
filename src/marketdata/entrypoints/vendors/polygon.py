"""Polygon (Massive) aggregates under `/polygon`: `GET /polygon/v2/aggs/ticker/{ticker}/
range/{multiplier}/{timespan}/{from}/{to}`, so that the massive client (`base=".../polygon"`)
and Polygon's other clients read our candles. The stream is `polygon_stream`.

The router: the handlers decode the query into its Struct at the edge and answer a page of
`polygon_aggs` (the translation, reading through CandleQueries), and its exception handlers
give every error Polygon's bodies.

`next_url`. The massive client follows a page's `next_url` by taking its path and query
only and putting its own base in front: with `base=http://host/polygon` and a `next_url` of
`http://host/polygon/v2/aggs/...` it asks for `/polygon/polygon/v2/aggs/...`. A browser, or
any client that follows the URL as given, asks for `/polygon/v2/aggs/...`. So `next_url` is
the honest absolute URL of the next page under `/polygon`, and the service also answers the
path with the prefix doubled (the same handler, left out of the API's description): both
reach the next page, and nothing is served outside `/polygon`. Its query is one `cursor`
carrying everything the next page needs (`adjusted`, `sort`, `limit`, and where to resume),
since massive sends nothing else; the path keeps the ticker, range and bounds as asked.
"""

from typing import Annotated, Any

from dishka.integrations.litestar import FromDishka, inject
from litestar import Request, Response, Router, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import PathParameter, QueryParameter

from marketdata.domain.errors import DomainError
from marketdata.domain.queries import CandleQueries
from marketdata.domain.sessions import TravelSession
from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.vendors.alpaca_polygon_common import (
    decoded,
    failure_of,
)
from marketdata.entrypoints.vendors.common import VENDOR_ROUTES, Present
from marketdata.entrypoints.vendors.polygon_aggs import (
    PREFIX,
    AggsBody,
    AggsPath,
    AggsQuery,
    PolygonError,
    PolygonNotFound,
    answer,
    request_id,
)
from marketdata.entrypoints.vendors.polygon_stream import stocks_stream

TickerParam = Annotated[
    str,
    PathParameter(
        description="A stored ticker (`X:BTCUSD`: `X:BTCUSD` when stored, else `BTCUSD`).",
        max_length=64,
        examples=[Example(value="AAPL")],
    ),
]
MultiplierParam = Annotated[
    str,
    PathParameter(description="Size of the timespan multiplier.", examples=[Example(value="5")]),
]
TimespanParam = Annotated[
    str,
    PathParameter(
        description="`minute`, `hour`, `day` or `week` (`second`, `month`, `quarter` and "
        "`year` are not served: 400).",
        examples=[Example(value="minute")],
    ),
]
FromParam = Annotated[
    str,
    PathParameter(
        description="`from`: YYYY-MM-DD (from the start of that day: New York's for stocks, "
        "UTC for `X:`, `C:`, `I:`) or Unix milliseconds.",
        examples=[Example(value="2024-01-02")],
    ),
]
ToParam = Annotated[
    str,
    PathParameter(
        description="`to`: YYYY-MM-DD (to the end of that day) or Unix milliseconds; at "
        "most the present.",
        examples=[Example(value="2024-01-03")],
    ),
]
Adjusted = Annotated[
    str | None,
    QueryParameter(description="`true` (default) or `false`: echoed; prices are as stored."),
]
Sort = Annotated[
    str | None, QueryParameter(description="`asc` (default) or `desc`, by window start.")
]
Limit = Annotated[
    str | None,
    QueryParameter(
        description="Aggregates on a page, 1..50000 (default 5000); a page holds at most "
        "MAX_LIMIT, the rest follows through `next_url`.",
        examples=[Example(value="5000")],
    ),
]
CursorParam = Annotated[
    str | None,
    QueryParameter(description="From a `next_url`: the next page (opaque); overrides the rest."),
]


def _error_spec(model: type, description: str, example: dict[str, str]) -> ResponseSpec:
    return ResponseSpec(
        data_container=model,
        description=description,
        examples=[Example(summary=description, value=example)],
        generate_examples=False,
    )


def _error_example(error: str) -> dict[str, str]:
    return {"status": "ERROR", "request_id": "6a7e466379af0a71039d60cc78e72282", "error": error}


ERRORS = {
    400: _error_spec(
        PolygonError,
        "An invalid parameter, date or timespan",
        _error_example("invalid timespan: 'fortnight' is not one of minute, hour, day, ..."),
    ),
    404: _error_spec(
        PolygonNotFound,
        "An unknown ticker",
        {
            "status": "NOT_FOUND",
            "request_id": "6a7e466379af0a71039d60cc78e72282",
            "message": "Ticker not found: NOPE",
        },
    ),
    500: _error_spec(
        PolygonError, "A bug (details in the log)", _error_example("internal server error")
    ),
    503: _error_spec(
        PolygonError,
        "The database does not answer",
        _error_example("service unavailable: the database does not answer"),
    ),
}
AGGS = "/v2/aggs/ticker/{ticker:str}/range/{multiplier:str}/{timespan:str}/{from_:str}/{to:str}"


@get(
    AGGS,
    tags=["polygon"],
    summary="Polygon: aggregates of a ticker",
    description="Polygon (Massive) `GET /v2/aggs/ticker/{ticker}/range/{multiplier}/"
    "{timespan}/{from}/{to}`. Aggregates are our candles (stored, or resampled as "
    "`/candles/range` resamples them; an aggregate comes when its window opens in [from, "
    "to] and, resampled, is complete by the present; days and weeks of stocks are New "
    "York's, from its midnight). When more "
    "remain, `next_url` is the next page's URL (under `/polygon`; also reached with the "
    "prefix doubled, as the massive client asks for it); it is absent on the last page. "
    "Any API key is accepted (or none).",
    responses=ERRORS,
)
@inject
async def aggregates(
    request: Request[Any, Any, Any],
    queries: NamedDependency[CandleQueries],
    settings: FromDishka[Settings],
    present: NamedDependency[Present],
    ticker: TickerParam,
    multiplier: MultiplierParam,
    timespan: TimespanParam,
    from_: FromParam,
    to: ToParam,
    adjusted: Adjusted = None,
    sort: Sort = None,
    limit: Limit = None,
    cursor: CursorParam = None,
) -> AggsBody:
    query = decoded(AggsQuery, adjusted=adjusted, sort=sort, limit=limit, cursor=cursor)
    path = AggsPath(ticker, multiplier, timespan, from_, to)
    return await answer(request, queries, settings, present(), path, query)


@get([PREFIX + AGGS, "/sessions/{again:str}" + PREFIX + AGGS], include_in_schema=False)
@inject
async def aggregates_doubled(
    request: Request[Any, Any, Any],
    queries: NamedDependency[CandleQueries],
    settings: FromDishka[Settings],
    present: NamedDependency[Present],
    travel: NamedDependency[TravelSession | None],
    ticker: TickerParam,
    multiplier: MultiplierParam,
    timespan: TimespanParam,
    from_: FromParam,
    to: ToParam,
    adjusted: Adjusted = None,
    sort: Sort = None,
    limit: Limit = None,
    cursor: CursorParam = None,
) -> AggsBody:
    """`/polygon/polygon/v2/aggs/...`: a `next_url` as the massive client follows it (its
    base URL, then the URL's path); under a session, `/sessions/{id}/polygon/sessions/{id}/
    polygon/v2/aggs/...`, the same session's only."""
    again = request.path_params.get("again")
    if again is not None and (travel is None or travel.id != again):
        raise NotFoundException(f"no session {again!r} here")
    query = decoded(AggsQuery, adjusted=adjusted, sort=sort, limit=limit, cursor=cursor)
    path = AggsPath(ticker, multiplier, timespan, from_, to)
    return await answer(request, queries, settings, present(), path, query)


# -- errors --------------------------------------------------------------------------------


def polygon_error(
    request: Request[Any, Any, Any], error: Exception
) -> Response[PolygonError | PolygonNotFound]:
    """Every error under /polygon in Polygon's bodies: an unknown ticker 404
    `{"status": "NOT_FOUND", "message"}`, anything else `{"status": "ERROR", "error"}`
    (400 for the request's faults, 503 for the database, 500 for a bug)."""
    failure = failure_of(request, error)
    if failure.kind == "symbol":
        found = PolygonNotFound("NOT_FOUND", request_id(), f"Ticker not found: {failure.message}")
        return Response(found, status_code=404)
    status = {"request": 400, "unavailable": 503, "internal": 500}.get(failure.kind, failure.status)
    return Response(PolygonError("ERROR", request_id(), failure.message), status_code=status)


def router() -> Router:
    """The protocol's routes (served at its prefix, and again under each time-travel
    session: entrypoints/travel.py)."""
    return Router(
        path=PREFIX,
        route_handlers=[aggregates, aggregates_doubled, stocks_stream],
        opt=VENDOR_ROUTES,
        exception_handlers={
            DomainError: polygon_error,
            ValidationException: polygon_error,
            HTTPException: polygon_error,
            Exception: polygon_error,
        },
    )


ROUTER = router()
