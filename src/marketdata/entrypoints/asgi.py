"""ASGI entry for servers that import the app (uvicorn workers, gunicorn): settings from the
environment, then the same factory as everywhere else."""

import gc

from litestar import Litestar

from marketdata.entrypoints.app import create_app
from marketdata.entrypoints.logging import configure_logging
from marketdata.entrypoints.settings import load_settings


def app() -> Litestar:
    """Use as `uvicorn --factory marketdata.entrypoints.asgi:app`."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    built = create_app(settings)
    tune_garbage_collector()
    return built


def tune_garbage_collector() -> None:
    """For a server process: the objects made at start-up are left out of every collection
    (gc.freeze), and the youngest generation is collected after 20,000 net allocations
    instead of 700. A thousand replays hold some 190,000 tracked objects; with CPython's
    defaults, collections stalled every replay for tens to hundreds of milliseconds and
    1,000 sessions at 10 candles/s missed their schedule (bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
