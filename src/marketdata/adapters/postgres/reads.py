"""The read side: plain SQL returning Structs, resampling in SQL, exports from a server-side
cursor, and what is stored read from the series catalog rather than counted."""

from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from typing import Any

from marketdata.adapters.postgres.pool import Database, translated_errors
from marketdata.domain.candles import MINUTES_PER_WEEK, Candle, Order, Resample, TimeRange
from marketdata.domain.ports import Coverage, Gap, Series

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
_SERIES = (
    "SELECT ticker, tf_min, first_ts, last_ts, count, version FROM candle_series"
    " WHERE ticker = ANY(%s) ORDER BY ticker, tf_min"
)

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


def _resampled_sql(order: Order, ranged: bool) -> str:
    """Buckets made from a bounded run of source rows in ts order (the caller drops the
    last bucket when the run was cut short by its row limit). Open of the first row, max
    high, min low, close of the last, sum of volume, openint of the last."""
    direction = "ASC" if order is Order.ASC else "DESC"
    bounds = " AND ts >= %(start)s AND ts <= %(end)s" if ranged else ""
    return f"""
WITH run AS (
    SELECT ts, open::float8 AS o, high::float8 AS h, low::float8 AS l, close::float8 AS c,
           volume::float8 AS v, coalesce(openint, 0)::int8 AS oi
    FROM candles WHERE ticker = %(ticker)s AND tf_min = %(source)s{bounds}
    ORDER BY ts {direction} LIMIT %(rows)s
), binned AS (
    SELECT *, date_bin(%(stride)s, ts AT TIME ZONE %(tz)s, %(origin)s) AT TIME ZONE %(tz)s
        AS bucket
    FROM run
)
SELECT bucket, (array_agg(o ORDER BY ts))[1], max(h), min(l),
       (array_agg(c ORDER BY ts DESC))[1], sum(v), (array_agg(oi ORDER BY ts DESC))[1],
       count(*)
FROM binned GROUP BY bucket ORDER BY bucket {direction}
"""


def resample_params(
    ticker: str, tf_min: int, resample: Resample, rows: int | None
) -> dict[str, Any]:
    weekly = tf_min % MINUTES_PER_WEEK == 0
    return {
        "ticker": ticker,
        "source": resample.source_tf,
        "rows": rows,  # None: LIMIT NULL, no limit
        "stride": timedelta(minutes=tf_min),
        "tz": resample.tz,
        "origin": datetime(1970, 1, 5) if weekly else datetime(1970, 1, 1),  # Monday / epoch
    }


def _inside(bucket: datetime, tf_min: int, resample: Resample, time_range: TimeRange) -> bool:
    """Whether every source candle the bucket can hold lies inside the range."""
    last_source = timedelta(minutes=tf_min - resample.source_tf)
    return bucket >= time_range.start and bucket + last_source <= time_range.end


_RESAMPLED = {
    (order, ranged): _resampled_sql(order, ranged) for order in Order for ranged in (False, True)
}


async def series_of(database: Database, tickers: list[str]) -> list[Series]:
    """The catalog's rows for these tickers, by ticker then timeframe."""
    return [Series(*row) for row in await database.fetch(_SERIES, (tickers,))]


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
    rows_limit = (limit + 2) * (tf_min // resample.source_tf)
    params = resample_params(ticker, tf_min, resample, rows_limit)
    if time_range is not None:
        params |= {"start": time_range.start, "end": time_range.end}
    rows = await database.fetch(_RESAMPLED[order, time_range is not None], params)
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

    async def timeframes(self, ticker: str) -> list[int]:
        return [entry.tf_min for entry in await series_of(self._db, [ticker])]

    async def coverage(self, ticker: str) -> list[Coverage]:
        return [
            Coverage(entry.tf_min, entry.first, entry.last, entry.count)
            for entry in await series_of(self._db, [ticker])
        ]

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
            query = _RESAMPLED[order, time_range is not None]
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
