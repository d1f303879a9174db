"""The pool's hand-overs against real PostgreSQL: callers cancelled at any point lose no
connection, and a lease whose holder ended without giving it back is reclaimed."""

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from marketdata.adapters.postgres.pool import Connection, Database, DatabaseConfig


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    pool = Database(
        DatabaseConfig(url=db_url, pool_min_size=1, pool_max_size=2, pool_timeout=5),
        sweep_every=3600,  # the tests sweep by hand
    )
    await pool.open()
    yield pool
    await pool.close()


async def _idle(database: Database) -> dict[str, int]:
    for _ in range(200):
        stats = database.stats()
        if stats["pool_size"] == stats["pool_available"] and not stats["requests_waiting"]:
            break
        await asyncio.sleep(0.01)
    return database.stats()


async def test_callers_cancelled_anywhere_lose_no_connection(database: Database) -> None:
    rng = random.Random(7)

    async def reader() -> None:
        while True:
            await database.fetch("SELECT pg_sleep(0.001)", None)

    for _ in range(30):
        readers = [asyncio.create_task(reader()) for _ in range(40)]
        # cancel each at a random moment: waiting for the pool, mid-query, giving back
        await asyncio.sleep(rng.uniform(0, 0.02))
        for task in readers:
            task.cancel()
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        await asyncio.gather(*readers, return_exceptions=True)
    stats = await _idle(database)
    assert stats["pool_size"] == stats["pool_available"], stats
    assert stats["leases"] == 0
    assert stats["reclaimed"] == 0
    assert await database.fetch("SELECT 1", None) == [(1,)]


async def _abandoned_lease(
    database: Database,
) -> tuple[list[Connection], AsyncGenerator[int, None]]:
    """A lease taken by a generator in a task that then ends without closing it: the
    connection it holds, and the generator."""
    held: list[Connection] = []

    async def holding() -> AsyncGenerator[int, None]:
        async with database.connection() as conn:
            held.append(conn)
            yield 1
            yield 2

    abandoned = holding()

    async def holder() -> None:
        await anext(abandoned)  # takes the lease, then this task ends without closing it

    await asyncio.create_task(holder())
    return held, abandoned


async def test_a_lease_whose_holder_ended_is_reclaimed_once(database: Database) -> None:
    held, abandoned = await _abandoned_lease(database)
    assert database.stats()["leases"] == 1
    assert await database.sweep() == 1
    assert await database.sweep() == 0
    stats = await _idle(database)
    assert stats["leases"] == 0
    assert stats["reclaimed"] == 1
    assert held[0].closed  # whatever still refers to it can no longer use it
    with contextlib.suppress(Exception):
        await abandoned.aclose()  # gives nothing back twice
    stats = await _idle(database)
    assert stats["pool_size"] == stats["pool_available"]
    assert await database.fetch("SELECT 1", None) == [(1,)]


async def test_a_lease_in_the_middle_of_an_operation_is_not_closed_under_it(
    database: Database,
) -> None:
    """A generator whose reader ended is closed by the event loop in a task of its own; the
    sweep must not close its connection while that task works on it (libpq then used a
    freed connection: SIGSEGV). It takes the lease back once the operation is over."""
    held, abandoned = await _abandoned_lease(database)
    async with held[0].lock:  # as the connection's own operations hold it
        assert await database.sweep() == 0
        assert not held[0].closed
    assert await database.sweep() == 1
    assert held[0].closed
    with contextlib.suppress(Exception):
        await abandoned.aclose()


async def test_a_live_holder_keeps_its_lease(database: Database) -> None:
    async with database.connection() as conn:
        assert await database.sweep() == 0
        await conn.execute("SELECT 1")
    assert database.stats()["reclaimed"] == 0
