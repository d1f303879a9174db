"""`marketdata serve`: uvicorn running the app, in WORKERS processes, with replays told
before the server closes their connections."""

import math
import signal
import socket

import uvicorn
from litestar import Litestar

from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.websocket import ReplayRegistry


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(settings: Settings, host: str | None, port: int | None) -> int:
    """uvicorn with the app, WORKERS processes; the exit status once it has stopped."""
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
