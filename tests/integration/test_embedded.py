"""The embedded default: `marketdata serve` with no DATABASE_URL, as a user runs it (as root
in CI): start, migrate, demo data, query, stop, start again with the data still there."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import embedded_home, free_port, get_json, served

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def no_database_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**env, "MARKETDATA_HOME": str(home)}


def postgres_running_in(home: Path) -> bool:
    return any(
        process.info["name"] == "postgres" and str(home) in " ".join(process.info["cmdline"] or [])
        for process in psutil.process_iter(attrs=["name", "cmdline"])
    )


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script with exactly `env` (support.run adds the suite's environment,
    DATABASE_URL included, which these tests must not have)."""
    return subprocess.run(
        [sys.executable, "-m", "marketdata.entrypoints.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def home() -> Iterator[Path]:
    with embedded_home() as folder:
        yield folder / "home"


def test_serve_runs_its_own_database_and_keeps_its_data(
    tmp_path: Path, home: Path, unused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("MARKETDATA_HOME", str(home))
    base = f"http://127.0.0.1:{unused_port}"
    with served(tmp_path, "", unused_port, DEMO="1") as server:
        status, body = get_json(f"{base}/symbols")
        assert status == 200
        assert body == {"symbols": ["ACME", "GLOBEX", "INITECH", "UMBRELLA"], "count": 4}
        daily = get_json(f"{base}/candles?ticker=ACME&tf_min=1440&limit=5000")[1]
        first_day = get_json(
            f"{base}/candles/range?ticker=ACME&start=2025-01-06&end=2025-01-06T23:59:59"
        )[1]
        assert daily["count"] == 65  # weekdays of 13 weeks
        assert first_day["count"] == 78  # 14:30 to 20:55 UTC
        assert first_day["data"][0]["open"] == daily["data"][0]["open"]

        # a second server on the same home is refused with a clear message
        second = cli(["serve", "--port", str(free_port())], no_database_env(home), tmp_path)
        assert second.returncode == 1
        assert "in use by another marketdata process" in second.stderr

        # ingest while it serves: uses the running server and leaves it running
        data = tmp_path / "extra.csv"
        data.write_text(
            "ticker,tf_min,ts,open,high,low,close\nZED,5,2025-01-06T14:30:00Z,1,2,0.5,1.5\n"
        )
        loaded = cli(["ingest", str(data)], no_database_env(home), tmp_path)
        assert loaded.returncode == 0, loaded.stderr
        assert get_json(f"{base}/candles?ticker=ZED")[1]["count"] == 1

        assert server.stop() == 0
    assert "demo data loaded" in server.output
    assert not postgres_running_in(home), "the embedded server stopped with the service"

    with served(tmp_path, "", unused_port, DEMO="1") as again:
        assert get_json(f"{base}/candles?ticker=ACME&tf_min=1440&limit=5000")[1] == daily
        assert get_json(f"{base}/symbols")[1]["count"] == 5
        assert again.stop() == 0
    assert "demo data skipped" in again.output
    assert not postgres_running_in(home)


def test_a_taken_port_is_named(tmp_path: Path, unused_port: int) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", unused_port))
        holder.listen()
        result = cli(["serve", "--port", str(unused_port)], no_database_env(tmp_path), tmp_path)
    assert result.returncode == 1
    assert f"127.0.0.1:{unused_port}" in result.stderr
    assert "PORT" in result.stderr


def test_a_server_left_running_by_a_killed_owner_is_adopted_and_stopped(
    tmp_path: Path, home: Path, unused_port: int
) -> None:
    env = {**no_database_env(home), "PORT": str(unused_port), "LOG_FORMAT": "json"}
    owner = subprocess.Popen(
        [sys.executable, "-m", "marketdata.entrypoints.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            get_json(f"http://127.0.0.1:{unused_port}/health")
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert postgres_running_in(home)  # orphaned
    result = cli(["migrate"], no_database_env(home), tmp_path)
    assert result.returncode == 0, result.stderr
    assert not postgres_running_in(home), "the next owner stops what it adopted"
