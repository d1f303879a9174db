"""Alpaca's real-time stock stream, `WS /alpaca/v2/{feed}`: connected, auth, subscribe, and
`"T":"b"` minute bars (`"u"` for a minute bar written again), from the live feed (the same
subscription as `/ws/live`'s, one per connection). MessagePack when the client's handshake
says `Content-Type: application/msgpack` (alpaca-py's does; `t` is then a msgpack
Timestamp), JSON text otherwise."""

import contextlib
import enum
from datetime import datetime
from typing import Annotated, Any, cast

import msgspec
import structlog
from dishka.integrations.litestar import FromDishka, inject_websocket
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import PathParameter

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
from marketdata.entrypoints.vendors.alpaca_polygon_live import LiveBars, farewell, first_done
from marketdata.entrypoints.websocket import ReplayRegistry

log = structlog.get_logger(logger_name="marketdata.vendors")

Socket = WebSocket[Any, Any, Any]

FEEDS = frozenset({"iex", "sip", "delayed_sip", "boats", "overnight", "otc"})
MAX_MESSAGE = 65536
BATCH = 1000  # bars per frame at most
_CHANNELS = (
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "corrections",
    "cancelErrors",
)


# -- the wire ------------------------------------------------------------------------------


class Auth(msgspec.Struct, tag_field="action", tag="auth"):
    key: str = ""
    secret: str = ""


class _Symbols(msgspec.Struct):
    """Symbols by channel; only `bars` and `updatedBars` are served (others are ignored)."""

    bars: list[str] = []
    updatedBars: list[str] = []


class Subscribe(_Symbols, tag_field="action", tag="subscribe"):
    pass


class Unsubscribe(_Symbols, tag_field="action", tag="unsubscribe"):
    pass


Action = Auth | Subscribe | Unsubscribe


class Control(msgspec.Struct, omit_defaults=True, rename={"kind": "T"}):
    kind: str
    msg: str | None = None
    code: int | None = None


class Subscriptions(msgspec.Struct, rename={"kind": "T"}):
    """What the connection is subscribed to, by channel (those not served stay empty)."""

    kind: str
    trades: list[str]
    quotes: list[str]
    bars: list[str]
    updatedBars: list[str]
    dailyBars: list[str]
    statuses: list[str]
    lulds: list[str]
    corrections: list[str]
    cancelErrors: list[str]


class StreamBar(
    msgspec.Struct,
    rename={
        "kind": "T",
        "symbol": "S",
        "open": "o",
        "high": "h",
        "low": "l",
        "close": "c",
        "volume": "v",
        "time": "t",
        "trades": "n",
        "vwap": "vw",
    },
):
    """`b` a minute bar, `u` one written again. `n` and `vw` are not stored: null."""

    kind: str
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    time: datetime
    trades: int | None = None
    vwap: float | None = None


class Encoding(enum.Enum):
    JSON = "json"
    MSGPACK = "msgpack"


_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()  # datetimes as the Timestamp extension (-1)
_from_json = msgspec.json.Decoder(Action)
_from_msgpack = msgspec.msgpack.Decoder(Action)


def decode_action(data: str | bytes) -> Action:
    """A client message: MessagePack (binary), or JSON (text, or binary that is not
    MessagePack)."""
    if isinstance(data, bytes):
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            return _from_msgpack.decode(data)
    return _from_json.decode(data)


# -- one connection ------------------------------------------------------------------------


class Connection:
    """One client: its encoding, whether it authenticated, what it subscribed to."""

    def __init__(self, socket: Socket, bars: LiveBars, metrics: Metrics) -> None:
        self._socket = socket
        self._bars = bars
        self._metrics = metrics
        wanted = socket.headers.get("content-type", "").split(";")[0].strip().lower()
        self.encoding = Encoding.MSGPACK if wanted == "application/msgpack" else Encoding.JSON
        self.authenticated = False
        self.channels: dict[str, set[str]] = {"bars": set(), "updatedBars": set()}

    async def send(self, messages: list[Any]) -> None:
        if self.encoding is Encoding.MSGPACK:
            await self._socket.send_bytes(_msgpack.encode(messages))
        else:
            await self._socket.send_text(_json.encode(messages).decode())

    async def error(self, code: int, message: str) -> None:
        await self.send([Control("error", message, code)])

    async def receive(self) -> None:
        """Actions until the client leaves; bad ones get Alpaca's error and change nothing."""
        while True:
            try:
                message = await self._socket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            data = cast("str | bytes", message.get("text") or message.get("bytes") or b"")
            if len(data) > MAX_MESSAGE:
                await self.error(400, "invalid syntax: message too large")
                continue
            try:
                action = decode_action(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                await self.error(400, "invalid syntax")
                continue
            await self.apply(action)

    async def apply(self, action: Action) -> None:
        if isinstance(action, Auth):
            if self.authenticated:
                await self.error(403, "already authenticated")
                return
            self.authenticated = True  # any key: reads are open, as on our own API
            await self.send([Control("success", "authenticated")])
            return
        if not self.authenticated:
            await self.error(401, "not authenticated")
            return
        asked = {"bars": set(action.bars), "updatedBars": set(action.updatedBars)}
        if "*" in asked["bars"] | asked["updatedBars"]:
            await self.error(410, 'invalid subscribe action: "*" (every symbol) is not served')
            return
        adding = isinstance(action, Subscribe)
        channels = {
            name: (held | asked[name]) if adding else (held - asked[name])
            for name, held in self.channels.items()
        }
        try:
            await self._bars.follow(sorted(channels["bars"] | channels["updatedBars"]))
        except StoreUnavailable:
            await self.error(500, "internal error: the database does not answer")
            return
        except DomainError as failed:
            await self.error(400, f"invalid subscribe action: {failed.message}")
            return
        self.channels = channels
        await self.send([self.subscriptions()])

    def subscriptions(self) -> Subscriptions:
        lists = {name: sorted(self.channels.get(name, ())) for name in _CHANNELS}
        return Subscriptions("subscription", **lists)

    async def deliver(self) -> None:
        """Minute bars as the live feed hands them over, each to the channels that want
        it: a bar's first version to `bars`, later ones to `updatedBars`; deleted spans have
        no Alpaca message."""
        while True:
            messages = [m for e in await self._bars.next(BATCH) if (m := self._bar(e))]
            if messages:
                await self.send(messages)
                self._metrics.candles_sent += len(messages)

    def _bar(self, event: LiveEvent) -> StreamBar | None:
        if not isinstance(event, Candle) or event.final is False:
            return None
        kind, channel = ("u", "updatedBars") if event.revision else ("b", "bars")
        if event.ticker not in self.channels[channel]:
            return None
        c = event
        return StreamBar(kind, c.ticker, c.open, c.high, c.low, c.close, c.volume, c.ts)


@websocket("/v2/{feed:str}")
@inject_websocket
async def stock_stream(
    socket: Socket,
    feed: Annotated[str, PathParameter(description="iex, sip, delayed_sip, boats, ...")],
    live: NamedDependency[LiveFeed],
    source: FromDishka[ReplaySource],
    registry: FromDishka[ReplayRegistry],
    metrics: FromDishka[Metrics],
) -> None:
    """Alpaca's stock stream: minute bars of the subscribed symbols, as they are written."""
    await socket.accept()
    bars = LiveBars(live, source, tf_min=1, options=PLAIN)
    connection = Connection(socket, bars, metrics)
    stop = registry.enter()
    try:
        if feed not in FEEDS:
            known = ", ".join(sorted(FEEDS))
            await farewell(socket, CLOSE_POLICY, connection.error(404, f"unknown feed: {known}"))
            return
        if stop is None:
            busy = connection.error(406, "connection limit exceeded")
            await farewell(socket, CLOSE_TRY_AGAIN, busy)
            return
        await connection.send([Control("success", "connected")])
        if socket.headers.get("apca-api-key-id"):  # keys in the handshake: authenticated
            await connection.apply(Auth())
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
                socket, CLOSE_POLICY, connection.error(407, f"slow client: {bars.reason}")
            )
    except* (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client went away while we were sending
    except* TooSlow:
        await farewell(socket, CLOSE_POLICY, connection.error(407, f"slow client: {bars.reason}"))
    except* Exception:
        log.exception("alpaca stream failed")
        await farewell(socket, CLOSE_INTERNAL, connection.error(500, "internal error"))
    finally:
        bars.close()
        if stop is not None:
            registry.leave(stop)
