"""REST: the seed's contract, thin over the domain's use cases. One module per concern:
the handlers by resource (health, symbols, candles), writes and their API keys, the API's
description (docs), exports and the page cursor."""

from litestar.types import ControllerRouterHandler

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
