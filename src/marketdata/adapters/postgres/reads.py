"""The read side: plain SQL returning Structs, resampling in SQL, exports from a server-side
cursor, and what is stored read from the series catalog rather than counted."""

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime, timedelta
from typing import Any

from marketdata.adapters.postgres.buckets import CANDLE_ROWS, LOCAL_LABEL, ROLLUP_ROWS, bucketed
from marketdata.adapters.postgres.pool import Database, translated_errors
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.ports import Gap
from marketdata.domain.timeframes import Holdings, Resample, Rollup, Series, origin_of

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


# Where the rows of a resampling are read: the candles of the stored timeframe, or a rollup
# kept from them (adapters/postgres/rollups.py).
CANDLES, ROLLUPS = "candles", "candle_rollups"


def _resampled_sql(order: Order, ranged: bool, table: str) -> str:
    """Buckets made from a bounded run of source rows in ts order (the caller drops the
    last bucket when the run was cut short by its row limit); the count is of rows read."""
    direction = "ASC" if order is Order.ASC else "DESC"
    bounds = " AND ts >= %(start)s AND ts <= %(end)s" if ranged else ""
    kept = " AND tz = %(rollup_tz)s" if table == ROLLUPS else ""
    run = (
        f"SELECT {CANDLE_ROWS if table == CANDLES else ROLLUP_ROWS} FROM {table}"
        f" WHERE ticker = %(ticker)s AND tf_min = %(source)s{kept}{bounds}"
        f" ORDER BY ts {direction} LIMIT %(rows)s"
    )
    return f"{bucketed(run, LOCAL_LABEL)} ORDER BY bucket {direction}"


def _rollup_sql(order: Order, ranged: bool) -> str:
    """A rollup read as it is kept, when its buckets are the ones asked for (UTC)."""
    direction = "ASC" if order is Order.ASC else "DESC"
    bounds = " AND ts >= %(start)s AND ts <= %(end)s" if ranged else ""
    return f"""
SELECT ts, open, high, low, close, volume, openint, 1 FROM candle_rollups
WHERE ticker = %(ticker)s AND tf_min = %(source)s AND tz = %(rollup_tz)s{bounds}
ORDER BY ts {direction} LIMIT %(rows)s
"""


_RESAMPLED = {
    (order, ranged, table): _resampled_sql(order, ranged, table)
    for order in Order
    for ranged in (False, True)
    for table in (CANDLES, ROLLUPS)
}
_ROLLUP = {
    (order, ranged): _rollup_sql(order, ranged) for order in Order for ranged in (False, True)
}


def resampled_query(tf_min: int, resample: Resample, order: Order, ranged: bool) -> str:
    """The statement that makes buckets of `tf_min` as `resample` says."""
    if resample.rollup is None:
        return _RESAMPLED[order, ranged, CANDLES]
    if resample.rollup == tf_min and resample.rollup_tz == resample.tz:
        return _ROLLUP[order, ranged]  # the rollup's rows are the buckets
    return _RESAMPLED[order, ranged, ROLLUPS]


def resample_params(
    ticker: str, tf_min: int, resample: Resample, rows: int | None
) -> dict[str, Any]:
    return {
        "ticker": ticker,
        "source": resample.read_tf,
        "rows": rows,  # None: LIMIT NULL, no limit
        "stride": timedelta(minutes=tf_min),
        "tz": resample.tz,
        "origin": origin_of(tf_min),
        "rollup_tz": resample.rollup_tz,
    }


def _inside(bucket: datetime, tf_min: int, resample: Resample, time_range: TimeRange) -> bool:
    """Whether every stored candle the bucket can hold lies inside the range (a rollup row
    holds candles of the stored timeframe too: the rule is the same whatever is read)."""
    last_source = timedelta(minutes=tf_min - resample.source_tf)
    return bucket >= time_range.start and bucket + last_source <= time_range.end


async def holdings_of(database: Database, tickers: list[str]) -> Holdings:
    """The catalog's rows for these tickers, by ticker then timeframe, and the complete
    rollup timeframes."""
    rows = await database.fetch(_HOLDINGS, (tickers,))
    return Holdings(
        series=tuple(Series(*row[:6]) for row in rows if row[0] is not None),
        rollups=tuple(map(Rollup, rows[0][6], rows[0][7])) if rows else (),
    )


async def resampled(
    database: Database,
    ticker: str,
    tf_min: int,
    limit: int,
    order: Order,
    resample: Resample,
    time_range: TimeRange | None,
) -> list[Candle]:
    # enough source rows for `limit` buckets, plus one cut short by the row limit and
    # one cut by the start of the range
    rows_limit = (limit + 2) * (tf_min // resample.read_tf)
    params = resample_params(ticker, tf_min, resample, rows_limit)
    if time_range is not None:
        params |= {"start": time_range.start, "end": time_range.end}
    rows = await database.fetch(
        resampled_query(tf_min, resample, order, time_range is not None), params
    )
    if sum(row[7] for row in rows) >= rows_limit:
        rows = rows[:-1]  # the run of source rows ended inside this bucket
    if time_range is not None:  # only buckets entirely inside the range
        rows = [row for row in rows if _inside(row[0], tf_min, resample, time_range)]
    return [Candle(ticker, tf_min, *row[:7]) for row in rows[:limit]]


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
    ) -> list[Candle]:
        if resample is not None:
            return await resampled(self._db, ticker, tf_min, limit, order, resample, None)
        rows = await self._db.fetch(_CANDLES[order], (ticker, tf_min, limit))
        return [Candle(*row) for row in rows]

    async def candle_range(
        self,
        ticker: str,
        tf_min: int,
        time_range: TimeRange,
        limit: int,
        resample: Resample | None = None,
    ) -> list[Candle]:
        if resample is not None:
            return await resampled(self._db, ticker, tf_min, limit, Order.ASC, resample, time_range)
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
    ) -> AsyncGenerator[Candle, None]:
        """Candles from a server-side cursor, a batch at a time: constant memory whatever
        the count. The connection is held until the stream ends or is closed."""
        if resample is None:
            bounds = " AND ts >= %(start)s AND ts <= %(end)s" if time_range else ""
            direction = "ASC" if order is Order.ASC else "DESC"
            query = (
                f"SELECT {COLUMNS} FROM candles WHERE ticker = %(ticker)s"
                f" AND tf_min = %(tf)s{bounds} ORDER BY ts {direction} LIMIT %(limit)s"
            )
            params: dict[str, Any] = {"ticker": ticker, "tf": tf_min, "limit": limit}
        else:
            query = resampled_query(tf_min, resample, order, time_range is not None)
            params = resample_params(ticker, tf_min, resample, None)
        if time_range is not None:
            params |= {"start": time_range.start, "end": time_range.end}
        sent = 0
        async with (
            translated_errors(self._db.location, self._db.config),
            self._db.connection() as conn,
            conn.transaction(),
            conn.cursor(name="marketdata_export", binary=True) as cursor,
        ):
            await cursor.execute(query.encode(), params)
            while rows := await cursor.fetchmany(2000):
                for row in rows:
                    if resample is None:
                        yield Candle(*row)
                        continue
                    if time_range is not None and not _inside(row[0], tf_min, resample, time_range):
                        continue
                    if limit is not None and sent >= limit:
                        return
                    sent += 1
                    yield Candle(ticker, tf_min, *row[:7])
