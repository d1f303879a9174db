"""The replay source: keyset pages in replay order (close time, timeframe, ticker), one
pooled connection per page, so a replay holds no connection between pages however long.

The seed's replay (stored candles of one timeframe) reads one index range per ticker in
one statement. Any other (resampled, several timeframes, forming bars, sessions, fill)
reads each stream with the statements of bars.py, merged here; counts and positions come
from the same statements, so that seq numbers are the pages' own.
"""

import functools
import heapq
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from marketdata.adapters.postgres.bars import (
    bars_params,
    bars_sql,
    plain_sql,
    shape_of,
)
from marketdata.adapters.postgres.buckets import COLUMNS
from marketdata.adapters.postgres.forming import forming_sql
from marketdata.adapters.postgres.pool import Database
from marketdata.adapters.postgres.reads import holdings_of
from marketdata.adapters.postgres.routing import Reads
from marketdata.domain.bar_options import bar_close
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.replay import ReplayKey, ReplaySelection, Stream, key_of
from marketdata.domain.timeframes import Holdings

_PARAM = re.compile(r"%\((\w+)\)s")
# a selection's start and end, either open
_WITHIN = (
    " AND ts >= coalesce({start}::timestamptz, '-infinity')"
    " AND ts <= coalesce({end}::timestamptz, 'infinity')"
)


class PostgresReplaySource:
    """Pages, counts and positions where `reads` sends them (a replica that has replayed
    what the primary had committed when each was asked for, or the primary): a replay
    whose pages come from different servers reads each after the one before, on a server
    at least as far on, so it never skips or repeats a candle. What is held: the primary."""

    def __init__(self, database: Database, reads: Reads | None = None) -> None:
        self._primary = database
        self._db = reads or Reads.primary_only(database)

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        return await holdings_of(self._primary, list(tickers))

    # -- positions: counts and keys over every bar of the selection --

    async def count(self, selection: ReplaySelection) -> int:
        keys, params = self._keys(selection)
        rows = await self._db.fetch(sql.SQL("SELECT count(*) FROM ({}) k").format(keys), params)
        return int(rows[0][0])

    async def seq_at(self, selection: ReplaySelection, ts: datetime) -> int:
        keys, params = self._keys(selection)
        query = sql.SQL(
            "WITH k AS ({}), first AS (SELECT close, tf_min, ticker FROM k"
            " WHERE open >= %(at)s ORDER BY 1, 2, 3 LIMIT 1)"
            " SELECT CASE WHEN EXISTS (SELECT FROM first) THEN (SELECT count(*) FROM k, first f"
            " WHERE (k.close, k.tf_min, k.ticker) < (f.close, f.tf_min, f.ticker))"
            " ELSE (SELECT count(*) FROM k) END"
        ).format(keys)
        rows = await self._db.fetch(query, {**params, "at": ts})
        return int(rows[0][0])

    async def key_at(self, selection: ReplaySelection, seq: int) -> ReplayKey | None:
        keys, params = self._keys(selection)
        query = sql.SQL(
            "SELECT close, tf_min, ticker FROM ({}) k ORDER BY 1, 2, 3 OFFSET %(seq)s LIMIT 1"
        ).format(keys)
        rows = await self._db.fetch(query, {**params, "seq": seq})
        return ReplayKey(*rows[0]) if rows else None

    def _keys(self, selection: ReplaySelection) -> tuple[sql.Composable, dict[str, Any]]:
        """(close, tf_min, ticker, open) of every bar, one branch per stream."""
        parts: list[sql.Composable] = []
        params: dict[str, Any] = {}
        for i, stream in enumerate(selection.streams):
            if selection.plain:
                text = plain_sql(
                    "ts + %(stride)s AS close, %(tf)s AS tf_min, %(ticker)s AS ticker, ts AS open",
                    bounds=_WITHIN.format(start="%(start)s", end="%(end)s"),
                    limit="NULL",
                ).encode()
                values: dict[str, Any] = {
                    "ticker": stream.ticker,
                    "tf": stream.tf_min,
                    "stride": timedelta(minutes=stream.tf_min),
                    "start": selection.start,
                    "end": selection.end,
                }
            else:
                statement, values = self._stream(selection, stream, None, None)
                text = (
                    b"SELECT s.close_ts AS close, %(tf)s AS tf_min, %(ticker)s AS ticker,"
                    b" s.bucket AS open FROM (" + statement + b") s"
                )
                values |= {"tf": stream.tf_min}
            text, values = _prefixed(text, values, f"s{i}_")
            parts.append(sql.SQL(f"({text.decode()})"))
            params |= values
        return sql.SQL(" UNION ALL ").join(parts), params

    # -- pages --

    async def page(
        self, selection: ReplaySelection, after: ReplayKey | None, size: int
    ) -> list[Candle]:
        if selection.plain:
            return await self._plain_page(selection, after, size)
        merged: list[list[Candle]] = []
        for stream in selection.streams:
            statement, params = self._stream(selection, stream, after, size)
            rows = await self._db.fetch(statement, params)
            merged.append([self._bar(selection, stream, row) for row in rows])
        return list(heapq.merge(*merged, key=key_of))[:size]

    def _stream(
        self,
        selection: ReplaySelection,
        stream: Stream,
        after: ReplayKey | None,
        size: int | None,
    ) -> tuple[bytes, dict[str, Any]]:
        """A stream's bars after `after` (its statement, with a `close_ts` column)."""
        options = selection.options
        ranged = selection.start is not None or selection.end is not None
        shape = shape_of(stream.tf_min, stream.resample, options, Order.ASC, ranged, keyset=True)
        params = bars_params(
            stream.ticker,
            stream.tf_min,
            stream.resample,
            options,
            limit=size,
            time_range=_range(selection),
            after_close=after.close if after is not None else None,
            inclusive=after is not None
            and (stream.tf_min, stream.ticker) > (after.tf_min, after.ticker),
            forming=stream.forming,
            since=selection.start,
        )
        statement = forming_sql(shape) if stream.forming else bars_sql(shape)
        columns = b"bucket, open, high, low, close, volume, openint, close_ts, flag"
        return (
            b"SELECT * FROM (" + statement + b") b(" + columns + b")",
            params,
        )

    def _bar(self, selection: ReplaySelection, stream: Stream, row: tuple[Any, ...]) -> Candle:
        """A row of a stream's statement: the bar, its close (the replay's order; the
        bucket's close with a label on a forming bar), and `final` when forming."""
        ts, o, h, low, c, v, oi, closes, flag = row
        if not stream.forming:
            return Candle(
                stream.ticker, stream.tf_min, ts, o, h, low, c, v, oi, ts_close=closes, filled=flag
            )
        # a forming bar is ordered by its source candle's close
        return Candle(
            stream.ticker, stream.tf_min, ts, o, h, low, c, v, oi, ts_close=closes, final=flag
        )

    async def _plain_page(
        self, selection: ReplaySelection, after: ReplayKey | None, size: int
    ) -> list[Candle]:
        # One index range scan per ticker, merged: "ticker = ANY(...) ORDER BY ts" would
        # read every row of the range before sorting. (ts, ticker) > after becomes, for a
        # given ticker, ts >= after's ts when the ticker sorts after after's, else ts >.
        tf_min = selection.tf_min
        stride = timedelta(minutes=tf_min)
        after_ts = after.close - stride if after is not None else None
        bounds = tuple(
            "" if after is None else ">=" if ticker > after.ticker else ">"
            for ticker in selection.tickers
        )
        params: list[Any] = []
        for ticker in selection.tickers:
            params += [ticker, tf_min, selection.start, selection.end]
            if after_ts is not None:
                params.append(after_ts)
            params.append(size)
        rows = await self._db.fetch(_page_query(bounds), [*params, size])
        return [Candle(*row) for row in rows]


def _range(selection: ReplaySelection) -> TimeRange | None:
    if selection.start is None and selection.end is None:
        return None
    return TimeRange(
        selection.start or datetime(1, 1, 2, tzinfo=UTC),
        selection.end or datetime(9999, 12, 31, tzinfo=UTC),
    )


def _bucket_close(bucket: datetime, stream: Stream, selection: ReplaySelection) -> datetime:
    return bar_close(bucket, stream.tf_min, selection.options, stream.resample is not None)


def _prefixed(text: bytes, params: dict[str, Any], prefix: str) -> tuple[bytes, dict[str, Any]]:
    """A statement and its named parameters renamed apart, to join others in one query."""
    renamed = _PARAM.sub(lambda m: f"%({prefix}{m[1]})s", text.decode()).encode()
    return renamed, {f"{prefix}{k}": v for k, v in params.items()}


@functools.lru_cache(maxsize=256)
def _page_query(bounds: tuple[str, ...]) -> bytes:
    """The page query for tickers whose keyset bounds are `bounds` ("" for none): one text
    per shape, built once."""
    within = _WITHIN.format(start="%s", end="%s")
    parts = [
        f"({plain_sql(COLUMNS, '%s', '%s', bounds=within + after, limit='%s')})"
        for after in (f" AND ts {op} %s" if op else "" for op in bounds)
    ]
    return (
        f"SELECT * FROM ({' UNION ALL '.join(parts)}) merged ORDER BY ts, ticker LIMIT %s".encode()
    )
