"""Polygon's (Massive's) stock stream, `WS /polygon/stocks`: status, auth, subscribe, and
`AM.<ticker>` minute aggregates from the live feed (the same subscription as `/ws/live`'s,
one per connection). JSON text frames, each an array of events."""

from typing import Any, cast

import msgspec
import structlog
from dishka.integrations.litestar import FromDishka, inject_websocket
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from marketdata.domain.bar_options import PLAIN
from marketdata.domain.candles import Candle, LiveEvent
from marketdata.domain.errors import DomainError, StoreUnavailable, TooSlow
from marketdata.domain.replay import LiveFeed, ReplaySource
from marketdata.entrypoints.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
)
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.vendors.alpaca_polygon_common import microseconds
from marketdata.entrypoints.vendors.alpaca_polygon_live import LiveBars, farewell, first_done
from marketdata.entrypoints.websocket import ReplayRegistry

log = structlog.get_logger(logger_name="marketdata.vendors")

Socket = WebSocket[Any, Any, Any]

MAX_MESSAGE = 65536
BATCH = 1000  # aggregates per frame at most
MINUTE_MS = 60_000


class Auth(msgspec.Struct, tag_field="action", tag="auth"):
    params: str = ""


class Subscribe(msgspec.Struct, tag_field="action", tag="subscribe"):
    params: str = ""  # "AM.AAPL,AM.MSFT"


class Unsubscribe(msgspec.Struct, tag_field="action", tag="unsubscribe"):
    params: str = ""


Action = Auth | Subscribe | Unsubscribe
_decode = msgspec.json.Decoder(Action).decode
_encode = msgspec.json.Encoder().encode


class Status(msgspec.Struct):
    status: str
    message: str
    ev: str = "status"


class MinuteAgg(
    msgspec.Struct,
    rename={
        "symbol": "sym",
        "volume": "v",
        "open": "o",
        "close": "c",
        "high": "h",
        "low": "l",
        "start": "s",
        "end": "e",
    },
):
    """An `AM` event: a minute's aggregate, `s` and `e` its window in milliseconds. What is
    not stored (`av`, `op`, `vw`, `a`, `z`) is left out."""

    symbol: str
    volume: float
    open: float
    close: float
    high: float
    low: float
    start: int
    end: int
    ev: str = "AM"


def aggregate_of(candle: Candle) -> MinuteAgg:
    start = microseconds(candle.ts) // 1000
    return MinuteAgg(
        candle.ticker,
        candle.volume,
        candle.open,
        candle.close,
        candle.high,
        candle.low,
        start,
        start + MINUTE_MS,
    )


class Connection:
    """One client: whether it authenticated, the tickers of its `AM.` subscriptions."""

    def __init__(self, socket: Socket, bars: LiveBars, metrics: Metrics) -> None:
        self._socket = socket
        self._bars = bars
        self._metrics = metrics
        self.authenticated = False
        self.tickers: frozenset[str] = frozenset()

    async def send(self, events: list[Any]) -> None:
        await self._socket.send_text(_encode(events).decode())

    async def receive(self) -> None:
        """Actions until the client leaves; bad ones get a status `error`."""
        while True:
            try:
                message = await self._socket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            data = cast("str | bytes", message.get("text") or message.get("bytes") or b"")
            if len(data) > MAX_MESSAGE:
                await self.send([Status("error", "message too large")])
                continue
            try:
                action = _decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                await self.send([Status("error", f"invalid message: {error}")])
                continue
            await self.apply(action)

    async def apply(self, action: Action) -> None:
        if isinstance(action, Auth):
            self.authenticated = True  # any key: reads are open, as on our own API
            await self.send([Status("auth_success", "authenticated")])
            return
        if not self.authenticated:
            await self.send([Status("error", "not authorized")])
            return
        topics = list(dict.fromkeys(t.strip() for t in action.params.split(",") if t.strip()))
        served = [t for t in topics if t.startswith("AM.") and t not in ("AM.", "AM.*")]
        refused = [Status("error", f"not served: {t} (only AM.<ticker>)") for t in topics]
        refused = [r for t, r in zip(topics, refused, strict=True) if t not in served]
        named = {t.removeprefix("AM.") for t in served}
        adding = isinstance(action, Subscribe)
        tickers = self.tickers | named if adding else self.tickers - named
        try:
            await self._bars.follow(sorted(tickers))
        except StoreUnavailable:
            await self.send([Status("error", "internal error: the database does not answer")])
            return
        except DomainError as failed:
            await self.send([Status("error", failed.message)])
            return
        self.tickers = frozenset(tickers)
        done = "subscribed to" if adding else "unsubscribed to"
        await self.send([*(Status("success", f"{done}: {t}") for t in served), *refused])

    async def deliver(self) -> None:
        """Minute aggregates as the live feed hands them over (a minute written again is
        sent again, as it now stands; deleted spans have no Polygon event)."""
        while True:
            events = [a for e in await self._bars.next(BATCH) if (a := self._aggregate(e))]
            if events:
                await self.send(events)
                self._metrics.candles_sent += len(events)

    def _aggregate(self, event: LiveEvent) -> MinuteAgg | None:
        if not isinstance(event, Candle) or event.final is False:
            return None
        return aggregate_of(event) if event.ticker in self.tickers else None


@websocket("/stocks")
@inject_websocket
async def stocks_stream(
    socket: Socket,
    live: NamedDependency[LiveFeed],
    source: FromDishka[ReplaySource],
    registry: FromDishka[ReplayRegistry],
    metrics: FromDishka[Metrics],
) -> None:
    """Polygon's stock stream: minute aggregates of the subscribed tickers, as written."""
    await socket.accept()
    bars = LiveBars(live, source, tf_min=1, options=PLAIN)
    connection = Connection(socket, bars, metrics)
    stop = registry.enter()
    try:
        if stop is None:
            busy = connection.send([Status("max_connections", "connection limit exceeded")])
            await farewell(socket, CLOSE_TRY_AGAIN, busy)
            return
        await connection.send([Status("connected", "Connected Successfully")])
        ended = await first_done(
            {
                "left": connection.receive(),
                "delivered": connection.deliver(),
                "shutdown": stop.wait(),
                "cut": bars.cut.wait(),
            }
        )
        if ended == "shutdown":
            await farewell(socket, CLOSE_GOING_AWAY)
        elif ended == "cut":
            await farewell(
                socket,
                CLOSE_POLICY,
                connection.send([Status("error", f"slow consumer: {bars.reason}")]),
            )
    except* (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client went away while we were sending
    except* TooSlow:
        await farewell(
            socket,
            CLOSE_POLICY,
            connection.send([Status("error", f"slow consumer: {bars.reason}")]),
        )
    except* Exception:
        log.exception("polygon stream failed")
        await farewell(socket, CLOSE_INTERNAL, connection.send([Status("error", "internal error")]))
    finally:
        bars.close()
        if stop is not None:
            registry.leave(stop)
