"""`WS /ws/replay`: the seed's replay protocol, extended (DESIGN "WebSocket replay").

Receiving and sending run side by side, so a control message takes effect at once; a client
that goes away ends its session and its database work at once.
"""

import asyncio
import contextlib
import math
from collections.abc import Mapping
from typing import Any, Literal, cast

import msgspec
import structlog
from dishka.integrations.litestar import FromDishka, inject_websocket
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from marketdata.adapters.settings import Settings
from marketdata.domain.candles import Candle, parse_timestamp, zone_of
from marketdata.domain.errors import DomainError, InvalidParameter, StoreUnavailable
from marketdata.domain.replay import (
    Clock,
    Command,
    Pacing,
    ReplaySelection,
    ReplaySession,
    ReplaySource,
)
from marketdata.entrypoints.metrics import Metrics

log = structlog.get_logger(logger_name="marketdata.replay")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
MAX_CONTROL_MESSAGE = 4096


class StatusMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: Literal["STATUS"]
    message: str
    ticker: str | None
    tf_min: int | None
    step_seconds: float | None
    total_candles: int | None
    tickers: list[str] | None = None
    speed: float | None = None
    seq: int | None = None
    error: str | None = None


class CandleMessage(msgspec.Struct):
    type: Literal["CANDLE"]
    candle: Candle
    seq: int


_encode = msgspec.json.Encoder().encode
_decode_command = msgspec.json.Decoder(Command).decode


Socket = WebSocket[Any, Any, Any]


class ClientGone(Exception):
    """The client disconnected while we were sending."""


class ReplayRequest(msgspec.Struct, frozen=True):
    selection: ReplaySelection
    pacing: Pacing
    lockstep: bool
    from_seq: int


def _number(query: Mapping[str, str], name: str, kind: type[int] | type[float]) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidParameter(name, f"{raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidParameter(name, f"{raw!r} is not a finite number")
    return value


def replay_request(query: Mapping[str, str], settings: Settings) -> ReplayRequest:
    """The connection's query parameters, validated; raises DomainError naming the bad one."""
    if query.get("ticker") and query.get("tickers"):
        raise InvalidParameter("tickers", "give ticker or tickers, not both")
    raw = query.get("tickers") or query.get("ticker") or ""
    tickers = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    if not tickers:
        raise InvalidParameter("ticker", "is required")
    tf_min = _number(query, "tf_min", int)
    step = _number(query, "step_seconds", float)
    speed = _number(query, "speed", float)
    if step is None and speed is None:
        step = settings.ws_default_step_seconds
    from_seq = _number(query, "from_seq", int)
    mode = query.get("mode", "paced")
    if mode not in ("paced", "lockstep"):
        raise InvalidParameter("mode", f"must be paced or lockstep, got {mode!r}")
    tz = zone_of(query["tz"]) if query.get("tz") else "UTC"
    start = parse_timestamp(query["start"], "start") if query.get("start") else None
    end = parse_timestamp(query["end"], "end") if query.get("end") else None
    return ReplayRequest(
        selection=ReplaySelection(
            tickers,
            int(tf_min) if tf_min is not None else settings.default_tf_min,
            start,
            end,
            tz=tz,
        ),
        pacing=Pacing(
            step_seconds=step,
            speed=speed,
            min_step=settings.ws_min_step_seconds,
            max_step=settings.ws_max_step_seconds,
        ),
        lockstep=mode == "lockstep",
        from_seq=int(from_seq) if from_seq is not None else 0,
    )


class WebSocketSink:
    """ReplaySink over the socket. One lock: the replay and the acknowledgements of control
    messages are sent from two tasks."""

    def __init__(
        self, socket: Socket, query: Mapping[str, str], metrics: Metrics | None = None
    ) -> None:
        self._metrics = metrics
        self._socket = socket
        self._lock = asyncio.Lock()
        self.session: ReplaySession | None = None
        self._query = query

    async def _send(self, payload: bytes) -> None:
        async with self._lock:
            try:
                await self._socket.send_data(payload.decode(), mode="text")
            except (WebSocketDisconnect, OSError, RuntimeError) as error:
                raise ClientGone from error

    async def candle(self, seq: int, candle: Candle) -> None:
        await self._send(_encode(CandleMessage("CANDLE", candle, seq)))
        if self._metrics is not None:
            self._metrics.candles_sent.inc()

    async def status(
        self, message: str, *, error: str | None = None, seq: int | None = None
    ) -> None:
        session = self.session
        if session is None:  # refused before a session exists: echo what was asked
            tickers = self._query.get("tickers") or self._query.get("ticker")
            tf = self._query.get("tf_min")
            body = StatusMessage(
                type="STATUS",
                message=message,
                ticker=tickers,
                step_seconds=None,
                tf_min=int(tf) if tf and tf.isdigit() else None,
                total_candles=None,
                error=error,
            )
        else:
            selection, pacing = session.selection, session.pacing
            body = StatusMessage(
                type="STATUS",
                message=message,
                ticker=",".join(selection.tickers),
                tf_min=selection.tf_min,
                step_seconds=pacing.step_seconds,
                total_candles=session.total,
                tickers=list(selection.tickers) if len(selection.tickers) > 1 else None,
                speed=pacing.speed,
                seq=seq,
                error=error,
            )
        await self._send(_encode(body))


class ReplayRegistry:
    """The sessions of this process: caps their number and ends them on shutdown."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._stops: set[asyncio.Event] = set()
        self._idle = asyncio.Event()
        self._closed = False

    @property
    def active(self) -> int:
        return len(self._stops)

    def enter(self) -> asyncio.Event | None:
        """A stop event for a new session, or None when full or shutting down."""
        if self._closed or len(self._stops) >= self.capacity:
            return None
        stop = asyncio.Event()
        self._stops.add(stop)
        return stop

    def leave(self, stop: asyncio.Event) -> None:
        self._stops.discard(stop)
        if not self._stops:
            self._idle.set()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Tell every session to send `server_shutdown` and close with 1001; wait for them."""
        self._closed = True
        if not self._stops:
            return
        self._idle.clear()
        for stop in list(self._stops):
            stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)


async def _receive_commands(socket: Socket, session: ReplaySession, sink: WebSocketSink) -> None:
    """Apply control messages until the client disconnects; bad ones get a STATUS error."""
    while True:
        try:
            message = await socket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        data = cast("str | bytes", message.get("text") or message.get("bytes") or b"")
        if len(data) > MAX_CONTROL_MESSAGE:
            await sink.status("error", error=f"control message over {MAX_CONTROL_MESSAGE} bytes")
            continue
        try:
            command = _decode_command(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            await sink.status("error", error=f"invalid control message: {error}")
            continue
        await session.apply(command)


async def _close(socket: Socket, code: int) -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await socket.close(code=code)


@websocket("/ws/replay")
@inject_websocket
async def replay(
    socket: Socket,
    settings: FromDishka[Settings],
    source: FromDishka[ReplaySource],
    clock: FromDishka[Clock],
    registry: FromDishka[ReplayRegistry],
    metrics: FromDishka[Metrics],
) -> None:
    await socket.accept()
    query = dict(socket.query_params)
    sink = WebSocketSink(socket, query, metrics)
    try:
        request = replay_request(query, settings)
    except DomainError as error:
        with contextlib.suppress(ClientGone):
            await sink.status("error", error=error.message)
        await _close(socket, CLOSE_POLICY)
        return
    stop = registry.enter()
    if stop is None:
        with contextlib.suppress(ClientGone):
            await sink.status(
                "server_busy",
                error=f"too many replay sessions (WS_MAX_SESSIONS={registry.capacity});"
                " try again later",
            )
        await _close(socket, CLOSE_TRY_AGAIN)
        return
    tasks: list[asyncio.Future[Any]] = []
    try:
        session = ReplaySession(
            source,
            clock,
            sink,
            request.selection,
            request.pacing,
            lockstep=request.lockstep,
            from_seq=request.from_seq,
            page_size=settings.ws_page_size,
        )
        sink.session = session
        await session.prepare()
        run = asyncio.ensure_future(session.run())
        receive = asyncio.ensure_future(_receive_commands(socket, session, sink))
        shutdown = asyncio.ensure_future(stop.wait())
        tasks = [run, receive, shutdown]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            run.result()  # raises what the replay raised
            await _close(socket, CLOSE_NORMAL)
        elif shutdown.done():
            await _cancel(tasks)
            with contextlib.suppress(ClientGone):
                await sink.status("server_shutdown")
            await _close(socket, CLOSE_GOING_AWAY)
        # else: the client left; its session ends silently
    except ClientGone:
        pass
    except DomainError as error:
        code = CLOSE_INTERNAL if isinstance(error, StoreUnavailable) else CLOSE_POLICY
        if isinstance(error, StoreUnavailable):
            log.warning("replay failed: database unavailable", reason=error.message)
            metrics.db_errors.labels(error.kind).inc()
        with contextlib.suppress(ClientGone):
            await sink.status("error", error=error.message)
        await _close(socket, code)
    except Exception:
        log.exception("replay failed")
        with contextlib.suppress(ClientGone):
            await sink.status("error", error="internal error")
        await _close(socket, CLOSE_INTERNAL)
    finally:
        await _cancel(tasks)
        registry.leave(stop)


async def _cancel(tasks: list[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task
