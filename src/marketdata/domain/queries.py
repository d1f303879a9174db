"""The read use cases: validation and defaults of the REST contract over a CandleRepository."""

from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

import msgspec

from marketdata.domain.bar_options import PLAIN, BarOptions, labelled
from marketdata.domain.candles import (
    Candle,
    Order,
    TimeRange,
    limit_of,
    text_of,
    ticker_of,
    timeframe_of,
)
from marketdata.domain.errors import InvalidParameter, NotFound
from marketdata.domain.ports import CandleRepository, Columnar, Coverage, Export, Gap
from marketdata.domain.timeframes import Resample, Served, Serving, servable, serving

T = TypeVar("T")

DEFAULT_SYMBOLS_LIMIT = 100
DEFAULT_CANDLES_LIMIT = 200


class QueryLimits(msgspec.Struct, frozen=True):
    """The configured bounds: DEFAULT_TF_MIN and MAX_LIMIT."""

    default_tf_min: int = 5
    max_limit: int = 5000


async def _chain(
    first: Candle, rest: AsyncGenerator[Candle, None], options: BarOptions
) -> AsyncGenerator[Candle, None]:
    try:
        yield labelled(first, options.label)
        async for candle in rest:
            yield labelled(candle, options.label)
    finally:
        await rest.aclose()


async def _first_of(what: Export, items: AsyncGenerator[T, None]) -> T:
    """An export's first item, read before any response starts: NotFound when there is none."""
    first = await anext(items, None)
    if first is None:
        await items.aclose()
        raise NotFound(f"No candles found for ticker {what.ticker!r} with tf_min={what.tf_min}")
    return first


async def _prefixed(head: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        yield head
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


def _labelled(candles: list[Candle], options: BarOptions) -> list[Candle]:
    if options.label is None:
        return candles
    return [labelled(c, options.label) for c in candles]


class GapReport(msgspec.Struct, frozen=True):
    """The holes found, with the timeframe and the minimum gap they were looked for with."""

    ticker: str
    tf_min: int
    min_gap: int
    gaps: list[Gap]
    count: int


class Page(msgspec.Struct, frozen=True):
    candles: list[Candle]
    more: bool
    # the open time of the page's last bar: the cursor of the next page (`ts` may be the
    # close, with label=close)
    last: datetime | None = None


class CandleQueries:
    def __init__(self, repository: CandleRepository, limits: QueryLimits) -> None:
        self._repository = repository
        self._limits = limits

    async def symbols(self, prefix: str = "", limit: int | None = None) -> list[str]:
        prefix = text_of("prefix", prefix)
        limit = limit_of(DEFAULT_SYMBOLS_LIMIT if limit is None else limit, self._limits.max_limit)
        return await self._repository.symbols(prefix, limit)

    async def candles(
        self,
        ticker: str,
        tf_min: int | None = None,
        limit: int | None = None,
        order: Order = Order.ASC,
        options: BarOptions = PLAIN,
    ) -> list[Candle]:
        ticker = ticker_of(ticker)
        tf_min = timeframe_of(self._limits.default_tf_min if tf_min is None else tf_min)
        limit = limit_of(DEFAULT_CANDLES_LIMIT if limit is None else limit, self._limits.max_limit)

        async def read(resample: Resample | None) -> list[Candle]:
            return await self._repository.candles(ticker, tf_min, limit, order, resample, options)

        found = await self._served(ticker, tf_min, options, read)
        if not found:
            raise NotFound(f"No candles found for ticker {ticker!r} with tf_min={tf_min}")
        return _labelled(found, options)

    async def candle_range(
        self,
        ticker: str,
        start: datetime,
        end: datetime,
        tf_min: int | None = None,
        limit: int | None = None,
        options: BarOptions = PLAIN,
        after: datetime | None = None,
    ) -> Page:
        """Candles in [start, end]; `after` (from a cursor) skips those up to it. A page
        holds at most `limit`; `more` says whether candles remain after its last one."""
        ticker = ticker_of(ticker)
        tf_min = timeframe_of(self._limits.default_tf_min if tf_min is None else tf_min)
        limit = limit_of(self._limits.max_limit if limit is None else limit, self._limits.max_limit)
        time_range = TimeRange(start, end)
        window = time_range.after(after) if after is not None else time_range
        if window is None:
            return Page([], more=False)

        async def read(resample: Resample | None) -> list[Candle]:
            # one more than asked for tells whether there is a next page
            assert window is not None
            return await self._repository.candle_range(
                ticker, tf_min, window, limit + 1, resample, options, after
            )

        found = await self._served(ticker, tf_min, options, read)
        if not found and after is None:
            raise NotFound(
                f"No candles found for ticker {ticker!r} with tf_min={tf_min} between "
                f"{time_range.start.isoformat()} and {time_range.end.isoformat()}"
            )
        page = found[:limit]
        last = page[-1].ts if page else None
        return Page(_labelled(page, options), more=len(found) > limit, last=last)

    async def export(
        self,
        ticker: str,
        tf_min: int | None = None,
        order: Order = Order.ASC,
        limit: int | None = None,
        options: BarOptions = PLAIN,
        start: datetime | None = None,
        end: datetime | None = None,
        after: datetime | None = None,
    ) -> AsyncGenerator[Candle, None]:
        """Every candle asked for, without the MAX_LIMIT cap, streamed. Checks everything
        and reads the first candle before returning, so that NotFound or StoreUnavailable
        come before a response has started."""
        what = await self._exported(ticker, tf_min, order, limit, options, start, end, after)
        candles = self._repository.export(what)
        return _chain(await _first_of(what, candles), candles, options)

    async def export_columns(
        self,
        output: Columnar,
        ticker: str,
        tf_min: int | None = None,
        order: Order = Order.ASC,
        limit: int | None = None,
        options: BarOptions = PLAIN,
        start: datetime | None = None,
        end: datetime | None = None,
        after: datetime | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """`export` in a columnar format: the same candles, checked the same way, as the
        bytes of that format, its first record batch read before returning."""
        what = await self._exported(ticker, tf_min, order, limit, options, start, end, after)
        chunks = self._repository.export_columns(output, what)
        return _prefixed(await _first_of(what, chunks), chunks)

    async def _exported(
        self,
        ticker: str,
        tf_min: int | None,
        order: Order,
        limit: int | None,
        options: BarOptions,
        start: datetime | None,
        end: datetime | None,
        after: datetime | None,
    ) -> Export:
        """An export's arguments checked, and where its candles come from."""
        ticker = ticker_of(ticker)
        tf_min = timeframe_of(self._limits.default_tf_min if tf_min is None else tf_min)
        if limit is not None and not 1 <= limit < 2**63:
            raise InvalidParameter("limit", f"must be between 1 and 2^63-1, got {limit}")
        time_range = TimeRange(start, end) if start is not None and end is not None else None
        if time_range is not None and after is not None:
            time_range = time_range.after(after)
            if time_range is None:
                raise NotFound(f"No candles found for ticker {ticker!r} after the cursor")
        plan = await self._plan(ticker, tf_min, options)
        if not plan.available:
            raise plan.not_found(ticker)
        return Export(ticker, tf_min, time_range, order, limit, plan.resample, options, after)

    async def coverage(self, ticker: str) -> list[Coverage]:
        held = await self._repository.holdings([ticker_of(ticker)])
        if not held.series:
            raise NotFound(f"No candles found for ticker {ticker!r}")
        return [Coverage(s.tf_min, s.first, s.last, s.count) for s in held.series]

    async def served(self, ticker: str) -> list[Served]:
        """The timeframes the ticker can be served at, and how (`servable`)."""
        held = await self._repository.holdings([ticker_of(ticker)])
        return servable(held.series, held.rollups)

    async def gaps(
        self, ticker: str, tf_min: int | None, min_gap: int | None, limit: int | None
    ) -> GapReport:
        """Holes longer than `min_gap` minutes (default: tf_min, i.e. any missing candle)."""
        ticker = ticker_of(ticker)
        tf_min = timeframe_of(self._limits.default_tf_min if tf_min is None else tf_min)
        min_gap = tf_min if min_gap is None else min_gap
        if min_gap < 1:
            raise InvalidParameter("min_gap", f"must be at least 1 minute, got {min_gap}")
        limit = limit_of(
            min(1000, self._limits.max_limit) if limit is None else limit, self._limits.max_limit
        )
        held = await self._repository.holdings([ticker])
        if tf_min not in {s.tf_min for s in held.series}:
            raise NotFound(f"No candles found for ticker {ticker!r} with tf_min={tf_min}")
        found = await self._repository.gaps(ticker, tf_min, timedelta(minutes=min_gap), limit)
        return GapReport(ticker, tf_min, min_gap, found, len(found))

    async def _served(
        self,
        ticker: str,
        tf_min: int,
        options: BarOptions,
        read: Callable[[Resample | None], Awaitable[list[Candle]]],
    ) -> list[Candle]:
        """Candles of `tf_min` as `serving` decides. The stored read goes first: when the
        timeframe is stored (the common case) it is the only query; when nothing comes back,
        the stored timeframes say whether to resample, and from which."""
        known = self._repository.known(ticker)
        if known is not None:
            # the stored timeframes known without a round trip: one query, the right one
            # (what is not known to be there is asked for below: it may have just come)
            plan = serving(tf_min, known.series, options, known.rollups)
            if plan.available:
                return await read(plan.resample)
        found = await read(None)
        if found:
            return found
        plan = await self._plan(ticker, tf_min, options)
        if not plan.available:
            raise plan.not_found(ticker)
        return await read(plan.resample) if plan.resample is not None else []

    async def version(
        self, ticker: str, tf_min: int | None = None, options: BarOptions = PLAIN
    ) -> int | None:
        """The version of the series an answer for this ticker and timeframe is made of
        (the stored one, or the one resampled): it changes whenever such an answer could.
        None when there is nothing to answer with (the query itself says why)."""
        ticker = ticker_of(ticker)
        tf_min = timeframe_of(self._limits.default_tf_min if tf_min is None else tf_min)
        held = await self._repository.holdings([ticker])
        plan = serving(tf_min, held.series, options, held.rollups)
        if not plan.available:
            return None
        source = plan.resample.source_tf if plan.resample is not None else tf_min
        return next((s.version for s in held.series if s.tf_min == source), None)

    async def symbols_version(self) -> str:
        """A version of everything `symbols` answers."""
        return await self._repository.catalog_version()

    async def coverage_version(self, ticker: str) -> str | None:
        """A version of everything `coverage` and `served` answer for this ticker: its
        series', and the rollups ready (`served` says which timeframes they serve)."""
        held = await self._repository.holdings([ticker_of(ticker)])
        version = max((s.version for s in held.series), default=None)
        if version is None:
            return None
        return ".".join([str(version), *map(str, sorted(held.rollups))])

    async def _plan(self, ticker: str, tf_min: int, options: BarOptions) -> Serving:
        held = await self._repository.holdings([ticker])
        return serving(tf_min, held.series, options, held.rollups)
