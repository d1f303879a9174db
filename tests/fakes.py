"""In-memory fakes of the domain's ports, shared by unit tests and DI overrides."""

import asyncio
import itertools
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
from dishka import AnyOf, Provider, Scope

from marketdata.domain.bar_options import labelled
from marketdata.domain.candles import Candle, Order
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ports import CandleRepository, Encoded, Gap, Plan, StoreHealth
from marketdata.domain.replay import ReplayKey, ReplaySelection, ReplayStatus, Wake, key_of
from marketdata.domain.timeframes import Holdings, Resample, Series


def resample_reference(candles: list[Candle], tf_min: int, tz: str = "UTC") -> list[Candle]:
    """Plain-Python resampling, the reference the SQL is checked against: buckets of
    tf_min minutes from the epoch (weeks from Monday 1970-01-05) in local time of `tz`."""
    zone = ZoneInfo(tz)
    origin = datetime(1970, 1, 5) if tf_min % 10080 == 0 else datetime(1970, 1, 1)
    stride = timedelta(minutes=tf_min)
    buckets: dict[datetime, list[Candle]] = {}
    for candle in sorted(candles, key=lambda c: c.ts):
        local = candle.ts.astimezone(zone).replace(tzinfo=None)
        start = origin + ((local - origin) // stride) * stride
        buckets.setdefault(start.replace(tzinfo=zone).astimezone(UTC), []).append(candle)
    return [
        Candle(
            group[0].ticker,
            tf_min,
            start,
            group[0].open,
            max(c.high for c in group),
            min(c.low for c in group),
            group[-1].close,
            sum(c.volume for c in group),
            group[-1].openint,
        )
        for start, group in sorted(buckets.items())
    ]


def holdings_of(candles: list[Candle], tickers: Sequence[str]) -> Holdings:
    """The catalog of a list of candles (no rollups are kept in memory)."""
    found = []
    for ticker in sorted(set(tickers)):
        for tf in sorted({c.tf_min for c in candles if c.ticker == ticker}):
            held = sorted(c.ts for c in candles if c.ticker == ticker and c.tf_min == tf)
            found.append(Series(ticker, tf, held[0], held[-1], len(held)))
    return Holdings(tuple(found))


class InMemoryCandleRepository:
    """CandleRepository and StoreHealth over a list; `available=False` simulates an outage.
    Bars are the stored candles, or resampled in UTC: bar options are PostgreSQL's (the
    fake does not shape bars)."""

    def __init__(self, candles: list[Candle] | None = None) -> None:
        self.stored: list[Candle] = list(candles or [])
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory", "0", "switched off by the test")

    def _series(self, ticker: str, tf_min: int, resample: Resample | None = None) -> list[Candle]:
        if resample is not None:
            return resample_reference(self._series(ticker, resample.source_tf), tf_min)
        return sorted(
            (c for c in self.stored if c.ticker == ticker and c.tf_min == tf_min),
            key=lambda c: c.ts,
        )

    async def symbols(self, prefix: str, limit: int) -> list[str]:
        self._check()
        tickers = sorted({c.ticker for c in self.stored})
        return [t for t in tickers if t.lower().startswith(prefix.lower())][:limit]

    async def bars(self, plan: Plan, extra: int = 0) -> list[Candle]:
        self._check()
        series = self._series(plan.ticker, plan.tf_min, plan.resample)
        limit = plan.limit + extra if plan.limit is not None else None
        if plan.time_range is None:
            ordered = series if plan.order is Order.ASC else series[::-1]
            return ordered[:limit]
        window = plan.time_range
        if plan.resample is not None:  # whole buckets only
            last = timedelta(minutes=plan.tf_min - plan.resample.source_tf)
            series = [c for c in series if c.ts + last <= window.end]
        return [c for c in series if window.start <= c.ts <= window.end][:limit]

    async def encoded(self, plan: Plan, extra: int = 0) -> Encoded:
        found = await self.bars(plan, extra)
        kept = found[: plan.limit] if plan.limit is not None else found
        label = plan.options.label
        shown = kept if label is None else [labelled(c, label) for c in kept]
        items = b",".join(msgspec.json.encode(c) for c in shown)
        held = None if plan.checked else holdings_of(self.stored, [plan.ticker])
        return Encoded(items, len(found), kept[-1].ts if kept else None, held)

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        self._check()
        return holdings_of(self.stored, tickers)

    def known(self, ticker: str) -> Holdings | None:
        return None  # nothing known without asking: every read asks

    def hint(self, ticker: str) -> Holdings | None:
        return None

    async def catalog_version(self) -> str:
        self._check()
        return str(len(self.stored))

    async def export(self, plan: Plan) -> AsyncGenerator[Candle, None]:
        for candle in await self.bars(plan):
            yield candle

    async def gaps(self, ticker: str, tf_min: int, min_gap: timedelta, limit: int) -> list[Gap]:
        series = self._series(ticker, tf_min)
        return [
            Gap(a.ts, b.ts, (b.ts - a.ts).total_seconds() / 60)
            for a, b in itertools.pairwise(series)
            if b.ts - a.ts > min_gap
        ][:limit]

    async def ping(self) -> None:
        self._check()

    async def pending_migrations(self) -> list[str]:
        self._check()
        return []


def fake_store(repository: InMemoryCandleRepository) -> Provider:
    """A dishka provider overriding the PostgreSQL store with `repository`."""
    provider = Provider(scope=Scope.APP)
    provider.provide(lambda: repository, provides=AnyOf[CandleRepository, StoreHealth])
    return provider


class InMemoryReplaySource:
    """ReplaySource over a list of stored candles (one timeframe, as stored); counts the
    pages it was asked for."""

    def __init__(self, candles: list[Candle]) -> None:
        self.stored = sorted(candles, key=lambda c: (c.ts, c.ticker))
        self.pages_read = 0
        self.counted = 0  # count() calls: what the catalog could not answer

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        return holdings_of(self.stored, tickers)

    def _selected(self, selection: ReplaySelection) -> list[Candle]:
        return [
            c
            for c in self.stored
            if c.ticker in selection.tickers
            and c.tf_min in selection.tf_mins
            and (selection.start is None or c.ts >= selection.start)
            and (selection.end is None or c.ts <= selection.end)
        ]

    async def count(self, selection: ReplaySelection) -> int:
        self.counted += 1
        return len(self._selected(selection))

    async def seq_at(self, selection: ReplaySelection, ts: datetime) -> int:
        return sum(1 for c in self._selected(selection) if c.ts < ts)

    async def key_at(self, selection: ReplaySelection, seq: int) -> ReplayKey | None:
        selected = self._selected(selection)
        return key_of(selected[seq]) if 0 <= seq < len(selected) else None

    async def page(
        self, selection: ReplaySelection, after: ReplayKey | None, size: int
    ) -> list[Candle]:
        self.pages_read += 1
        await asyncio.sleep(0)
        return [c for c in self._selected(selection) if after is None or key_of(c) > after][:size]


class FakeClock:
    """Virtual monotonic time: sleeping jumps straight to the deadline."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float, wake: Wake) -> None:
        if not wake.is_set():
            self.t = max(self.t, deadline)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


class RecordingSink:
    """Records what a replay sends, with the virtual time it was sent at."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.received: list[tuple[float, int, Candle]] = []
        self.statuses: list[tuple[float, str, str | None, int | None]] = []
        self.frames: list[tuple[float, int, int]] = []  # (time, first seq, candles)
        self.on_candle: Callable[[int, Candle], Awaitable[None]] | None = None

    async def candles(self, seq: int, candles: list[Candle]) -> None:
        self.frames.append((self.clock.now(), seq, len(candles)))
        for i, candle in enumerate(candles):
            self.received.append((self.clock.now(), seq + i, candle))
            if self.on_candle is not None:
                await self.on_candle(seq + i, candle)

    async def status(self, status: ReplayStatus) -> None:
        self.statuses.append((self.clock.now(), status.message, status.error, status.seq))

    @property
    def messages(self) -> list[str]:
        return [m for _, m, _, _ in self.statuses]

    @property
    def seqs(self) -> list[int]:
        return [s for _, s, _ in self.received]

    @property
    def times(self) -> list[float]:
        return [t for t, _, _ in self.received]
