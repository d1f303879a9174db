"""The service's write path: rows COPYed into a staging table and merged into candles in one
transaction; deletions the same way. What a write implies (the series catalog, the rollups,
the change feed) is kept by the database's triggers, for every writer alike."""

import itertools
from typing import Any, cast

import psycopg
from psycopg import errors as pg_errors

from marketdata.adapters.columnar import COPY_HEADER, COPY_TRAILER, copy_binary
from marketdata.adapters.postgres import catalog
from marketdata.adapters.postgres.known import KnownSeries
from marketdata.adapters.postgres.pool import Database, translated_errors
from marketdata.domain.candles import TimeRange
from marketdata.domain.ingest import BadFile, Batch, Row, Rows, WriteResult, count_of

_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS candles_staging (ticker text, tf_min int4, ts timestamptz,"
    " open float8, high float8, low float8, close float8, volume float8, openint int8)"
    " ON COMMIT DELETE ROWS"
)
_STAGING_TYPES = [
    "text",
    "int4",
    "timestamptz",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "int8",
]
_KEY = "c.ticker = s.ticker AND c.tf_min = s.tf_min AND c.ts = s.ts"
_DUPLICATE = """
SELECT ticker, tf_min, ts FROM candles_staging
GROUP BY ticker, tf_min, ts HAVING count(*) > 1 LIMIT 1
"""
# Changed candles first (each counts a revision and notes its transaction), then the new ones
# with a plain INSERT: about twice as fast as INSERT ... ON CONFLICT on this machine
# (bench/README.md). Rows go in key order. What each statement implies (catalog, rollups,
# change feed) is the database's triggers' work (migrations/0006_any_writer.sql).
_UPDATE = f"""
UPDATE candles c SET open = s.open, high = s.high, low = s.low, close = s.close,
    volume = s.volume, openint = s.openint, revision = c.revision + 1,
    xact = pg_current_xact_id()
FROM candles_staging s
WHERE {_KEY}
  AND (c.open, c.high, c.low, c.close, c.volume, c.openint)
      IS DISTINCT FROM (s.open, s.high, s.low, s.close, s.volume, s.openint)
"""
_INSERT = f"""
INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)
SELECT s.ticker, s.tf_min, s.ts, s.open, s.high, s.low, s.close, s.volume, s.openint
FROM candles_staging s
WHERE NOT EXISTS (SELECT 1 FROM candles c WHERE {_KEY})
ORDER BY s.ticker, s.tf_min, s.ts
"""
# When another writer inserted some of the same new candles meanwhile, the plain INSERT
# meets them: this upsert then settles the rest (a candle equal to the stored one is not
# rewritten). Counts (inserted, updated).
_UPSERT = """
WITH written AS (
    INSERT INTO candles AS c (ticker, tf_min, ts, open, high, low, close, volume, openint)
    SELECT ticker, tf_min, ts, open, high, low, close, volume, openint
    FROM candles_staging ORDER BY ticker, tf_min, ts
    ON CONFLICT (ticker, tf_min, ts) DO UPDATE SET
        open = excluded.open, high = excluded.high, low = excluded.low,
        close = excluded.close, volume = excluded.volume, openint = excluded.openint,
        revision = c.revision + 1, xact = pg_current_xact_id()
    WHERE (c.open, c.high, c.low, c.close, c.volume, c.openint)
        IS DISTINCT FROM (excluded.open, excluded.high, excluded.low, excluded.close,
                          excluded.volume, excluded.openint)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
"""


async def _staged(cursor: psycopg.AsyncCursor[Any], rows: Rows) -> int:
    """COPY the rows into the staging table in binary: row by row, or batch by batch (in
    columns, from Arrow, no Python call per row); how many."""
    items = iter(rows)
    first = next(items, None)
    if first is None:
        return 0
    if isinstance(first, tuple):
        async with cursor.copy("COPY candles_staging FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_STAGING_TYPES)
            count = 0
            for row in itertools.chain([first], items):
                await copy.write_row(cast(Row, row))
                count += 1
        return count
    count = 0
    async with cursor.copy("COPY candles_staging FROM STDIN (FORMAT BINARY)") as copy:
        await copy.write(COPY_HEADER)
        for batch in itertools.chain([first], items):
            await copy.write(copy_binary(batch))
            count += count_of(cast(Batch, batch))
        await copy.write(COPY_TRAILER)
    return count


# The staged tickers, and whether no stored candle can share a key with the staged ones: every
# staged series new, or staged wholly before or after what is stored (an append), as the
# catalog shows
_STAGED = """
SELECT array_agg(DISTINCT s.ticker),
       bool_and(c.ticker IS NULL OR s.hi < c.first_ts OR s.lo > c.last_ts)
FROM (SELECT ticker, tf_min, min(ts) AS lo, max(ts) AS hi
      FROM candles_staging GROUP BY ticker, tf_min) s
LEFT JOIN candle_series c ON c.ticker = s.ticker AND c.tf_min = s.tf_min
"""
# in the data's order, as COPY would (files come sorted; a sort of 2,000,000 staged rows by
# ticker took 0.7 s of a 5.7 s INSERT)
_APPEND = """
INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)
SELECT ticker, tf_min, ts, open, high, low, close, volume, openint FROM candles_staging
"""


async def _appended(cursor: psycopg.AsyncCursor[Any]) -> int | None:
    """When the catalog shows that no staged candle can exist yet (new series, or appended
    before or after the stored ones: the common bulk load and live write), a plain INSERT:
    no comparison with stored candles, no duplicate scan first; how many. A key met anyway
    (the same candle twice in the data) rolls it back: None, and the write takes the merge."""
    try:
        async with cursor.connection.transaction():  # a savepoint
            await cursor.execute(_APPEND)
    except pg_errors.UniqueViolation:
        return None
    return cursor.rowcount


async def _merged(cursor: psycopg.AsyncCursor[Any]) -> tuple[int, int]:
    """The staged rows merged into candles: the changed ones updated, the new ones
    inserted (refused if the data holds a candle twice); (inserted, updated)."""
    await cursor.execute(_DUPLICATE)
    if twice := await cursor.fetchone():
        raise BadFile(
            f"the data holds the candle {twice[0]} tf_min={twice[1]}"
            f" ts={twice[2].isoformat()} more than once"
        )
    await cursor.execute(_UPDATE)
    updated = cursor.rowcount
    try:
        async with cursor.connection.transaction():  # a savepoint
            await cursor.execute(_INSERT)
            return cursor.rowcount, updated
    except pg_errors.UniqueViolation:
        await cursor.execute(_UPSERT)
        row = await cursor.fetchone()
        inserted, more = (int(row[0]), int(row[1])) if row else (0, 0)
        return inserted, updated + more


async def write_rows(
    conn: psycopg.AsyncConnection[Any],
    rows: Rows,
    *,
    bounded: bool = True,
    known: KnownSeries | None = None,
) -> WriteResult:
    """COPY the rows into a staging table, then merge them into candles, in one transaction:
    a bad row (raised by `rows`) or any failure leaves everything untouched. The triggers
    keep the catalog, the rollups and the change feed in the same transaction. `bounded`
    false lifts the connection's statement timeout for the write. `known`: this process's
    copy of the catalog, told at once when it commits."""
    async with conn.transaction(), conn.cursor() as cursor:
        if not bounded:
            # a file may take minutes, and its sorts and hashes want memory
            await cursor.execute("SET LOCAL statement_timeout = 0")
            await cursor.execute("SET LOCAL work_mem = '256MB'")
        await cursor.execute(_STAGING)
        count = await _staged(cursor, rows)
        await cursor.execute("ANALYZE candles_staging")
        # the tickers' locks before any candle: the writers of a ticker take turns, each
        # merging what the other committed (the triggers take them too, for other writers)
        await catalog.lock(cursor)
        await cursor.execute(_STAGED)
        tickers, clear = (await cursor.fetchone()) or (None, False)
        appended = await _appended(cursor) if clear else None
        inserted, updated = (appended, 0) if appended is not None else await _merged(cursor)
    if known is not None:
        known.forget(tickers or [])
    return WriteResult(rows=count, inserted=inserted, updated=updated)


_DELETE = "DELETE FROM candles WHERE ticker = %s AND tf_min = %s AND ts >= %s AND ts <= %s"


async def delete_rows(
    conn: psycopg.AsyncConnection[Any],
    ticker: str,
    tf_min: int,
    time_range: TimeRange,
    *,
    known: KnownSeries | None = None,
) -> int:
    """Delete a series' candles in the range (the triggers keep the catalog, the rollups and
    the change feed, in the same transaction); how many were deleted."""
    async with conn.transaction(), conn.cursor() as cursor:
        await catalog.lock(cursor, [ticker])
        await cursor.execute(_DELETE, (ticker, tf_min, time_range.start, time_range.end))
        deleted = cursor.rowcount
    if deleted and known is not None:
        known.forget([ticker])
    return deleted


class PostgresCandleWriter:
    """CandleWriter on a pooled connection. `bounded`: each statement within
    DB_COMMAND_TIMEOUT (requests); unbounded for `marketdata ingest`, whose files may take
    minutes."""

    def __init__(
        self, database: Database, known: KnownSeries | None = None, *, bounded: bool = True
    ) -> None:
        self._db = database
        self._known = known
        self._bounded = bounded

    async def write(self, rows: Rows) -> WriteResult:
        async with (
            translated_errors(self._db.location, self._db.config),
            self._db.connection() as conn,
        ):
            return await write_rows(conn, rows, bounded=self._bounded, known=self._known)

    async def delete(self, ticker: str, tf_min: int, time_range: TimeRange) -> int:
        async with (
            translated_errors(self._db.location, self._db.config),
            self._db.connection() as conn,
        ):
            return await delete_rows(conn, ticker, tf_min, time_range, known=self._known)
