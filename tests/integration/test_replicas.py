"""Streaming replicas for reads, against a real primary and a real streaming replica
(tests/replication.py): freshness by WAL position, faults, lag, and what operators see."""

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.replicas import ReplicaSet, primary_lsn
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ports import ReplicaStatus
from tests.factories import series
from tests.replication import Replication
from tests.support import AppFactory, Client, insert, metric, run, wire

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

T = TypeVar("T")


def config(url: str) -> DatabaseConfig:
    return DatabaseConfig(url=url, connect_timeout=2, pool_min_size=1, pool_max_size=2)


@contextlib.asynccontextmanager
async def opened(
    pair: Replication, *urls: str, **options: Any
) -> AsyncIterator[tuple[ReplicaSet, Database]]:
    """A ReplicaSet of the pair's replica (or of `urls`), and a pool on the primary."""
    replicas = ReplicaSet(urls or [pair.replica_url()], config(pair.primary_url()), **options)
    primary = Database(config(pair.primary_url()))
    await primary.open()
    await replicas.open()
    try:
        yield replicas, primary
    finally:
        await replicas.close()
        await primary.close()


async def until(check: Callable[[], T | None], what: str, within: float = 5.0) -> T:
    """The first true value of `check`, polled until `within` seconds have passed."""
    deadline = time.monotonic() + within
    while not (found := check()):
        assert time.monotonic() < deadline, f"not within {within:g} s: {what}"
        await asyncio.sleep(0.02)
    return found


def only(replicas: ReplicaSet) -> ReplicaStatus:
    (status,) = replicas.status()
    return status


def up(replicas: ReplicaSet) -> ReplicaStatus | None:
    """The one replica's status while it is in service."""
    status = only(replicas)
    return status if status.up else None


def out(replicas: ReplicaSet) -> ReplicaStatus | None:
    """The one replica's status while it is out."""
    status = only(replicas)
    return None if status.up else status


async def count(database: Database, ticker: str) -> int:
    rows = await database.fetch("SELECT count(*) FROM candles WHERE ticker = %s", (ticker,))
    return int(rows[0][0])


async def test_a_replica_that_has_replayed_a_write_serves_the_reads_that_need_it(
    replicated: Replication,
) -> None:
    async with opened(replicated) as (replicas, primary):
        await until(lambda: only(replicas).up, "replica in service")
        before = await primary_lsn(primary)
        insert(replicated.primary_url(), series("R", 10))
        required = await primary_lsn(primary)
        assert required > before
        reader = await replicas.reader_within(required, 5)
        assert reader is not None
        assert reader is not primary
        assert await count(reader, "R") == 10  # the write is there
        status = only(replicas)
        assert status.replay_lsn is not None
        assert status.replay_lsn >= required
        assert status.reads == 1
        assert replicated.replay_lsn() >= required  # as the replica itself says


async def test_a_paused_replica_serves_only_what_it_has_replayed(
    replicated: Replication,
) -> None:
    insert(replicated.primary_url(), series("P", 5))
    replayed = replicated.caught_up()
    async with opened(replicated) as (replicas, primary):
        await until(lambda: replicas.reader(replayed), "replica has replayed the first write")
        replicated.pause_replay()
        insert(replicated.primary_url(), series("P", 12)[5:])  # 7 more candles
        required = await primary_lsn(primary)
        await asyncio.sleep(0.2)  # several polls: nothing the replica replays may change
        assert replicas.reader(required) is None
        began = time.monotonic()
        assert await replicas.reader_within(required, 0.3) is None
        assert time.monotonic() - began >= 0.3
        stale = replicas.reader(replayed)  # what it has replayed, it still serves
        assert stale is not None
        assert await count(stale, "P") == 5  # it is stale indeed: the freshness rule at work
        assert only(replicas).up

        replicated.resume_replay()
        fresh = await replicas.reader_within(required, 5)
        assert fresh is not None
        assert await count(fresh, "P") == 12


async def test_a_stopped_replica_is_out_at_once_and_back_once_started(
    replicated: Replication,
) -> None:
    async with opened(replicated) as (replicas, primary):
        await until(lambda: only(replicas).up, "replica in service")
        reader = replicas.reader(0)
        assert reader is not None
        replicated.stop_replica()
        stopped = time.monotonic()
        gone = await until(lambda: out(replicas), "out", 1.5)
        assert time.monotonic() - stopped < 1.5
        assert gone.reason is not None
        assert gone.reason.startswith("unreachable: ")
        assert replicas.reader(0) is None
        assert await replicas.reader_within(0, 1) is None  # none in service: no wait
        # what a read on it raises, for the caller to retry on the primary
        with pytest.raises(StoreUnavailable) as failed:
            await reader.fetch("SELECT 1", None)
        assert failed.value.kind in ("connection", "pool_timeout")
        assert failed.value.port == str(replicated.replica.port)

        replicated.start_replica()
        back = await until(lambda: up(replicas), "back", 10)
        assert back.reason is None
        again = replicas.reader(await primary_lsn(primary))
        if again is None:  # a checkpoint or two may be written at start: let it replay them
            again = await replicas.reader_within(await primary_lsn(primary), 5)
        assert again is reader
        assert (await reader.fetch("SELECT 1", None)) == [(1,)]  # its pool recovered


async def test_a_hung_replica_is_out_within_a_second_and_back_when_it_answers(
    replicated: Replication,
) -> None:
    async with opened(replicated) as (replicas, _):
        await until(lambda: only(replicas).up, "replica in service")
        replicated.freeze_replica()
        frozen = time.monotonic()
        hung = await until(lambda: out(replicas), "out", 3)
        assert time.monotonic() - frozen < 2.5  # a poll is given up on after 1 s
        assert hung.reason == "did not answer within 1 s"
        assert replicas.reader(0) is None
        await asyncio.sleep(1.5)  # polls keep being given up on: the monitor is not stuck
        assert only(replicas).reason == "did not answer within 1 s"

        replicated.thaw_replica()
        await until(lambda: up(replicas), "back", 5)


async def test_a_replica_lagging_more_than_allowed_is_out_until_it_catches_up(
    replicated: Replication,
) -> None:
    async with opened(replicated, max_lag_seconds=0.5) as (replicas, primary):
        await until(lambda: only(replicas).up, "replica in service")
        replayed = await primary_lsn(primary)
        await until(lambda: replicas.reader(replayed), "replica caught up")
        replicated.pause_replay()
        insert(replicated.primary_url(), series("L", 3))
        late = await until(lambda: out(replicas), "lagging", 5)
        assert late.reason is not None
        assert late.reason.startswith("lags ")
        assert late.lag_seconds is not None
        assert late.lag_seconds > 0.5
        assert replicas.reader(replayed) is None  # out even for what it has replayed

        replicated.resume_replay()
        back = await until(lambda: up(replicas), "caught up", 5)
        assert back.lag_seconds is not None
        assert back.lag_seconds <= 0.5


async def test_an_idle_primary_leaves_its_replica_in_with_no_lag(
    replicated: Replication,
) -> None:
    async with opened(replicated, max_lag_seconds=0.3) as (replicas, _):
        await until(lambda: only(replicas).lag_seconds == 0, "replica with no lag")
        # no writes for three times the lag allowed: the replica lacks nothing, so it is in
        # (its last replayed commit keeps getting older all the while)
        watched = time.monotonic()
        while time.monotonic() - watched < 1.0:
            status = only(replicas)
            assert status.up, status.reason
            await asyncio.sleep(0.05)


async def test_reads_take_turns_among_the_replicas_that_qualify(
    replicated: Replication,
) -> None:
    # the one replica under two names: two entries of the set, one server
    urls = [replicated.replica_url(), replicated.replica_url().replace("127.0.0.1", "localhost")]
    async with opened(replicated, *urls) as (replicas, primary):
        await until(lambda: all(s.up for s in replicas.status()), "both in service")
        required = await primary_lsn(primary)
        first = await replicas.reader_within(required, 5)
        await until(lambda: all(s.up for s in replicas.status()), "both in service")
        picked = [replicas.reader(0) for _ in range(6)]
        assert first is not None
        assert None not in picked
        assert picked[0] is not picked[1]
        assert picked[0::2] == [picked[0]] * 3
        assert picked[1::2] == [picked[1]] * 3
        assert [s.reads for s in replicas.status()] in ([4, 3], [3, 4])
        assert [s.name for s in replicas.status()] == [
            replicated.replica_name,
            f"localhost:{replicated.replica.port}",
        ]


async def test_a_failed_read_takes_its_replica_out_for_a_while(
    replicated: Replication,
) -> None:
    async with opened(replicated) as (replicas, _):
        await until(lambda: only(replicas).up, "replica in service")
        reader = replicas.reader(0)
        assert reader is not None
        failed_at = time.monotonic()
        replicas.failed(reader, StoreUnavailable("127.0.0.1", "1", "server closed the connection"))
        status = only(replicas)
        assert not status.up
        assert status.reason == (
            "a read failed: database at 127.0.0.1:1 is unavailable: server closed the connection"
        )
        assert replicas.reader(0) is None
        await asyncio.sleep(0.3)  # several healthy polls: still held out
        assert not only(replicas).up
        await until(lambda: only(replicas).up, "back after the hold", 5)
        assert time.monotonic() - failed_at >= 1.0


async def test_a_replica_s_connections_are_read_only(replicated: Replication) -> None:
    async with opened(replicated) as (replicas, _):
        await until(lambda: only(replicas).up, "replica in service")
        reader = replicas.reader(0)
        assert reader is not None
        rows = await reader.fetch(
            "SELECT current_setting('default_transaction_read_only'), pg_is_in_recovery()", None
        )
        assert rows == [("on", True)]


async def test_a_password_never_shows_in_a_replica_s_name_or_reason(
    replicated: Replication,
) -> None:
    url = f"postgresql://nobody:hunter2@127.0.0.1:{replicated.replica.port}/marketdata"
    async with opened(replicated, url) as (replicas, _):
        status = await until(
            lambda: s if (s := only(replicas)).reason != "not checked yet" else None, "polled"
        )
        assert status.name == replicated.replica_name
        assert status.reason is not None
        assert 'role "nobody" does not exist' in status.reason
        assert "hunter2" not in repr(status)


def test_readiness_and_metrics_name_a_replica_that_is_out(
    replicated: Replication, app_factory: AppFactory
) -> None:
    name = replicated.replica_name
    with app_factory(
        url=replicated.primary_url(), database_replica_urls=replicated.replica_url()
    ) as client:
        deadline = time.monotonic() + 5
        while (ready := client.get("/health/ready")).json() != {"status": "ready"}:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.05)
        text = client.get("/metrics").text
        assert metric(text, "marketdata_replica_up", replica=name) == 1
        assert metric(text, "marketdata_replica_lag_seconds", replica=name) == 0
        assert f'marketdata_replica_reads_total{{replica="{name}"}} 0.0' in text

        replicated.stop_replica()
        deadline = time.monotonic() + 5
        while "replicas_out" not in (ready := client.get("/health/ready")).json():
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.05)
        assert ready.status_code == 200  # the primary answers: still ready
        body = ready.json()
        assert body["status"] == "ready"
        assert [r["replica"] for r in body["replicas_out"]] == [name]
        assert body["replicas_out"][0]["reason"].startswith("unreachable: ")
        text = client.get("/metrics").text
        assert metric(text, "marketdata_replica_up", replica=name) == 0
        assert math.isnan(metric(text, "marketdata_replica_lag_seconds", replica=name))
        assert client.get("/candles?ticker=NOPE").status_code == 404  # reads go on

        replicated.start_replica()
        deadline = time.monotonic() + 10
        while (ready := client.get("/health/ready")).json() != {"status": "ready"}:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.05)


def test_without_replicas_readiness_and_metrics_are_as_before(app_factory: AppFactory) -> None:
    with app_factory() as client:
        assert client.get("/health/ready").json() == {"status": "ready"}
        assert "marketdata_replica" not in client.get("/metrics").text


def test_check_names_a_stopped_replica_and_fails(replicated: Replication, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": replicated.primary_url(),
        "DATABASE_REPLICA_URLS": replicated.replica_url(),
    }
    healthy = run(["check"], env, tmp_path)
    assert healthy.returncode == 0, healthy.stderr
    assert f"replica {replicated.replica_name}: in service" in healthy.stdout

    replicated.stop_replica()
    stopped = run(["check"], env, tmp_path)
    assert stopped.returncode == 1
    assert f"replica {replicated.replica_name} is out: unreachable: " in stopped.stderr
    assert "series catalog and rollups agree" in stopped.stdout  # the other checks still ran


def test_a_write_through_a_replica_is_refused(replicated: Replication) -> None:
    """What makes a replica a replica here: the harness's is a hot standby."""
    with (
        psycopg.connect(replicated.replica_url(), autocommit=True) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("CREATE TABLE nope (x int)")


# -- through the HTTP API, with two instances --

KEY = "replica-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@contextlib.contextmanager
def two_instances(
    pair: Replication, app_factory: AppFactory, **overrides: Any
) -> Iterator[tuple[Client, Client]]:
    """Two instances of the service on the pair, each with its pool and replica monitor."""
    settings = {
        "url": pair.primary_url(),
        "database_replica_urls": pair.replica_url(),
        "api_keys": KEY,
        **overrides,
    }
    with app_factory(**settings) as first, app_factory(**settings) as second:
        for client in (first, second):
            wait_until_ready(client)
        yield first, second


def wait_until_ready(client: Client, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (ready := client.get("/health/ready")).json() != {"status": "ready"}:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.05)


def replica_reads(client: Client, pair: Replication) -> float:
    text = client.get("/metrics").text
    return metric(text, "marketdata_replica_reads_total", replica=pair.replica_name)


def closes(client: Client, ticker: str, **params: Any) -> list[float]:
    response = client.get("/candles", params={"ticker": ticker, "tf_min": 5, **params})
    assert response.status_code == 200, response.text
    return [candle["close"] for candle in response.json()["data"]]


def test_a_caught_up_replica_serves_the_reads_of_both_instances(
    replicated: Replication, app_factory: AppFactory
) -> None:
    stored = series("RR", 12)
    insert(replicated.primary_url(), stored)
    replicated.caught_up()
    with two_instances(replicated, app_factory) as (first, second):
        for client in (first, second):
            before = replica_reads(client, replicated)
            assert closes(client, "RR") == [c.close for c in stored]
            csv = client.get("/candles", params={"ticker": "RR", "tf_min": 5, "format": "csv"})
            assert csv.status_code == 200
            assert len(csv.text.strip().splitlines()) == 1 + len(stored)
            assert closes(client, "RR", resample=15) != []  # resampled, in SQL, there too
            assert replica_reads(client, replicated) >= before + 3


def test_a_post_through_one_instance_is_read_through_the_other_while_replay_is_paused(
    replicated: Replication, app_factory: AppFactory
) -> None:
    stored = series("PP", 12)
    insert(replicated.primary_url(), stored[:6])
    replicated.caught_up()
    with two_instances(replicated, app_factory) as (first, second):
        assert closes(second, "PP") == [c.close for c in stored[:6]]
        etag = second.get("/candles", params={"ticker": "PP", "tf_min": 5}).headers["etag"]
        replicated.pause_replay()
        for candle in stored[6:]:
            body = [wire(candle)]
            assert first.post("/candles", json=body, headers=AUTH).status_code == 200
            # at once, through the other instance: the paused replica has not replayed it
            assert closes(second, "PP") == [c.close for c in stored[: stored.index(candle) + 1]]
        newest = second.get("/candles", params={"ticker": "PP", "tf_min": 5, "order": "desc"})
        assert newest.json()["data"][0]["ts"] == wire(stored[-1])["ts"]
        assert (
            second.get(
                "/candles", params={"ticker": "PP", "tf_min": 5}, headers={"If-None-Match": etag}
            ).status_code
            == 200
        )  # the old version's tag no longer matches
        assert replicated.replay_paused  # read from the primary, not from a replica caught up
        replicated.resume_replay()


def test_a_replay_whose_pages_come_from_different_servers_skips_and_repeats_nothing(
    replicated: Replication, app_factory: AppFactory
) -> None:
    stored = series("RP", 40)
    insert(replicated.primary_url(), stored)
    replicated.caught_up()
    later = series("RP", 45)[40:]
    with (
        two_instances(replicated, app_factory, ws_page_size=4) as (first, second),
        second.websocket_connect("/ws/replay?ticker=RP&tf_min=5&step_seconds=0.02") as ws,
    ):
        received: list[dict[str, Any]] = []
        while True:
            message = json.loads(ws.receive_text(timeout=10))
            if message["type"] == "CANDLE":
                received.append(message)
                if len(received) == 10:  # pages from here on: the primary's
                    replicated.pause_replay()
                    body = [wire(c) for c in later]
                    assert first.post("/candles", json=body, headers=AUTH).status_code == 200
                if len(received) == 25:  # and from here on the replica's again
                    replicated.resume_replay()
            elif message["type"] == "STATUS" and message["message"] == "replay_complete":
                break
    assert [m["seq"] for m in received] == list(range(len(received)))
    timestamps = [m["candle"]["ts"] for m in received]
    assert timestamps == sorted(set(timestamps))  # none repeated, in order
    assert timestamps[:40] == [wire(c)["ts"] for c in stored]  # none skipped


def test_reads_go_on_through_a_stopped_replica_and_return_to_it(
    replicated: Replication, app_factory: AppFactory
) -> None:
    stored = series("SR", 8)
    insert(replicated.primary_url(), stored)
    replicated.caught_up()
    with two_instances(replicated, app_factory) as (first, second):
        replicated.stop_replica()  # no wait: the first reads may meet it going down
        for _ in range(20):
            for client in (first, second):
                assert closes(client, "SR") == [c.close for c in stored]
                export = client.get("/candles", params={"ticker": "SR", "format": "ndjson"})
                assert export.status_code == 200
                assert len(export.text.splitlines()) == len(stored)
        replicated.start_replica()
        for client in (first, second):
            wait_until_ready(client, within=10)
            before = replica_reads(client, replicated)
            assert closes(client, "SR") == [c.close for c in stored]
            assert replica_reads(client, replicated) == before + 1
