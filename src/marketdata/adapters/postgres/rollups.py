"""Rollups (`candle_rollups`): coarser timeframes kept at write time, in the writer's own
transaction, so that a zoomed-out chart reads a few rows instead of millions.

Which rollups a ticker has, and what each is made of, is the domain's rule
(`rollup_levels`); how candles make a bucket is `buckets.bucketed`, as for every read. Every
writer keeps every registered rollup (`rollup_timeframes`); readers use only those marked
ready, which `sync` builds for all the data first. Writers and builders of one ticker take
turns on an advisory lock, so each recomputes its buckets from what the other committed.
"""

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg import sql

from marketdata.adapters.postgres import catalog, changes
from marketdata.adapters.postgres.buckets import (
    CANDLE_ROWS,
    LOCAL_LABEL,
    ROLLUP_ROWS,
    UTC_LABEL,
    bucketed,
)
from marketdata.adapters.postgres.pool import (
    DatabaseConfig,
    connect,
    location_of,
    translated_errors,
)
from marketdata.domain.bar_options import origin_of
from marketdata.domain.timeframes import Rollup, RollupLevel, Series, rollup_levels

log = structlog.get_logger(logger_name="marketdata.rollups")

Cursor = psycopg.AsyncCursor[Any]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Keys of the candles a write changed (inserted, updated or deleted), for the buckets to
# recompute. Filled by the write's own statements.
CHANGED = (
    "CREATE TEMP TABLE IF NOT EXISTS candles_changed (ticker text, tf_min int4, ts timestamptz)"
    " ON COMMIT DELETE ROWS"
)

_ROWS = {"candles": CANDLE_ROWS, "candle_rollups": ROLLUP_ROWS}
# A bucket counts the stored candles it holds
_COUNT = {"candles": "count(*)", "candle_rollups": "sum(n)"}
_LABELS = {False: UTC_LABEL, True: LOCAL_LABEL}
_COLUMNS = "ticker, tf_min, tz, ts, open, high, low, close, volume, openint, candles"
_SET = (
    "open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,"
    " volume = excluded.volume, openint = excluded.openint, candles = excluded.candles"
)


def _source(level: RollupLevel) -> str:
    return "candles" if level.parent is None else "candle_rollups"


def _rows(table: str, where: str = "", ticker: str = "%(ticker)s") -> str:
    """The rows a level is made of: its stored candles, or its parent rollup (of the
    ticker `ticker`, an SQL expression)."""
    kept = " AND tz = %(source_tz)s" if table == "candle_rollups" else ""
    return (
        f"SELECT {_ROWS[table]} FROM {table}"
        f" WHERE ticker = {ticker} AND tf_min = %(source)s{kept}{where}"
    )


def _build_sql(table: str, zoned: bool) -> str:
    """Every bucket of one level of one ticker, from its source, in one pass."""
    buckets = bucketed(_rows(table), _LABELS[zoned], _COUNT[table])
    return (
        f"INSERT INTO candle_rollups ({_COLUMNS})"
        f" SELECT %(ticker)s, %(tf)s, %(tz)s, b.* FROM ({buckets}) b ORDER BY 4"
    )


def _refresh_sql(table: str, zoned: bool) -> str:
    """The buckets of one level of several tickers (%(ticker)s, a list) that hold a changed
    candle, recomputed from their source: rewritten, or deleted when nothing is left in
    them. A zone's day is read with a day's margin each side, its candles picked by their
    label (days of 23 or 25 hours, and local midnights that happen twice or not at all)."""
    window = (
        " AND ts >= t.bucket - interval '1 day'"
        " AND ts < t.bucket + %(stride)s + interval '1 day'"
        f" AND {LOCAL_LABEL} = t.bucket"
        if zoned
        else " AND ts >= t.bucket AND ts < t.bucket + %(stride)s"
    )
    buckets = bucketed(_rows(table, window, "t.ticker"), _LABELS[zoned], _COUNT[table])
    return f"""
WITH touched AS (
    SELECT DISTINCT ticker, {_LABELS[zoned]} AS bucket FROM candles_changed
    WHERE ticker = ANY(%(ticker)s) AND tf_min = %(base)s
), fresh AS (
    SELECT t.ticker, t.bucket, a.open, a.high, a.low, a.close, a.volume, a.openint, a.candles
    FROM touched t LEFT JOIN LATERAL ({buckets}
    ) a(bucket, open, high, low, close, volume, openint, candles) ON true
), gone AS (
    DELETE FROM candle_rollups r USING fresh f
    WHERE f.candles IS NULL AND r.ticker = f.ticker AND r.tf_min = %(tf)s
      AND r.tz = %(tz)s AND r.ts = f.bucket
)
INSERT INTO candle_rollups AS r ({_COLUMNS})
SELECT ticker, %(tf)s, %(tz)s, bucket, open, high, low, close, volume, openint, candles
FROM fresh WHERE candles IS NOT NULL ORDER BY ticker, bucket
ON CONFLICT (ticker, tf_min, tz, ts) DO UPDATE SET {_SET}
"""


def _drift_sql(zoned: bool) -> str:
    """How many buckets of one level of one ticker differ from the same level computed
    afresh from the stored candles (volumes, sums of floats added in another order, to
    within 1e-9)."""
    truth = bucketed(_rows("candles"), _LABELS[zoned])
    return f"""
WITH truth AS ({truth}
), kept AS (
    SELECT ts, open, high, low, close, volume, openint, candles FROM candle_rollups
    WHERE ticker = %(ticker)s AND tf_min = %(tf)s AND tz = %(tz)s
)
SELECT count(*) FROM truth t(ts, open, high, low, close, volume, openint, candles)
FULL JOIN kept k ON k.ts = t.ts
WHERE t.ts IS NULL OR k.ts IS NULL
   OR (t.open, t.high, t.low, t.close, t.openint, t.candles)
      IS DISTINCT FROM (k.open, k.high, k.low, k.close, k.openint, k.candles)
   OR abs(t.volume - k.volume) > 1e-9 * greatest(abs(t.volume), 1)
"""


_BUILD = {(t, z): _build_sql(t, z).encode() for t in _ROWS for z in (False, True)}
_REFRESH = {(t, z): _refresh_sql(t, z).encode() for t in _ROWS for z in (False, True)}
_DRIFT = {z: _drift_sql(z).encode() for z in (False, True)}

_KEPT = "SELECT tf_min, tz, ready FROM rollup_timeframes ORDER BY tf_min, tz"
_STORED = (
    "SELECT ticker, tf_min, first_ts, last_ts, count, version FROM candle_series"
    " WHERE ticker = ANY(%s) ORDER BY ticker, tf_min"
)
# The rollups of one ticker named by (tf_min, tz) pairs
_THESE = "ticker = %s AND (tf_min, tz) IN (SELECT * FROM unnest(%s::int4[], %s::text[]))"


def _statement(statements: dict[tuple[str, bool], bytes], level: RollupLevel) -> bytes:
    return statements[_source(level), level.tz != "UTC"]


def _params(ticker: str | list[str], level: RollupLevel) -> dict[str, Any]:
    parent = level.parent
    return {
        "ticker": ticker,
        "tf": level.tf_min,
        "tz": level.tz,
        "base": level.base_tf,
        "source": level.base_tf if parent is None else parent.tf_min,
        "source_tz": "UTC" if parent is None else parent.tz,
        "stride": timedelta(minutes=level.tf_min),
        "epoch": EPOCH,
        "origin": origin_of(level.tf_min),
    }


def _columns(rollups: Iterable[Rollup]) -> tuple[list[int], list[str]]:
    listed = list(rollups)
    return [r.tf_min for r in listed], [r.tz for r in listed]


class Kept(msgspec.Struct, frozen=True):
    """The registered rollups, and those among them that are complete."""

    rollups: tuple[Rollup, ...] = ()
    ready: frozenset[Rollup] = frozenset()


async def kept(cursor: Cursor) -> Kept:
    await cursor.execute(_KEPT)
    rows = await cursor.fetchall()
    return Kept(
        tuple(Rollup(tf, tz) for tf, tz, _ in rows),
        frozenset(Rollup(tf, tz) for tf, tz, ready in rows if ready),
    )


async def _stored(cursor: Cursor, tickers: list[str]) -> dict[str, list[Series]]:
    await cursor.execute(_STORED, (tickers,))
    found: dict[str, list[Series]] = {}
    for row in await cursor.fetchall():
        found.setdefault(row[0], []).append(Series(*row))
    return found


async def _forget(cursor: Cursor, ticker: str, rollups: Iterable[Rollup]) -> None:
    await cursor.execute(f"DELETE FROM candle_rollups WHERE {_THESE}", (ticker, *_columns(rollups)))


async def _build(cursor: Cursor, ticker: str, levels: Sequence[RollupLevel]) -> None:
    """Rebuild these levels of a ticker wholly, finest first (the others are left as they
    are)."""
    await _forget(cursor, ticker, [lv.rollup for lv in levels])
    for level in levels:
        await cursor.execute(_statement(_BUILD, level), _params(ticker, level))


async def keep(
    cursor: Cursor, written: Iterable[tuple[str, int]], reshaped: Iterable[str], rollups: Kept
) -> None:
    """In a write's transaction, under its tickers' locks, after its candles and the catalog:
    bring the rollups of the tickers it wrote (`written`: the series whose candles changed,
    their keys in candles_changed) up to date. A ticker whose set of stored timeframes changed
    (`reshaped`) may have another source for its rollups: they are rebuilt wholly."""
    series = sorted(set(written))
    if not rollups.rollups or not series:
        return
    reshaped = set(reshaped)
    tickers = sorted({ticker for ticker, _ in series})
    stored = await _stored(cursor, tickers)
    # the tickers whose changed levels are the same are refreshed together, a statement a
    # level; one round trip for all the statements
    together: dict[tuple[RollupLevel, ...], list[str]] = {}
    async with cursor.connection.pipeline():
        for ticker in tickers:
            if ticker in reshaped:
                # every level is rebuilt, finest first: each can be made from the one before
                await _forget(cursor, ticker, rollups.rollups)
                await _build(cursor, ticker, rollup_levels(stored.get(ticker, []), rollups.rollups))
                continue
            changed = {tf for t, tf in series if t == ticker}
            kept_levels = rollup_levels(stored.get(ticker, []), rollups.rollups, rollups.ready)
            refreshed = tuple(level for level in kept_levels if level.base_tf in changed)
            together.setdefault(refreshed, []).append(ticker)
        for levels, group in together.items():
            for level in levels:
                await cursor.execute(_statement(_REFRESH, level), _params(group, level))


Progress = Callable[[str, int, int], None]  # (ticker, done, of)


async def sync(
    config: DatabaseConfig,
    wanted: Sequence[Rollup],
    *,
    repair: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> list[Rollup]:
    """Make the kept rollups those `wanted`: drop the others, build the new ones for every
    ticker, then mark them ready. With `repair`, also rebuild every kept level of those
    tickers (an empty list: of every ticker). One ticker per transaction, so memory and
    locks stay bounded. Returns the rollups that became ready."""
    tickers = list(repair) if repair else None
    tfs, tzs = _columns(wanted)
    async with (
        await connect(config, "marketdata-rollups") as conn,
        translated_errors(location_of(config.url), config),
    ):
        cursor = conn.cursor()
        await cursor.execute("SET work_mem = '128MB'")  # a ticker's sorts, in memory
        async with conn.transaction():
            for table in ("candle_rollups", "rollup_timeframes"):
                await cursor.execute(
                    sql.SQL(
                        "DELETE FROM {} WHERE (tf_min, tz) NOT IN"
                        " (SELECT * FROM unnest(%s::int4[], %s::text[]))"
                    ).format(sql.Identifier(table)),
                    (tfs, tzs),
                )
            await cursor.execute(
                "INSERT INTO rollup_timeframes (tf_min, tz)"
                " SELECT * FROM unnest(%s::int4[], %s::text[]) ON CONFLICT DO NOTHING",
                (tfs, tzs),
            )
            current = await kept(cursor)
            await changes.flush(cursor)  # the rollups readers may use are these now
        building = [r for r in current.rollups if r not in current.ready]
        if repair is None and not building:
            return []
        if tickers is None:
            await cursor.execute("SELECT DISTINCT ticker FROM candle_series ORDER BY ticker")
            tickers = [row[0] for row in await cursor.fetchall()]
        for done, ticker in enumerate(tickers, 1):
            async with conn.transaction():
                await catalog.lock(cursor, [ticker])
                stored = (await _stored(cursor, [ticker])).get(ticker, [])
                levels = rollup_levels(stored, current.rollups)
                if repair is None:
                    levels = [lv for lv in levels if lv.rollup in building]
                await _build(cursor, ticker, levels)
            if progress is not None:
                progress(ticker, done, len(tickers))
        await cursor.execute(
            "UPDATE rollup_timeframes SET ready = true WHERE (tf_min, tz) IN"
            " (SELECT * FROM unnest(%s::int4[], %s::text[]))",
            _columns(building),
        )
        await changes.flush(cursor)
        if building:
            log.info("rollups built", rollups=[str(r) for r in building], tickers=len(tickers))
        return building


class Drift(msgspec.Struct, frozen=True):
    """A kept rollup of one ticker and the buckets in which it disagrees with its source."""

    ticker: str
    rollup: Rollup
    buckets: int


async def drift(config: DatabaseConfig) -> list[Drift]:
    """Every kept rollup of every ticker that disagrees with its stored candles (one pass
    over the candles of each). Rollups still being built are not checked."""
    found: list[Drift] = []
    async with (
        await connect(config, "marketdata-check") as conn,
        translated_errors(location_of(config.url), config),
    ):
        cursor = conn.cursor()
        current = await kept(cursor)
        if not current.ready:
            return []
        await cursor.execute("SELECT DISTINCT ticker FROM candle_series ORDER BY ticker")
        for (ticker,) in await cursor.fetchall():
            stored = (await _stored(cursor, [ticker])).get(ticker, [])
            for level in rollup_levels(stored, current.ready):
                # compared with the level made afresh from the candles, not from its parent
                fresh = msgspec.structs.replace(level, parent=None)
                await cursor.execute(_DRIFT[level.tz != "UTC"], _params(ticker, fresh))
                row = await cursor.fetchone()
                if row is not None and row[0]:
                    found.append(Drift(ticker, level.rollup, int(row[0])))
    return found
