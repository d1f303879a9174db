"""What a replay plays: the selection of candles, its order, and how its timeframe is
served (stored, or resampled from which stored timeframe)."""

from datetime import datetime

import msgspec

from marketdata.domain.candles import Candle, Resample, serving, ticker_of, timeframe_of
from marketdata.domain.errors import InvalidParameter, InvalidQuery
from marketdata.domain.ports import Series

MAX_TICKERS = 20


class ReplaySelection(msgspec.Struct, frozen=True):
    """Which candles a replay plays: several tickers merge in (ts, ticker) order."""

    tickers: tuple[str, ...]
    tf_min: int
    start: datetime | None = None
    end: datetime | None = None
    # Per ticker, the stored timeframe its candles are made from (empty: tf_min for all);
    # a finer one is resampled into buckets aligned in `tz`, as for REST.
    source_tfs: tuple[int, ...] = ()
    tz: str = "UTC"

    def resample_of(self, ticker: str) -> Resample | None:
        if not self.source_tfs:
            return None
        source = self.source_tfs[self.tickers.index(ticker)]
        return None if source == self.tf_min else Resample(source, self.tz)

    @property
    def resampled(self) -> bool:
        return any(source != self.tf_min for source in self.source_tfs)

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


def planned(selection: ReplaySelection, stored: list[Series]) -> tuple[ReplaySelection, int | None]:
    """The selection with each ticker's source timeframe (as `serving` decides for REST),
    and its number of candles when the catalog tells it (stored series, whole or ranged over
    all they hold); None when the source must count them. A ticker whose timeframe cannot
    be served has no candles."""
    by_ticker: dict[str, dict[int, Series]] = {}
    for entry in stored:
        by_ticker.setdefault(entry.ticker, {})[entry.tf_min] = entry
    sources = []
    total: int | None = 0
    for ticker in selection.tickers:
        held = by_ticker.get(ticker, {})
        plan = serving(selection.tf_min, held, selection.tz)
        sources.append(plan.resample.source_tf if plan.resample else selection.tf_min)
        if plan.resample is not None:
            total = None  # buckets are counted by the source
        elif total is not None and (held_tf := held.get(selection.tf_min)) is not None:
            covered = (selection.start is None or selection.start <= held_tf.first) and (
                selection.end is None or selection.end >= held_tf.last
            )
            total = total + held_tf.count if covered else None
    if any(source != selection.tf_min for source in sources):
        selection = msgspec.structs.replace(selection, source_tfs=tuple(sources))
    return selection, total


class ReplayKey(msgspec.Struct, frozen=True, order=True):
    """A candle's place in the replay order."""

    ts: datetime
    ticker: str


def key_of(candle: Candle) -> ReplayKey:
    return ReplayKey(candle.ts, candle.ticker)
