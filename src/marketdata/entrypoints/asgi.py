"""ASGI entry for servers that import the app (uvicorn workers, gunicorn): settings from the
environment, then the same factory as everywhere else."""

from litestar import Litestar

from marketdata.adapters.settings import load_settings
from marketdata.entrypoints.app import create_app
from marketdata.entrypoints.logging import configure_logging


def app() -> Litestar:
    """Use as `uvicorn --factory marketdata.entrypoints.asgi:app`."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
