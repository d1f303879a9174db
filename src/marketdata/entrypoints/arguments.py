"""The `marketdata` command line: its subcommands and options, as argparse reads them."""

import argparse
from pathlib import Path

DESCRIPTION = (
    "The marketdata service: serve, ingest, and the database commands (migrate, rollups, "
    "check, mend)."
)


def parser() -> argparse.ArgumentParser:
    """The `marketdata` command's subcommands and their options."""
    parser = argparse.ArgumentParser(prog="marketdata", description=DESCRIPTION)
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
        help="validate settings, reach the database (no pending migrations) and each replica "
        "(DATABASE_REPLICA_URLS: a standby within REPLICA_MAX_LAG_SECONDS), check the triggers "
        "of candles, compare the series catalog and the rollups with the candles (writes that "
        "skipped the triggers); exit 0 when all is well",
    )
    mend = commands.add_parser(
        "mend",
        help="make the series catalog, versions and rollups of tickers again from their "
        "candles (after writes that skipped the triggers); no ticker named: those `check` finds",
    )
    mend.add_argument("tickers", nargs="*", metavar="TICKER")
    return parser
