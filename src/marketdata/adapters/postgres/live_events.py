"""The live events of a change, for each group of streams built alike (`Built`): a stored
timeframe's candles as written, a resampled one's bars from the rows of the forming
statement (`forming.forming_sql`), a timeframe kept to a session from the history's rows."""

from datetime import datetime
from typing import Any

import msgspec

from marketdata.adapters.postgres.changes import Change
from marketdata.domain.bar_options import BarOptions, Fill
from marketdata.domain.candles import Candle, LiveEvent, Removed
from marketdata.domain.replay import Stream, key_of


class Built(msgspec.Struct, frozen=True):
    """Streams whose live bars one statement builds, for every ticker at once: the same
    timeframe, made of the same stored timeframe (None: stored itself), cut by the same
    options (a label or a fill changes nothing of what is read)."""

    tf_min: int
    source_tf: int | None
    options: BarOptions

    @classmethod
    def of(cls, stream: Stream) -> "Built":
        cut = msgspec.structs.replace(stream.options, label=None, fill=Fill.NONE)
        source = stream.resample.source_tf if stream.resample is not None else None
        return cls(stream.tf_min, source, cut)

    @property
    def reads(self) -> int:
        """The stored timeframe its bars are made of."""
        return self.source_tf if self.source_tf is not None else self.tf_min


def sent_as_written(stream: Stream) -> bool:
    """Sent as written: a stored timeframe not kept to a session."""
    return stream.resample is None and stream.options.session is None


def delivery_order(event: LiveEvent) -> tuple[datetime, int, str, int]:
    """Events of one delivery in replay order (close, timeframe, ticker); a Removed before
    the bars of its span sent again."""
    if isinstance(event, Removed):
        return event.start, event.tf_min, event.ticker, 0
    key = key_of(event)
    return key.close, key.tf_min, key.ticker, 1


def as_stored(change: Change, candles: list[Candle]) -> list[LiveEvent]:
    if change.kind == "removed":
        return [Removed(change.ticker, change.tf_min, change.first, change.last)]
    return list(candles) if change.kind == "written" else []


def formed(
    group: Built, change: Change, candles: list[Candle], rows: list[tuple[Any, ...]]
) -> list[LiveEvent]:
    """One change's events from its rows of the live forming statement: (first bucket,
    last bucket, then each bar: bucket, open .. openint, its candle's close, final,
    complete, its candle's open, whether the change began what follows the bar before it),
    in time order."""
    events: list[LiveEvent] = []
    if change.kind == "removed" and rows:
        events.append(Removed(change.ticker, group.tf_min, rows[0][0], rows[0][1]))
    written = {c.ts: c.revision for c in candles}
    by_bucket: dict[datetime, list[tuple[Any, ...]]] = {}
    for row in rows:
        if row[2] is not None:
            by_bucket.setdefault(row[2], []).append(row[2:])
    for bucket, held in by_bucket.items():
        if change.kind == "removed":  # each bar of the span left, as it stands now
            if rows[0][0] <= bucket <= rows[0][1]:
                events.append(_forming(change.ticker, group.tf_min, held[-1], change.version))
            continue
        since = [b for b in held if b[10] >= change.first]
        if not since:  # the bar before the change, final now that the change began a later
            if held[-1][8] and not held[-1][9] and held[-1][11]:
                events.append(_forming(change.ticker, group.tf_min, held[-1], 0))
        elif all(written.get(b[10]) == 0 for b in since):  # appended
            events += [_forming(change.ticker, group.tf_min, b, 0) for b in since]
        else:  # corrected, or a candle arrived out of order
            events.append(_forming(change.ticker, group.tf_min, since[-1], change.version))
    return events


def stored_in_session(
    rows: list[tuple[Any, ...]], change: Change, candles: list[Candle]
) -> list[LiveEvent]:
    """A stored timeframe kept to a session: the candles written that the session keeps
    (the rows of the history's statement), with their revision; a removed span as is."""
    if change.kind == "removed":
        return [Removed(change.ticker, change.tf_min, change.first, change.last)]
    kept = {row[0] for row in rows}
    return [c for c in candles if c.ts in kept]


def _forming(ticker: str, tf_min: int, row: tuple[Any, ...], revision: int) -> Candle:
    """A bar of the live forming statement: ordered by its source candle's close
    (`ts_close`, as in replay), `final` as the statement says."""
    bucket, o, h, low, c, v, oi, closes, final = row[:9]
    return Candle(
        ticker, tf_min, bucket, o, h, low, c, v, oi, ts_close=closes, final=final, revision=revision
    )
