"""The database commands: `marketdata check` (what is out or disagrees, named, with the one
command that mends it), `mend`, and the rollups that `migrate` and `rollups` bring to
ROLLUP_TF_MINS. Each prints what it did and returns the exit status."""

import sys
import time
from collections.abc import Sequence

from marketdata.adapters.postgres import catalog, rollups
from marketdata.adapters.postgres.migrations import pending_migrations, timescale_refusal
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.adapters.postgres.replicas import check_replicas, lsn_text
from marketdata.domain.timeframes import Rollup
from marketdata.entrypoints.files import progress_bar
from marketdata.entrypoints.settings import Settings


async def check(config: DatabaseConfig, settings: Settings) -> int:
    """`marketdata check`: TimescaleDB, the replicas, pending migrations, then the catalog
    and rollups against the candles; 1 when anything is out or disagrees."""
    if refusal := await timescale_refusal(config):
        print(f"marketdata: {refusal}", file=sys.stderr)
        return 1
    replicas_out = await _replicas(config, settings)
    pending = await pending_migrations(config)
    if pending:
        print(f"database reachable; pending migrations: {', '.join(pending)}")
        return 1 if replicas_out else 0
    print("settings valid; database reachable; schema up to date")
    return max(await _data(config), 1 if replicas_out else 0)


async def _replicas(config: DatabaseConfig, settings: Settings) -> int:
    """Each of DATABASE_REPLICA_URLS reached, a standby, within REPLICA_MAX_LAG_SECONDS; how
    many are out (each named, with why)."""
    urls = settings.replica_url_list
    if not urls:
        return 0
    out = 0
    for replica in await check_replicas(urls, config, settings.replica_max_lag_seconds):
        if replica.up:
            lag = "" if replica.lag_seconds is None else f", {replica.lag_seconds:.1f} s behind"
            where = (
                "" if replica.replay_lsn is None else f", replayed {lsn_text(replica.replay_lsn)}"
            )
            print(f"replica {replica.name}: in service{lag}{where}")
        else:
            out += 1
            print(f"marketdata: replica {replica.name} is out: {replica.reason}", file=sys.stderr)
    return out


async def _data(config: DatabaseConfig) -> int:
    started = time.monotonic()
    with progress_bar() as bar:  # one statement: no share done to show, the time it runs
        if bar is not None:
            bar.add_task("check: the series catalog against every candle", total=None, rate="")
        drifted = await catalog.drift(config)
    print(f"series catalog compared with the table in {time.monotonic() - started:.1f} s")
    for d in drifted:
        print(
            f"series catalog disagrees: {d.ticker} tf_min={d.tf_min}: {d.what} (catalog "
            f"{d.catalog_count if d.catalog_count is not None else 'no row'}, table "
            f"{d.table_count if d.table_count is not None else 'no rows'})",
            file=sys.stderr,
        )
    with progress_bar() as bar:
        task = bar.add_task("rollups", total=None, rate="") if bar is not None else None

        def advance(ticker: str, done: int, of: int) -> None:
            if bar is not None and task is not None:
                bar.update(task, completed=done, total=of, description=f"check: {ticker}")

        started = time.monotonic()
        rolled = await rollups.drift(config, advance)
    print(f"rollups compared with the candles in {time.monotonic() - started:.1f} s")
    for r in rolled:
        print(
            f"rollup disagrees with its candles: {r.ticker} {r.rollup}: {r.buckets:,} buckets",
            file=sys.stderr,
        )
    tickers = sorted({d.ticker for d in drifted} | {r.ticker for r in rolled})
    if tickers:
        print(
            f"marketdata: {len(tickers)} tickers disagree with their candles (written with the"
            f" triggers skipped?); `marketdata mend {' '.join(tickers)}` mends them",
            file=sys.stderr,
        )
        return 1
    print("series catalog and rollups agree with the candles")
    return 0


async def mend(config: DatabaseConfig, tickers: list[str] | None) -> int:
    """The catalog, versions and rollups of the tickers (those that disagree, none named)
    made again from their candles."""
    started = time.monotonic()
    mended, drifted = await catalog.mend(config, tickers)
    for d in drifted:
        print(
            f"mended {d.ticker} tf_min={d.tf_min}: catalog "
            f"{d.catalog_count if d.catalog_count is not None else 'no row'}, table "
            f"{d.table_count if d.table_count is not None else 'no rows'}"
        )
    if not mended:
        print("nothing to mend: the series catalog agrees with the table")
    else:
        print(
            f"mended {len(mended)} tickers ({', '.join(mended)}): catalog, versions and rollups"
            f" made again from their candles in {time.monotonic() - started:.1f} s"
        )
    return 0


async def sync_rollups(config: DatabaseConfig, wanted: Sequence[Rollup]) -> int:
    """Bring the rollups to ROLLUP_TF_MINS, a ticker at a time, with a progress bar."""
    with progress_bar() as bar:
        task = bar.add_task("rollups", total=None, rate="") if bar is not None else None

        def advance(ticker: str, done: int, of: int) -> None:
            if bar is not None and task is not None:
                bar.update(task, completed=done, total=of, description=f"rollups: {ticker}")

        built = await rollups.sync(config, wanted, progress=advance)
    kept = ", ".join(map(str, wanted)) or "none"
    if built:
        print(f"rollups built: {', '.join(map(str, built))} (kept: {kept})")
    else:
        print(f"rollups up to date (kept: {kept})")
    return 0
