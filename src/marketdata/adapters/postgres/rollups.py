"""Rollups (`candle_rollups`): coarser timeframes kept at write time, so that a zoomed-out
chart reads a few rows instead of millions.

Which rollups a ticker has, what each is made of and how candles make a bucket are the
database's rules (`candle_rollup_levels`, `candle_buckets` in migrations/0006_any_writer.sql):
the triggers of `candles` keep every registered rollup (`rollup_timeframes`) for every writer,
in the writer's transaction. Here: which rollups are registered (ROLLUP_TF_MINS), their build
for the data already stored before readers use them (`sync`: ready once built), and the
check against the candles (`drift`).
"""

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg import sql

from marketdata.adapters.postgres import catalog, changes
from marketdata.adapters.postgres.pool import (
    DatabaseConfig,
    connect,
    location_of,
    translated_errors,
)
from marketdata.domain.timeframes import Rollup

log = structlog.get_logger(logger_name="marketdata.rollups")

Cursor = psycopg.AsyncCursor[Any]

_KEPT = "SELECT tf_min, tz, ready FROM rollup_timeframes ORDER BY tf_min, tz"


def _columns(rollups: Sequence[Rollup]) -> tuple[list[int], list[str]]:
    return [r.tf_min for r in rollups], [r.tz for r in rollups]


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


Progress = Callable[[str, int, int], None]  # (ticker, done, of)


async def sync(
    config: DatabaseConfig,
    wanted: Sequence[Rollup],
    *,
    progress: Progress | None = None,
) -> list[Rollup]:
    """Make the kept rollups those `wanted`: drop the others, build the new ones for every
    ticker, then mark them ready (writers keep them meanwhile). One ticker per transaction,
    so memory and locks stay bounded. Returns the rollups that became ready. (A ticker's
    rollups made again from its candles: `catalog.mend`.)"""
    tfs, tzs = _columns(wanted)
    async with (
        await connect(config, "marketdata-rollups") as conn,
        translated_errors(location_of(config.url), config),
    ):
        cursor = conn.cursor()
        await cursor.execute("SET work_mem = '128MB'")  # a ticker's sorts, in memory
        async with conn.transaction():
            # a rollup's rows are dropped only when it is no longer wanted: deleting by
            # level scans every rollup row (7 s at 100M candles, for nothing, on every migrate)
            await cursor.execute(
                "SELECT 1 FROM rollup_timeframes WHERE (tf_min, tz) NOT IN"
                " (SELECT * FROM unnest(%s::int4[], %s::text[]))",
                (tfs, tzs),
            )
            unwanted = await cursor.fetchone() is not None
            for table in ("candle_rollups", "rollup_timeframes") if unwanted else ():
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
        if not building:
            return []
        await cursor.execute("SELECT DISTINCT ticker FROM candle_series ORDER BY ticker")
        tickers = [row[0] for row in await cursor.fetchall()]
        only = [f"{r.tf_min}@{r.tz}" for r in building]
        for done, ticker in enumerate(tickers, 1):
            async with conn.transaction():
                await catalog.lock(cursor, [ticker])
                await cursor.execute("SELECT candle_rollups_build(%s, %s)", ([ticker], only))
            if progress is not None:
                progress(ticker, done, len(tickers))
        await cursor.execute(
            "UPDATE rollup_timeframes SET ready = true WHERE (tf_min, tz) IN"
            " (SELECT * FROM unnest(%s::int4[], %s::text[]))",
            _columns(building),
        )
        await changes.flush(cursor)
        log.info("rollups built", rollups=[str(r) for r in building], tickers=len(tickers))
        return building


class Drift(msgspec.Struct, frozen=True):
    """A kept rollup of one ticker and the buckets in which it disagrees with its source."""

    ticker: str
    rollup: Rollup
    buckets: int


async def drift(config: DatabaseConfig, progress: Progress | None = None) -> list[Drift]:
    """Every ready rollup of every ticker that disagrees with its stored candles, each level
    made afresh from the candles (one pass over the candles of each ticker)."""
    found: list[Drift] = []
    async with (
        await connect(config, "marketdata-check") as conn,
        translated_errors(location_of(config.url), config),
    ):
        cursor = conn.cursor()
        await cursor.execute("SET work_mem = '128MB'")
        await cursor.execute("SELECT DISTINCT ticker FROM candle_series ORDER BY ticker")
        tickers = [row[0] for row in await cursor.fetchall()]
        for done, ticker in enumerate(tickers, 1):
            await cursor.execute("SELECT * FROM candle_rollups_drift(%s)", (ticker,))
            for tf_min, tz, buckets in await cursor.fetchall():
                if buckets:
                    found.append(Drift(ticker, Rollup(tf_min, tz), int(buckets)))
            if progress is not None:
                progress(ticker, done, len(tickers))
    return found
