"""What a replay plays: its streams (a ticker's bars of one timeframe each), how each is
served (stored, or resampled from which source), and the order they merge in."""

from collections.abc import Iterable
from datetime import datetime, timedelta

import msgspec

from marketdata.domain.bar_options import BarOptions, Fill
from marketdata.domain.candles import Candle, ticker_of, timeframe_of
from marketdata.domain.errors import InvalidParameter, InvalidQuery
from marketdata.domain.timeframes import Holdings, Resample, Rollup, Series, serving

MAX_TICKERS = 20
MAX_TIMEFRAMES = 8


class Stream(msgspec.Struct, frozen=True):
    """One series a replay plays, the one description of it every bar is built from: a
    ticker's bars of one timeframe, stored or resampled, cut as `options` say; `forming`: a
    resampled bar is sent at each of its source candles, as it stands so far."""

    ticker: str
    tf_min: int
    resample: Resample | None = None
    forming: bool = False
    options: BarOptions = BarOptions()
    # whether what is stored can make it (false: nothing yet; live plans it again once
    # its ticker's candles arrive)
    available: bool = True


class ReplaySelection(msgspec.Struct, frozen=True):
    """Which bars a replay plays: every ticker in every timeframe, merged in the order the
    bars close (then timeframe, then ticker), so that no bar arrives before a finer one
    that closed before it. One timeframe is the seed's replay: candles in (ts, ticker)
    order."""

    tickers: tuple[str, ...]
    tf_mins: tuple[int, ...]
    start: datetime | None = None
    end: datetime | None = None
    options: BarOptions = BarOptions()
    forming: bool = False
    streams: tuple[Stream, ...] = ()  # set by `planned`, in (ticker, tf_min) order

    @property
    def tf_min(self) -> int:
        return self.tf_mins[0]

    @property
    def plain(self) -> bool:
        """The seed's replay: stored candles of one timeframe as they are."""
        return (
            len(self.tf_mins) == 1
            and not self.options.shaped
            and all(s.resample is None for s in self.streams)
        )

    def __post_init__(self) -> None:
        if not self.tickers:
            raise InvalidParameter("ticker", "at least one ticker is required")
        if len(self.tickers) > MAX_TICKERS:
            raise InvalidParameter("tickers", f"at most {MAX_TICKERS} tickers")
        if not self.tf_mins:
            raise InvalidParameter("tf_min", "at least one timeframe is required")
        if len(self.tf_mins) > MAX_TIMEFRAMES:
            raise InvalidParameter("tf_min", f"at most {MAX_TIMEFRAMES} timeframes")
        for ticker in self.tickers:
            ticker_of(ticker)
        for tf_min in self.tf_mins:
            timeframe_of(tf_min)
        if self.start and self.end and self.start > self.end:
            raise InvalidQuery("start must not be after end")
        if self.forming and self.options.fill is not Fill.NONE:
            raise InvalidParameter(
                "fill", "does not go with forming=true (a bar forms from candles)"
            )


def planned(selection: ReplaySelection, held: Holdings) -> tuple[ReplaySelection, int | None]:
    """The selection with its streams, each served as `serving` decides for REST, and its
    number of bars when the catalog tells it (stored series played whole: one timeframe,
    nothing shaped, the range covering all they hold); None when the source must count
    them. A stream that cannot be served has no bars."""
    streams: list[Stream] = []
    total: int | None = 0
    for ticker in selection.tickers:
        series = held.of(ticker)
        for tf_min in selection.tf_mins:
            stream = planned_stream(ticker, tf_min, selection, series, held.rollups)
            streams.append(stream)
            stored = next((s for s in series if s.tf_min == tf_min), None)
            if stream.resample is not None or selection.options.shaped:
                total = None  # bars are counted by the source
            elif total is not None and stored is not None:
                covered = (selection.start is None or selection.start <= stored.first) and (
                    selection.end is None or selection.end >= stored.last
                )
                total = total + stored.count if covered else None
    return msgspec.structs.replace(selection, streams=tuple(streams)), total


def planned_stream(
    ticker: str,
    tf_min: int,
    selection: ReplaySelection,
    series: Iterable[Series],
    rollups: Iterable[Rollup],
) -> Stream:
    """One stream of a selection, served as `serving` decides for what is stored."""
    plan = serving(tf_min, series, selection.options, rollups)
    forming = selection.forming and plan.resample is not None
    return Stream(
        ticker, tf_min, plan.resample, forming, selection.options, available=plan.available
    )


class ReplayKey(msgspec.Struct, frozen=True, order=True):
    """A bar's place in the replay order: when it closes, then its timeframe, then its
    ticker. For one timeframe, the seed's (ts, ticker) order."""

    close: datetime
    tf_min: int
    ticker: str


def key_of(candle: Candle) -> ReplayKey:
    """A bar's place: its close is `ts_close` where the source set it (resampled bars,
    forming ones), else `tf_min` after its open."""
    close = candle.ts_close or candle.ts + timedelta(minutes=candle.tf_min)
    return ReplayKey(close, candle.tf_min, candle.ticker)
