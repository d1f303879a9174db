"""A burst of abandoned work against a real server process with a small pool: hundreds of
replays and requests opened at once and cut at random points (during the handshake, the
count, while a page waits for a connection, mid-page, mid-export). Afterwards the pool must
be back to idle and every endpoint must answer 200."""

import asyncio
import json
import random
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
from websockets.asyncio.client import connect

from tests.support import metric, served

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

TICKERS = tuple(f"B{i}" for i in range(1, 11))
PER_TICKER = 40000
PAGE = 20


def _fill(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT t, 5, timestamptz '2024-01-01 00:00+00' + i * interval '5 minutes',"
            " 1, 2, 0.5, 1.5, i FROM unnest(%s::text[]) t, generate_series(0, %s - 1) i",
            (list(TICKERS), PER_TICKER),
        )


def _random_replay_url(base: str, rng: random.Random) -> str:
    tickers = rng.choice([["B1"], ["B2"], ["B1", "B3"], ["B1", "B2", "B3"]])
    query = f"tickers={','.join(tickers)}" if len(tickers) > 1 else f"ticker={tickers[0]}"
    query += f"&step_seconds={rng.choice(['0', '0.01', '0.05'])}"
    if rng.random() < 0.3:
        query += f"&from_seq={rng.randrange(0, 2000)}"
    if rng.random() < 0.3:
        query += "&tf_min=15"  # resampled from the 5-minute candles
    return f"{base}/ws/replay?{query}"


async def _cut_replay(base: str, rng: random.Random) -> None:
    """A replay whose client vanishes after a random delay: during the handshake, the
    count, a seek, or while pages are read."""
    try:
        async with connect(_random_replay_url(base, rng), open_timeout=30, max_queue=4) as ws:
            await asyncio.sleep(rng.choice([0.0, 0.001, 0.01, 0.05, 0.1, 0.3, 1.0]))
            if rng.random() < 0.3:
                await ws.send(json.dumps({"action": "seek", "seq": rng.randrange(0, 3000)}))
                await asyncio.sleep(rng.random() * 0.05)
            if rng.random() < 0.5:
                ws.transport.abort()  # no close handshake: the client simply vanishes
    except Exception:  # a refused or broken connection is part of the burst
        return


async def _left_at_a_page_end(base: str, rng: random.Random) -> None:
    """A paced replay whose client leaves right after the last candle of a page: the
    server has just asked for the page after next, so hundreds of such sessions started
    together cancel their page reads while the pool is busiest."""
    ticker = rng.choice(TICKERS)
    last = PAGE * rng.randrange(1, 3) - 1
    try:
        url = f"{base}/ws/replay?ticker={ticker}&step_seconds=0.1"
        async with connect(url, open_timeout=30) as ws:
            async for raw in ws:
                if json.loads(raw).get("seq", -1) >= last:
                    break
            if rng.random() < 0.5:
                ws.transport.abort()
    except Exception:
        return


_PATHS = [
    "/candles?ticker=B1&limit=500",
    "/candles?ticker=B2&tf_min=60&limit=200",
    "/candles/range?ticker=B3&start=2024-01-01&end=2024-01-08",
    "/candles?ticker=B1&format=ndjson",
    "/candles/range?ticker=B2&start=2024-01-01&end=2024-02-01&format=csv",
    "/symbols/B1",
    "/symbols",
]


async def _cut_request(port: int, rng: random.Random) -> None:
    path = rng.choice(_PATHS)
    cut_after = rng.choice([0.0, 0.001, 0.005, 0.02, 0.1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(cut_after)
        if rng.random() < 0.5:
            await reader.read(rng.choice([1, 4096]))
        writer.transport.abort()
    except OSError:
        return


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def _status(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        status: int = response.status
    return status


def test_a_burst_of_cut_replays_and_requests_leaves_the_pool_idle(
    tmp_path: Path, db_url: str, unused_port: int
) -> None:
    _fill(db_url)
    settings = {
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "4",
        "WS_MIN_STEP_SECONDS": "0",
        "WS_PAGE_SIZE": str(PAGE),
        "WS_MAX_SESSIONS": "5000",
        "LOG_LEVEL": "WARNING",
    }
    rng = random.Random(20261201)
    with served(tmp_path, db_url, unused_port, **settings):
        base = f"ws://127.0.0.1:{unused_port}"

        async def at_page_ends() -> None:
            await asyncio.gather(
                *(_left_at_a_page_end(base, random.Random(rng.random())) for _ in range(500))
            )

        async def anywhere() -> None:
            work = [_cut_replay(base, random.Random(rng.random())) for _ in range(200)]
            work += [_cut_request(unused_port, random.Random(rng.random())) for _ in range(200)]
            rng.shuffle(work)
            await asyncio.gather(*work)

        for _ in range(3):  # the production burst, three times over
            asyncio.run(at_page_ends())
        asyncio.run(anywhere())
        left = time.monotonic()
        # Back to idle: poll until nothing is lent out and nobody waits.
        deadline = left + 10
        while True:
            text = _metrics(unused_port)
            in_use = metric(text, "marketdata_db_pool_in_use")
            waiting = metric(text, "marketdata_db_pool_waiting")
            sessions = metric(text, "marketdata_replay_sessions")
            if (in_use, waiting, sessions) == (0, 0, 0) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        print(f"idle {time.monotonic() - left:.2f} s after the last client left")
        assert (in_use, waiting, sessions) == (0, 0, 0), text
        for path in [*_PATHS, "/health", "/health/ready"]:
            assert _status(unused_port, path) == 200, path

        async def whole_replay() -> list[int]:
            uri = f"{base}/ws/replay?ticker=B2&step_seconds=0&from_seq={PER_TICKER - 10}"
            async with connect(uri, open_timeout=10) as ws:
                return [m["seq"] for m in map(json.loads, [r async for r in ws]) if "candle" in m]

        assert asyncio.run(whole_replay()) == list(range(PER_TICKER - 10, PER_TICKER))
