"""Polygon's (Massive's) stock stream, `WS /polygon/stocks`: status, auth, subscribe, and
`AM.<ticker>` minute aggregates from the live feed (the same subscription as `/ws/live`'s,
one per connection). JSON text frames, each an array of events."""

from typing import Any

import msgspec
from dishka.integrations.litestar import FromDishka, inject_websocket
from litestar import websocket
from litestar.di import NamedDependency

from marketdata.domain.bar_options import PLAIN
from marketdata.domain.candles import Candle, LiveEvent
from marketdata.domain.errors import DomainError, StoreUnavailable
from marketdata.domain.replay import LiveFeed, ReplaySource
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.vendors.alpaca_polygon_common import microseconds
from marketdata.entrypoints.vendors.alpaca_polygon_live import BarStream, LiveBars, Socket
from marketdata.entrypoints.websocket import ReplayRegistry

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


class Connection(BarStream):
    """One client: whether it authenticated, the tickers of its `AM.` subscriptions."""

    vendor = "polygon"

    def __init__(self, socket: Socket, bars: LiveBars, metrics: Metrics) -> None:
        super().__init__(socket, bars, metrics)
        self.authenticated = False
        self.tickers: frozenset[str] = frozenset()

    async def send(self, messages: list[Any]) -> None:
        await self.socket.send_text(_encode(messages).decode())

    def hello(self) -> list[Any]:
        return [Status("connected", "Connected Successfully")]

    def busy(self) -> list[Any]:
        return [Status("max_connections", "connection limit exceeded")]

    def too_large(self) -> list[Any]:
        return [Status("error", "message too large")]

    def slow(self, reason: str | None) -> list[Any]:
        return [Status("error", f"slow consumer: {reason}")]

    def failed(self) -> list[Any]:
        return [Status("error", "internal error")]

    def ended(self, reason: str) -> list[Any]:
        return [Status("error", f"the session ended: {reason}")]

    async def handle(self, data: str | bytes) -> None:
        try:
            action = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            await self.send([Status("error", f"invalid message: {error}")])
            return
        await self.apply(action)

    async def apply(self, action: Action) -> None:
        """Polygon's answer to an action: a status per topic; a bad one an `error`."""
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
            await self.bars.follow(sorted(tickers))
        except StoreUnavailable:
            await self.send([Status("error", "internal error: the database does not answer")])
            return
        except DomainError as failed:
            await self.send([Status("error", failed.message)])
            return
        self.tickers = frozenset(tickers)
        done = "subscribed to" if adding else "unsubscribed to"
        await self.send([*(Status("success", f"{done}: {t}") for t in served), *refused])

    def message_of(self, event: LiveEvent) -> MinuteAgg | None:
        """A minute's aggregate (a minute written again is sent again, as it now stands;
        deleted spans and forming bars have no Polygon event)."""
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
    await Connection(socket, bars, metrics).serve(registry)
