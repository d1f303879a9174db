"""Time travel at the edge: every vendor protocol, and a live stream of our own, served again
under `/sessions/{id}`, as of that session's present.

A vendor's handlers take three things by name: `queries` (CandleQueries), `live` (the
LiveFeed) and `present` (the now they answer as of). Outside a session they are the
service's own (the wall clock); under `/sessions/{id}` they are the session's:
TravelQueries (reads as of its present, shifted as it says), TravelFeed (its bars as its
present passes them) and its present as the client sees it. The handlers do not change: a
protocol is translated once and served both ways."""

from typing import Annotated, Any

from dishka import AsyncContainer
from litestar import Router, WebSocket, websocket
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import PathParameter
from litestar.types import ControllerRouterHandler, Scope

from marketdata.domain.errors import NotFound
from marketdata.domain.ports import CandleRepository, Sessions
from marketdata.domain.queries import CandleQueries, QueryLimits
from marketdata.domain.replay import Clock, LiveFeed, ReplaySource, Writes
from marketdata.domain.sessions import TravelSession, wall_now
from marketdata.domain.travel import TravelFeed, TravelQueries
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.vendors.common import Present
from marketdata.entrypoints.websocket import ReplayRegistry, serve


def _container(scope: Scope) -> AsyncContainer:
    container: AsyncContainer = scope["state"]["dishka_container"]
    return container


async def _no_session() -> TravelSession | None:
    return None


async def _session(
    session_id: Annotated[str, PathParameter()], scope: Scope
) -> TravelSession | None:
    """The session of the URL; when there is none, 404 as the protocol says it for a path it
    does not serve (an HTTP error, which each protocol's handlers answer in its own shape)."""
    sessions: Sessions = await _container(scope).get(Sessions)
    try:
        return await sessions.get(session_id)
    except NotFound as missing:
        raise NotFoundException(missing.message) from None


async def _present(
    travel: NamedDependency[TravelSession | None], live: NamedDependency[LiveFeed], scope: Scope
) -> Present:
    """The now a call answers as of: under a session, its present as the client sees it
    (shifted: the wall clock itself), by the session as the call's streams last read it."""
    if travel is None or not isinstance(live, TravelFeed):
        present: Present = await _container(scope).get(Present)
        return present
    return live.seen


async def _queries(travel: NamedDependency[TravelSession | None], scope: Scope) -> CandleQueries:
    container = _container(scope)
    repository = await container.get(CandleRepository)
    limits = await container.get(QueryLimits)
    if travel is None:
        return CandleQueries(repository, limits)
    return TravelQueries(repository, limits, travel, wall_now())


async def _live(travel: NamedDependency[TravelSession | None], scope: Scope) -> LiveFeed:
    container = _container(scope)
    if travel is None:
        live: LiveFeed = await container.get(LiveFeed)
        return live
    return TravelFeed(
        await container.get(ReplaySource),
        await container.get(Clock),
        await container.get(Sessions),
        travel,
        writes=await container.get(Writes),
    )


# what the app gives every handler that names them; a session's router gives its own travel
DEPENDENCIES = {
    "travel": Provide(_no_session),
    "present": Provide(_present),
    "queries": Provide(_queries),
    "live": Provide(_live),
}


@websocket("/ws/replay")
async def session_stream(socket: WebSocket[Any, Any, Any], live: NamedDependency[LiveFeed]) -> None:
    """Our own stream under a session: `/ws/live`'s messages, the session's bars as its
    present passes their close (the query string of `/ws/live`)."""
    container = _container(socket.scope)
    await serve(
        socket,
        await container.get(Settings),
        await container.get(ReplaySource),
        live,
        await container.get(Clock),
        await container.get(ReplayRegistry),
        await container.get(Metrics),
        history=False,
    )


async def _existing(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Every call under a session that is not is answered as a path not served (404, in the
    protocol's words), those that read nothing of it (a server time, a ping) included."""
    await _session(connection.path_params["session_id"], connection.scope)


def sessions_router(protocols: list[ControllerRouterHandler]) -> Router:
    """Every protocol again under `/sessions/{session_id}`, as of that session (left out
    of the API's description: each is described once, at its own prefix)."""
    return Router(
        path="/sessions/{session_id:str}",
        route_handlers=[*protocols, session_stream],
        dependencies={"travel": Provide(_session)},
        guards=[_existing],
        include_in_schema=False,
    )
