"""Live across real server processes on one database: a write through either instance, or
by `marketdata ingest`, reaches the live sessions of both; a client that stops reading is
cut (a STATUS, then 1008) and the other clients go on."""

import asyncio
import contextlib
import json
import socket
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.integration.test_faults import rss_kib
from tests.support import free_port, metric, run, served

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

KEY = "live-key"


def post(port: int, rows: list[dict[str, Any]]) -> None:
    body = json.dumps(rows).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /candles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + body
        )
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def candle(ticker: str, i: int) -> dict[str, Any]:
    ts = datetime(2024, 7, 1, 9, tzinfo=UTC) + timedelta(minutes=i)
    return {
        "ticker": ticker,
        "tf_min": 1,
        "ts": ts.isoformat().replace("+00:00", "Z"),
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume": i,
    }


def test_writes_through_any_instance_or_ingest_reach_both(tmp_path: Path, db_url: str) -> None:
    one, two = free_port(), free_port()
    env = {"API_KEYS": KEY, "LOG_LEVEL": "WARNING"}
    with served(tmp_path, db_url, one, **env), served(tmp_path, db_url, two, **env):

        async def listen(port: int, count: int) -> list[str]:
            async with connect(f"ws://127.0.0.1:{port}/ws/live?tickers=IA,IB&tf_min=1") as ws:
                assert json.loads(await ws.recv())["message"] == "live"
                ready.append(port)
                seen = []
                async with asyncio.timeout(30):
                    while len(seen) < count:
                        m = json.loads(await ws.recv())
                        seen.append(f"{m['candle']['ticker']} {m['candle']['ts']} {m['seq']}")
                return seen

        ready: list[int] = []

        async def scenario() -> tuple[list[str], list[str]]:
            a = asyncio.create_task(listen(one, 4))
            b = asyncio.create_task(listen(two, 4))
            while len(ready) < 2:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(post, one, [candle("IA", 0)])
            await asyncio.to_thread(post, two, [candle("IB", 1)])
            data = tmp_path / "ia.csv"
            data.write_text(
                "ticker,tf_min,ts,open,high,low,close\n"
                "IA,1,2024-07-01T09:02:00Z,1,2,0.5,1.5\nIA,1,2024-07-01T09:03:00Z,1,2,0.5,1.5\n"
            )
            ingested = await asyncio.to_thread(
                run, ["ingest", str(data)], {"DATABASE_URL": db_url}, tmp_path
            )
            assert ingested.returncode == 0, ingested.stderr
            return await a, await b

        seen_one, seen_two = asyncio.run(scenario())
    expected = [
        "IA 2024-07-01T09:00:00Z 0",
        "IB 2024-07-01T09:01:00Z 1",
        "IA 2024-07-01T09:02:00Z 2",
        "IA 2024-07-01T09:03:00Z 3",
    ]
    assert seen_one == expected
    assert seen_two == expected


def test_readers_get_a_whole_burst_a_stalled_client_is_cut_and_memory_stays_bounded(
    tmp_path: Path, db_url: str, unused_port: int
) -> None:
    """40,000 candles in 10 POSTs: two clients reading as fast as they can get every one
    (no count bound cuts them); one that stops reading is cut (a STATUS, then 1008) once
    it makes no progress, and the server's memory grows by far less than 100 MB."""
    env = {"API_KEYS": KEY, "LIVE_STALL_SECONDS": "3", "LOG_LEVEL": "WARNING"}
    total, posts = 40_000, 10
    with served(tmp_path, db_url, unused_port, **env) as server:
        uri = f"ws://127.0.0.1:{unused_port}/ws/live?ticker=SL&tf_min=1"

        async def scenario() -> tuple[list[int], list[dict[str, Any]], int | None, int]:
            async with (
                connect(uri, max_queue=1, write_limit=1) as stalled,
                connect(uri, max_queue=None) as one,
                connect(uri, max_queue=None) as two,
            ):
                # the stalled client stops reading at once: its kernel buffers fill, then
                # its queue on the server
                stalled.transport.pause_reading()
                await one.recv()
                await two.recv()
                before = rss_kib(server.process.pid)

                async def read_all(reader: Any) -> int:
                    got = 0
                    async with asyncio.timeout(90):
                        while got < total:
                            message = json.loads(await reader.recv())
                            assert message["type"] == "CANDLE", message
                            got += 1
                    return got

                reading = [asyncio.create_task(read_all(r)) for r in (one, two)]
                size = total // posts
                bodies = [
                    [candle("SL", i) for i in range(start, start + size)]
                    for start in range(0, total, size)
                ]  # all at once: the burst arrives faster than the readers drain it
                await asyncio.gather(*(asyncio.to_thread(post, unused_port, b) for b in bodies))
                got = list(await asyncio.gather(*reading))
                grown = rss_kib(server.process.pid) - before
                await asyncio.sleep(4)  # past LIVE_STALL_SECONDS: the sweep cuts it
                stalled.transport.resume_reading()
                kept: list[dict[str, Any]] = []
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(10):
                        async for raw in stalled:
                            kept.append(json.loads(raw))
                return got, kept, stalled.close_code, grown

        got, kept, code, grown = asyncio.run(scenario())
        assert server.process.poll() is None
    assert got == [total, total]  # both readers got everything
    assert grown < 100 * 1024, f"{grown} KiB"
    assert len([m for m in kept if m["type"] == "CANDLE"]) < total
    assert code == 1008
    last = kept[-1]
    assert (last["type"], last["message"]) == ("STATUS", "error")
    assert "LIVE_STALL_SECONDS" in last["error"] or "LIVE_MAX_BYTES" in last["error"]


def test_a_client_that_stops_reading_is_cut_and_the_others_go_on(
    tmp_path: Path, db_url: str, unused_port: int
) -> None:
    env = {"API_KEYS": KEY, "LIVE_MAX_BYTES": "256000", "LOG_LEVEL": "WARNING"}
    total = 30_000  # ~250 bytes each as JSON: more than the kernel's buffers hold
    with served(tmp_path, db_url, unused_port, **env) as server:
        uri = f"ws://127.0.0.1:{unused_port}/ws/live?ticker=SL&tf_min=1"

        async def scenario() -> tuple[int, list[dict[str, Any]], int | None]:
            async with (
                connect(uri, max_queue=1, write_limit=1) as stalled,
                connect(uri) as reader,
            ):
                # the stalled client stops reading at once: its kernel buffers fill, then
                # its queue on the server
                stalled.transport.pause_reading()
                await reader.recv()

                async def read_all() -> int:
                    got = 0
                    async with asyncio.timeout(60):
                        while got < total:
                            await reader.recv()
                            got += 1
                    return got

                reading = asyncio.create_task(read_all())
                for start in range(0, total, 100):
                    rows = [candle("SL", i) for i in range(start, start + 100)]
                    await asyncio.to_thread(post, unused_port, rows)
                reader_got = await reading
                stalled.transport.resume_reading()
                kept: list[dict[str, Any]] = []
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(10):
                        async for raw in stalled:
                            kept.append(json.loads(raw))
                return reader_got, kept, stalled.close_code

        reader_got, kept, code = asyncio.run(scenario())
        time.sleep(0.5)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{unused_port}/metrics", timeout=5
        ) as response:
            text = response.read().decode()
        assert server.process.poll() is None
    assert reader_got == total  # the other client got everything
    last = kept[-1]
    assert (last["type"], last["message"]) == ("STATUS", "error")
    assert "LIVE_MAX_BYTES" in last["error"] or "LIVE_STALL_SECONDS" in last["error"]
    assert len([m for m in kept if m["type"] == "CANDLE"]) < total
    assert code == 1008
    assert metric(text, "marketdata_live_subscribers") == 0
