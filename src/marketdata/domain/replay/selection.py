"""What a replay plays: the selection of candles, its order, and how its timeframe is
served (stored, or resampled from which stored timeframe)."""

from datetime import datetime

import msgspec

from marketdata.domain.candles import Candle, ticker_of, timeframe_of
from marketdata.domain.errors import InvalidParameter, InvalidQuery
from marketdata.domain.timeframes import Holdings, Resample, serving

MAX_TICKERS = 20


class ReplaySelection(msgspec.Struct, frozen=True):
    """Which candles a replay plays: several tickers merge in (ts, ticker) order."""

    tickers: tuple[str, ...]
    tf_min: int
    start: datetime | None = None
    end: datetime | None = None
    tz: str = "UTC"
    # Per ticker, how its candles are made when tf_min is not stored (empty: stored for
    # all): resampled into buckets aligned in `tz`, as `serving` decides for REST.
    resamples: tuple[Resample | None, ...] = ()

    def resample_of(self, ticker: str) -> Resample | None:
        return self.resamples[self.tickers.index(ticker)] if self.resamples else None

    @property
    def resampled(self) -> bool:
        return any(r is not None for r in self.resamples)

    def __post_init__(self) -> None:
        if not self.tickers:
            raise InvalidParameter("ticker", "at least one ticker is required")
        if len(self.tickers) > MAX_TICKERS:
            raise InvalidParameter("tickers", f"at most {MAX_TICKERS} tickers")
        for ticker in self.tickers:
            ticker_of(ticker)
        timeframe_of(self.tf_min)
        if self.start and self.end and self.start > self.end:
            raise InvalidQuery("start must not be after end")


def planned(selection: ReplaySelection, held: Holdings) -> tuple[ReplaySelection, int | None]:
    """The selection with each ticker's resampling (as `serving` decides for REST), and its
    number of candles when the catalog tells it (stored series, whole or ranged over all
    they hold); None when the source must count them. A ticker whose timeframe cannot be
    served has no candles."""
    resamples: list[Resample | None] = []
    total: int | None = 0
    for ticker in selection.tickers:
        series = held.of(ticker)
        plan = serving(selection.tf_min, series, selection.tz, held.rollups)
        resamples.append(plan.resample)
        stored = next((s for s in series if s.tf_min == selection.tf_min), None)
        if plan.resample is not None:
            total = None  # buckets are counted by the source
        elif total is not None and stored is not None:
            covered = (selection.start is None or selection.start <= stored.first) and (
                selection.end is None or selection.end >= stored.last
            )
            total = total + stored.count if covered else None
    if any(r is not None for r in resamples):
        selection = msgspec.structs.replace(selection, resamples=tuple(resamples))
    return selection, total


class ReplayKey(msgspec.Struct, frozen=True, order=True):
    """A candle's place in the replay order."""

    ts: datetime
    ticker: str


def key_of(candle: Candle) -> ReplayKey:
    return ReplayKey(candle.ts, candle.ticker)
