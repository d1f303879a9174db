import asyncio
from collections.abc import Callable

import psycopg

from marketdata.adapters.postgres.migrations import migrate, migration_files
from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.reads import PostgresCandleRepository
from marketdata.domain.candles import Order
from tests.factories import series
from tests.support import insert


def _columns(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'candles'"
        ).fetchall()
    return dict(rows)


def _index_led_by_ticker_tf_ts(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'candles'"
                " AND indexdef LIKE '%(ticker, tf_min, ts)%'"
            ).fetchall()
        ]


def test_migrations_create_the_seed_schema(database_factory: Callable[[], str]) -> None:
    url = database_factory()
    applied = asyncio.run(migrate(DatabaseConfig(url=url)))
    assert applied == [version for version, _ in migration_files()]
    assert _columns(url) == {
        "ticker": "text",
        "tf_min": "integer",
        "ts": "timestamp with time zone",
        "open": "double precision",
        "high": "double precision",
        "low": "double precision",
        "close": "double precision",
        "volume": "double precision",
        "openint": "bigint",
        # live: how often a candle was rewritten, and the write that last changed it
        "revision": "integer",
        "version": "bigint",
    }
    assert len(_index_led_by_ticker_tf_ts(url)) == 1
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == applied


def test_migrations_are_idempotent(database_factory: Callable[[], str]) -> None:
    url = database_factory()
    config = DatabaseConfig(url=url)
    asyncio.run(migrate(config))
    insert(url, series("KEEP", 3))
    assert asyncio.run(migrate(config)) == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM candles").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(migration_files()),
        )


def test_replicas_migrating_together_apply_each_migration_once(
    database_factory: Callable[[], str],
) -> None:
    url = database_factory()
    config = DatabaseConfig(url=url)

    async def both() -> list[list[str]]:
        return list(await asyncio.gather(*(migrate(config) for _ in range(4))))

    results = asyncio.run(both())
    applied = sorted(v for result in results for v in result)
    assert applied == sorted(version for version, _ in migration_files())


SEED_DDL = """
CREATE TABLE candles (
    ticker text NOT NULL, tf_min int NOT NULL, ts timestamptz NOT NULL,
    open numeric, high numeric, low numeric, close numeric, volume numeric,
    openint bigint DEFAULT 0,
    PRIMARY KEY (ticker, tf_min, ts)
)
"""


def test_a_seed_database_keeps_its_table_and_is_read_as_floats(
    database_factory: Callable[[], str],
) -> None:
    url = database_factory()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED_DDL)
        conn.execute(
            "INSERT INTO candles VALUES"
            " ('SEED', 5, '2024-01-02 14:30+00', 10.5, 11.25, 10.125, 11, 1234.5, NULL),"
            " ('SEED', 5, '2024-01-02 14:35+00', 11, 12, 10.75, 11.5, 99, 7)"
        )

    async def read() -> list[tuple[object, ...]]:
        pool = Database(DatabaseConfig(url=url, pool_min_size=1))
        await pool.open()
        try:
            repo = PostgresCandleRepository(pool)
            found = await repo.candles("SEED", 5, 10, Order.ASC)
            return [
                (c.open, c.high, c.low, c.close, c.volume, c.openint, type(c.open)) for c in found
            ]
        finally:
            await pool.close()

    expected = [
        (10.5, 11.25, 10.125, 11.0, 1234.5, 0, float),
        (11.0, 12.0, 10.75, 11.5, 99.0, 7, float),
    ]
    assert asyncio.run(read()) == expected  # before our migrations ran
    applied = asyncio.run(migrate(DatabaseConfig(url=url)))
    assert applied  # recorded in a new schema_migrations table
    assert _columns(url)["open"] == "numeric"  # the seed's table is kept as it is
    assert len(_index_led_by_ticker_tf_ts(url)) == 1  # the primary key; no duplicate index
    assert asyncio.run(read()) == expected
    with psycopg.connect(url) as conn:  # the catalog was filled from the existing rows
        catalog = conn.execute("SELECT ticker, tf_min, count FROM candle_series").fetchall()
    assert catalog == [("SEED", 5, 2)]
