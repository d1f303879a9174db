"""The one write path: rows COPYed into a staging table, merged into candles, and the series
catalog updated, all in one transaction."""

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from marketdata.adapters.postgres import catalog
from marketdata.adapters.postgres.pool import Database, translated_errors
from marketdata.domain.ingest import BadFile, Row, WriteResult

_STAGING = (
    "CREATE TEMP TABLE candles_staging (ticker text, tf_min int4, ts timestamptz,"
    " open float8, high float8, low float8, close float8, volume float8, openint int8)"
    " ON COMMIT DROP"
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
# Changed candles first, then the new ones with a plain INSERT: about twice as fast as
# INSERT ... ON CONFLICT on this machine (bench/README.md). Rows go in key order. Each
# statement returns, per series, what it did (for the catalog).
_UPDATE = f"""
WITH changed AS (
    UPDATE candles c SET open = s.open, high = s.high, low = s.low, close = s.close,
        volume = s.volume, openint = s.openint
    FROM candles_staging s
    WHERE {_KEY}
      AND (c.open, c.high, c.low, c.close, c.volume, c.openint)
          IS DISTINCT FROM (s.open, s.high, s.low, s.close, s.volume, s.openint)
    RETURNING c.ticker, c.tf_min
)
SELECT ticker, tf_min, count(*) FROM changed GROUP BY ticker, tf_min
"""
_INSERT = f"""
WITH added AS (
    INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)
    SELECT s.ticker, s.tf_min, s.ts, s.open, s.high, s.low, s.close, s.volume, s.openint
    FROM candles_staging s
    WHERE NOT EXISTS (SELECT 1 FROM candles c WHERE {_KEY})
    ORDER BY s.ticker, s.tf_min, s.ts
    RETURNING ticker, tf_min, ts
)
SELECT ticker, tf_min, count(*), min(ts), max(ts), 0 FROM added GROUP BY ticker, tf_min
"""
# When another writer inserted some of the same new candles meanwhile, the plain INSERT
# meets them: this upsert then settles the rest (a candle equal to the stored one is not
# rewritten).
_UPSERT = """
WITH written AS (
    INSERT INTO candles AS c (ticker, tf_min, ts, open, high, low, close, volume, openint)
    SELECT ticker, tf_min, ts, open, high, low, close, volume, openint
    FROM candles_staging ORDER BY ticker, tf_min, ts
    ON CONFLICT (ticker, tf_min, ts) DO UPDATE SET
        open = excluded.open, high = excluded.high, low = excluded.low,
        close = excluded.close, volume = excluded.volume, openint = excluded.openint
    WHERE (c.open, c.high, c.low, c.close, c.volume, c.openint)
        IS DISTINCT FROM (excluded.open, excluded.high, excluded.low, excluded.close,
                          excluded.volume, excluded.openint)
    RETURNING ticker, tf_min, ts, (xmax = 0) AS inserted
)
SELECT ticker, tf_min, count(*) FILTER (WHERE inserted),
       min(ts) FILTER (WHERE inserted), max(ts) FILTER (WHERE inserted),
       count(*) FILTER (WHERE NOT inserted)
FROM written GROUP BY ticker, tf_min
"""


async def write_rows(
    conn: psycopg.AsyncConnection[Any], rows: Iterable[Row], *, bounded: bool = True
) -> WriteResult:
    """COPY the rows into a staging table, then merge them into candles and update the
    catalog, in one transaction: a bad row (raised by `rows`) or any failure leaves both
    untouched. `bounded` false lifts the connection's statement timeout for the write."""
    count = 0
    changes: catalog.Changes = {}
    async with conn.transaction(), conn.cursor() as cursor:
        if not bounded:
            await cursor.execute("SET LOCAL statement_timeout = 0")
        await cursor.execute(_STAGING)
        async with cursor.copy("COPY candles_staging FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_STAGING_TYPES)
            for row in rows:
                await copy.write_row(row)
                count += 1
        await cursor.execute("ANALYZE candles_staging")
        await cursor.execute(_DUPLICATE)
        if twice := await cursor.fetchone():
            raise BadFile(
                f"the data holds the candle {twice[0]} tf_min={twice[1]}"
                f" ts={twice[2].isoformat()} more than once"
            )
        await cursor.execute(_UPDATE)
        for ticker, tf_min, updated in await cursor.fetchall():
            changes[ticker, tf_min] = catalog.SeriesChange(updated=updated)
        try:
            async with conn.transaction():  # a savepoint
                await cursor.execute(_INSERT)
                settled = await cursor.fetchall()
        except pg_errors.UniqueViolation:
            await cursor.execute(_UPSERT)
            settled = await cursor.fetchall()
        for ticker, tf_min, added, first, last, updated in settled:
            change = changes.setdefault((ticker, tf_min), catalog.SeriesChange())
            change.added, change.first, change.last = added, first, last
            change.updated += updated
        await catalog.record(cursor, changes)
    return WriteResult(
        rows=count,
        inserted=sum(c.added for c in changes.values()),
        updated=sum(c.updated for c in changes.values()),
    )


class PostgresCandleWriter:
    """CandleWriter on a pooled connection. `bounded`: each statement within
    DB_COMMAND_TIMEOUT (requests); unbounded for `marketdata ingest`, whose files may take
    minutes."""

    def __init__(self, database: Database, *, bounded: bool = True) -> None:
        self._db = database
        self._bounded = bounded

    async def write(self, rows: Iterable[Row]) -> WriteResult:
        async with (
            translated_errors(self._db.location, self._db.config),
            self._db.connection() as conn,
        ):
            return await write_rows(conn, rows, bounded=self._bounded)
