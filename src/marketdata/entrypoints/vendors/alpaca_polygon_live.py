"""A vendor stream connection's live bars through the LiveFeed (the one `/ws/live` uses),
and how such a connection runs and ends (`BarStream`: Alpaca's and Polygon's streams say
it in their own words)."""

import abc
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, cast

import structlog
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from marketdata.domain.bar_options import PLAIN, BarOptions
from marketdata.domain.candles import LiveEvent
from marketdata.domain.errors import InvalidParameter, NotFound, TooSlow
from marketdata.domain.replay import (
    MAX_TICKERS,
    LiveFeed,
    ReplaySelection,
    ReplaySource,
    Stream,
    Subscription,
    Wake,
    planned,
)
from marketdata.entrypoints.errors import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_RESTART,
    CLOSE_TRY_AGAIN,
)
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.websocket import ReplayRegistry, client_messages

log = structlog.get_logger(logger_name="marketdata.vendors")

Socket = WebSocket[Any, Any, Any]

MAX_FOLLOWED = 1000  # the most tickers one vendor stream connection follows


class LiveBars:
    """A stream connection's live bars: one subscription to the live feed for the tickers it
    follows, their streams planned as `/ws/live` plans them (`planned`, so each bar is built
    as history builds it, by the feed, for every subscriber at once). Following other
    tickers swaps the subscription without a gap or a repeat for those followed before:
    the old one's waiting events are kept, it is closed and the new one opened with no
    await in between, so that no delivery falls between them."""

    def __init__(
        self, feed: LiveFeed, source: ReplaySource, tf_min: int, options: BarOptions = PLAIN
    ) -> None:
        self._feed = feed
        self._source = source
        self._tf_min = tf_min
        self._options = options
        self.wake = Wake()
        self.cut = asyncio.Event()  # set when the client is cut for reading too slowly
        self._streams: dict[str, Stream] = {}
        self._subscription: Subscription | None = None
        self._pending: list[LiveEvent] = []
        self._reason: str | None = None

    @property
    def tickers(self) -> frozenset[str]:
        return frozenset(self._streams)

    @property
    def reason(self) -> str | None:
        """Why the client was cut, once it is."""
        if self._subscription is not None and self._subscription.reason is not None:
            return self._subscription.reason
        return self._reason

    async def follow(self, tickers: Iterable[str]) -> None:
        """Follow exactly these tickers from now on (the catalog is read for those not
        followed yet: their streams are planned, or planned by the feed once their first
        candles come)."""
        wanted = list(dict.fromkeys(tickers))
        if len(wanted) > MAX_FOLLOWED:
            raise InvalidParameter("symbols", f"at most {MAX_FOLLOWED} per connection")
        new = [t for t in wanted if t not in self._streams]
        fresh: dict[str, Stream] = {}
        if new:
            held = await self._source.holdings(new)
            for at in range(0, len(new), MAX_TICKERS):
                chunk = ReplaySelection(
                    tuple(new[at : at + MAX_TICKERS]), (self._tf_min,), options=self._options
                )
                fresh.update((s.ticker, s) for s in planned(chunk, held)[0].streams)
        if set(wanted) == set(self._streams):
            return
        # no await from here on: the old subscription's last events, then the new one's
        if self._subscription is not None:
            kept = self._subscription.take(sys.maxsize)
            self._pending += [e for e in kept if e.ticker in wanted]
            self._subscription.close()
            self._subscription = None
        self._streams = {t: self._streams[t] if t in self._streams else fresh[t] for t in wanted}
        if self._streams:
            streams = list(self._streams.values())
            self._subscription = self._feed.subscribe(streams, self.wake, self.cut)
        self.wake.set()

    async def next(self, most: int) -> list[LiveEvent]:
        """The next events, at most `most`, waiting for them; raises TooSlow once cut."""
        while True:
            self.wake.clear()
            if self._pending:
                taken, self._pending = self._pending[:most], self._pending[most:]
                return taken
            if self._subscription is not None and (taken := self._subscription.take(most)):
                return taken
            await self.wake.wait()

    def check(self) -> None:
        """Raise what ended the subscription: TooSlow (the client cut), or what it followed
        having ended (NotFound: a time-travel session)."""
        if self._subscription is not None:
            self._subscription.take(0)

    def close(self) -> None:
        if self._subscription is not None:
            self._reason = self._subscription.reason or self._reason
            self._subscription.close()
            self._subscription = None
        self._pending = []


# how long a connection's last message and close may take (a client that stopped reading
# does not hold the server)
FAREWELL_SECONDS = 2.0


async def farewell(
    socket: WebSocket[Any, Any, Any], code: int, last: Awaitable[None] | None = None
) -> None:
    """A stream's end: its last message when it has one, then the close with `code`, each
    bounded in time; a client already gone is no error."""
    gone = (WebSocketDisconnect, OSError, RuntimeError, TimeoutError)
    if last is not None:
        with contextlib.suppress(*gone):
            async with asyncio.timeout(FAREWELL_SECONDS):
                await last
    with contextlib.suppress(*gone):
        async with asyncio.timeout(FAREWELL_SECONDS):
            await socket.close(code=code)


async def first_done(jobs: Mapping[str, Awaitable[Any]]) -> str:
    """Run the jobs side by side in one task group; the first to end ends the others. Its
    name; raises what it raised."""
    async with asyncio.TaskGroup() as group:
        tasks = {name: group.create_task(_awaited(job)) for name, job in jobs.items()}
        await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        done = next(name for name, task in tasks.items() if task.done())
        for task in tasks.values():
            task.cancel()
    return done


async def _awaited(job: Awaitable[Any]) -> Any:
    return await job


MAX_MESSAGE = 65536  # bytes of one client message
BATCH = 1000  # bars per frame at most


class BarStream(abc.ABC):
    """One client of a vendor's stream of live bars: what every such stream does (the
    client's messages in, the followed tickers' bars out, side by side; a refusal, a
    shutdown, a slow client or a failure ending it with its close code), leaving what it
    says, in its vendor's words, to a subclass."""

    vendor = ""  # named in the log when a connection fails

    def __init__(self, socket: Socket, bars: LiveBars, metrics: Metrics) -> None:
        self.socket = socket
        self.bars = bars
        self._metrics = metrics

    @abc.abstractmethod
    async def send(self, messages: list[Any]) -> None:
        """One frame of the vendor's messages."""

    @abc.abstractmethod
    async def handle(self, data: str | bytes) -> None:
        """One message of the client, applied (a bad one answered as the vendor does)."""

    @abc.abstractmethod
    def message_of(self, event: LiveEvent) -> Any | None:
        """The vendor's message for an event of the feed, or None (not one it sends, or of
        a ticker not subscribed)."""

    @abc.abstractmethod
    def hello(self) -> list[Any]:
        """What the connection says first."""

    @abc.abstractmethod
    def busy(self) -> list[Any]:
        """The last word to a client over the connection limit."""

    @abc.abstractmethod
    def too_large(self) -> list[Any]:
        """The answer to a message over MAX_MESSAGE bytes."""

    @abc.abstractmethod
    def slow(self, reason: str | None) -> list[Any]:
        """The last word to a client cut for reading too slowly."""

    @abc.abstractmethod
    def failed(self) -> list[Any]:
        """The last word when the server fails."""

    @abc.abstractmethod
    def ended(self, reason: str) -> list[Any]:
        """The last word when what the stream followed ended (a time-travel session)."""

    def refusal(self) -> list[Any] | None:
        """The last word to a connection refused as asked for (an unknown feed), or None."""
        return None

    async def greet(self) -> None:
        await self.send(self.hello())

    async def serve(self, registry: ReplayRegistry) -> None:
        """The accepted connection until it ends: refused, over the limit, at shutdown, cut
        for reading too slowly, gone, or failed, each with its close code."""
        stop = registry.enter()
        try:
            if (refused := self.refusal()) is not None:
                await farewell(self.socket, CLOSE_POLICY, self.send(refused))
                return
            if stop is None:
                await farewell(self.socket, CLOSE_TRY_AGAIN, self.send(self.busy()))
                return
            await self.greet()
            ended = await first_done(
                {
                    "left": self.receive(),
                    "delivered": self.deliver(),
                    "shutdown": stop.wait(),
                    "cut": self.bars.cut.wait(),
                }
            )
            if ended == "shutdown":
                await farewell(self.socket, CLOSE_RESTART)
            elif ended == "cut":
                self.bars.check()  # what ended it, when not the client (NotFound)
                await farewell(self.socket, CLOSE_POLICY, self.send(self.slow(self.bars.reason)))
        except* (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the client went away while we were sending
        except* TooSlow:
            await farewell(self.socket, CLOSE_POLICY, self.send(self.slow(self.bars.reason)))
        except* NotFound as gone:  # what it followed ended (a time-travel session): 1000
            reason = cast(NotFound, gone.exceptions[0]).message
            await farewell(self.socket, CLOSE_NORMAL, self.send(self.ended(reason)))
        except* Exception:
            log.exception("stream failed", vendor=self.vendor)
            await farewell(self.socket, CLOSE_INTERNAL, self.send(self.failed()))
        finally:
            self.bars.close()
            if stop is not None:
                registry.leave(stop)

    async def receive(self) -> None:
        """The client's messages until it leaves."""
        async for data in client_messages(self.socket):
            if len(data) > MAX_MESSAGE:
                await self.send(self.too_large())
                continue
            await self.handle(data)

    async def deliver(self) -> None:
        """The vendor's messages for the bars the live feed hands over, a frame at a time."""
        while True:
            events = await self.bars.next(BATCH)
            messages = [m for e in events if (m := self.message_of(e)) is not None]
            if messages:
                await self.send(messages)
                self._metrics.candles_sent += len(messages)
