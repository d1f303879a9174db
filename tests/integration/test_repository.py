import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from marketdata.adapters.postgres.migrations import PostgresHealth
from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.reads import PostgresCandleRepository
from marketdata.domain.candles import Order, TimeRange
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ports import Columnar
from tests.factories import series
from tests.proxy import TcpProxy
from tests.support import insert, read_plan, through

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[PostgresCandleRepository]:
    database = Database(DatabaseConfig(url=db_url, pool_min_size=1, command_timeout=5))
    await database.open()
    yield PostgresCandleRepository(database)
    await database.close()


async def test_candles_come_back_exactly_as_inserted(
    repo: PostgresCandleRepository, db_url: str
) -> None:
    stored = series("AMZN.US", 50)
    insert(db_url, stored[::-1])  # insertion order must not matter
    assert await repo.bars(read_plan("AMZN.US", 5, 50, Order.ASC)) == stored
    assert await repo.bars(read_plan("AMZN.US", 5, 3, Order.ASC)) == stored[:3]
    assert await repo.bars(read_plan("AMZN.US", 5, 3, Order.DESC)) == stored[::-1][:3]
    assert await repo.bars(read_plan("AMZN.US", 60, 3, Order.ASC)) == []
    assert await repo.bars(read_plan("amzn.us", 5, 3, Order.ASC)) == []


@pytest.mark.parametrize("columnar", [False, True])
async def test_an_export_left_early_gives_its_connection_back_at_once(
    db_url: str, columnar: bool
) -> None:
    """A reader that stops an export early (a vendor's newest-first page: its limit reached)
    and closes it gets the connection back in the pool before the close returns, in its
    own task. It was left to the export's inner generator, closed later by the event loop
    in a task of its own: the pool's sweep, seeing the request's task ended, closed the
    connection while that task was still closing its cursor on it, and the server process
    died (SIGSEGV, SIGABRT) under alpaca-py's and massive's repeated `sort=desc` pages."""
    insert(db_url, series("EARLY", 20_000))
    database = Database(DatabaseConfig(url=db_url, pool_min_size=1, command_timeout=5))
    await database.open()
    try:
        repo = PostgresCandleRepository(database)
        plan = read_plan("EARLY", 5, None, Order.DESC)
        exported = repo.export_columns(Columnar.ARROW, plan) if columnar else repo.export(plan)
        assert await anext(exported)
        await exported.aclose()
        assert database.stats()["leases"] == 0
    finally:
        await database.close()


async def test_range_is_inclusive_ascending_and_limited(
    repo: PostgresCandleRepository, db_url: str
) -> None:
    stored = series("KO.US", 20)
    insert(db_url, stored + series("KO.US", 5, tf_min=15))
    window = TimeRange(stored[3].ts, stored[7].ts)
    assert await repo.bars(read_plan("KO.US", 5, 100, time_range=window)) == stored[3:8]
    assert await repo.bars(read_plan("KO.US", 5, 2, time_range=window)) == stored[3:5]
    exact = TimeRange(stored[4].ts, stored[4].ts)
    assert await repo.bars(read_plan("KO.US", 5, 100, time_range=exact)) == [stored[4]]
    between = TimeRange(stored[4].ts + timedelta(seconds=1), stored[5].ts - timedelta(seconds=1))
    assert await repo.bars(read_plan("KO.US", 5, 100, time_range=between)) == []


async def test_offsets_in_the_range_are_honoured(
    repo: PostgresCandleRepository, db_url: str
) -> None:
    stored = series("SBER", 12)
    insert(db_url, stored)
    moscow = datetime.fromisoformat("2024-01-02T17:40:00+03:00")  # 14:40 UTC
    found = await repo.bars(read_plan("SBER", 5, 10, time_range=TimeRange(moscow, moscow)))
    assert [c.ts for c in found] == [START + timedelta(minutes=10)]
    assert found[0].ts.utcoffset() == timedelta(0)


async def test_symbols_prefix_is_literal_and_case_insensitive(
    repo: PostgresCandleRepository, db_url: str
) -> None:
    tickers = ["A%B", "A_C", "AB", "AXC", "Abc", "MSFT.US", "ZZ", "a%z"]
    insert(db_url, [c for t in tickers for c in series(t, 2)])
    all_found = await repo.symbols("", 100)
    assert sorted(all_found) == sorted(tickers)
    with psycopg.connect(db_url) as conn:
        db_sorted = [r[0] for r in conn.execute("SELECT DISTINCT ticker FROM candles ORDER BY 1")]
    assert all_found == db_sorted  # in the database's collation order
    assert sorted(await repo.symbols("a%", 100)) == ["A%B", "a%z"]
    assert await repo.symbols("a_", 100) == ["A_C"]
    assert sorted(await repo.symbols("ab", 100)) == ["AB", "Abc"]
    assert await repo.symbols("msft.", 100) == ["MSFT.US"]
    assert await repo.symbols("q", 100) == []
    assert await repo.symbols("", 3) == db_sorted[:3]


async def test_symbols_of_an_empty_table(repo: PostgresCandleRepository) -> None:
    assert await repo.symbols("", 10) == []


async def test_a_statement_over_the_timeout_is_store_unavailable(db_url: str) -> None:
    config = DatabaseConfig(url=db_url, pool_min_size=1, command_timeout=0.5)
    pool = Database(config)
    await pool.open()
    repo = PostgresCandleRepository(pool)
    blocker = await psycopg.AsyncConnection.connect(db_url)
    try:
        # Hold a lock that makes every read wait, so the read outlives its statement timeout.
        await blocker.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StoreUnavailable, match="DB_COMMAND_TIMEOUT") as caught:
            await repo.bars(read_plan("X", 5, 10, Order.ASC))
        location = conninfo_to_dict(db_url)
        assert (caught.value.host, caught.value.port) == (location["host"], location["port"])
    finally:
        await blocker.rollback()
        await blocker.close()
        await pool.close()
    # the connection that was cancelled is usable again
    pool = Database(config)
    await pool.open()
    try:
        assert await PostgresCandleRepository(pool).bars(read_plan("X", 5, 1)) == []
    finally:
        await pool.close()


async def test_an_unreachable_server_is_store_unavailable_within_the_connect_timeout(
    unused_port: int,
) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{unused_port}/nowhere"
    config = DatabaseConfig(url=url, connect_timeout=2, pool_min_size=1)
    pool = Database(config)
    await pool.open()
    repo = PostgresHealth(pool)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await repo.ping()
    finally:
        await pool.close()
    assert time.monotonic() - started < config.connect_timeout + 1
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", str(unused_port))
    assert "hunter2" not in caught.value.message


async def test_the_pool_recovers_after_an_outage_without_restart(
    db_url: str, proxy: TcpProxy
) -> None:
    config = DatabaseConfig(
        url=through(proxy, db_url), connect_timeout=2, pool_timeout=0.5, pool_min_size=2
    )
    pool = Database(config)
    await pool.open()
    repo = PostgresCandleRepository(pool)
    health = PostgresHealth(pool)
    try:
        await pool.filled(within=5)
        await health.ping()
        proxy.cut()
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                await health.ping()
        proxy.restore()
        deadline = time.monotonic() + 10
        while True:
            try:
                await health.ping()
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the pool did not recover within 10 s"
                await asyncio.sleep(0.05)
        assert await repo.bars(read_plan("X", 5, 1, Order.ASC)) == []
    finally:
        await pool.close()


async def test_connections_killed_by_the_server_cost_no_failed_request(
    repo: PostgresCandleRepository, db_url: str
) -> None:
    insert(db_url, series("KO.US", 3))
    assert len(await repo.bars(read_plan("KO.US", 5, 10, Order.ASC))) == 3
    with psycopg.connect(db_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'marketdata'"
        ).fetchone()
    assert killed is not None
    assert killed[0] >= 1
    # The pooled connection is dead; the read is retried on a fresh one.
    assert len(await repo.bars(read_plan("KO.US", 5, 10, Order.ASC))) == 3
