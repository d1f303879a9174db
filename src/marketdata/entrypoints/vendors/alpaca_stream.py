"""Alpaca's real-time stock stream, `WS /alpaca/v2/{feed}`: connected, auth, subscribe, and
`"T":"b"` minute bars (`"u"` for a minute bar written again), from the live feed (the same
subscription as `/ws/live`'s, one per connection). MessagePack when the client's handshake
says `Content-Type: application/msgpack` (alpaca-py's does; `t` is then a msgpack
Timestamp), JSON text otherwise."""

import contextlib
import enum
from datetime import datetime
from typing import Annotated, Any

import msgspec
from dishka.integrations.litestar import FromDishka, inject_websocket
from litestar import websocket
from litestar.di import NamedDependency
from litestar.params import PathParameter

from marketdata.domain.bar_options import PLAIN
from marketdata.domain.candles import Candle, LiveEvent
from marketdata.domain.errors import DomainError, StoreUnavailable
from marketdata.domain.replay import LiveFeed, ReplaySource
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.vendors.alpaca_polygon_live import BarStream, LiveBars, Socket
from marketdata.entrypoints.websocket import ReplayRegistry

FEEDS = frozenset({"iex", "sip", "delayed_sip", "boats", "overnight", "otc"})
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


class Connection(BarStream):
    """One client: its encoding, whether it authenticated, what it subscribed to."""

    vendor = "alpaca"

    def __init__(self, socket: Socket, bars: LiveBars, metrics: Metrics, feed: str) -> None:
        super().__init__(socket, bars, metrics)
        self._feed = feed
        wanted = socket.headers.get("content-type", "").split(";")[0].strip().lower()
        self.encoding = Encoding.MSGPACK if wanted == "application/msgpack" else Encoding.JSON
        self.authenticated = False
        self.channels: dict[str, set[str]] = {"bars": set(), "updatedBars": set()}
        self._newest: dict[str, datetime] = {}  # per symbol: the newest minute it was sent

    async def send(self, messages: list[Any]) -> None:
        if self.encoding is Encoding.MSGPACK:
            await self.socket.send_bytes(_msgpack.encode(messages))
        else:
            await self.socket.send_text(_json.encode(messages).decode())

    @staticmethod
    def error(code: int, message: str) -> list[Any]:
        return [Control("error", message, code)]

    def hello(self) -> list[Any]:
        return [Control("success", "connected")]

    def refusal(self) -> list[Any] | None:
        if self._feed in FEEDS:
            return None
        return self.error(404, f"unknown feed: {', '.join(sorted(FEEDS))}")

    def busy(self) -> list[Any]:
        return self.error(406, "connection limit exceeded")

    def too_large(self) -> list[Any]:
        return self.error(400, "invalid syntax: message too large")

    def slow(self, reason: str | None) -> list[Any]:
        return self.error(407, f"slow client: {reason}")

    def failed(self) -> list[Any]:
        return self.error(500, "internal error")

    def ended(self, reason: str) -> list[Any]:
        return self.error(410, f"the session ended: {reason}")  # Alpaca has no code of its own

    async def greet(self) -> None:
        await super().greet()
        if self.socket.headers.get("apca-api-key-id"):  # keys in the handshake: authenticated
            await self.apply(Auth())

    async def handle(self, data: str | bytes) -> None:
        try:
            action = decode_action(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            await self.send(self.error(400, "invalid syntax"))
            return
        await self.apply(action)

    async def apply(self, action: Action) -> None:
        """Alpaca's answer to an action; a bad one gets its error and changes nothing."""
        if isinstance(action, Auth):
            if self.authenticated:
                await self.send(self.error(403, "already authenticated"))
                return
            self.authenticated = True  # any key: reads are open, as on our own API
            await self.send([Control("success", "authenticated")])
            return
        if not self.authenticated:
            await self.send(self.error(401, "not authenticated"))
            return
        asked = {"bars": set(action.bars), "updatedBars": set(action.updatedBars)}
        if "*" in asked["bars"] | asked["updatedBars"]:
            refused = 'invalid subscribe action: "*" (every symbol) is not served'
            await self.send(self.error(410, refused))
            return
        adding = isinstance(action, Subscribe)
        channels = {
            name: (held | asked[name]) if adding else (held - asked[name])
            for name, held in self.channels.items()
        }
        try:
            await self.bars.follow(sorted(channels["bars"] | channels["updatedBars"]))
        except StoreUnavailable:
            await self.send(self.error(500, "internal error: the database does not answer"))
            return
        except DomainError as failed:
            await self.send(self.error(400, f"invalid subscribe action: {failed.message}"))
            return
        self.channels = channels
        await self.send([self.subscriptions()])

    def subscriptions(self) -> Subscriptions:
        lists = {name: sorted(self.channels.get(name, ())) for name in _CHANNELS}
        return Subscriptions("subscription", **lists)

    def message_of(self, event: LiveEvent) -> StreamBar | None:
        """A minute bar to the channel that wants it: to `bars` as first written, or newer
        than any this client was sent (a minute written and corrected before the listener
        read it comes once, at revision 1: new to this client); a correction to
        `updatedBars`; deleted spans and forming bars have no Alpaca message."""
        if not isinstance(event, Candle) or event.final is False:
            return None
        newest = self._newest.get(event.ticker)
        if not event.revision or newest is None or event.ts > newest:
            kind, channel = "b", "bars"
            self._newest[event.ticker] = max(event.ts, newest or event.ts)
        else:
            kind, channel = "u", "updatedBars"
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
    await Connection(socket, bars, metrics, feed).serve(registry)
