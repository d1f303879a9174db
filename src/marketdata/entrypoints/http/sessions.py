"""Time travel over REST: `/sessions` made, read, controlled and ended. What is served under
a session's URLs (the vendors' protocols, our replay) is mounted by `entrypoints/travel.py`."""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import msgspec
from dishka.integrations.litestar import FromDishka, inject
from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, PathParameter

from marketdata.domain.candles import parse_timestamp
from marketdata.domain.ports import Sessions
from marketdata.domain.sessions import (
    NewSession,
    SessionClock,
    State,
    TravelSession,
    new_session,
    pace_of,
    wall_now,
)
from marketdata.entrypoints.http.docs import BAD_REQUEST, INTERNAL, INVALID, NOT_FOUND, UNAVAILABLE
from marketdata.entrypoints.settings import Settings

# Where each protocol lives under a session, after /sessions/{id}
PROTOCOLS = {
    "binance": "/binance/api/v3",
    "binance_ws": "/binance/ws",
    "alpaca": "/alpaca",
    "polygon": "/polygon",
    "udf": "/udf",
    "replay": "/ws/replay",
}


class SessionBody(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    state: State
    present: datetime  # the simulated present, now
    start: datetime
    end: datetime | None
    speed: float  # market seconds per wall second
    paused: bool
    shift: bool
    tickers: list[str]  # empty: every ticker
    created: datetime
    urls: dict[str, str]


class Seek(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    to: str


class Speed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    speed: float | None = None
    step_seconds: float | None = None
    tf_min: int | None = None


def body_of(session: TravelSession, request: Request[Any, Any, Any]) -> SessionBody:
    wall = wall_now()
    base = str(request.base_url).rstrip("/") + f"/sessions/{session.id}"
    ws_base = "ws" + base.removeprefix("http")
    return SessionBody(
        id=session.id,
        state=session.state(wall),
        present=session.present(wall),
        start=session.start,
        end=session.clock.end,
        speed=session.clock.speed,
        paused=session.clock.paused,
        shift=session.shift,
        tickers=list(session.tickers),
        created=session.created,
        urls={
            name: (ws_base if name.endswith("ws") or name == "replay" else base) + path
            for name, path in PROTOCOLS.items()
        },
    )


SessionId = Annotated[str, PathParameter(description="The session's id.", max_length=64)]
ERRORS = {404: NOT_FOUND, 422: INVALID, 500: INTERNAL, 503: UNAVAILABLE}


class SessionsController(Controller):
    path = "/sessions"
    tags = ("time travel",)

    @post(
        "/",
        summary="Start a time-travel session",
        description="A moment of the past (`start`) that moves forward at `speed` (market "
        "seconds per wall second) or `step_seconds` (wall seconds per bar of `tf_min`, default "
        "DEFAULT_TF_MIN), until `end`. Every call under its URLs answers as of its simulated "
        "present: nothing that closes after it. `tickers` (list or comma-separated) limits "
        "what it holds; `shift` shows every time moved by (now - present).",
        status_code=201,
        responses={**ERRORS, 400: BAD_REQUEST},
    )
    @inject
    async def make(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[NewSession],
        sessions: FromDishka[Sessions],
        settings: FromDishka[Settings],
    ) -> SessionBody:
        session = new_session(data, wall_now(), settings.default_tf_min)
        await sessions.create(session)
        return body_of(session, request)

    @get("/{session_id:str}", summary="A session: its present and state", responses=ERRORS)
    @inject
    async def read(
        self, request: Request[Any, Any, Any], session_id: SessionId, sessions: FromDishka[Sessions]
    ) -> SessionBody:
        return body_of(await sessions.get(session_id), request)

    @post(
        "/{session_id:str}/pause",
        summary="Pause: the present stops",
        status_code=200,
        responses=ERRORS,
    )
    @inject
    async def pause(
        self, request: Request[Any, Any, Any], session_id: SessionId, sessions: FromDishka[Sessions]
    ) -> SessionBody:
        return await _controlled(request, sessions, session_id, lambda c, w: c.pause(w))

    @post(
        "/{session_id:str}/resume",
        summary="Resume: the present moves on from where it stopped",
        status_code=200,
        responses=ERRORS,
    )
    @inject
    async def resume(
        self, request: Request[Any, Any, Any], session_id: SessionId, sessions: FromDishka[Sessions]
    ) -> SessionBody:
        return await _controlled(request, sessions, session_id, lambda c, w: c.resume(w))

    @post(
        "/{session_id:str}/seek",
        summary="Move the present to `to` (ISO 8601)",
        status_code=200,
        responses={**ERRORS, 400: BAD_REQUEST},
    )
    @inject
    async def seek(
        self,
        request: Request[Any, Any, Any],
        session_id: SessionId,
        data: JSONBody[Seek],
        sessions: FromDishka[Sessions],
    ) -> SessionBody:
        to = parse_timestamp(data.to, "to")
        return await _controlled(request, sessions, session_id, lambda c, w: c.seek(w, to))

    @post(
        "/{session_id:str}/speed",
        summary="Change the pace: `speed` or `step_seconds`",
        status_code=200,
        responses={**ERRORS, 400: BAD_REQUEST},
    )
    @inject
    async def speed(
        self,
        request: Request[Any, Any, Any],
        session_id: SessionId,
        data: JSONBody[Speed],
        sessions: FromDishka[Sessions],
        settings: FromDishka[Settings],
    ) -> SessionBody:
        tf_min = settings.default_tf_min if data.tf_min is None else data.tf_min
        speed = pace_of(data.speed, data.step_seconds, tf_min)
        return await _controlled(request, sessions, session_id, lambda c, w: c.with_speed(w, speed))

    @delete("/{session_id:str}", summary="End a session", status_code=204, responses=ERRORS)
    @inject
    async def end(self, session_id: SessionId, sessions: FromDishka[Sessions]) -> None:
        await sessions.delete(session_id)


async def _controlled(
    request: Request[Any, Any, Any],
    sessions: Sessions,
    session_id: SessionId,
    change: Callable[[SessionClock, datetime], SessionClock],
) -> SessionBody:
    """A control, applied to the clock as it stands at the wall time it is applied."""
    session = await sessions.control(session_id, lambda clock: change(clock, wall_now()))
    return body_of(session, request)
