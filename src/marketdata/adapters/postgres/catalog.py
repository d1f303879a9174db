"""The series catalog (`candle_series`), as the triggers of `candles` keep it for every writer
(migrations/0006_any_writer.sql): checked against the table, and mended where a write skipped
the triggers."""

from collections.abc import Iterable
from typing import Any

import msgspec
import psycopg

from marketdata.adapters.postgres.pool import (
    DatabaseConfig,
    connect,
    location_of,
    translated_errors,
)

# pg_advisory_xact_lock(SERIES_LOCK, hashtext(ticker)): the writes, deletions, rollup builds
# and mends of one ticker take turns. Each takes its tickers' locks first, in the order of
# their hashes (two tickers may share one): no two ever wait on each other in a cycle. The
# triggers take the same locks (the number is written there too).
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


class Drift(msgspec.Struct, frozen=True):
    """A series on which the catalog and the table disagree (None: absent there), and how."""

    ticker: str
    tf_min: int
    catalog_count: int | None
    table_count: int | None
    what: str = ""


async def drift(config: DatabaseConfig) -> list[Drift]:
    """Every series whose catalog row disagrees with the table: count, first, last or the
    checksum of its candles (one pass over candles). Only a write that skipped the triggers
    makes one."""
    async with (
        await connect(config, "marketdata-check") as conn,
        translated_errors(location_of(config.url), config),
    ):
        cursor = await conn.execute("SELECT * FROM candle_drift()")
        return [Drift(*row) for row in await cursor.fetchall()]


# The triggers that keep what a write of `candles` implies (migrations 0006, 0011), by table
# and name, each as made: how, and the states it may be in ("O" fires for ordinary writers,
# "A" for every one, "R" in replication's workers only, "D" never).
TRIGGERS = {
    ("candles", "candles_inserted"): (
        "CREATE TRIGGER candles_inserted AFTER INSERT ON candles REFERENCING NEW TABLE AS"
        " new_rows FOR EACH STATEMENT EXECUTE FUNCTION candles_changed()",
        "OA",
    ),
    ("candles", "candles_updated"): (
        "CREATE TRIGGER candles_updated AFTER UPDATE ON candles REFERENCING OLD TABLE AS"
        " old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION candles_changed()",
        "OA",
    ),
    ("candles", "candles_deleted"): (
        "CREATE TRIGGER candles_deleted AFTER DELETE ON candles REFERENCING OLD TABLE AS"
        " old_rows FOR EACH STATEMENT EXECUTE FUNCTION candles_changed()",
        "OA",
    ),
    ("candles", "candles_truncated"): (
        "CREATE TRIGGER candles_truncated AFTER TRUNCATE ON candles FOR EACH STATEMENT"
        " EXECUTE FUNCTION candles_truncated(); ALTER TABLE candles ENABLE ALWAYS TRIGGER"
        " candles_truncated",
        "A",
    ),
    ("candles", "candles_replicated"): (
        "CREATE TRIGGER candles_replicated AFTER INSERT OR UPDATE OR DELETE ON candles FOR"
        " EACH ROW EXECUTE FUNCTION candles_replicated(); ALTER TABLE candles ENABLE REPLICA"
        " TRIGGER candles_replicated",
        "RA",
    ),
    # what a replication worker noted applied at its transaction's commit
    ("candle_pending", "candle_pending_commit"): (
        "CREATE CONSTRAINT TRIGGER candle_pending_commit AFTER INSERT ON candle_pending"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION candle_pending_commit();"
        " ALTER TABLE candle_pending ENABLE ALWAYS TRIGGER candle_pending_commit",
        "A",
    ),
}


async def triggers_out(config: DatabaseConfig) -> list[str]:
    """Each trigger of TRIGGERS that is gone or in a state in which writes skip it from now
    on, with the statements that put it back."""
    async with (
        await connect(config, "marketdata-check") as conn,
        translated_errors(location_of(config.url), config),
    ):
        cursor = await conn.execute(
            "SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger t"
            " JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE t.tgrelid IN ('candles'::regclass, 'candle_pending'::regclass)"
            " AND NOT t.tgisinternal"
        )
        enabled = {(table, name): state for table, name, state in await cursor.fetchall()}
    out = []
    for (table, name), (create, states) in TRIGGERS.items():
        state = enabled.get((table, name))
        mode = {"O": "", "A": " ALWAYS", "R": " REPLICA"}[states[0]]
        if state is None:
            out.append(f"trigger {name} of {table} is gone: {create};")
        elif state not in states:
            how = {"D": "disabled", "R": "set to fire for replication only"}.get(
                state, "set to fire for ordinary writers only"
            )
            out.append(
                f"trigger {name} of {table} is {how}:"
                f" ALTER TABLE {table} ENABLE{mode} TRIGGER {name};"
            )
    return out


async def mend(config: DatabaseConfig, tickers: list[str] | None) -> tuple[list[str], list[Drift]]:
    """Make everything these tickers' candles imply again from the table, in one transaction:
    their catalog rows (each with a new version: every ETag and answer kept of them changes),
    their rollups and a change every process hears. Without tickers: those on which the
    catalog disagrees with the table. The tickers mended and the series that had drifted."""
    async with (
        await connect(config, "marketdata-mend") as conn,
        translated_errors(location_of(config.url), config),
    ):
        if tickers is None:
            cursor = await conn.execute("SELECT DISTINCT ticker FROM candle_drift() ORDER BY 1")
            tickers = [row[0] for row in await cursor.fetchall()]
        if not tickers:
            return [], []
        async with conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = 0")
            await conn.execute("SET LOCAL work_mem = '128MB'")  # a ticker's sorts, in memory
            cursor = await conn.execute("SELECT * FROM candle_mend(%s)", (tickers,))
            rows = await cursor.fetchall()
            mended = [Drift(t, tf, was, now, "mended") for t, tf, was, now in rows]
    return tickers, mended
