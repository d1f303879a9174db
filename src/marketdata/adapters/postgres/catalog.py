"""The series catalog (`candle_series`): kept exact by the write path, checked and mended
against the table for rows another tool wrote."""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
import psycopg

from marketdata.adapters.postgres.channel import CHANNEL, FLUSH
from marketdata.adapters.postgres.pool import (
    DatabaseConfig,
    connect,
    location_of,
    translated_errors,
)


class SeriesChange(msgspec.Struct):
    """What one write did to one series: candles added (and the span they cover), candles
    whose values changed, and the span of every candle it changed (lo, hi)."""

    added: int = 0
    first: datetime | None = None
    last: datetime | None = None
    updated: int = 0
    lo: datetime | None = None
    hi: datetime | None = None


Changes = dict[tuple[str, int], SeriesChange]

# pg_advisory_xact_lock(SERIES_LOCK, hashtext(ticker)): the writes, deletions and rollup
# builds of one ticker take turns. Each takes its tickers' locks first, in the order of
# their hashes (two tickers may share one): no two ever wait on each other in a cycle.
SERIES_LOCK = 0x726F6C6C
_LOCK = (
    "SELECT pg_advisory_xact_lock(%s, h) FROM"
    " (SELECT DISTINCT hashtext(t) AS h FROM {} ORDER BY h) s"
)


async def lock(cursor: psycopg.AsyncCursor[Any], tickers: Iterable[str] | None = None) -> None:
    """Take the tickers' locks for the transaction; without `tickers`, those of the rows in
    candles_staging (a write's)."""
    if tickers is None:
        await cursor.execute(
            _LOCK.format("(SELECT ticker AS t FROM candles_staging) c"), (SERIES_LOCK,)
        )
    else:
        await cursor.execute(
            _LOCK.format("unnest(%s::text[]) t"), (SERIES_LOCK, sorted(set(tickers)))
        )


# Applies the write's changes, under its tickers' locks (see `lock`). First and last can
# only move by added candles; a series that only had updates keeps its span and count but
# takes a new version. A series new to the catalog is inserted, or, when another writer
# inserted it meanwhile, updated like the others. One with only updates and no row (rows
# written by another tool) waits for `catalog --refresh`.
_RECORD = """
WITH d AS (
    SELECT * FROM unnest(%s::text[], %s::int4[], %s::timestamptz[], %s::timestamptz[],
                         %s::int8[]) AS d(ticker, tf_min, first_ts, last_ts, added)
), updated AS (
    UPDATE candle_series cs SET
        first_ts = least(cs.first_ts, d.first_ts),
        last_ts = greatest(cs.last_ts, d.last_ts),
        count = cs.count + d.added,
        version = %s
    FROM d WHERE cs.ticker = d.ticker AND cs.tf_min = d.tf_min
    RETURNING cs.ticker, cs.tf_min
)
INSERT INTO candle_series AS cs (ticker, tf_min, first_ts, last_ts, count, version)
SELECT ticker, tf_min, first_ts, last_ts, added, %s FROM d
WHERE added > 0
  AND NOT EXISTS (SELECT 1 FROM updated u WHERE u.ticker = d.ticker AND u.tf_min = d.tf_min)
ORDER BY ticker, tf_min
ON CONFLICT (ticker, tf_min) DO UPDATE SET
    first_ts = least(cs.first_ts, excluded.first_ts),
    last_ts = greatest(cs.last_ts, excluded.last_ts),
    count = cs.count + excluded.count,
    version = excluded.version
RETURNING cs.ticker, cs.tf_min, (cs.xmax = 0)
"""


async def record(
    cursor: psycopg.AsyncCursor[Any], changes: Changes, version: int
) -> list[tuple[str, int]]:
    """Update the catalog with a write's changes, in the write's transaction, each changed
    series taking the write's `version`; the series that are new to it."""
    changed = sorted((key, c) for key, c in changes.items() if c.added or c.updated)
    if not changed:
        return []
    await cursor.execute(
        _RECORD,
        (
            [key[0] for key, _ in changed],
            [key[1] for key, _ in changed],
            [c.first for _, c in changed],
            [c.last for _, c in changed],
            [c.added for _, c in changed],
            version,
            version,
        ),
    )
    return [(ticker, tf_min) for ticker, tf_min, new in await cursor.fetchall() if new]


async def forget(cursor: psycopg.AsyncCursor[Any], ticker: str, tf_min: int, deleted: int) -> bool:
    """After `deleted` candles of a series were deleted in this transaction: its catalog row
    follows (first and last read through the index); whether the series is gone."""
    await cursor.execute(
        "SELECT min(ts), max(ts) FROM candles WHERE ticker = %s AND tf_min = %s", (ticker, tf_min)
    )
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        await cursor.execute(
            "DELETE FROM candle_series WHERE ticker = %s AND tf_min = %s", (ticker, tf_min)
        )
        return True
    await cursor.execute(
        "UPDATE candle_series SET first_ts = %s, last_ts = %s, count = count - %s,"
        " version = nextval('candle_series_version') WHERE ticker = %s AND tf_min = %s",
        (row[0], row[1], deleted, ticker, tf_min),
    )
    return False


_TRUTH = """
SELECT ticker, tf_min, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS count
FROM candles GROUP BY ticker, tf_min
"""

# (ticker, tf_min, catalog's count or NULL, table's count or NULL) of every disagreement.
_DRIFT = f"""
WITH truth AS ({_TRUTH})
SELECT coalesce(t.ticker, c.ticker), coalesce(t.tf_min, c.tf_min), c.count, t.count
FROM truth t FULL JOIN candle_series c ON c.ticker = t.ticker AND c.tf_min = t.tf_min
WHERE t.ticker IS NULL OR c.ticker IS NULL
   OR (t.first_ts, t.last_ts, t.count) IS DISTINCT FROM (c.first_ts, c.last_ts, c.count)
ORDER BY 1, 2
"""

_REFRESH = f"""
WITH truth AS ({_TRUTH}),
gone AS (
    DELETE FROM candle_series c
    WHERE NOT EXISTS (SELECT 1 FROM truth t WHERE t.ticker = c.ticker AND t.tf_min = c.tf_min)
    RETURNING 1
),
mended AS (
    INSERT INTO candle_series AS cs (ticker, tf_min, first_ts, last_ts, count, version)
    SELECT ticker, tf_min, first_ts, last_ts, count, nextval('candle_series_version')
    FROM truth ORDER BY ticker, tf_min
    ON CONFLICT (ticker, tf_min) DO UPDATE SET
        first_ts = excluded.first_ts, last_ts = excluded.last_ts,
        count = excluded.count, version = excluded.version
    WHERE (cs.first_ts, cs.last_ts, cs.count)
        IS DISTINCT FROM (excluded.first_ts, excluded.last_ts, excluded.count)
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM mended)
"""
# Writers wait while the catalog is rebuilt (reads go on): a write committed between the
# count and the catalog update would otherwise be overwritten by the older count.
# ... and every process forgets what it knew of the catalog when this commits (the
# flush of `channel`)
REFRESH_STATEMENTS = (
    "LOCK TABLE candles IN SHARE MODE",
    f"SELECT pg_notify('{CHANNEL}', '{FLUSH}')",
    _REFRESH,
)


class Drift(msgspec.Struct, frozen=True):
    """A series on which the catalog and the table disagree (None: absent there)."""

    ticker: str
    tf_min: int
    catalog_count: int | None
    table_count: int | None


async def drift(config: DatabaseConfig) -> list[Drift]:
    """Every series whose catalog row disagrees with the table (one pass over candles)."""
    async with (
        await connect(config, "marketdata-check") as conn,
        translated_errors(location_of(config.url), config),
    ):
        cursor = await conn.execute(_DRIFT)
        return [Drift(*row) for row in await cursor.fetchall()]


async def refresh(config: DatabaseConfig) -> int:
    """Rebuild the catalog from the table; the number of series rows mended."""
    async with (
        await connect(config, "marketdata-catalog") as conn,
        translated_errors(location_of(config.url), config),
        conn.transaction(),
    ):
        cursor = None
        for statement in REFRESH_STATEMENTS:
            cursor = await conn.execute(statement)
        row = await cursor.fetchone() if cursor is not None else None
    return int(row[0]) if row else 0
