"""Exports: every candle a query asks for, without a cap, in constant memory: as Candles
from a server-side cursor, or encoded in a columnar format from chunks of binary columns."""

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator
from typing import Any

import psycopg

from marketdata.adapters.columnar_export import ColumnarEncoder
from marketdata.adapters.postgres.bars import plain_sql
from marketdata.adapters.postgres.plans import bar_of, plan_sql
from marketdata.adapters.postgres.pool import Database, translated_errors
from marketdata.domain.bar_options import BarOptions, Fill, Label
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.ports import Columnar, Plan


async def candles(database: Database, plan: Plan) -> AsyncGenerator[Candle, None]:
    """A plan's bars from a server-side cursor, a batch at a time: constant memory whatever
    the count. The connection is held until the stream ends or is closed."""
    query, params = plan_sql(plan)
    async with (
        translated_errors(database.location, database.config),
        database.connection() as conn,
        conn.transaction(),
        conn.cursor(name="marketdata_export", binary=True) as cursor,
    ):
        await cursor.execute(query, params)
        while rows := await cursor.fetchmany(2000):
            for row in rows:
                yield bar_of(plan.ticker, plan.tf_min, row, plan.options)


async def encoded(database: Database, output: Columnar, plan: Plan) -> AsyncGenerator[bytes, None]:
    """The bars of `candles` in chunks of columns (one row per COLUMN_CHUNK candles, no
    Python call per candle), encoded as `output`; nothing when there are none."""
    query, params = plan_sql(plan)
    options = plan.options
    closes, fills = options.label is not None, options.fill is not Fill.NONE
    encoder = ColumnarEncoder(
        output, plan.ticker, plan.tf_min, closes, fills, plan.order is Order.DESC
    )
    async with (
        translated_errors(database.location, database.config),
        database.connection() as conn,
        conn.transaction(),
        conn.cursor(binary=True) as plain,
    ):
        # one snapshot for every chunk, as one statement would have
        await plain.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if plan.shaped:
            chunks = _grouped_chunks(conn, query, params, options, closes, fills)
        else:
            chunks = _keyset_chunks(
                plain, plan.ticker, plan.tf_min, plan.time_range, plan.order, plan.limit
            )
        sent = False
        async with contextlib.aclosing(chunks):  # closed early: its cursor with it, here
            async for chunk in chunks:
                sent = True
                yield encoder.add(chunk)
        if sent:
            yield encoder.finish()


def _binary_columns(ts: str = "ts") -> list[str]:
    """A candle's columns in PostgreSQL's binary form, 8 bytes each (a filled bar's missing
    price as NaN, which the encoder makes a null)."""
    prices = (f"float8send(coalesce({p}, 'NaN'))" for p in ("open", "high", "low", "close"))
    return [
        f"timestamptz_send({ts})",
        *prices,
        "float8send(coalesce(volume, 'NaN'))",
        "int8send(coalesce(openint, 0))",
    ]


# Stored candles in chunks of columns, each chunk one query after the last (the key's index,
# in order): each column's values end to end. The aggregates take the rows in the
# subquery's order (the encoder checks it).
_BINARY_COLUMNS = ", ".join(f"string_agg({c}, ''::bytea)" for c in _binary_columns())
_KEYSET_CHUNK = {
    order: f"""
SELECT count(*), {edge}(ts), {_BINARY_COLUMNS} FROM (
    {
        plain_sql(
            "ts, open, high, low, close, volume, openint",
            order=order,
            bounds=f" AND ts {op} %(after)s AND ts >= %(start)s AND ts <= %(end)s",
        )
    }
) s""".encode()
    for order, edge, op in ((Order.ASC, "max", ">"), (Order.DESC, "min", "<"))
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
    statement = _KEYSET_CHUNK[order]
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
    chunked = columns_sql(query, options.label is Label.CLOSE, closes, fills, COLUMN_CHUNK)
    async with conn.cursor(name="marketdata_export", binary=True) as cursor:
        await cursor.execute(chunked, params)
        while rows := await cursor.fetchmany(4):
            for row in rows:
                yield tuple(row)


COLUMN_CHUNK = 16_384


@functools.lru_cache(maxsize=64)
def columns_sql(query: bytes, label_close: bool, closes: bool, fills: bool, chunk: int) -> bytes:
    """The rows of `query` (bars_sql's) in chunks of `chunk`, in order: per chunk its count,
    then each column's values in PostgreSQL's binary form end to end (8 bytes each; a filled bar's
    missing price as NaN), for `columnar_export` to read as arrays. `label_close`: `ts` is
    the bar's close (the domain's `labelled`, here in SQL). The chunks are assembled by the
    database before the first is sent (an aggregate); the service holds one at a time."""
    names = "ts, open, high, low, close, volume, openint, closes, filled"
    columns = _binary_columns("coalesce(closes, ts)" if label_close else "ts")
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
