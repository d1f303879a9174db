"""The read side: plain SQL returning Structs, resampling in SQL, exports from a server-side
cursor, and what is stored read from the series catalog rather than counted."""

import asyncio
import functools
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from marketdata.adapters.columnar_export import ColumnarEncoder
from marketdata.adapters.postgres.bars import bar_of, bars_params, bars_sql, shape_of
from marketdata.adapters.postgres.known import KnownSeries
from marketdata.adapters.postgres.pool import Database, translated_errors
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.ports import Columnar, Gap
from marketdata.domain.timeframes import (
    PLAIN,
    BarOptions,
    Fill,
    Holdings,
    Label,
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
        shaped, query, params = _exported(
            ticker, tf_min, time_range, order, limit, resample, options, after
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

    async def export_columns(
        self,
        output: Columnar,
        ticker: str,
        tf_min: int,
        time_range: TimeRange | None,
        order: Order,
        limit: int | None,
        resample: Resample | None = None,
        options: BarOptions = PLAIN,
        after: datetime | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """The candles of `export` in chunks of columns from the same query (one row per
        COLUMN_CHUNK candles, no Python call per candle), encoded as `output`."""
        shaped, query, params = _exported(
            ticker, tf_min, time_range, order, limit, resample, options, after
        )
        closes, fills = options.label is not None, options.fill is not Fill.NONE
        encoder = ColumnarEncoder(output, ticker, tf_min, closes, fills, order is Order.DESC)
        async with (
            translated_errors(self._db.location, self._db.config),
            self._db.connection() as conn,
            conn.transaction(),
            conn.cursor(binary=True) as plain,
        ):
            # one snapshot for every chunk, as one statement would have
            await plain.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            if shaped:
                chunks = _grouped_chunks(conn, query, params, options, closes, fills)
            else:
                chunks = _keyset_chunks(plain, ticker, tf_min, time_range, order, limit)
            sent = False
            async for chunk in chunks:
                sent = True
                yield encoder.add(chunk)
            if sent:
                yield encoder.finish()


# Stored candles in chunks of columns, each chunk one query after the last (the key's index,
# in order): each column's values in PostgreSQL's binary form end to end, 8 bytes each.
# The aggregates take the rows in the subquery's order (the encoder checks it).
_BINARY_COLUMNS = ", ".join(
    f"string_agg({c}, ''::bytea)"
    for c in (
        "timestamptz_send(ts)",
        *(f"float8send({p})" for p in ("open", "high", "low", "close", "volume")),
        "int8send(coalesce(openint, 0))",
    )
)
_KEYSET_CHUNK = {
    direction: f"""
SELECT count(*), {edge}(ts), {_BINARY_COLUMNS} FROM (
    SELECT ts, open, high, low, close, volume, openint FROM candles
    WHERE ticker = %(ticker)s AND tf_min = %(tf)s AND ts {op} %(after)s
      AND ts >= %(start)s AND ts <= %(end)s
    ORDER BY ts {direction} LIMIT %(limit)s
) s""".encode()
    for direction, edge, op in (("ASC", "max", ">"), ("DESC", "min", "<"))
}


async def _keyset_chunks(
    cursor: psycopg.AsyncCursor[Any],
    ticker: str,
    tf_min: int,
    time_range: TimeRange | None,
    order: Order,
    limit: int | None,
) -> AsyncGenerator[tuple[Any, ...], None]:
    """A stored series' candles in chunks of COLUMN_CHUNK, a query each from the key's
    index where the last one ended: the database streams them as it reads them."""
    descending = order is Order.DESC
    statement = _KEYSET_CHUNK["DESC" if descending else "ASC"]
    params: dict[str, Any] = {
        "ticker": ticker,
        "tf": tf_min,
        "after": "infinity" if descending else "-infinity",
        "start": time_range.start if time_range else "-infinity",
        "end": time_range.end if time_range else "infinity",
    }
    left = limit

    async def chunk() -> tuple[Any, ...] | None:
        if left is not None and left <= 0:
            return None
        params["limit"] = COLUMN_CHUNK if left is None else min(left, COLUMN_CHUNK)
        await cursor.execute(statement, params)
        return await cursor.fetchone()

    # the next chunk is read while this one is encoded and sent (the database works on
    # the other core); a chunk asked for is always awaited, never cancelled mid-query
    pending = asyncio.ensure_future(chunk())
    try:
        while (row := await pending) is not None and row[0]:
            params["after"] = row[1]
            left = None if left is None else left - row[0]
            pending = asyncio.ensure_future(chunk())
            yield (row[0], *row[2:])
    finally:
        if not pending.done():
            await asyncio.shield(pending)


async def _grouped_chunks(
    conn: psycopg.AsyncConnection[Any],
    query: bytes,
    params: dict[str, Any],
    options: BarOptions,
    closes: bool,
    fills: bool,
) -> AsyncGenerator[tuple[Any, ...], None]:
    """Bars made in SQL, in chunks of COLUMN_CHUNK made by one statement."""
    chunked = columns_sql(query, True, options.label is Label.CLOSE, closes, fills, COLUMN_CHUNK)
    async with conn.cursor(name="marketdata_export", binary=True) as cursor:
        await cursor.execute(chunked, params)
        while rows := await cursor.fetchmany(4):
            for row in rows:
                yield tuple(row)


def _exported(
    ticker: str,
    tf_min: int,
    time_range: TimeRange | None,
    order: Order,
    limit: int | None,
    resample: Resample | None,
    options: BarOptions,
    after: datetime | None,
) -> tuple[bool, bytes, dict[str, Any]]:
    """An export's statement: whether it is shaped (bars_sql's columns), it, its params."""
    if resample is None and not options.shaped:
        bounds = " AND ts >= %(start)s AND ts <= %(end)s" if time_range else ""
        direction = "ASC" if order is Order.ASC else "DESC"
        query = (
            f"SELECT {COLUMNS} FROM candles WHERE ticker = %(ticker)s"
            f" AND tf_min = %(tf)s{bounds} ORDER BY ts {direction} LIMIT %(limit)s"
        ).encode()
        params: dict[str, Any] = {"ticker": ticker, "tf": tf_min, "limit": limit}
        if time_range is not None:
            params |= {"start": time_range.start, "end": time_range.end}
        return False, query, params
    query = bars_sql(shape_of(tf_min, resample, options, order, time_range is not None))
    after_close = bar_close(after, tf_min, options.tz, resample is not None) if after else None
    params = bars_params(
        ticker,
        tf_min,
        resample,
        options,
        limit=limit,
        time_range=time_range,
        after_close=after_close,
    )
    return True, query, params


COLUMN_CHUNK = 16_384


@functools.lru_cache(maxsize=64)
def columns_sql(
    query: bytes, shaped: bool, label_close: bool, closes: bool, fills: bool, chunk: int
) -> bytes:
    """`query`'s rows in chunks of `chunk`, in order: per chunk its count, then each
    column's values in PostgreSQL's binary form end to end (8 bytes each; a filled bar's
    missing price as NaN), for `columnar_export` to read as arrays. `label_close`: `ts` is
    the bar's close (the domain's `labelled`, here in SQL). The chunks are assembled by the
    database before the first is sent (an aggregate); the service holds one at a time."""
    names = (
        "ts, open, high, low, close, volume, openint, closes, filled"
        if shaped
        else "ticker, tf_min, ts, open, high, low, close, volume, openint"
    )
    ts = "coalesce(closes, ts)" if label_close else "ts"
    columns = [f"timestamptz_send({ts})"]
    columns += [f"float8send(coalesce({p}, 'NaN'))" for p in ("open", "high", "low", "close")]
    columns += ["float8send(coalesce(volume, 'NaN'))", "int8send(coalesce(openint, 0))"]
    if closes:
        columns.append("timestamptz_send(closes)")
    if fills:
        columns.append("boolsend(filled)")
    aggregates = ", ".join(f"string_agg({c}, ''::bytea ORDER BY n)" for c in columns)
    return (
        f"SELECT count(*), {aggregates} FROM ("
        f"SELECT q.*, row_number() OVER () - 1 AS n FROM ({query.decode()}) AS q({names})"
        f") s GROUP BY n / {chunk} ORDER BY n / {chunk}"
    ).encode()
