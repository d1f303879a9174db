"""The `marketdata` command: `serve` (server.py), `ingest`, and the database commands
(`migrate`, `rollups`, `check`, `mend`): the command line's composition root, with the
adapters it runs. Its words are arguments.py's."""

import argparse
import asyncio
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import structlog
from dishka import make_async_container

from marketdata.adapters.csv_files import open_candle_file
from marketdata.adapters.embedded_postgres import EmbeddedError, default_home, embedded_database
from marketdata.adapters.postgres import catalog, rollups
from marketdata.adapters.postgres.migrations import (
    migrate,
    pending_migrations,
    timescale_refusal,
)
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.adapters.postgres.replicas import check_replicas, lsn_text
from marketdata.domain.candles import TimeRange
from marketdata.domain.errors import InvalidParameter, StoreUnavailable
from marketdata.domain.imports import CandleImport
from marketdata.domain.ingest import IngestOptions, Rows, WriteResult, ingest_options
from marketdata.domain.timeframes import Rollup
from marketdata.entrypoints.arguments import parser
from marketdata.entrypoints.files import ingest_files, progress_bar
from marketdata.entrypoints.logging import configure_logging
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.providers import (
    BulkWriteProvider,
    PostgresProvider,
    SettingsProvider,
    UseCaseProvider,
    database_config,
)
from marketdata.entrypoints.server import serve
from marketdata.entrypoints.settings import Settings, SettingsError, load_settings

log = structlog.get_logger(logger_name="marketdata.cli")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"marketdata: {error}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "ingest" and args.dry_run:
        return _ingest(args, settings)
    if args.command == "serve":
        host = args.host or settings.host
        port = args.port if args.port is not None else settings.port
        if taken := _port_taken(host, port):
            print(
                f"marketdata: cannot listen on {host}:{port}: {taken}; is another server "
                "running there? Set PORT (or --port) to another port",
                file=sys.stderr,
            )
            return 1
    if settings.database_url is not None:
        return _run(args, settings)
    home = Path(settings.marketdata_home) if settings.marketdata_home else default_home()
    try:
        with embedded_database(home, exclusive=args.command == "serve") as url:
            log.info("embedded PostgreSQL", home=str(home))
            # the server processes read their settings from the environment
            os.environ["DATABASE_URL"] = url
            return _run(args, msgspec.structs.replace(settings, database_url=url))
    except EmbeddedError as error:
        print(f"marketdata: {error}", file=sys.stderr)
        return 1


def _port_taken(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on, or None when it can."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        return error.strerror or str(error)
    return None


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        # The server processes read their settings from the environment.
        os.environ["MIGRATE_ON_START"] = "false" if args.no_migrate else "true"
        os.environ["DEMO_DATA"] = "true" if args.demo else "false"
        return serve(settings, args.host, args.port)
    config = database_config(settings)
    try:
        if args.command == "check":
            return asyncio.run(check(config, settings))
        if args.command == "mend":
            return asyncio.run(mend(config, args.tickers or None))
        if args.command == "migrate":
            migrated = asyncio.run(migrate(config))
            for text in migrated.mended:
                print(text)
            applied = migrated.applied
            print(f"migrations applied: {', '.join(applied)}" if applied else "schema up to date")
            return asyncio.run(sync_rollups(config, settings.rollups))
        if args.command == "rollups":
            return asyncio.run(sync_rollups(config, settings.rollups))
    except StoreUnavailable as error:
        print(f"marketdata: {error.message}", file=sys.stderr)
        return 1
    return _ingest(args, settings)


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    try:
        options = ingest_options(args.tz, args.ticker, args.tf_min)
    except InvalidParameter as error:
        flag = {"tz": "--tz", "ticker": "--ticker", "tf_min": "--tf-min"}[error.name]
        print(f"marketdata: {flag}: {error.reason}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_ingest_files(args.files, options, settings, args.dry_run))
    except StoreUnavailable as error:
        print(f"marketdata: {error.message}", file=sys.stderr)
        return 1


class _NoStore:
    """The writer of a dry run: nothing may be written."""

    async def write(self, rows: Rows) -> WriteResult:
        raise RuntimeError("a dry run writes nothing")

    async def delete(self, ticker: str, tf_min: int, time_range: TimeRange) -> int:
        raise RuntimeError("a dry run writes nothing")


async def _ingest_files(
    paths: list[Path], options: IngestOptions, settings: Settings, dry_run: bool
) -> int:
    if dry_run:
        return await ingest_files(
            paths, options, CandleImport(_NoStore()), open_candle_file, dry_run=True
        )
    # The writer comes from the providers, as for the app (without the statement timeout).
    container = make_async_container(
        SettingsProvider(),
        PostgresProvider(),
        UseCaseProvider(),
        BulkWriteProvider(),
        context={Settings: settings, Metrics: Metrics()},
    )
    try:
        async with container() as request:
            imports = await request.get(CandleImport)
            return await ingest_files(paths, options, imports, open_candle_file)
    finally:
        await container.close()


# -- the database commands: `check` (what is out or disagrees, named, with the one command
# that mends it), `mend`, and the rollups `migrate` and `rollups` bring to ROLLUP_TF_MINS.
# Each prints what it did and returns the exit status.


async def check(config: DatabaseConfig, settings: Settings) -> int:
    """`marketdata check`: TimescaleDB, the replicas, pending migrations, then the catalog
    and rollups against the candles; 1 when anything is out or disagrees."""
    if refusal := await timescale_refusal(config):
        print(f"marketdata: {refusal}", file=sys.stderr)
        return 1
    replicas_out = await _replicas(config, settings)
    pending = await pending_migrations(config)
    if pending:
        print(
            f"marketdata: database reachable; pending migrations: {', '.join(pending)}"
            " (nothing else compared): run `marketdata migrate`",
            file=sys.stderr,
        )
        return 1
    print("settings valid; database reachable; schema up to date")
    triggers = await catalog.triggers_out(config)
    for line in triggers:  # writes skip it from now on: put back first, then mend
        print(f"marketdata: {line}", file=sys.stderr)
    return max(await _data(config), 1 if replicas_out or triggers else 0)


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


if __name__ == "__main__":
    sys.exit(main())
