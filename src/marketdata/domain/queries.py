"""The read use cases. A GET of candles decodes at its edge into one `CandleQuery`; the
domain makes one `Plan` of it (the values checked, the defaults applied, the source that
serves the timeframe and its version), and the ETag, the answer kept and the read all use
that plan: one rule per check, one read per request."""

import contextlib
from collections.abc import AsyncGenerator
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
from marketdata.domain.errors import InvalidParameter, NotFound, no_candles
from marketdata.domain.ports import CandleRepository, Columnar, Coverage, Encoded, Gap, Plan
from marketdata.domain.timeframes import Holdings, Served, servable, serving

T = TypeVar("T")

DEFAULT_SYMBOLS_LIMIT = 100
DEFAULT_CANDLES_LIMIT = 200
MAX_EXPORT = 2**63 - 1


class QueryLimits(msgspec.Struct, frozen=True):
    """The configured bounds: DEFAULT_TF_MIN and MAX_LIMIT."""

    default_tf_min: int = 5
    max_limit: int = 5000


class CandleQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What a GET of candles asks, as its edge decodes it: the oldest or newest candles
    (`/candles`), or those between `start` and `end` (`/candles/range`, `after` its cursor;
    `order` descending only from a vendor's newest-first pages, without a cursor);
    `export`: streamed whole (CSV, NDJSON, Parquet, Arrow), without the MAX_LIMIT cap."""

    ticker: str
    tf_min: int | None = None
    limit: int | None = None
    order: Order = Order.ASC
    start: datetime | None = None
    end: datetime | None = None
    after: datetime | None = None
    options: BarOptions = PLAIN
    export: bool = False
    as_of: datetime | None = None  # what was known then (Plan.as_of)


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """A page of bars encoded by the store (`Encoded`), whether more remain after it, the
    open time of its last bar (the cursor of the next page; `ts` may be the close), and the
    plan it was read with, checked."""

    bars: Encoded
    more: bool
    last: datetime | None = None
    plan: Plan


class CandlePage(msgspec.Struct, frozen=True):
    candles: list[Candle]
    more: bool
    last: datetime | None = None


class GapReport(msgspec.Struct, frozen=True):
    """The holes found, with the timeframe and the minimum gap they were looked for with."""

    ticker: str
    tf_min: int
    min_gap: int
    gaps: list[Gap]
    count: int


async def _first_of(plan: Plan, items: AsyncGenerator[T, None]) -> T:
    """An export's first item, read before any response starts: NotFound when there is none."""
    first = await anext(items, None)
    if first is None:
        await items.aclose()
        raise no_candles(plan.ticker, plan.tf_min, plan.time_range if plan.ranged else None)
    return first


async def _chain(
    first: T, rest: AsyncGenerator[T, None], options: BarOptions | None = None
) -> AsyncGenerator[T, None]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


class CandleQueries:
    # what every answer is as of: None for the present itself (a time-travel session's
    # present in TravelQueries); an answer as of a moment is not kept
    as_of: datetime | None = None

    def __init__(self, repository: CandleRepository, limits: QueryLimits) -> None:
        self._repository = repository
        self._limits = limits

    # -- the plan --

    def draft(self, query: CandleQuery) -> Plan:
        """The read a query asks for, checked once, without I/O: ticker, timeframe, limit
        (default 200 for the oldest or newest, MAX_LIMIT for a range, none for an export),
        the range and what is left of it after the cursor; the source that serves the
        timeframe and its version, from what this process knows of the catalog. When it
        does not know the ticker up to date, the source is a guess (what it last knew, else
        that the timeframe is stored) and the plan is not `checked`: `page` reads the
        holdings with the bars, `checked` reads them alone. NotFound when what is known
        up to date cannot serve it."""
        frame = self._frame(query)
        known = self._repository.known(frame.ticker)
        if known is not None:
            return self._served(frame, known)
        guess = self._repository.hint(frame.ticker)
        if guess is not None:
            with contextlib.suppress(NotFound):
                frame = self._served(frame, guess)
        return msgspec.structs.replace(frame, checked=False)

    async def plan(self, query: CandleQuery) -> Plan:
        """The draft of a query, checked (a read of the catalog unless this process knows it)."""
        return await self.checked(self.draft(query))

    async def checked(self, plan: Plan) -> Plan:
        if plan.checked:
            return plan
        return self._served(plan, await self._repository.holdings([plan.ticker]))

    def _frame(self, query: CandleQuery) -> Plan:
        """What a query asks, whatever is stored: a plan of the stored timeframe."""
        ticker = ticker_of(query.ticker)
        tf_min = timeframe_of(self._limits.default_tf_min if query.tf_min is None else query.tf_min)
        ranged = query.start is not None and query.end is not None
        time_range = TimeRange(query.start, query.end) if ranged else None  # type: ignore[arg-type]
        window = time_range
        if time_range is not None and query.after is not None:
            window = time_range.after(query.after)
        return Plan(
            ticker=ticker,
            tf_min=tf_min,
            limit=self._limit(query, ranged),
            order=query.order,
            time_range=window,
            after=query.after,
            options=query.options,
            ranged=ranged,
            empty=ranged and window is None,
            requested=time_range,
            as_of=query.as_of,
        )

    @staticmethod
    def _served(plan: Plan, held: Holdings) -> Plan:
        """The plan with the source that serves its timeframe in `held`, and its version."""
        rollups = held.rollups if plan.as_of is None else ()  # kept from candles after it
        served = serving(plan.tf_min, held.series, plan.options, rollups)
        if not served.available:
            raise served.not_found(plan.ticker)
        source = served.resample.source_tf if served.resample is not None else plan.tf_min
        version = next(s.version for s in held.series if s.tf_min == source)
        return msgspec.structs.replace(
            plan, resample=served.resample, version=version, checked=True
        )

    def _limit(self, query: CandleQuery, ranged: bool) -> int | None:
        if query.export:
            if query.limit is not None and not 1 <= query.limit <= MAX_EXPORT:
                raise InvalidParameter("limit", f"must be between 1 and 2^63-1, got {query.limit}")
            return query.limit
        default = self._limits.max_limit if ranged else DEFAULT_CANDLES_LIMIT
        return limit_of(default if query.limit is None else query.limit, self._limits.max_limit)

    async def _holdings(self, ticker: str) -> Holdings:
        known = self._repository.known(ticker)
        return known if known is not None else await self._repository.holdings([ticker])

    # -- reads of a plan --

    async def page(self, plan: Plan) -> Page:
        """A page of the plan's bars as the store encodes them for the API: in a range, one
        more than the limit read tells whether more remain. A plan not checked is checked
        against the holdings read with its bars (read again in the rare case that they are
        served otherwise than guessed); the page carries the checked plan. NotFound when a
        read that is not a later page finds nothing."""
        if plan.empty:
            return Page(bars=Encoded(b"", 0, None), more=False, plan=await self.checked(plan))
        extra = 1 if plan.ranged else 0
        read = await self._repository.encoded(plan, extra)
        if not read.count and read.holdings is None and plan.after is None:
            # Nothing where what this process knows said there are candles: a write it has
            # not heard of yet (its notification on the way). Read again with the catalog's
            # row, as for a plan not checked, rather than answer 404 from what it knew.
            read = await self._repository.encoded(
                msgspec.structs.replace(plan, checked=False), extra
            )
        if read.holdings is not None:
            exact = self._served(plan, read.holdings)
            if exact.resample != plan.resample:
                read = await self._repository.encoded(exact, extra)
            plan = exact
        if not read.count and plan.after is None:
            raise no_candles(plan.ticker, plan.tf_min, plan.requested)
        more = plan.limit is not None and read.count > plan.limit
        return Page(bars=read, more=more, last=read.last, plan=plan)

    async def bars(self, plan: Plan, extra: int = 0) -> CandlePage:
        """The plan's bars as Candles (labelled as asked), for callers that want objects."""
        plan = await self.checked(plan)
        if plan.empty:
            return CandlePage([], more=False)
        found = await self._repository.bars(plan, extra=1 if plan.ranged else 0)
        if not found and plan.after is None:
            raise no_candles(plan.ticker, plan.tf_min, plan.requested)
        page = found[: plan.limit] if plan.limit is not None else found
        more = plan.limit is not None and len(found) > plan.limit
        last = page[-1].ts if page else None
        label = plan.options.label
        shown = page if label is None else [labelled(c, label) for c in page]
        return CandlePage(shown, more=more, last=last)

    async def export(self, plan: Plan) -> AsyncGenerator[Candle, None]:
        """Every bar of the plan, without the MAX_LIMIT cap, streamed. Reads the first
        before returning, so that NotFound or StoreUnavailable come before a response has
        started."""
        plan = await self.checked(plan)
        if plan.empty:
            raise no_candles(plan.ticker, plan.tf_min, plan.requested)
        candles = self._repository.export(plan)
        label = plan.options.label
        first = await _first_of(plan, candles)
        chained = _chain(first, candles)
        if label is None:
            return chained
        return _relabelled(chained, plan.options)

    async def export_columns(self, output: Columnar, plan: Plan) -> AsyncGenerator[bytes, None]:
        """`export` in a columnar format: the same bars, checked the same way, as the bytes
        of that format, its first record batch read before returning."""
        plan = await self.checked(plan)
        if plan.empty:
            raise no_candles(plan.ticker, plan.tf_min, plan.requested)
        chunks = self._repository.export_columns(output, plan)
        return _chain(await _first_of(plan, chunks), chunks)

    # -- the same, for callers of loose values (vendor protocols, tests) --

    async def candles(
        self,
        ticker: str,
        tf_min: int | None = None,
        limit: int | None = None,
        order: Order = Order.ASC,
        options: BarOptions = PLAIN,
        as_of: datetime | None = None,
    ) -> list[Candle]:
        query = CandleQuery(
            ticker=ticker, tf_min=tf_min, limit=limit, order=order, options=options, as_of=as_of
        )
        return (await self.bars(await self.plan(query))).candles

    async def candle_range(
        self,
        ticker: str,
        start: datetime,
        end: datetime,
        tf_min: int | None = None,
        limit: int | None = None,
        options: BarOptions = PLAIN,
        after: datetime | None = None,
        as_of: datetime | None = None,
    ) -> CandlePage:
        """Candles in [start, end]; `after` (from a cursor) skips those up to it."""
        query = CandleQuery(
            ticker=ticker,
            tf_min=tf_min,
            limit=limit,
            start=start,
            end=end,
            after=after,
            options=options,
            as_of=as_of,
        )
        return await self.bars(await self.plan(query))

    # -- what is stored --

    async def symbols(self, prefix: str = "", limit: int | None = None) -> list[str]:
        prefix = text_of("prefix", prefix)
        limit = limit_of(DEFAULT_SYMBOLS_LIMIT if limit is None else limit, self._limits.max_limit)
        return await self._repository.symbols(prefix, limit)

    async def symbols_version(self) -> str:
        """A version of everything `symbols` answers."""
        return await self._repository.catalog_version()

    async def coverage(self, ticker: str) -> tuple[list[Coverage], list[Served], str]:
        """What is stored for a ticker, what can be served, and a version of both (its
        series' and the rollups ready: `served` says which timeframes they serve)."""
        held = await self._holdings(ticker_of(ticker))
        if not held.series:
            raise no_candles(ticker)
        version = max(s.version for s in held.series)
        return (
            [Coverage(s.tf_min, s.first, s.last, s.count) for s in held.series],
            servable(held.series, held.rollups),
            ".".join([str(version), *map(str, sorted(held.rollups))]),
        )

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
        held = await self._holdings(ticker)
        if tf_min not in {s.tf_min for s in held.series}:
            raise no_candles(ticker, tf_min)
        found = await self._repository.gaps(ticker, tf_min, timedelta(minutes=min_gap), limit)
        return GapReport(ticker, tf_min, min_gap, found, len(found))


async def _relabelled(
    candles: AsyncGenerator[Candle, None], options: BarOptions
) -> AsyncGenerator[Candle, None]:
    try:
        async for candle in candles:
            yield labelled(candle, options.label)
    finally:
        await candles.aclose()
