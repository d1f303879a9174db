"""What a replay sends, as the client asked to see it: its events cut into frames (a run of
bars, or a live Removed on its own), its bars labelled (`ts_close` only with a label; a
forming bar with its own close, not its source candle's)."""

from collections.abc import Iterator, Sequence

import msgspec

from marketdata.domain.bar_options import BarOptions, bar_close, labelled
from marketdata.domain.candles import Candle, LiveEvent, Removed


def frames(events: Sequence[LiveEvent]) -> Iterator[tuple[int, list[Candle] | Removed]]:
    """The events in order, as (index of the first, frame): each run of bars together,
    each Removed alone."""
    run: list[Candle] = []
    for at, event in enumerate(events):
        if isinstance(event, Removed):
            if run:
                yield at - len(run), run
                run = []
            yield at, event
        else:
            run.append(event)
    if run:
        yield len(events) - len(run), run


def shown(candles: list[Candle], options: BarOptions) -> list[Candle]:
    """Bars as the caller asked to see them: labelled, `ts_close` only with a label."""
    if options.label is not None:
        return [labelled(_closed(c, options), options.label) for c in candles]
    # a close time set for the order, not asked for
    return [
        msgspec.structs.replace(c, ts_close=None) if c.ts_close is not None else c for c in candles
    ]


def _closed(candle: Candle, options: BarOptions) -> Candle:
    """A forming bar is ordered by its source candle's close: shown with its own."""
    if candle.final is None:
        return candle
    closes = bar_close(candle.ts, candle.tf_min, options, resampled=True)
    return msgspec.structs.replace(candle, ts_close=closes)
