"""REST: the seed's contract, thin over the domain's use cases. One module per concern:
the handlers by resource (health, symbols, candles), writes and their API keys, the API's
description (docs), exports and the page cursor."""

import re
from typing import Any

from litestar import Request, Response, Router
from litestar.exceptions import HTTPException
from litestar.types import ControllerRouterHandler

from marketdata.entrypoints.errors import http_error_response
from marketdata.entrypoints.http.candles import CandlesController
from marketdata.entrypoints.http.health import HealthController
from marketdata.entrypoints.http.sessions import SessionsController
from marketdata.entrypoints.http.symbols import SymbolsController
from marketdata.entrypoints.travel import sessions_router
from marketdata.entrypoints.vendors import alpaca, binance, polygon, udf

ROUTES: list[ControllerRouterHandler] = [
    HealthController,
    SymbolsController,
    CandlesController,
    SessionsController,
    alpaca.ROUTER,
    polygon.ROUTER,
    binance.BINANCE,
    udf.UDF,
    # every protocol again under /sessions/{id}, as of that time-travel session
    sessions_router([alpaca.router(), polygon.router(), binance.router(), udf.router()]),
]

VENDORS: tuple[Router, ...] = (alpaca.ROUTER, polygon.ROUTER, binance.BINANCE, udf.UDF)
_SESSION = re.compile(r"/sessions/[^/]+(?=/)")


def unrouted_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    """What no route's own handlers answer (a path or a method no route serves): under a
    vendor's prefix, a time-travel session's too, in that vendor's error body (its clients
    make their typed errors of it); elsewhere in ours."""
    path = request.url.path
    if session := _SESSION.match(path):
        path = path[session.end() :]
    for vendor in VENDORS:
        if path == vendor.path or path.startswith(f"{vendor.path}/"):
            answer: Response[Any] = vendor.exception_handlers[HTTPException](request, error)
            return answer
    return http_error_response(request, error)
