"""Binance's market streams over our live feed: `WS /binance/ws[/<stream>/...]` (raw
events), `WS /binance/stream?streams=<a>/<b>` (combined: `{"stream","data"}`), and the
live subscription requests SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY and
GET_PROPERTY (their messages: `binance_klines`). A stream
`<symbol>@kline_<interval>[@+08:00]` is a live-only ReplaySession (what `/ws/live` is) of
that series, its bars built as history builds them: a stored candle written is a final
kline (`"x":true`), a resampled bar comes as it forms, each of its source candles an update
(`"x":false`) until its last (`"x":true`).

Each connection's receiving and its streams run in one task group: a client that goes
away, or is cut for reading too slowly, ends them all. Protocol pings are answered by the
server (uvicorn), which also pings every 20 s."""

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote

import msgspec
import structlog
from dishka.integrations.litestar import FromDishka, inject_websocket
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from marketdata.domain.bar_options import BarOptions
from marketdata.domain.candles import Candle, Removed
from marketdata.domain.errors import DomainError
from marketdata.domain.replay import (
    Clock,
    LiveFeed,
    Pacing,
    ReplaySelection,
    ReplaySession,
    ReplaySource,
    ReplayStatus,
    Stop,
)
from marketdata.entrypoints.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    close_code_of,
)
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.vendors.binance_errors import BinanceError
from marketdata.entrypoints.vendors.binance_klines import (
    Combined,
    StreamName,
    decode_request,
    encode,
    kline_event,
    stream_of,
)
from marketdata.entrypoints.vendors.binance_wire import micro_unit
from marketdata.entrypoints.vendors.common import (
    Present,
    time_of,
)
from marketdata.entrypoints.websocket import ReplayRegistry, client_messages

log = structlog.get_logger(logger_name="marketdata.binance")

MAX_STREAMS = 1024  # per connection, as Binance allows
MAX_REQUEST = 65536  # bytes of one request (a SUBSCRIBE of many streams)
_LIVE = Pacing(step_seconds=1.0)  # a live-only session sends as candles come: never paced
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")

Socket = WebSocket[Any, Any, Any]


class ClientGone(Exception):
    """The client disconnected while we were sending."""


class Streams:
    """One connection's streams: a live-only ReplaySession each, in the connection's task
    group, its bars sent as kline events."""

    def __init__(
        self,
        socket: Socket,
        group: asyncio.TaskGroup,
        source: ReplaySource,
        live: LiveFeed,
        clock: Clock,
        present: Present,
        metrics: Metrics,
        *,
        combined: bool,
        micro: bool = False,
    ) -> None:
        self._socket = socket
        self._micro = micro  # times in µs (`timeUnit=MICROSECOND`)
        self._group = group
        self._source = source
        self._live = live
        self._clock = clock
        self._present = present
        self._metrics = metrics
        self.combined = combined
        self._sessions: dict[str, ReplaySession] = {}
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def names(self) -> list[str]:
        return list(self._sessions)

    async def send(self, message: object) -> None:
        try:
            await self._socket.send_data(encode(message).decode(), mode="text")
        except (WebSocketDisconnect, OSError, RuntimeError) as error:
            raise ClientGone from error

    async def subscribe(self, names: Sequence[object]) -> str | None:
        """Start the streams not running yet; once it returns, what is committed reaches
        them. An error message (nothing started) when a name is not a stream we serve."""
        wanted = [stream_of(n) if isinstance(n, str) else None for n in names]
        streams = [s for s in wanted if s is not None]
        if len(streams) < len(wanted):
            return "Invalid request: invalid stream"
        fresh = list({s.name: s for s in streams if s.name not in self._sessions}.values())
        if len(self._sessions) + len(fresh) > MAX_STREAMS:
            return f"Invalid request: at most {MAX_STREAMS} streams per connection"
        sessions = []
        for stream in fresh:
            sink = KlineSink(self, stream)
            selection = ReplaySelection(
                (stream.ticker,), (stream.tf_min,), options=BarOptions(tz=stream.tz), forming=True
            )
            session = ReplaySession(
                self._source, self._clock, sink, selection, _LIVE, live=self._live, history=False
            )
            await session.prepare()
            if not all(s.available for s in session.selection.streams):
                return "Invalid request: invalid stream"  # an unknown symbol, or not served
            sessions.append((stream, sink, session))
        for stream, sink, session in sessions:
            self._sessions[stream.name] = session
            task = self._group.create_task(session.run())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            await sink.live.wait()  # subscribed to the feed
        return None

    def cancel(self) -> None:
        """End every stream at once (the connection is over)."""
        for task in self._running:
            task.cancel()

    async def unsubscribe(self, names: Sequence[object]) -> None:
        for name in names:
            session = self._sessions.pop(name, None) if isinstance(name, str) else None
            if session is not None:
                await session.apply(Stop())

    async def kline(self, stream: StreamName, candles: list[Candle]) -> None:
        at = time_of(self._present(), self._micro)
        for candle in candles:
            event = kline_event(stream, candle, at, self._micro)
            await self.send(Combined(stream.name, event) if self.combined else event)
        self._metrics.candles_sent += len(candles)

    async def answer(self, data: str | bytes) -> None:
        """One request: answered with its `result`, or an `error` naming what is wrong."""
        try:
            request = decode_request(data)
        except msgspec.ValidationError as error:
            await self._error(2, f"Invalid request: {error}", None)
            return
        except msgspec.DecodeError as error:
            await self._error(3, f"Invalid JSON: {error}", None)
            return
        params = request.params
        result: object = None
        match request.method:
            case "SUBSCRIBE":
                if (problem := await self.subscribe(params)) is not None:
                    await self._error(2, problem, request.id)
                    return
            case "UNSUBSCRIBE":
                await self.unsubscribe(params)
            case "LIST_SUBSCRIPTIONS":
                result = self.names
            case "SET_PROPERTY" if params[:1] == ["combined"] and len(params) == 2:
                if not isinstance(params[1], bool):
                    await self._error(1, "Invalid value type: expected Boolean", request.id)
                    return
                self.combined = params[1]
            case "GET_PROPERTY" if params == ["combined"]:
                result = self.combined
            case "SET_PROPERTY" | "GET_PROPERTY":
                await self._error(0, "Unknown property", request.id)
                return
            case method:
                await self._error(
                    2,
                    f"Invalid request: unknown variant {method!r}, expected one of "
                    + ", ".join(METHODS),
                    request.id,
                )
                return
        await self.send({"result": result, "id": request.id})

    async def _error(self, code: int, message: str, request_id: int | str | None) -> None:
        await self.send({"error": {"code": code, "msg": message}, "id": request_id})

    async def receive(self) -> None:
        """Answer requests until the client goes away."""
        async for data in client_messages(self._socket):
            if len(data) > MAX_REQUEST:
                await self._error(2, f"Invalid request: over {MAX_REQUEST} bytes", None)
                continue
            await self.answer(data)


class KlineSink:
    """The ReplaySink of one stream: its bars as kline events. Binance has no event for
    deleted candles: bars of a deleted span that remain come again, as corrections do."""

    def __init__(self, streams: Streams, stream: StreamName) -> None:
        self._streams = streams
        self._stream = stream
        self.live = asyncio.Event()  # set once the session receives the live feed

    async def candles(self, seq: int, candles: list[Candle]) -> None:
        await self._streams.kline(self._stream, candles)

    async def removed(self, seq: int, removed: Removed) -> None:
        return None

    async def status(self, status: ReplayStatus) -> None:
        if status.message == "live":
            self.live.set()


async def _close(socket: Socket, code: int, reason: str = "") -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await socket.close(code=code, reason=reason[:120])


async def serve_streams(
    socket: Socket,
    names: Sequence[str],
    *,
    combined: bool,
    source: ReplaySource,
    live: LiveFeed,
    clock: Clock,
    present: Present,
    registry: ReplayRegistry,
    metrics: Metrics,
) -> None:
    """One connection: the streams named in its URL (what is not a stream we serve, such
    as ccxt's `/ws/0`, is ignored), then what it asks for, until it leaves, is cut for
    reading too slowly or the server shuts down."""
    async with registry.admitted():
        await socket.accept()
        stop = registry.enter()
    if stop is None:
        await _close(socket, CLOSE_TRY_AGAIN, "too many connections; try again later")
        return
    try:
        micro = micro_unit(socket.query_params.get("timeUnit"), "timeUnit")
    except BinanceError as refused:
        registry.leave(stop)
        await _close(socket, CLOSE_POLICY, refused.msg)
        return
    try:
        async with asyncio.TaskGroup() as group:
            streams = Streams(
                socket,
                group,
                source,
                live,
                clock,
                present,
                metrics,
                combined=combined,
                micro=micro,
            )
            for name in names:  # each on its own: one that is not served stops no other
                await streams.subscribe([name])
            receive = group.create_task(streams.receive())
            shutdown = group.create_task(stop.wait())
            await asyncio.wait((receive, shutdown), return_when=asyncio.FIRST_COMPLETED)
            receive.cancel()
            shutdown.cancel()
            streams.cancel()
        if stop.is_set():
            await _close(socket, CLOSE_GOING_AWAY, "server shutdown")
    except* ClientGone:
        pass
    except* DomainError as failed:
        error = cast(DomainError, failed.exceptions[0])
        log.info("binance stream ended", reason=error.message)
        await _close(socket, close_code_of(error), error.message)
    finally:
        registry.leave(stop)


@websocket(["/ws", "/ws/{streams:path}"])
@inject_websocket
async def raw_streams(
    socket: Socket,
    source: FromDishka[ReplaySource],
    live: NamedDependency[LiveFeed],
    clock: FromDishka[Clock],
    present: NamedDependency[Present],
    registry: FromDishka[ReplayRegistry],
    metrics: FromDishka[Metrics],
) -> None:
    """Raw streams: each event as it is; streams from the path, `/ws/<a>/<b>`, and asked for."""
    path = str(socket.path_params.get("streams") or "")
    names = [part for part in path.split("/") if part]
    await serve_streams(
        socket,
        names,
        combined=False,
        source=source,
        live=live,
        clock=clock,
        present=present,
        registry=registry,
        metrics=metrics,
    )


@websocket("/stream")
@inject_websocket
async def combined_streams(
    socket: Socket,
    source: FromDishka[ReplaySource],
    live: NamedDependency[LiveFeed],
    clock: FromDishka[Clock],
    present: NamedDependency[Present],
    registry: FromDishka[ReplayRegistry],
    metrics: FromDishka[Metrics],
) -> None:
    """Combined streams, `?streams=<a>/<b>`: each event as `{"stream","data"}`."""
    names = [part for part in _query_value(socket, "streams").split("/") if part]
    await serve_streams(
        socket,
        names,
        combined=True,
        source=source,
        live=live,
        clock=clock,
        present=present,
        registry=registry,
        metrics=metrics,
    )


def _query_value(socket: Socket, name: str) -> str:
    """A parameter of the query string as Binance reads it: percent-decoded, a `+` itself
    (the offset of `<symbol>@kline_1h@+08:00`, as clients send it unencoded), not a form's
    space."""
    for pair in socket.scope["query_string"].decode("latin-1").split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == name:
            return unquote(value)
    return ""
