"""Logical replication into `candles` (a SUBSCRIPTION from a feed database): PostgreSQL's apply
worker fires no statement trigger, only row triggers enabled for replication. What its
transactions change is kept as every other writer's is: the catalog, the rollups, the change
feed (`check` finds nothing), from the initial copy on, a replicated TRUNCATE included."""

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from tests.replication import Replication

pytestmark = pytest.mark.timeout(120)

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
FEED = "feed"
COLUMNS = "ticker, tf_min, ts, open, high, low, close, volume"


def rows(ticker: str, count: int, start: datetime = START) -> list[tuple[object, ...]]:
    return [
        (ticker, 5, start + timedelta(minutes=5 * i), 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 7.0)
        for i in range(count)
    ]


@pytest.fixture(params=["superuser", "another owner"])
def subscribed(
    replicated: Replication, request: pytest.FixtureRequest
) -> Iterator[tuple[Callable[[str], None], str]]:
    """A feed database with its own `candles` on the primary, published, and the service's
    database subscribed to it by a superuser (the feed's first rows copied): a way to run SQL
    on the feed, and the service's database. With "another owner", that database's tables
    belong to a role that is no superuser: PostgreSQL 16 and later then apply as that role
    in a security-restricted operation, where deferred triggers are refused."""
    primary = replicated.primary
    ours = replicated.primary_url()
    if request.param == "another owner":
        primary.execute("DROP DATABASE IF EXISTS owned WITH (FORCE)")
        primary.execute("DROP ROLE IF EXISTS mdowner")
        primary.execute("CREATE ROLE mdowner LOGIN")
        primary.execute("CREATE DATABASE owned OWNER mdowner")
        ours = replicated.primary.url("owned").replace("postgres@", "mdowner@")
        asyncio.run(migrate(DatabaseConfig(url=ours)))
        ours = replicated.primary.url("owned")
    primary.execute(f"DROP DATABASE IF EXISTS {FEED} WITH (FORCE)")
    primary.execute(f"CREATE DATABASE {FEED}")
    feed = primary.url(FEED)
    with psycopg.connect(feed, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE candles (ticker text, tf_min int, ts timestamptz, open float8,"
            " high float8, low float8, close float8, volume float8, openint bigint DEFAULT 0,"
            " PRIMARY KEY (ticker, tf_min, ts))"
        )
        conn.cursor().executemany(
            f"INSERT INTO candles ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            rows("SUBA", 30),
        )
        conn.execute("CREATE PUBLICATION feed FOR TABLE candles")
        # on one server the slot is made first (CREATE SUBSCRIPTION would wait on itself)
        conn.execute("SELECT pg_create_logical_replication_slot('feed', 'pgoutput')")
    dsn = f"host=127.0.0.1 port={primary.port} dbname={FEED} user=postgres"
    with psycopg.connect(ours, autocommit=True) as conn:
        conn.execute(
            f"CREATE SUBSCRIPTION feed CONNECTION '{dsn}' PUBLICATION feed"
            " WITH (create_slot = false, slot_name = 'feed')"
        )

    def on_feed(statement: str) -> None:
        with psycopg.connect(feed, autocommit=True) as conn:
            conn.execute(statement)

    try:
        yield on_feed, ours
    finally:
        with psycopg.connect(ours, autocommit=True) as conn:
            conn.execute("ALTER SUBSCRIPTION feed DISABLE")
            conn.execute("ALTER SUBSCRIPTION feed SET (slot_name = NONE)")
            conn.execute("DROP SUBSCRIPTION feed")
        with psycopg.connect(feed, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot('feed')")
        primary.execute(f"DROP DATABASE {FEED} WITH (FORCE)")
        if request.param == "another owner":
            primary.execute("DROP DATABASE owned WITH (FORCE)")
            primary.execute("DROP ROLE mdowner")


def replicated_as(ours: str, query: str, expected: object, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    with psycopg.connect(ours, autocommit=True) as conn:
        while (seen := conn.execute(query).fetchall()) != expected:
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)


def kept(ours: str) -> None:
    """Nothing the catalog or a rollup says disagrees with the candles."""
    with psycopg.connect(ours, autocommit=True) as conn:
        assert conn.execute("SELECT * FROM candle_drift()").fetchall() == []
        for (ticker,) in conn.execute("SELECT DISTINCT ticker FROM candles").fetchall():
            drift = conn.execute("SELECT * FROM candle_rollups_drift(%s)", (ticker,)).fetchall()
            assert all(buckets == 0 for _, _, buckets in drift), (ticker, drift)


def test_a_subscription_s_changes_are_kept_as_any_writer_s(
    subscribed: tuple[Callable[[str], None], str],
) -> None:
    on_feed, ours = subscribed
    count = "SELECT ticker, count FROM candle_series ORDER BY 1"
    replicated_as(ours, count, [("SUBA", 30)])  # the initial copy
    kept(ours)
    with psycopg.connect(ours, autocommit=True) as conn:
        conn.execute("LISTEN marketdata_candles")
        on_feed(  # one replicated transaction: a new ticker, a correction, a key moved, a gap
            "BEGIN;"
            f" INSERT INTO candles ({COLUMNS}) VALUES"
            f" ('SUBB', 5, '{START.isoformat()}', 1, 2, 0.5, 1.5, 3);"
            " UPDATE candles SET high = high + 100 WHERE ticker = 'SUBA' AND ts ="
            f" '{(START + timedelta(minutes=10)).isoformat()}';"
            " UPDATE candles SET close = close WHERE ticker = 'SUBA' AND ts ="
            f" '{(START + timedelta(minutes=15)).isoformat()}';"
            " UPDATE candles SET ts = ts + interval '1 day' WHERE ticker = 'SUBA' AND ts ="
            f" '{(START + timedelta(minutes=20)).isoformat()}';"
            " DELETE FROM candles WHERE ticker = 'SUBA' AND ts ="
            f" '{(START + timedelta(minutes=25)).isoformat()}';"
            " COMMIT"
        )
        replicated_as(ours, count, [("SUBA", 29), ("SUBB", 1)])
        # one notification (each row's, applied at once as the table's owner in a restricted
        # operation), naming the tickers
        heard = " ".join(n.payload for n in conn.notifies(timeout=1))
        assert '"SUBA"' in heard
        assert '"SUBB"' in heard
        kept(ours)
        revision = conn.execute(
            "SELECT revision FROM candles WHERE ticker = 'SUBA' AND ts = %s",
            (START + timedelta(minutes=10),),
        ).fetchone()
        assert revision == (1,)  # a correction, as live clients are told
        same = conn.execute(
            "SELECT revision FROM candles WHERE ticker = 'SUBA' AND ts = %s",
            (START + timedelta(minutes=15),),
        ).fetchone()
        assert same == (0,)  # rewritten with the same values: no correction
        with pytest.raises(psycopg.errors.RaiseException, match="replication workers only"):
            conn.execute(  # the helper the workers' trigger calls, as its owner: not for us
                "SELECT candle_replicated_rows(ARRAY['SUBA'], ARRAY[5], ARRAY[now()],"
                " ARRAY[1::bigint], ARRAY[NULL::bigint], ARRAY[NULL::xid8], true)"
            )
    # rows, a TRUNCATE, rows again, in one transaction: only the last rows stay
    on_feed(
        "BEGIN;"
        f" INSERT INTO candles ({COLUMNS}) VALUES"
        f" ('SUBC', 5, '{START.isoformat()}', 1, 2, 0.5, 1.5, 3);"
        " TRUNCATE candles;"
        f" INSERT INTO candles ({COLUMNS}) SELECT 'SUBD', 5, ts, 1, 2, 0.5, 1.5, 3"
        f" FROM generate_series('{START.isoformat()}'::timestamptz, '{START.isoformat()}'::"
        "timestamptz + interval '3 hours', interval '5 minutes') ts;"
        " COMMIT"
    )
    replicated_as(ours, count, [("SUBD", 37)])
    kept(ours)
    with psycopg.connect(ours) as conn:
        assert conn.execute("SELECT count(*) FROM candle_pending").fetchone() == (0,)
    on_feed("TRUNCATE candles")
    replicated_as(ours, count, [])
    kept(ours)
