"""The console script, run as a user runs it: a real process, real settings, real PostgreSQL."""

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from marketdata.adapters.postgres.migrations import migration_files
from tests.factories import series
from tests.proxy import TcpProxy
from tests.support import get_json, insert, run, served, through


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
    assert before.returncode == 1  # nothing compared: not "all is well"
    assert "pending migrations" in before.stderr
    assert "`marketdata migrate`" in before.stderr
    assert run(["migrate"], {"DATABASE_URL": url}, tmp_path).returncode == 0
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert count == (len(migration_files()),)
    after = run(["check"], {"DATABASE_URL": url}, tmp_path)
    assert after.returncode == 0
    assert "schema up to date" in after.stdout


def test_migrate_builds_rollups_plain_sql_keeps_them_and_mend_mends_skipped_writes(
    tmp_path: Path, database_factory: Callable[[], str]
) -> None:
    url = database_factory()
    env = {"DATABASE_URL": url, "ROLLUP_TF_MINS": "15,60,1440@Asia/Kolkata"}
    assert run(["migrate"], env, tmp_path).returncode == 0  # empty: built at once
    insert(url, series("A", 40) + series("B", 40))  # rows another program wrote
    built = run(["rollups"], env, tmp_path)
    assert "rollups up to date" in built.stdout  # already complete: nothing to build
    checked = run(["check"], env, tmp_path)  # the triggers kept them
    assert checked.returncode == 0, checked.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # the triggers skipped
        conn.execute(
            "UPDATE candles SET high = high + 100 WHERE ticker = 'B' AND ts = %s",
            (series("B", 40)[7].ts,),
        )
    found = run(["check"], env, tmp_path)
    assert found.returncode == 1
    assert "B tf_min=5: candles changed" in found.stderr
    assert "B 15: 1 buckets" in found.stderr
    assert "B 1440@Asia/Kolkata: 1 buckets" in found.stderr
    assert "`marketdata mend B`" in found.stderr
    assert run(["mend", "B"], env, tmp_path).returncode == 0
    again = run(["check"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "series catalog and rollups agree" in again.stdout
    off = run(["rollups"], {**env, "ROLLUP_TF_MINS": ""}, tmp_path)
    assert "kept: none" in off.stdout
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM candle_rollups").fetchone() == (0,)


def test_check_names_a_trigger_gone_or_disabled_with_what_puts_it_back(
    tmp_path: Path, database_factory: Callable[[], str]
) -> None:
    # Before any write skips them (then check finds the drift), not after.
    url = database_factory()
    env = {"DATABASE_URL": url}
    assert run(["migrate"], env, tmp_path).returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER candles_deleted ON candles")
        conn.execute("ALTER TABLE candles DISABLE TRIGGER candles_inserted")
        conn.execute("ALTER TABLE candles ENABLE REPLICA TRIGGER candles_updated")
        conn.execute("ALTER TABLE candles ENABLE TRIGGER candles_truncated")  # not ALWAYS
        # replicated rows are applied by this one, at their transaction's commit
        conn.execute("ALTER TABLE candle_pending DISABLE TRIGGER candle_pending_commit")
    found = run(["check"], env, tmp_path)
    assert found.returncode == 1
    told = [line for line in found.stderr.splitlines() if "trigger" in line]
    assert len(told) == 5, found.stderr
    assert "trigger candle_pending_commit of candle_pending is disabled" in found.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        for line in told:
            conn.execute(line.split(": ", 2)[2])  # the statement each line ends with
    again = run(["check"], env, tmp_path)
    assert again.returncode == 0, again.stderr


def test_settings_come_from_a_dotenv_in_the_working_directory(
    tmp_path: Path, unused_port: int
) -> None:
    (tmp_path / ".env").write_text("DEFAULT_TF_MIN=zero\n")
    result = run(["check"], {}, tmp_path)
    assert result.returncode == 1
    assert "DEFAULT_TF_MIN" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_migrates_answers_and_stops_on_sigterm(
    tmp_path: Path, database_factory: Callable[[], str], unused_port: int, workers: str
) -> None:
    url = database_factory()
    with served(tmp_path, url, unused_port, WORKERS=workers) as server:
        status, body = get_json(f"http://127.0.0.1:{unused_port}/health")
        assert (status, body) == (200, {"status": "ok", "database": "connected"})
        assert get_json(f"http://127.0.0.1:{unused_port}/candles?ticker=NONE")[0] == 404
        assert server.stop() == 0
    lines = [json.loads(line) for line in server.output.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "migrations applied" in events
    access = [line for line in lines if line["event"] == "request"]
    assert [(a["path"], a["status"]) for a in access][-2:] == [("/health", 200), ("/candles", 404)]
    assert all(len(str(a["request_id"])) == 32 for a in access)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_ends_replays_with_server_shutdown_and_1001(
    tmp_path: Path, db_url: str, unused_port: int
) -> None:
    insert(db_url, series("SHUT.US", 5))
    with served(tmp_path, db_url, unused_port) as server:
        uri = f"ws://127.0.0.1:{unused_port}/ws/replay?ticker=SHUT.US&step_seconds=60"
        with ws_connect(uri, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["message"] == "replay_starting"
            assert json.loads(ws.recv(timeout=10))["seq"] == 0
            server.process.send_signal(signal.SIGTERM)
            goodbye = json.loads(ws.recv(timeout=10))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert server.stop() == 0
    assert goodbye["message"] == "server_shutdown"
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_serve_starts_while_the_database_is_down_and_migrates_when_it_appears(
    tmp_path: Path, database_factory: Callable[[], str], proxy: TcpProxy, unused_port: int
) -> None:
    url = through(proxy, database_factory())  # a new database, not migrated yet
    proxy.cut()
    base = f"http://127.0.0.1:{unused_port}"
    with served(tmp_path, url, unused_port, DB_CONNECT_TIMEOUT="2", DB_POOL_TIMEOUT="1") as server:
        health = get_json(f"{base}/health")
        assert health[0] == 503
        assert health[1]["status"] == "degraded"
        assert health[1]["database"] == "disconnected"
        assert get_json(f"{base}/health/live") == (200, {"status": "alive"})
        ready = get_json(f"{base}/health/ready")
        assert ready[0] == 503
        assert "unavailable" in str(ready[1]["reason"])
        proxy.restore()
        deadline = time.monotonic() + 30
        while get_json(f"{base}/health/ready")[0] != 200:
            assert time.monotonic() < deadline, "not ready 30 s after the database appeared"
            time.sleep(0.2)
        assert get_json(f"{base}/health") == (200, {"status": "ok", "database": "connected"})
        assert get_json(f"{base}/candles?ticker=NONE")[0] == 404  # the schema is there
        assert server.stop() == 0
    events = [json.loads(line)["event"] for line in server.output.splitlines() if line[:1] == "{"]
    assert "database unreachable: migrations wait for it" in events
    assert "migrations applied" in events


def test_a_database_url_s_own_options_are_kept(
    tmp_path: Path, database_factory: Callable[[], str]
) -> None:
    # options=-c search_path=md in DATABASE_URL: the service's tables in a schema of their
    # own; the service's connections add their settings to it, not in its place
    url = database_factory()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA md")
    joined = "&" if "?" in url else "?"  # the embedded server's URL has a query already
    env = {"DATABASE_URL": f"{url}{joined}options=-c%20search_path%3Dmd"}
    assert run(["migrate"], env, tmp_path).returncode == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('md.candles') IS NOT NULL").fetchone() == (True,)
    checked = run(["check"], env, tmp_path)
    assert checked.returncode == 0, checked.stderr
