"""A vendor stream connection's live bars through the LiveFeed (the one `/ws/live` uses),
and how such a connection runs and ends."""

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from marketdata.domain.bar_options import PLAIN, BarOptions
from marketdata.domain.candles import LiveEvent
from marketdata.domain.errors import InvalidParameter
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
