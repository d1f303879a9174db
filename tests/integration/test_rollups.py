"""Rollups against real PostgreSQL: kept exact by every write (inserts, out-of-order inserts,
updates, deletes, a finer timeframe arriving), the same answer bucket for bucket as
resampling the stored candles, built for existing data, and checked by `drift`."""

import asyncio
import math
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from marketdata.adapters.postgres import catalog, rollups
from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.reads import PostgresCandleRepository
from marketdata.adapters.postgres.replay import PostgresReplaySource
from marketdata.adapters.postgres.writes import PostgresCandleWriter
from marketdata.domain.bar_options import BarOptions
from marketdata.domain.candles import Candle, Order, TimeRange
from marketdata.domain.ingest import Row
from marketdata.domain.replay import ReplaySelection, planned
from marketdata.domain.timeframes import Resample, Rollup, serving
from tests.support import AppFactory, insert, read_plan, reset

KEPT = [
    Rollup(15),
    Rollup(60),
    Rollup(1440, "America/New_York"),
    Rollup(1440),
    Rollup(10080, "America/New_York"),
    Rollup(10080),
]
# Around New York's change to summer time (2024-03-10 07:00 UTC), over a weekend
START = datetime(2024, 3, 7, 20, 0, tzinfo=UTC)
SLOTS = 6 * 24 * 60  # six days of one-minute slots
TIMEFRAMES = [15, 30, 60, 120, 240, 1440, 10080]
ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]


def row(tf: int, slot: int, rng: random.Random, ticker: str = "R") -> Row:
    o, c = round(rng.uniform(90, 110), 2), round(rng.uniform(90, 110), 2)
    return (
        ticker,
        tf,
        START + timedelta(minutes=tf * slot),
        o,
        round(max(o, c) + rng.uniform(0, 2), 2),
        round(min(o, c) - rng.uniform(0, 2), 2),
        c,
        round(rng.uniform(0, 1000), 3),  # fractional: sums in another order differ in ulps
        rng.randrange(0, 50),
    )


def same(a: list[Candle], b: list[Candle]) -> bool:
    """Equal bucket for bucket; volumes (sums of floats) to within 1e-9."""
    return len(a) == len(b) and all(
        (x.ts, x.open, x.high, x.low, x.close, x.openint)
        == (y.ts, y.open, y.high, y.low, y.close, y.openint)
        and math.isclose(x.volume, y.volume, rel_tol=1e-9, abs_tol=1e-9)
        for x, y in zip(a, b, strict=True)
    )


class Store:
    def __init__(self, url: str) -> None:
        self.config = DatabaseConfig(url=url, pool_min_size=1)
        self.database = Database(self.config)
        self.writer = PostgresCandleWriter(self.database)
        self.repo = PostgresCandleRepository(self.database)

    async def served_by_rollups(self, rng: random.Random) -> int:
        """Compare every timeframe and zone read through its rollup with the same read from
        the stored candles; how many reads a rollup served."""
        held = await self.repo.holdings(["R"])
        used = 0
        for tf in TIMEFRAMES:
            for tz in ZONES:
                options = BarOptions(tz)
                plan = serving(tf, held.series, options, held.rollups)
                if plan.resample is None or plan.resample.rollup is None:
                    continue
                used += 1
                fast_r, base = plan.resample, Resample(plan.resample.source_tf)
                for order, limit in ((Order.ASC, 100_000), (Order.DESC, rng.randrange(1, 20))):
                    fast = await self.repo.bars(read_plan("R", tf, limit, order, fast_r, options))
                    slow = await self.repo.bars(read_plan("R", tf, limit, order, base, options))
                    assert same(fast, slow), (tf, tz, order, limit)
                start = START + timedelta(minutes=rng.randrange(0, SLOTS))
                window = TimeRange(start, start + timedelta(minutes=rng.randrange(1, SLOTS)))
                limit = rng.randrange(1, 50)
                fast = await self.repo.bars(
                    read_plan("R", tf, limit, resample=fast_r, options=options, time_range=window)
                )
                slow = await self.repo.bars(
                    read_plan("R", tf, limit, resample=base, options=options, time_range=window)
                )
                assert same(fast, slow), (tf, tz, window, limit)
                exported = self.repo.export(
                    read_plan("R", tf, None, Order.ASC, fast_r, options, time_range=window)
                )
                streamed = [c async for c in exported]
                whole = await self.repo.bars(
                    read_plan("R", tf, 100_000, resample=base, options=options, time_range=window)
                )
                assert same(streamed, whole), (tf, tz, window)
        assert await rollups.drift(self.config) == []
        return used


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    kept = Store(db_url)
    await kept.database.open()
    await rollups.sync(kept.config, KEPT)
    yield kept
    await kept.database.close()


Operation = tuple[str, int, int, bool]  # what, first slot, how many slots, plain SQL

operations = st.lists(
    st.tuples(
        st.sampled_from(["insert", "insert", "update", "delete", "delete", "finer", "truncate"]),
        st.integers(0, SLOTS - 1),
        st.integers(1, 3000),
        st.booleans(),  # through the service, or as another program does, in plain SQL
    ),
    min_size=2,
    max_size=6,
)

_UPSERT = (
    "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)"
    " SELECT * FROM unnest(%s::text[], %s::int4[], %s::timestamptz[], %s::float8[],"
    " %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::int8[])"
    " ON CONFLICT (ticker, tf_min, ts) DO UPDATE SET open = excluded.open,"
    " high = excluded.high, low = excluded.low, close = excluded.close,"
    " volume = excluded.volume, openint = excluded.openint"
)


class PlainSql:
    """Writes as another program makes them, one statement each: the triggers do the rest.
    Its session is in a zone of its own (+13:45, +12:45 in summer): nothing the triggers
    keep may depend on the writer's TimeZone."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True, options="-c TimeZone=Pacific/Chatham")

    def write(self, rows: list[Row]) -> None:
        with self._connect() as conn:
            conn.execute(_UPSERT, [list(column) for column in zip(*rows, strict=True)])

    def delete(self, ticker: str, tf_min: int, window: TimeRange) -> None:
        with self._connect() as conn:
            conn.execute(
                "DELETE FROM candles WHERE ticker = %s AND tf_min = %s AND ts BETWEEN %s AND %s",
                (ticker, tf_min, window.start, window.end),
            )


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    # shrinking through the database takes minutes: the failing example is printed as found
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
# the candles' values come from a seeded generator, not from Hypothesis' own randoms: a
# run draws tens of thousands of values, past what Hypothesis lets one example consume
# (its health check then failed the test, about one run in six without saved examples)
@given(st.sampled_from([1, 5]), operations, st.integers(0, 2**32 - 1))
def test_rollups_answer_as_the_stored_candles_after_any_writes(
    db_url: str, tf: int, steps: list[Operation], seed: int
) -> None:
    reset(db_url)
    rng = random.Random(seed)
    plain = PlainSql(db_url)

    async def run() -> int:
        store = Store(db_url)
        await store.database.open()
        try:
            await rollups.sync(store.config, KEPT)
            used = 0
            stored = {tf}
            for what, first, count, by_sql in steps:
                # updates and deletes go to any stored timeframe, the finer one included
                step = tf if what == "insert" else rng.choice(sorted(stored))
                slots = range(first // step, min(first // step + count // step + 1, SLOTS // step))
                # inserts and updates write a second ticker too, Q, which never has the
                # finer timeframe: one write refreshes tickers whose rollups differ
                if what == "insert":  # in a shuffled order, some slots left out
                    chosen = [s for s in slots if rng.random() < 0.8]
                    rng.shuffle(chosen)
                    rows = [row(step, s, rng, t) for s in chosen for t in ("R", "Q")]
                elif what == "update":  # new values for whatever is stored there
                    picked = [s for s in slots if rng.random() < 0.5]
                    rows = [row(step, s, rng, t) for s in picked for t in ("Q", "R")]
                elif what == "finer":  # a finer stored timeframe arrives: another source
                    rows = [row(1, s, rng) for s in range(first, first + 90)]
                    stored.add(1)
                if what in ("insert", "update", "finer") and rows:
                    if by_sql:
                        plain.write(rows)
                    else:
                        await store.writer.write(rows)
                elif what == "delete":
                    window = TimeRange(
                        START + timedelta(minutes=step * slots.start),
                        START + timedelta(minutes=step * slots.stop),
                    )
                    if by_sql:
                        plain.delete("R", step, window)
                    else:
                        await store.writer.delete("R", step, window)
                elif what == "truncate":
                    with psycopg.connect(db_url, autocommit=True) as conn:
                        conn.execute("TRUNCATE candles")
                    stored = {tf}
                used += await store.served_by_rollups(rng)
                assert await catalog.drift(store.config) == []
            return used
        finally:
            await store.database.close()

    # (that rollups do serve such reads is asserted on a fuller series below)
    asyncio.run(run())


async def test_a_day_of_minutes_is_served_from_rollups_and_matches(store: Store) -> None:
    rng = random.Random(5)
    await store.writer.write([row(1, s, rng) for s in range(3 * 1440)])
    # every timeframe in every zone is served by a rollup (weeks in New York by hours)
    assert await store.served_by_rollups(rng) == len(TIMEFRAMES) * len(ZONES)
    held = await store.repo.holdings(["R"])
    assert held.rollups == tuple(KEPT)
    # the hourly rollup answers /candles?tf_min=60 with its own rows, New York's days theirs
    plan = serving(60, held.series, BarOptions("UTC"), held.rollups)
    assert plan.resample == Resample(1, 60)
    ny = "America/New_York"
    assert serving(1440, held.series, BarOptions(ny), held.rollups).resample == Resample(
        1, 1440, ny
    )


async def test_a_new_series_of_many_candles_is_built_as_one_of_few(store: Store) -> None:
    """A level of a new series of more than 10,000 candles is planned for its own values
    (migration 0008); its buckets are those of the candles all the same."""
    rng = random.Random(7)
    await store.writer.write([row(1, s, rng) for s in range(12 * 1440)])
    assert await store.served_by_rollups(rng) == len(TIMEFRAMES) * len(ZONES)


async def test_existing_data_is_built_in_and_drift_is_found(db_url: str) -> None:
    rng = random.Random(11)
    # rows written before rollups were kept (a seed database, another program)
    insert(
        db_url,
        [Candle(*row(5, s, rng, ticker)) for ticker in ("A", "B") for s in range(600)],
    )
    store = Store(db_url)
    await store.database.open()
    try:
        held = await store.repo.holdings(["A"])
        assert held.rollups == ()  # nothing kept yet: nothing used
        shown: list[tuple[str, int, int]] = []
        built = await rollups.sync(
            store.config, KEPT, progress=lambda t, done, of: shown.append((t, done, of))
        )
        assert built == KEPT
        assert shown == [("A", 1, 2), ("B", 2, 2)]
        assert (await store.repo.holdings(["A"])).rollups == tuple(KEPT)
        assert await rollups.drift(store.config) == []
        # another tool changes a candle with the triggers skipped (as pg_restore does)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute(
                "UPDATE candles SET high = high + 100 WHERE ticker = 'B' AND ts = %s",
                (START + timedelta(minutes=5 * 30),),
            )
        found = await rollups.drift(store.config)
        assert {(d.ticker, str(d.rollup), d.buckets) for d in found} == {
            ("B", "15", 1),
            ("B", "60", 1),
            ("B", "1440", 1),
            ("B", "1440@America/New_York", 1),
            ("B", "10080", 1),
            ("B", "10080@America/New_York", 1),
        }
        assert (await catalog.mend(store.config, None))[0] == ["B"]
        assert await rollups.drift(store.config) == []
        # the set changes: 15 and New York's days dropped, 30 added
        smaller = [Rollup(30), Rollup(60), Rollup(1440)]
        assert await rollups.sync(store.config, smaller) == [Rollup(30)]
        assert (await store.repo.holdings(["A"])).rollups == tuple(smaller)
        assert await rollups.drift(store.config) == []
        assert await rollups.sync(store.config, []) == []
        assert (await store.repo.holdings(["A"])).rollups == ()
    finally:
        await store.database.close()


async def test_replay_reads_buckets_from_rollups_as_from_the_candles(store: Store) -> None:
    rng = random.Random(3)
    await store.writer.write([row(1, s, rng, t) for t in ("R", "S") for s in range(2 * 1440)])
    source = PostgresReplaySource(store.database)
    for tz in ZONES:
        asked = ReplaySelection(("R", "S"), (1440 if tz != "UTC" else 60,), options=BarOptions(tz))
        fast, _ = planned(asked, await source.holdings(asked.tickers))
        assert all(s.resample is not None and s.resample.rollup for s in fast.streams), tz
        slow = msgspec.structs.replace(
            fast,
            streams=tuple(msgspec.structs.replace(s, resample=Resample(1)) for s in fast.streams),
        )
        assert await source.count(fast) == await source.count(slow)
        assert await source.key_at(fast, 5) == await source.key_at(slow, 5)
        quick, plain = await source.page(fast, None, 500), await source.page(slow, None, 500)
        assert same(quick, plain)
        assert [c.ts_close for c in quick] == [c.ts_close for c in plain]


def test_rest_reads_rollups_and_deletes_keep_them(app_factory: AppFactory, db_url: str) -> None:
    rng = random.Random(8)
    asyncio.run(_sync(db_url))
    with app_factory(api_keys="k") as client:
        body = [
            dict(
                zip(
                    ("ticker", "tf_min", "ts", "open", "high", "low", "close", "volume", "openint"),
                    r,
                    strict=True,
                )
            )
            for r in (row(1, s, rng) for s in range(1440))
        ]
        for candle in body:
            candle["ts"] = candle["ts"].isoformat()
        auth = {"Authorization": "Bearer k"}
        assert client.post("/candles", json=body, headers=auth).status_code == 200
        hourly = client.get("/candles", params={"ticker": "R", "tf_min": 60, "limit": 100}).json()
        assert hourly["count"] == 24
        params = {
            "ticker": "R",
            "tf_min": 1,
            "start": START.isoformat(),
            "end": (START + timedelta(minutes=59)).isoformat(),
        }
        assert client.delete("/candles", params=params).status_code == 401
        gone = client.delete("/candles", params=params, headers=auth)
        assert gone.status_code == 200, gone.text
        assert gone.json() == {"deleted": 60}
        after = client.get("/candles", params={"ticker": "R", "tf_min": 60, "limit": 100}).json()
        assert after["data"] == hourly["data"][1:]
        coverage = client.get("/symbols/R").json()["timeframes"]
        assert coverage[0]["count"] == 1380
        bad = client.delete("/candles", params={**params, "start": "junk"}, headers=auth)
        assert bad.status_code == 400
    assert asyncio.run(rollups.drift(DatabaseConfig(url=db_url))) == []


async def _sync(url: str) -> None:
    await rollups.sync(DatabaseConfig(url=url), KEPT)


LEVELS = [(15, "UTC", True), (60, "UTC", True), (1440, "UTC", True)]


@pytest.mark.parametrize(
    ("stored", "kept", "levels"),
    [
        # each from the coarsest finer level of the same base (ready), else the candles
        ([1], LEVELS, [(15, "UTC", 1, None), (60, "UTC", 1, 15), (1440, "UTC", 1, 60)]),
        # a level not yet complete is no parent: the next is made from the candles
        (
            [1],
            [(15, "UTC", True), (60, "UTC", False), (1440, "UTC", True)],
            [(15, "UTC", 1, None), (60, "UTC", 1, 15), (1440, "UTC", 1, 15)],
        ),
        # a stored timeframe has no rollup; each is made of the finest stored divisor
        ([5, 60], LEVELS, [(15, "UTC", 5, None), (1440, "UTC", 5, 15)]),
        (
            [2, 3],
            [(15, "UTC", True), (60, "UTC", True)],
            [(15, "UTC", 3, None), (60, "UTC", 2, None)],
        ),
        ([1440], LEVELS, []),
        ([7], LEVELS, []),
        # weeks count from a Monday: a level of 3.5 days (from the epoch, a Thursday) is
        # no parent of theirs, whole days are
        (
            [60],
            [(1440, "UTC", True), (5040, "UTC", True), (10080, "UTC", True)],
            [(1440, "UTC", 60, None), (5040, "UTC", 60, None), (10080, "UTC", 60, 1440)],
        ),
        # a zone's days from its own finer days only (else the candles); weeks from days
        (
            [1],
            [
                (60, "UTC", True),
                (1440, "America/New_York", True),
                (10080, "America/New_York", True),
            ],
            [
                (60, "UTC", 1, None),
                (1440, "America/New_York", 1, None),
                (10080, "America/New_York", 1, 1440),
            ],
        ),
    ],
)
def test_the_database_s_rule_for_the_levels_a_ticker_keeps(
    db_url: str,
    stored: list[int],
    kept: list[tuple[int, str, bool]],
    levels: list[tuple[int, str, int, int | None]],
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rollup_timeframes"
            " SELECT * FROM unnest(%s::int4[], %s::text[], %s::bool[])",
            ([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]),
        )
        for tf in stored:
            conn.execute(
                "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
                " VALUES ('X', %s, '2024-01-01', 1, 1, 1, 1, 1)",
                (tf,),
            )
        found = conn.execute(
            "SELECT tf_min, tz, base_tf, parent_tf FROM candle_rollup_levels(ARRAY['X'], true)"
        ).fetchall()
    assert found == levels
