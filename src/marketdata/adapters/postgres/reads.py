"""The read side: plain SQL returning Structs, resampling in SQL, exports from a server-side
cursor, and what is stored read from the series catalog rather than counted."""

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime, timedelta
from typing import Any

from marketdata.adapters.postgres.bars import bar_of, bars_params, bars_sql, shape_of
from marketdata.adapters.postgres.pool import Database, translated_errors
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.ports import Gap
from marketdata.domain.timeframes import (
    PLAIN,
    BarOptions,
    Holdings,
    Resample,
    Rollup,
    Series,
    bar_close,
)

COLUMNS = (
    "ticker, tf_min, ts, open::float8, high::float8, low::float8, close::float8,"
    " volume::float8, coalesce(openint, 0)::int8"
)

# The catalog holds one row per series: what is stored is read there, never counted.
# The prefix is compared literally (no LIKE patterns) and case-insensitively.
_SYMBOLS = """
SELECT DISTINCT ticker FROM candle_series
WHERE lower(left(ticker, char_length(%(prefix)s))) = lower(%(prefix)s)
ORDER BY ticker LIMIT %(limit)s
"""
# The series of some tickers, and on every row (or on one of NULLs when there are none) the
# rollup timeframes that are complete: one round trip.
_HOLDINGS = """
SELECT s.ticker, s.tf_min, s.first_ts, s.last_ts, s.count, s.version, r.tfs, r.tzs
FROM (SELECT coalesce(array_agg(tf_min ORDER BY tf_min, tz), '{}') AS tfs,
             coalesce(array_agg(tz ORDER BY tf_min, tz), '{}') AS tzs
      FROM rollup_timeframes WHERE ready) r
LEFT JOIN candle_series s ON s.ticker = ANY(%s)
ORDER BY s.ticker, s.tf_min
"""

_CANDLES = {
    Order.ASC: f"SELECT {COLUMNS} FROM candles WHERE ticker = %s AND tf_min = %s"
    " ORDER BY ts ASC LIMIT %s",
    Order.DESC: f"SELECT {COLUMNS} FROM candles WHERE ticker = %s AND tf_min = %s"
    " ORDER BY ts DESC LIMIT %s",
}

RANGE = (
    f"SELECT {COLUMNS} FROM candles WHERE ticker = %s AND tf_min = %s"
    " AND ts >= %s AND ts <= %s ORDER BY ts ASC LIMIT %s"
)


async def holdings_of(database: Database, tickers: list[str]) -> Holdings:
    """The catalog's rows for these tickers, by ticker then timeframe, and the complete
    rollup timeframes."""
    rows = await database.fetch(_HOLDINGS, (tickers,))
    return Holdings(
        series=tuple(Series(*row[:6]) for row in rows if row[0] is not None),
        rollups=tuple(map(Rollup, rows[0][6], rows[0][7])) if rows else (),
    )


async def bars(
    database: Database,
    ticker: str,
    tf_min: int,
    limit: int,
    order: Order,
    resample: Resample | None,
    options: BarOptions,
    time_range: TimeRange | None = None,
    after: datetime | None = None,
) -> list[Candle]:
    """Bars made from what is stored (bars.py): resampled, kept to a session, filled;
    `after`: the last bar of the page before (a cursor), whose gap to this page is filled."""
    shape = shape_of(tf_min, resample, options, order, time_range is not None)
    after_close = (
        bar_close(after, tf_min, options.tz, resample is not None) if after is not None else None
    )
    params = bars_params(
        ticker,
        tf_min,
        resample,
        options,
        limit=limit,
        time_range=time_range,
        after_close=after_close,
    )
    rows = await database.fetch(bars_sql(shape), params)
    return [bar_of(ticker, tf_min, row, options) for row in rows]


class PostgresCandleRepository:
    """CandleRepository over the pool."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def symbols(self, prefix: str, limit: int) -> list[str]:
        rows = await self._db.fetch(_SYMBOLS, {"prefix": prefix, "limit": limit})
        return [row[0] for row in rows]

    async def candles(
        self,
        ticker: str,
        tf_min: int,
        limit: int,
        order: Order,
        resample: Resample | None = None,
        options: BarOptions = PLAIN,
    ) -> list[Candle]:
        if resample is not None or options.shaped:
            return await bars(self._db, ticker, tf_min, limit, order, resample, options)
        rows = await self._db.fetch(_CANDLES[order], (ticker, tf_min, limit))
        return [Candle(*row) for row in rows]

    async def candle_range(
        self,
        ticker: str,
        tf_min: int,
        time_range: TimeRange,
        limit: int,
        resample: Resample | None = None,
        options: BarOptions = PLAIN,
        after: datetime | None = None,
    ) -> list[Candle]:
        if resample is not None or options.shaped:
            return await bars(
                self._db, ticker, tf_min, limit, Order.ASC, resample, options, time_range, after
            )
        rows = await self._db.fetch(
            RANGE, (ticker, tf_min, time_range.start, time_range.end, limit)
        )
        return [Candle(*row) for row in rows]

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        return await holdings_of(self._db, list(tickers))

    async def gaps(self, ticker: str, tf_min: int, min_gap: timedelta, limit: int) -> list[Gap]:
        rows = await self._db.fetch(
            "SELECT ts, next_ts FROM (SELECT ts, lead(ts) OVER (ORDER BY ts) AS next_ts"
            " FROM candles WHERE ticker = %s AND tf_min = %s) s"
            " WHERE next_ts - ts > %s ORDER BY ts LIMIT %s",
            (ticker, tf_min, min_gap, limit),
        )
        return [Gap(a, b, (b - a).total_seconds() / 60) for a, b in rows]

    async def export(
        self,
        ticker: str,
        tf_min: int,
        time_range: TimeRange | None,
        order: Order,
        limit: int | None,
        resample: Resample | None = None,
        options: BarOptions = PLAIN,
        after: datetime | None = None,
    ) -> AsyncGenerator[Candle, None]:
        """Candles from a server-side cursor, a batch at a time: constant memory whatever
        the count. The connection is held until the stream ends or is closed."""
        shaped = resample is not None or options.shaped
        if not shaped:
            bounds = " AND ts >= %(start)s AND ts <= %(end)s" if time_range else ""
            direction = "ASC" if order is Order.ASC else "DESC"
            query = (
                f"SELECT {COLUMNS} FROM candles WHERE ticker = %(ticker)s"
                f" AND tf_min = %(tf)s{bounds} ORDER BY ts {direction} LIMIT %(limit)s"
            ).encode()
            params: dict[str, Any] = {"ticker": ticker, "tf": tf_min, "limit": limit}
            if time_range is not None:
                params |= {"start": time_range.start, "end": time_range.end}
        else:
            query = bars_sql(shape_of(tf_min, resample, options, order, time_range is not None))
            after_close = (
                bar_close(after, tf_min, options.tz, resample is not None) if after else None
            )
            params = bars_params(
                ticker,
                tf_min,
                resample,
                options,
                limit=limit,
                time_range=time_range,
                after_close=after_close,
            )
        async with (
            translated_errors(self._db.location, self._db.config),
            self._db.connection() as conn,
            conn.transaction(),
            conn.cursor(name="marketdata_export", binary=True) as cursor,
        ):
            await cursor.execute(query, params)
            while rows := await cursor.fetchmany(2000):
                for row in rows:
                    yield bar_of(ticker, tf_min, row, options) if shaped else Candle(*row)
