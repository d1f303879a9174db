"""The `marketdata` command: `serve`, `ingest`, and the database commands (`migrate`,
`rollups`, `check`, `mend`: maintenance.py)."""

import argparse
import asyncio
import math
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
import structlog
import uvicorn
from dishka import make_async_container
from litestar import Litestar

from marketdata.adapters.csv_files import open_candle_file
from marketdata.adapters.embedded_postgres import EmbeddedError, default_home, embedded_database
from marketdata.adapters.postgres.migrations import (
    migrate,
)
from marketdata.domain.candles import TimeRange
from marketdata.domain.errors import InvalidParameter, StoreUnavailable
from marketdata.domain.imports import CandleImport
from marketdata.domain.ingest import IngestOptions, Rows, WriteResult, ingest_options
from marketdata.entrypoints.cli import maintenance
from marketdata.entrypoints.files import ingest_files
from marketdata.entrypoints.logging import configure_logging
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.providers import (
    BulkWriteProvider,
    PostgresProvider,
    SettingsProvider,
    UseCaseProvider,
    database_config,
)
from marketdata.entrypoints.settings import Settings, SettingsError, load_settings
from marketdata.entrypoints.websocket import ReplayRegistry

log = structlog.get_logger(logger_name="marketdata.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marketdata", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve HTTP and WS; pending migrations are applied in the background as soon as "
        "the database answers",
    )
    serve.add_argument("--host", help="bind address (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT, 8000)")
    serve.add_argument(
        "--no-migrate", action="store_true", help="do not apply pending migrations at start"
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="load a small deterministic demo dataset when the database is empty",
    )
    commands.add_parser(
        "migrate",
        help="apply pending database migrations, build the rollups of ROLLUP_TF_MINS that are "
        "missing, and exit",
    )
    commands.add_parser(
        "rollups",
        help="build the rollups of ROLLUP_TF_MINS that are missing (and drop the others)",
    )
    ingest = commands.add_parser(
        "ingest",
        help="load candle files (Stooq/Finam text, CSV with a header, Binance klines; gzip or "
        "not); each file is all-or-nothing and re-importing it changes nothing",
    )
    ingest.add_argument("files", nargs="+", type=Path, metavar="FILE")
    ingest.add_argument(
        "--tz",
        default="UTC",
        help="time zone of naive times in the files (default UTC), "
        "e.g. Europe/Warsaw for Stooq, Europe/Moscow for MOEX",
    )
    ingest.add_argument("--ticker", help="ticker for files without a ticker column (or override)")
    ingest.add_argument("--tf-min", type=int, help="timeframe in minutes for files without one")
    ingest.add_argument(
        "--dry-run", action="store_true", help="read and check every row, write nothing"
    )
    commands.add_parser(
        "check",
        help="validate settings, reach the database and each replica (DATABASE_REPLICA_URLS: "
        "a standby within REPLICA_MAX_LAG_SECONDS), compare the series catalog and the rollups "
        "with the candles (writes that skipped the triggers); exit 0 when all is well",
    )
    mend = commands.add_parser(
        "mend",
        help="make the series catalog, versions and rollups of tickers again from their "
        "candles (after writes that skipped the triggers); no ticker named: those `check` finds",
    )
    mend.add_argument("tickers", nargs="*", metavar="TICKER")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        return _serve(settings, args.host, args.port)
    config = database_config(settings)
    try:
        if args.command == "check":
            return asyncio.run(maintenance.check(config, settings))
        if args.command == "mend":
            return asyncio.run(maintenance.mend(config, args.tickers or None))
        if args.command == "migrate":
            migrated = asyncio.run(migrate(config))
            for text in migrated.mended:
                print(text)
            applied = migrated.applied
            print(f"migrations applied: {', '.join(applied)}" if applied else "schema up to date")
            return asyncio.run(maintenance.sync_rollups(config, settings.rollups))
        if args.command == "rollups":
            return asyncio.run(maintenance.sync_rollups(config, settings.rollups))
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


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    from uvicorn.supervisors import Multiprocess

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # handler that was installed before it: make that a clean exit (status 0).
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _exit_cleanly)
    config = uvicorn.Config(
        "marketdata.entrypoints.asgi:app",
        factory=True,
        host=host or settings.host,
        port=port if port is not None else settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        # Compressing each ~250-byte candle message cost 18 % of the server's CPU in the
        # replay benchmark (bench/README.md) for little gain on such small frames.
        ws_per_message_deflate=False,
    )
    if settings.workers > 1:
        # Worker processes build plain uvicorn servers: on shutdown their replays are
        # closed by uvicorn with 1012 (service restart), without a STATUS first.
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        ReplayAwareServer(config).run()
    return 0


class ReplayAwareServer(uvicorn.Server):
    """uvicorn closes every WebSocket with 1012 as soon as it starts shutting down, before
    the app's own shutdown runs. Replays are told first: STATUS server_shutdown, close 1001."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app: object = self.config.loaded_app
        while not isinstance(app, Litestar) and hasattr(app, "app"):
            app = app.app
        if isinstance(app, Litestar):
            registry = await app.state.dishka_container.get(ReplayRegistry)
            await registry.shutdown()
        await super().shutdown(sockets)
