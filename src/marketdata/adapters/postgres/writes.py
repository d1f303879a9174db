"""The one write path: rows COPYed into a staging table, merged into candles, the series
catalog and the rollups updated, all in one transaction; deletions the same way."""

import itertools
from typing import Any, cast

import psycopg
from psycopg import errors as pg_errors

from marketdata.adapters.columnar import COPY_HEADER, COPY_TRAILER, copy_binary
from marketdata.adapters.postgres import catalog, rollups
from marketdata.adapters.postgres.changes import announce
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
# Changed candles first, then the new ones with a plain INSERT: about twice as fast as
# INSERT ... ON CONFLICT on this machine (bench/README.md). Rows go in key order. Each
# statement returns, per series, what it did (for the catalog).
# With rollups kept, each statement also notes the keys it changed (rollups.CHANGED).
_NOTED = ", noted AS (INSERT INTO candles_changed SELECT ticker, tf_min, ts FROM {0})"
_UPDATE = f"""
WITH changed AS (
    UPDATE candles c SET open = s.open, high = s.high, low = s.low, close = s.close,
        volume = s.volume, openint = s.openint, revision = c.revision + 1,
        version = %(version)s
    FROM candles_staging s
    WHERE {_KEY}
      AND (c.open, c.high, c.low, c.close, c.volume, c.openint)
          IS DISTINCT FROM (s.open, s.high, s.low, s.close, s.volume, s.openint)
    RETURNING c.ticker, c.tf_min, c.ts
){{noted}}
SELECT ticker, tf_min, count(*), min(ts), max(ts) FROM changed GROUP BY ticker, tf_min
"""
_INSERT = f"""
WITH added AS (
    INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint, version)
    SELECT s.ticker, s.tf_min, s.ts, s.open, s.high, s.low, s.close, s.volume, s.openint,
           %(version)s
    FROM candles_staging s
    WHERE NOT EXISTS (SELECT 1 FROM candles c WHERE {_KEY})
    ORDER BY s.ticker, s.tf_min, s.ts
    RETURNING ticker, tf_min, ts
){{noted}}
SELECT ticker, tf_min, count(*), min(ts), max(ts), 0, min(ts), max(ts)
FROM added GROUP BY ticker, tf_min
"""
# When another writer inserted some of the same new candles meanwhile, the plain INSERT
# meets them: this upsert then settles the rest (a candle equal to the stored one is not
# rewritten).
_UPSERT = """
WITH written AS (
    INSERT INTO candles AS c (ticker, tf_min, ts, open, high, low, close, volume, openint,
                              version)
    SELECT ticker, tf_min, ts, open, high, low, close, volume, openint, %(version)s
    FROM candles_staging ORDER BY ticker, tf_min, ts
    ON CONFLICT (ticker, tf_min, ts) DO UPDATE SET
        open = excluded.open, high = excluded.high, low = excluded.low,
        close = excluded.close, volume = excluded.volume, openint = excluded.openint,
        revision = c.revision + 1, version = excluded.version
    WHERE (c.open, c.high, c.low, c.close, c.volume, c.openint)
        IS DISTINCT FROM (excluded.open, excluded.high, excluded.low, excluded.close,
                          excluded.volume, excluded.openint)
    RETURNING ticker, tf_min, ts, (xmax = 0) AS inserted
){noted}
SELECT ticker, tf_min, count(*) FILTER (WHERE inserted),
       min(ts) FILTER (WHERE inserted), max(ts) FILTER (WHERE inserted),
       count(*) FILTER (WHERE NOT inserted), min(ts), max(ts)
FROM written GROUP BY ticker, tf_min
"""


def _merge(statement: str, cte: str, noting: bool) -> str:
    return statement.format(noted=_NOTED.format(cte) if noting else "")


_MERGE = {
    noting: (
        _merge(_UPDATE, "changed", noting),
        _merge(_INSERT, "added", noting),
        _merge(_UPSERT, "written", noting),
    )
    for noting in (False, True)
}


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


# Per staged series: its rows and span, and whether no stored candle can share a key with
# them (a series not stored, or staged wholly before or after what is stored: an append)
_SPANS = """
SELECT s.ticker, s.tf_min, s.n, s.lo, s.hi,
       c.ticker IS NULL OR s.hi < c.first_ts OR s.lo > c.last_ts AS clear, c.ticker IS NULL
FROM (SELECT ticker, tf_min, count(*) AS n, min(ts) AS lo, max(ts) AS hi
      FROM candles_staging GROUP BY ticker, tf_min) s
LEFT JOIN candle_series c ON c.ticker = s.ticker AND c.tf_min = s.tf_min
"""
# in the data's order, as COPY would (files come sorted; a sort of 2,000,000 staged rows by
# ticker took 0.7 s of a 5.7 s INSERT)
_APPEND = """
INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint, version)
SELECT ticker, tf_min, ts, open, high, low, close, volume, openint, %(version)s
FROM candles_staging
"""


async def _appended(
    cursor: psycopg.AsyncCursor[Any], version: dict[str, int], noting: bool
) -> catalog.Changes | None:
    """When the catalog shows that no staged candle can exist yet (new series, or appended
    before or after the stored ones: the common bulk load and live write), a plain INSERT:
    no comparison with stored candles, no duplicate scan first. A key met anyway (the same
    candle twice in the data, or rows written around the catalog) rolls it back: None, and
    the write takes the merge."""
    await cursor.execute(_SPANS)
    spans = await cursor.fetchall()
    if not all(clear for *_, clear, _ in spans):
        return None
    try:
        async with cursor.connection.transaction():  # a savepoint
            await cursor.execute(_APPEND, version)
            if noting and not all(new for *_, new in spans):
                # rollups of stored series are refreshed from the keys written
                await cursor.execute(
                    "INSERT INTO candles_changed SELECT ticker, tf_min, ts FROM candles_staging"
                )
    except pg_errors.UniqueViolation:
        return None
    return {
        (ticker, tf_min): catalog.SeriesChange(added=n, first=lo, last=hi, lo=lo, hi=hi)
        for ticker, tf_min, n, lo, hi, _, _ in spans
    }


async def _merged(
    cursor: psycopg.AsyncCursor[Any], version: dict[str, int], noting: bool
) -> catalog.Changes:
    """The staged rows merged into candles: the changed ones updated, the new ones
    inserted (refused if the data holds a candle twice); what each series got."""
    await cursor.execute(_DUPLICATE)
    if twice := await cursor.fetchone():
        raise BadFile(
            f"the data holds the candle {twice[0]} tf_min={twice[1]}"
            f" ts={twice[2].isoformat()} more than once"
        )
    update, insert, upsert = _MERGE[noting]
    changes: catalog.Changes = {}
    await cursor.execute(update, version)
    for ticker, tf_min, updated, lo, hi in await cursor.fetchall():
        changes[ticker, tf_min] = catalog.SeriesChange(updated=updated, lo=lo, hi=hi)
    try:
        async with cursor.connection.transaction():  # a savepoint
            await cursor.execute(insert, version)
            settled = await cursor.fetchall()
    except pg_errors.UniqueViolation:
        await cursor.execute(upsert, version)
        settled = await cursor.fetchall()
    for ticker, tf_min, added, first, last, updated, lo, hi in settled:
        change = changes.setdefault((ticker, tf_min), catalog.SeriesChange())
        change.added, change.first, change.last = added, first, last
        change.updated += updated
        change.lo = min(lo, change.lo) if change.lo else lo
        change.hi = max(hi, change.hi) if change.hi else hi
    return changes


async def write_rows(
    conn: psycopg.AsyncConnection[Any],
    rows: Rows,
    *,
    bounded: bool = True,
    known: KnownSeries | None = None,
) -> WriteResult:
    """COPY the rows into a staging table, then merge them into candles and update the
    catalog, in one transaction: a bad row (raised by `rows`) or any failure leaves both
    untouched. `bounded` false lifts the connection's statement timeout for the write.
    `known`: this process's copy of the catalog, told at once when it commits."""
    async with conn.transaction(), conn.cursor() as cursor:
        if not bounded:
            # a file may take minutes, and its sorts and hashes want memory
            await cursor.execute("SET LOCAL statement_timeout = 0")
            await cursor.execute("SET LOCAL work_mem = '256MB'")
        kept = await rollups.kept(cursor)
        noting = bool(kept.rollups)
        if noting:
            await cursor.execute(rollups.CHANGED)
        await cursor.execute(_STAGING)
        count = await _staged(cursor, rows)
        await cursor.execute("ANALYZE candles_staging")
        await catalog.lock(cursor)
        # the write's version, taken under the locks (so a series' versions grow in commit
        # order): on its rows, in the catalog, in the change announced
        await cursor.execute("SELECT nextval('candle_series_version')")
        version = {"version": (await cursor.fetchone() or (0,))[0]}
        appended = await _appended(cursor, version, noting)
        if appended is not None:
            changes = appended
        else:
            changes = await _merged(cursor, version, noting)
        new_series = await catalog.record(cursor, changes, version["version"])
        written = [key for key, c in changes.items() if c.added or c.updated]
        await rollups.keep(cursor, written, {ticker for ticker, _ in new_series}, kept)
        await announce(cursor, changes, version["version"])
    if known is not None:
        known.forget({ticker for ticker, _ in changes})
    return WriteResult(
        rows=count,
        inserted=sum(c.added for c in changes.values()),
        updated=sum(c.updated for c in changes.values()),
    )


_DELETE = """
WITH gone AS (
    DELETE FROM candles WHERE ticker = %s AND tf_min = %s AND ts >= %s AND ts <= %s
    RETURNING ticker, tf_min, ts
){noted}
SELECT count(*) FROM gone
"""


async def delete_rows(
    conn: psycopg.AsyncConnection[Any],
    ticker: str,
    tf_min: int,
    time_range: TimeRange,
    *,
    known: KnownSeries | None = None,
) -> int:
    """Delete a series' candles in the range, with the catalog and the rollups, in one
    transaction; how many were deleted. Announced (nothing is streamed: the candles are
    gone) so that every process's copy of the catalog forgets the ticker."""
    async with conn.transaction(), conn.cursor() as cursor:
        await catalog.lock(cursor, [ticker])
        kept = await rollups.kept(cursor)
        if kept.rollups:
            await cursor.execute(rollups.CHANGED)
        await cursor.execute(
            _merge(_DELETE, "gone", bool(kept.rollups)),
            (ticker, tf_min, time_range.start, time_range.end),
        )
        row = await cursor.fetchone()
        deleted = int(row[0]) if row else 0
        if deleted:
            gone = await catalog.forget(cursor, ticker, tf_min, deleted)
            await rollups.keep(cursor, [(ticker, tf_min)], {ticker} if gone else set(), kept)
            span = catalog.SeriesChange(lo=time_range.start, hi=time_range.end)
            await announce(cursor, {(ticker, tf_min): span}, 0)
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
