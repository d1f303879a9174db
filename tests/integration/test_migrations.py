import asyncio
from collections.abc import Callable
from pathlib import Path

import psycopg

from marketdata.adapters.postgres import catalog
from marketdata.adapters.postgres.migrations import (
    Migrated,
    migrate,
    migration_files,
    timescale_message,
)
from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.reads import PostgresCandleRepository
from marketdata.domain.candles import Order
from tests.factories import series
from tests.support import insert, read_plan, run


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


def _migrated_before(version: str, url: str) -> str:
    """The database at `url` as an older version left it: the migrations before `version`
    applied and recorded."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for applied, text in migration_files():
            if applied < version:
                conn.execute(text.encode())
                conn.execute("INSERT INTO schema_migrations VALUES (%s)", (applied,))
    return url


def test_migrations_create_the_seed_schema(database_factory: Callable[[], str]) -> None:
    url = database_factory()
    applied = asyncio.run(migrate(DatabaseConfig(url=url))).applied
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
        # live: how often a candle was rewritten, and the transaction that last wrote it
        "revision": "integer",
        "xact": "xid8",
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
    assert asyncio.run(migrate(config)).applied == []
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

    async def both() -> list[Migrated]:
        return list(await asyncio.gather(*(migrate(config) for _ in range(4))))

    results = asyncio.run(both())
    applied = sorted(v for result in results for v in result.applied)
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
            found = await repo.bars(read_plan("SEED", 5, 10, Order.ASC))
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
    applied = asyncio.run(migrate(DatabaseConfig(url=url))).applied
    assert applied  # recorded in a new schema_migrations table
    assert _columns(url)["open"] == "numeric"  # the seed's table is kept as it is
    assert len(_index_led_by_ticker_tf_ts(url)) == 1  # the primary key; no duplicate index
    assert asyncio.run(read()) == expected
    with psycopg.connect(url) as conn:  # the catalog was filled from the existing rows
        filled = conn.execute("SELECT ticker, tf_min, count FROM candle_series").fetchall()
    assert filled == [("SEED", 5, 2)]
    # the seed's numeric columns under the triggers: another program's rows keep the catalog
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles VALUES ('SEED', 5, '2024-01-02 14:40+00', 1, 2, 0.5, 1.5, 3, 0)"
        )
        conn.execute("UPDATE candles SET close = 11.75 WHERE ts = '2024-01-02 14:35+00'")
        catalog_rows = conn.execute("SELECT ticker, tf_min, count FROM candle_series").fetchall()
    assert catalog_rows == [("SEED", 5, 3)]
    assert asyncio.run(catalog.drift(DatabaseConfig(url=url))) == []


def test_a_database_of_the_last_version_gets_the_triggers_and_is_mended_on_the_way(
    database_factory: Callable[[], str], tmp_path: Path
) -> None:
    """Migrations up to 0005 (the previous version: the catalog kept by the service alone),
    rows written around it since, then `marketdata migrate`: the triggers are in, the
    series that disagreed are mended and named, and plain SQL is seen from then on."""
    url = _migrated_before("0006", database_factory())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " VALUES ('OLD', 5, '2024-01-02 14:30+00', 1, 2, 0.5, 1.5, 3)"
        )
        conn.execute(
            "INSERT INTO candle_series (ticker, tf_min, first_ts, last_ts, count)"
            " VALUES ('OLD', 5, '2024-01-02 14:30+00', '2024-01-02 14:30+00', 1)"
        )
        conn.execute(  # around the service: the catalog never heard of these
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume) VALUES"
            " ('OLD', 5, '2024-01-02 14:35+00', 1, 2, 0.5, 1.5, 3),"
            " ('NEW', 5, '2024-01-02 14:30+00', 1, 2, 0.5, 1.5, 3)"
        )
    migrated = run(["migrate"], {"DATABASE_URL": url}, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrations applied: 0006_any_writer" in migrated.stdout
    assert "mended NEW tf_min=5: the catalog had no row, the table has 1" in migrated.stdout
    assert "mended OLD tf_min=5: the catalog had 1, the table has 2" in migrated.stdout
    assert asyncio.run(catalog.drift(DatabaseConfig(url=url))) == []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " VALUES ('NEW', 5, '2024-01-02 14:35+00', 1, 2, 0.5, 1.5, 3)"
        )
        rows = conn.execute("SELECT ticker, count FROM candle_series ORDER BY 1").fetchall()
    assert rows == [("NEW", 2), ("OLD", 2)]
    assert "schema up to date" in run(["migrate"], {"DATABASE_URL": url}, tmp_path).stdout


def test_a_database_of_0007_gets_new_checksums_and_its_drift_is_still_found(
    database_factory: Callable[[], str], tmp_path: Path
) -> None:
    """Migrations up to 0007 (the checksums of the old row hash), one series written under
    the triggers, one changed behind them (`session_replication_role = replica`), then
    `marketdata migrate`: every checksum is made with the new hash, the changed series is
    mended and named, the other is not, and `check` finds nothing afterwards."""
    url = _migrated_before("0008", database_factory())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume) VALUES"
            " ('KEPT', 5, '2024-01-02 14:30+00', 1, 2, 0.5, 1.5, 3),"
            " ('BEHIND', 5, '2024-01-02 14:30+00', 1, 2, 0.5, 1.5, 3)"
        )
        before = dict(conn.execute("SELECT ticker, checksum FROM candle_series").fetchall())
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE candles SET close = 1.75 WHERE ticker = 'BEHIND'")
    migrated = run(["migrate"], {"DATABASE_URL": url}, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrations applied: 0008_write_cost" in migrated.stdout
    assert "mended BEHIND tf_min=5: the catalog had 1, the table has 1" in migrated.stdout
    assert "KEPT" not in migrated.stdout
    with psycopg.connect(url) as conn:
        after = dict(conn.execute("SELECT ticker, checksum FROM candle_series").fetchall())
    assert after["KEPT"] != before["KEPT"]  # the new hash's
    assert asyncio.run(catalog.drift(DatabaseConfig(url=url))) == []
    with psycopg.connect(url, autocommit=True) as conn:  # and a write behind them is found
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE candles SET volume = 4 WHERE ticker = 'KEPT'")
    drifted = asyncio.run(catalog.drift(DatabaseConfig(url=url)))
    assert [(d.ticker, d.what) for d in drifted] == [("KEPT", "candles changed")]


def test_a_database_of_0012_gets_its_utc_weeks_counted_from_a_monday(
    database_factory: Callable[[], str], tmp_path: Path
) -> None:
    """Weeks kept in UTC were binned from 1970-01-01, a Thursday, until 0013: migrating
    builds them again from Mondays."""
    url = _migrated_before("0013", database_factory())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rollup_timeframes VALUES (1440, 'UTC', true), (10080, 'UTC', true)"
        )
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT 'W', 60, ts, 1, 2, 0.5, 1.5, 1 FROM generate_series("
            " timestamptz '2024-03-04 00:00+00', '2024-03-17 23:00+00', '1 hour') ts"
        )
        weeks = (
            "SELECT ts::date::text, candles FROM candle_rollups WHERE tf_min = 10080 ORDER BY ts"
        )
        assert conn.execute(weeks).fetchall()[0] == ("2024-02-29", 72)  # a Thursday's week
    kept = {"DATABASE_URL": url, "ROLLUP_TF_MINS": "1440,10080"}
    migrated = run(["migrate"], kept, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute(weeks).fetchall() == [("2024-03-04", 168), ("2024-03-11", 168)]


def test_the_rollups_key_is_ordered_by_time_before_zone(
    database_factory: Callable[[], str], tmp_path: Path
) -> None:
    """Until 0014 the rollups' primary key was (ticker, tf_min, tz, ts): migrating orders it
    (ticker, tf_min, ts, tz), the rows kept, and writes keep them after it."""
    url = _migrated_before("0014", database_factory())
    key = (
        "SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_constraint c"
        " CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY k(attnum, n)"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
        " WHERE c.conrelid = 'candle_rollups'::regclass AND c.contype = 'p'"
    )
    hours = "SELECT tz, ts::text, candles FROM candle_rollups ORDER BY tz, ts"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO rollup_timeframes VALUES (60, 'UTC', true)")
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT 'K', 15, ts, 1, 2, 0.5, 1.5, 1 FROM generate_series("
            " timestamptz '2024-03-04 00:00+00', '2024-03-04 01:45+00', '15 minutes') ts"
        )
        assert conn.execute(key).fetchone() == (["ticker", "tf_min", "tz", "ts"],)
        before = conn.execute(hours).fetchall()
    assert [r[2] for r in before] == [4, 4]
    migrated = run(["migrate"], {"DATABASE_URL": url, "ROLLUP_TF_MINS": "60"}, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(key).fetchone() == (["ticker", "tf_min", "ts", "tz"],)
        assert conn.execute(hours).fetchall() == before
        conn.execute("UPDATE candles SET volume = 3 WHERE ts = '2024-03-04 01:30+00'")
        assert conn.execute("SELECT volume FROM candle_rollups ORDER BY ts").fetchall() == [
            (4.0,),
            (6.0,),
        ]


def test_an_older_timescaledb_is_named_not_drifted_past() -> None:
    """TimescaleDB is not installable here: the rule that start-up and `check` apply."""
    refused = timescale_message("2.17.2", hypertable=True)
    assert refused is not None
    assert "TimescaleDB 2.17.2" in refused
    assert "2.18" in refused
    assert timescale_message("2.18.0-dev", hypertable=True) is None
    assert timescale_message("2.21.1", hypertable=True) is None
    assert timescale_message("2.14.0", hypertable=False) is None  # candles a plain table
