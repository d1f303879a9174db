"""A replay's bars as it plays them: read a page at a time from the source (the next page
while the current one plays), and grouped into steps of bars that close together."""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from marketdata.domain.candles import Candle
from marketdata.domain.replay.ports import ReplaySource
from marketdata.domain.replay.selection import ReplayKey, ReplaySelection, key_of


async def pages(
    source: ReplaySource,
    selection: ReplaySelection,
    after: ReplayKey | None,
    page_size: int,
    prefetch_at: float = 0.5,
    first: list[Candle] | None = None,
    until: ReplayKey | None = None,
) -> AsyncGenerator[Candle, None]:
    """Candles in replay order, read a page at a time (`first`: the first page, already
    read), up to `until` (included) when given. The next page is asked for once a part
    (`prefetch_at`) of the current one has played, so a replay left early costs one read,
    not two, and it is read while the rest plays: at most two pages are in memory whatever
    the replay's length. Sessions started together and paced alike would all ask at once:
    each has its own `prefetch_at`."""
    page = first if first is not None else await source.page(selection, after, page_size)
    pending: asyncio.Task[list[Candle]] | None = None
    try:
        while page:
            ask = int(len(page) * prefetch_at) if len(page) == page_size else -1
            for i, candle in enumerate(page):
                if until is not None and key_of(candle) > until:
                    return
                if i == ask:
                    pending = asyncio.ensure_future(
                        source.page(selection, key_of(page[-1]), page_size)
                    )
                yield candle
            if pending is None:
                return
            page, pending = await pending, None
    finally:
        if pending is not None:
            pending.cancel()
            # wait for it to end, without taking its outcome for ours
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved: nobody else will look at it


async def steps(bars: AsyncIterator[Candle]) -> AsyncGenerator[list[Candle], None]:
    """Group consecutive bars that close together: they go out together, in one step."""
    group: list[Candle] = []
    close = None
    async for bar in bars:
        # bars without a close of their own are of one timeframe: their opens tell
        at = bar.ts_close or bar.ts
        if group and at != close:
            yield group
            group = []
        group.append(bar)
        close = at
    if group:
        yield group
