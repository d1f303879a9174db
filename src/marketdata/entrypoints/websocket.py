"""`WS /ws/replay`: the seed's replay protocol, extended (DESIGN "WebSocket replay").

Receiving and sending run side by side in one task group, so a control message takes effect
at once; a client that goes away ends its session and its database work at once.
"""

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any, Literal, cast

import msgspec
import structlog
from dishka.integrations.litestar import FromDishka, inject_websocket
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from marketdata.domain.candles import Candle, Removed
from marketdata.domain.errors import DomainError, StoreUnavailable
from marketdata.domain.replay import (
    Clock,
    Command,
    LiveFeed,
    ReplaySession,
    ReplaySource,
    ReplayStatus,
)
from marketdata.entrypoints.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    close_code_of,
)
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.replay_query import (
    decode_query,
    refusal,
    replay_request,
    status_message,
)
from marketdata.entrypoints.schemas import (
    CandleMessage,
    CandlesMessage,
    RemovedMessage,
)
from marketdata.entrypoints.settings import Settings

log = structlog.get_logger(logger_name="marketdata.replay")

MAX_CONTROL_MESSAGE = 4096
REFUSAL_SECONDS = 2.0

_encode = msgspec.json.Encoder().encode
_decode_command = msgspec.json.Decoder(Command).decode

Socket = WebSocket[Any, Any, Any]


class ClientGone(Exception):
    """The client disconnected while we were sending."""


class WebSocketSink:
    """ReplaySink over the socket. The replay and the acknowledgements of control messages
    are sent from two tasks without a lock: the server writes each message as one whole
    frame once the socket is writable, so two sends cannot interleave. With `batched`,
    candles go as CANDLES frames; otherwise each is a CANDLE frame of its own (the seed's)."""

    def __init__(self, socket: Socket, metrics: Metrics, *, batched: bool = False) -> None:
        self._socket = socket
        self._metrics = metrics
        self._batched = batched

    async def _send(self, payload: bytes) -> None:
        try:
            await self._socket.send_data(payload.decode(), mode="text")
        except (WebSocketDisconnect, OSError, RuntimeError) as error:
            raise ClientGone from error

    async def candles(self, seq: int, candles: list[Candle]) -> None:
        # `final` (forming bars) and `revision` go on the message (a kline's flag), not in
        # the candle; each candle its own (a step may hold stored and forming bars)
        finals = [c.final for c in candles]
        revisions = [c.revision for c in candles]
        if any(f is not None for f in finals) or any(revisions):
            candles = [
                msgspec.structs.replace(c, final=None, revision=0)
                if c.final is not None or c.revision
                else c
                for c in candles
            ]
        if self._batched:
            forming = [bool(f) for f in finals] if any(f is not None for f in finals) else None
            frame = CandlesMessage("CANDLES", candles, seq, forming)
            await self._send(_encode(frame))
        else:
            for i, candle in enumerate(candles):
                message = CandleMessage("CANDLE", candle, seq + i, finals[i], revisions[i] or None)
                await self._send(_encode(message))
        self._metrics.candles_sent += len(candles)

    async def removed(self, seq: int, removed: Removed) -> None:
        await self._send(
            _encode(
                RemovedMessage(
                    "REMOVED", removed.ticker, removed.tf_min, removed.start, removed.end, seq
                )
            )
        )

    async def status(self, status: ReplayStatus) -> None:
        await self._send(_encode(status_message(status)))


class ReplayRegistry:
    """The sessions of this process: caps their number, admits a few at a time to start
    (the others' handshakes wait, so that a burst of replays starts in turn instead of all
    at once), and ends them on shutdown."""

    def __init__(self, capacity: int, starting: int = 10) -> None:
        self.capacity = capacity
        self._starting = asyncio.Semaphore(starting)
        self._stops: set[asyncio.Event] = set()
        self._idle = asyncio.Event()
        self._closed = False

    @property
    def active(self) -> int:
        return len(self._stops)

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        async with self._starting:
            yield

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


async def client_messages(socket: Socket) -> AsyncIterator[str | bytes]:
    """What the client sends (text or bytes), until it disconnects."""
    while True:
        try:
            message = await socket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        yield cast("str | bytes", message.get("text") or message.get("bytes") or b"")


async def _receive_commands(socket: Socket, session: ReplaySession, sink: WebSocketSink) -> None:
    """Apply control messages until the client disconnects; bad ones get a STATUS error."""
    async for data in client_messages(socket):
        if len(data) > MAX_CONTROL_MESSAGE:
            error = f"control message over {MAX_CONTROL_MESSAGE} bytes"
            await sink.status(session.status("error", error=error))
            continue
        try:
            command = _decode_command(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            await sink.status(session.status("error", error=f"invalid control message: {error}"))
            continue
        await session.apply(command)


async def _play(
    socket: Socket, session: ReplaySession, sink: WebSocketSink, stop: asyncio.Event
) -> Literal["ended", "left", "shutdown", "cut"]:
    """Play until the replay ends, the client leaves, it is cut for reading too slowly (even
    while a send to it waits) or the server shuts down: the replay, the client's commands
    and those signals in one task group, the first to finish ending the others. Raises what
    the replay raised."""
    async with asyncio.TaskGroup() as group:
        run = group.create_task(session.run())
        receive = group.create_task(_receive_commands(socket, session, sink))
        shutdown = group.create_task(stop.wait())
        cut = group.create_task(session.cut.wait())
        await asyncio.wait((run, receive, shutdown, cut), return_when=asyncio.FIRST_COMPLETED)
        for task in (run, receive, shutdown, cut):
            task.cancel()
    if not run.cancelled():
        return "ended"
    if not cut.cancelled():
        return "cut"
    return "shutdown" if not shutdown.cancelled() else "left"


async def _close(socket: Socket, code: int) -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await socket.close(code=code)


async def _refuse(socket: Socket, sink: WebSocketSink, status: ReplayStatus, code: int) -> None:
    """A STATUS saying why, then the close; bounded in time (a client that stopped reading
    does not hold the server)."""
    with contextlib.suppress(ClientGone, TimeoutError):
        async with asyncio.timeout(REFUSAL_SECONDS):
            await sink.status(status)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REFUSAL_SECONDS):
            await _close(socket, code)


@websocket("/ws/replay")
@inject_websocket
async def replay(
    socket: Socket,
    settings: FromDishka[Settings],
    source: FromDishka[ReplaySource],
    live: FromDishka[LiveFeed],
    clock: FromDishka[Clock],
    registry: FromDishka[ReplayRegistry],
    metrics: FromDishka[Metrics],
) -> None:
    """History at its pace; with `live=true`, then what is committed, as it comes."""
    await serve(socket, settings, source, live, clock, registry, metrics, history=True)


@websocket("/ws/live")
@inject_websocket
async def live_candles(
    socket: Socket,
    settings: FromDishka[Settings],
    source: FromDishka[ReplaySource],
    live: FromDishka[LiveFeed],
    clock: FromDishka[Clock],
    registry: FromDishka[ReplayRegistry],
    metrics: FromDishka[Metrics],
) -> None:
    """Every candle committed from now on, by any writer of the database."""
    await serve(socket, settings, source, live, clock, registry, metrics, history=False)


async def serve(
    socket: Socket,
    settings: Settings,
    source: ReplaySource,
    live: LiveFeed,
    clock: Clock,
    registry: "ReplayRegistry",
    metrics: Metrics,
    *,
    history: bool,
) -> None:
    params = dict(socket.query_params)
    async with registry.admitted():
        await socket.accept()
        sink = WebSocketSink(socket, metrics, batched=bool(params.get("batch")))
        try:
            request = replay_request(decode_query(params), settings)
        except DomainError as error:
            await _refuse(socket, sink, refusal(params, "error", error.message), CLOSE_POLICY)
            return
        stop = registry.enter()
        if stop is None:
            busy = (
                f"too many replay sessions (WS_MAX_SESSIONS={registry.capacity}); try again later"
            )
            await _refuse(socket, sink, refusal(params, "server_busy", busy), CLOSE_TRY_AGAIN)
            return
        try:
            session = ReplaySession(
                source,
                clock,
                sink,
                request.selection,
                request.pacing,
                lockstep=request.lockstep,
                from_seq=request.from_seq,
                # a batch is sent as soon as it is read: pages of ten batches keep the
                # reads fewer than the frames
                page_size=max(settings.ws_page_size, 10 * (request.batch or 0)),
                prefetch_at=random.uniform(0.25, 0.75),  # noqa: S311 (spreads load, no secret)
                batch=request.batch,
                live=live if request.live or not history else None,
                history=history,
            )
            await session.prepare()
        except DomainError as error:
            registry.leave(stop)
            _note_failure(error, metrics)
            await _refuse(
                socket, sink, refusal(params, "error", error.message), close_code_of(error)
            )
            return
    try:
        ended = await _play(socket, session, sink, stop)
        if ended == "ended":
            await _close(socket, CLOSE_NORMAL)
        elif ended == "shutdown":
            await _refuse(socket, sink, session.status("server_shutdown"), CLOSE_GOING_AWAY)
        elif ended == "cut":
            slow = session.status(
                "error", error=f"the client reads too slowly: {session.cut_reason}"
            )
            await _refuse(socket, sink, slow, CLOSE_POLICY)
    except* ClientGone:
        pass
    except* DomainError as failed:
        failure = cast(DomainError, failed.exceptions[0])
        _note_failure(failure, metrics)
        await _refuse(
            socket, sink, session.status("error", error=failure.message), close_code_of(failure)
        )
    except* Exception:
        log.exception("replay failed")
        await _refuse(socket, sink, session.status("error", error="internal error"), CLOSE_INTERNAL)
    finally:
        registry.leave(stop)


def _note_failure(error: DomainError, metrics: Metrics) -> None:
    if isinstance(error, StoreUnavailable):
        log.warning("replay failed: database unavailable", reason=error.message)
        metrics.db_errors.labels(error.kind).inc()
