"""The read side: plain SQL returning Structs, resampling in SQL, exports (`exports`), and
what is stored read from the series catalog rather than counted."""

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime, timedelta

from marketdata.adapters.postgres import exports
from marketdata.adapters.postgres.bars import bar_of, bars_params, bars_sql, shape_of
from marketdata.adapters.postgres.buckets import COLUMNS
from marketdata.adapters.postgres.known import KnownSeries
from marketdata.adapters.postgres.pool import Database
from marketdata.domain.bar_options import PLAIN, BarOptions, bar_close
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.ports import Columnar, Export, Gap
from marketdata.domain.timeframes import Holdings, Resample, Rollup, Series

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

    def __init__(self, database: Database, known: KnownSeries | None = None) -> None:
        self._db = database
        self._known = known or KnownSeries()

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
        if len(tickers) != 1:
            return await holdings_of(self._db, list(tickers))
        if (known := self._known.get(tickers[0])) is not None:
            return known
        epoch = self._known.epoch
        held = await holdings_of(self._db, list(tickers))
        self._known.keep(tickers[0], held, epoch)
        return held

    def known(self, ticker: str) -> Holdings | None:
        return self._known.get(ticker)

    async def catalog_version(self) -> str:
        rows = await self._db.fetch(
            "SELECT coalesce(max(version), 0), count(*) FROM candle_series", ()
        )
        return f"{rows[0][0]}-{rows[0][1]}"

    async def gaps(self, ticker: str, tf_min: int, min_gap: timedelta, limit: int) -> list[Gap]:
        rows = await self._db.fetch(
            "SELECT ts, next_ts FROM (SELECT ts, lead(ts) OVER (ORDER BY ts) AS next_ts"
            " FROM candles WHERE ticker = %s AND tf_min = %s) s"
            " WHERE next_ts - ts > %s ORDER BY ts LIMIT %s",
            (ticker, tf_min, min_gap, limit),
        )
        return [Gap(a, b, (b - a).total_seconds() / 60) for a, b in rows]

    def export(self, what: Export) -> AsyncGenerator[Candle, None]:
        return exports.candles(self._db, what)

    def export_columns(self, output: Columnar, what: Export) -> AsyncGenerator[bytes, None]:
        return exports.encoded(self._db, output, what)
