"""Faults under load, against a real server process: the database going away behind a
proxy, more requests than connections, a WebSocket client that stops reading."""

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect

from tests.factories import series
from tests.proxy import TcpProxy
from tests.support import insert, served, through

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]
UNAVAILABLE = {"error", "message", "type"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_an_outage_under_load_gives_503s_then_recovers(
    tmp_path: Path, db_url: str, proxy: TcpProxy, unused_port: int
) -> None:
    insert(db_url, series("L.US", 50))
    url = through(proxy, db_url)
    settings = {"DB_CONNECT_TIMEOUT": "2", "DB_POOL_TIMEOUT": "1", "DB_POOL_MAX_SIZE": "4"}
    with served(tmp_path, url, unused_port, **settings):
        base = f"http://127.0.0.1:{unused_port}"
        log: list[tuple[float, float, int, dict[str, object]]] = []

        async def worker(client: httpx.AsyncClient, until: float) -> None:
            while time.monotonic() < until:
                started = time.monotonic()
                try:
                    response = await client.get(f"{base}/candles?ticker=L.US&limit=10")
                except httpx.TimeoutException:
                    log.append((started, time.monotonic() - started, 0, {}))
                    continue
                log.append(
                    (started, time.monotonic() - started, response.status_code, response.json())
                )

        async def scenario() -> tuple[float, float]:
            async with httpx.AsyncClient(timeout=10) as client:
                start = time.monotonic()
                load = [asyncio.create_task(worker(client, start + 9)) for _ in range(16)]
                await asyncio.sleep(2)
                await asyncio.to_thread(proxy.cut)
                cut_at = time.monotonic()
                await asyncio.sleep(3)
                await asyncio.to_thread(proxy.restore)
                back_at = time.monotonic()
                await asyncio.gather(*load)
                return cut_at, back_at

        cut_at, back_at = asyncio.run(scenario())
    hung = [(round(t - cut_at, 2), round(d, 2)) for t, d, s, _ in log if s == 0]
    print(f"hung requests (start after cut, seconds): {hung}")
    statuses = {status for _, _, status, _ in log}
    assert statuses <= {200, 503}, statuses
    assert 500 not in statuses
    for _, seconds, status, body in log:
        if status == 503:
            assert set(body) == UNAVAILABLE
            assert body["type"] == "database_connection_error"
        # no hang past the timeouts: pool wait (1 s) + connect (2 s), with slack
        assert seconds < 5, seconds
    during = [s for t, d, s, _ in log if t > cut_at + 0.5 and t + d < back_at]
    assert during
    assert set(during) == {503}
    first_ok = min(t + d for t, d, s, _ in log if s == 200 and t >= back_at)
    recovery = first_ok - back_at
    print(f"first 200 after the database returned: {recovery:.2f} s")
    assert recovery < 2.5  # the issue asks for 2 s; a little slack for this shared machine
    late = [s for t, _, s, _ in log if t > back_at + 2.5]
    assert late
    assert set(late) == {200}


def test_more_requests_than_connections_queue_then_503(
    tmp_path: Path, db_url: str, unused_port: int
) -> None:
    insert(db_url, series("Q.US", 5))
    settings = {
        "DB_POOL_MIN_SIZE": "2",
        "DB_POOL_MAX_SIZE": "2",
        "DB_POOL_TIMEOUT": "1",
        "DB_COMMAND_TIMEOUT": "3",
    }
    with served(tmp_path, db_url, unused_port, **settings), psycopg.connect(db_url) as blocker:
        # every read now waits for this lock, until its statement timeout
        blocker.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
        base = f"http://127.0.0.1:{unused_port}"

        async def burst() -> list[tuple[float, int, dict[str, object]]]:
            async with httpx.AsyncClient(timeout=30) as client:

                async def one() -> tuple[float, int, dict[str, object]]:
                    started = time.monotonic()
                    response = await client.get(f"{base}/candles?ticker=Q.US")
                    return time.monotonic() - started, response.status_code, response.json()

                return list(await asyncio.gather(*(one() for _ in range(8))))

        results = asyncio.run(burst())
        blocker.rollback()
    assert {status for _, status, _ in results} == {503}
    messages = [str(body["message"]) for _, _, body in results]
    assert any("DB_COMMAND_TIMEOUT" in m for m in messages)  # the ones that got a connection
    assert any("no connection could be had within 1 s" in m for m in messages)  # queued
    assert max(seconds for seconds, _, _ in results) < 3 + 1 + 2


def test_a_websocket_client_that_stops_reading_does_not_grow_the_server(
    tmp_path: Path, db_url: str, unused_port: int
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT 'S', 1, timestamptz '2020-01-01 00:00+00' + i * interval '1 minute',"
            " 1, 2, 0.5, 1.5, i FROM generate_series(0, 199999) i"
        )
    with served(tmp_path, db_url, unused_port, WS_MIN_STEP_SECONDS="0") as server:

        async def stall() -> tuple[int, int, int]:
            uri = f"ws://127.0.0.1:{unused_port}/ws/replay?ticker=S&tf_min=1&step_seconds=0"
            async with connect(uri, max_queue=1) as ws:
                assert json.loads(await ws.recv())["message"] == "replay_starting"
                await asyncio.sleep(1)
                early = rss_kib(server.process.pid)
                await asyncio.sleep(4)  # not reading: the server must wait for the client
                late = rss_kib(server.process.pid)
                received = 0
                async for _ in ws:  # now read it all
                    received += 1
                return early, late, received

        early, late, received = asyncio.run(stall())
    print(f"server RSS while the client stalled: {early} KiB then {late} KiB")
    assert late - early < 20_000  # 200,000 queued candles would be over 50 MB
    assert received == 200_000 + 1  # every candle, then replay_complete


def test_sigterm_lets_in_flight_requests_finish_and_refuses_new_ones(
    tmp_path: Path, db_url: str, unused_port: int
) -> None:
    insert(db_url, series("G.US", 5))
    settings = {"DB_COMMAND_TIMEOUT": "10", "SHUTDOWN_GRACE_SECONDS": "8"}
    with (
        served(tmp_path, db_url, unused_port, **settings) as server,
        psycopg.connect(db_url) as blocker,
    ):
        blocker.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
        base = f"http://127.0.0.1:{unused_port}"

        async def scenario() -> tuple[int, str]:
            async with httpx.AsyncClient(timeout=30) as client:
                in_flight = asyncio.create_task(client.get(f"{base}/candles?ticker=G.US"))
                await asyncio.sleep(0.5)  # the request waits on the lock inside the server
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                try:
                    await httpx.AsyncClient(timeout=2).get(f"{base}/health/live")
                    refused = "answered"
                except httpx.TransportError:
                    refused = "refused"
                await asyncio.to_thread(blocker.rollback)  # let the request finish
                return (await in_flight).status_code, refused

        status, refused = asyncio.run(scenario())
        server.process.wait(timeout=15)
    assert status == 200
    assert refused == "refused"
    assert server.process.returncode == 0
