"""The console script, run as a user runs it: a real process, real settings, real PostgreSQL."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from marketdata.adapters.postgres import migration_files


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "marketdata.entrypoints.cli", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_names_every_invalid_variable(tmp_path: Path) -> None:
    result = run(["check"], {"MAX_LIMIT": "lots", "DB_CONNECT_TIMEOUT": "-1"}, tmp_path)
    assert result.returncode == 1
    assert "MAX_LIMIT" in result.stderr
    assert "DB_CONNECT_TIMEOUT" in result.stderr


def test_check_fails_when_the_database_is_unreachable(tmp_path: Path, unused_port: int) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{unused_port}/x"
    result = run(["check"], {"DATABASE_URL": url, "DB_CONNECT_TIMEOUT": "2"}, tmp_path)
    assert result.returncode == 1
    assert f"127.0.0.1:{unused_port}" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_migrate_then_check(tmp_path: Path, database_factory: Callable[[], str]) -> None:
    url = database_factory()
    before = run(["check"], {"DATABASE_URL": url}, tmp_path)
    assert before.returncode == 0
    assert "pending migrations" in before.stdout
    assert run(["migrate"], {"DATABASE_URL": url}, tmp_path).returncode == 0
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert count == (len(migration_files()),)
    after = run(["check"], {"DATABASE_URL": url}, tmp_path)
    assert after.returncode == 0
    assert "schema up to date" in after.stdout


def test_settings_come_from_a_dotenv_in_the_working_directory(
    tmp_path: Path, unused_port: int
) -> None:
    (tmp_path / ".env").write_text("DEFAULT_TF_MIN=zero\n")
    result = run(["check"], {}, tmp_path)
    assert result.returncode == 1
    assert "DEFAULT_TF_MIN" in result.stderr


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_migrates_answers_and_stops_on_sigterm(
    tmp_path: Path, database_factory: Callable[[], str], unused_port: int, workers: str
) -> None:
    url = database_factory()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PORT": str(unused_port),
        "LOG_FORMAT": "json",
        "WORKERS": workers,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "marketdata.entrypoints.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{unused_port}/health")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert (status, body) == (200, {"status": "ok", "database": "connected"})
        assert _get(f"http://127.0.0.1:{unused_port}/candles?ticker=NONE")[0] == 404
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=20)
    assert server.returncode == 0
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "migrations applied" in events
    access = [line for line in lines if line["event"] == "request"]
    assert [(a["path"], a["status"]) for a in access] == [("/health", 200), ("/candles", 404)]
    assert all(len(str(a["request_id"])) == 32 for a in access)
