"""The replay engine on the PostgreSQL source: order, paging, memory, seek positions."""

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from marketdata.adapters.clock import SystemClock
from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.replay import PostgresReplaySource
from marketdata.domain.candles import Candle
from marketdata.domain.replay import (
    Outcome,
    Pacing,
    ReplayKey,
    ReplaySelection,
    ReplaySession,
    ReplayStatus,
    key_of,
    planned,
)
from tests.factories import series
from tests.fakes import InMemoryReplaySource
from tests.support import insert

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


@pytest.fixture
async def source(db_url: str) -> AsyncIterator[PostgresReplaySource]:
    pool = Database(DatabaseConfig(url=db_url, pool_min_size=1))
    await pool.open()
    yield PostgresReplaySource(pool)
    await pool.close()


class CountingSink:
    """Keeps no candle: counts them and checks order as they pass."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ReplayKey | None = None
        self.in_order = True
        self.seqs_ok = True

    async def candles(self, seq: int, candles: list[Candle]) -> None:
        for i, candle in enumerate(candles):
            key = key_of(candle)
            if self.last is not None and not key > self.last:
                self.in_order = False
            if seq + i != self.count:
                self.seqs_ok = False
            self.last = key
            self.count += 1

    async def status(self, status: ReplayStatus) -> None:
        pass


@pytest.mark.slow
async def test_a_long_replay_streams_every_candle_in_order_in_bounded_memory(
    db_url: str, source: PostgresReplaySource
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
            " SELECT t, 1, timestamptz '2020-01-01 00:00+00' + i * interval '1 minute',"
            " 1, 2, 0.5, 1.5, i FROM generate_series(0, 99999) i,"
            " (VALUES ('AAA'), ('BBB')) v(t)"
        )
    sink = CountingSink()
    session = ReplaySession(
        source,
        SystemClock(),
        sink,
        ReplaySelection(("AAA", "BBB"), (1,)),
        Pacing(step_seconds=0, min_step=0),
        page_size=500,
    )
    assert await session.prepare() == 200_000
    tracemalloc.start()
    try:
        assert await session.run() is Outcome.COMPLETED
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.count == 200_000
    assert sink.in_order
    assert sink.seqs_ok
    # 200,000 Candles held at once would take well over 50 MB; two pages of 500 take ~0.3 MB
    print(f"peak traced memory while replaying 200,000 candles: {peak / 1e6:.2f} MB")
    assert peak < 5_000_000


async def test_postgres_source_agrees_with_the_in_memory_one(
    db_url: str, source: PostgresReplaySource
) -> None:
    candles = [
        c for t in ("AAA", "BBB", "A_B") for i, c in enumerate(series(t, 40)) if (i * 7) % 5 != 0
    ] + series("AAA", 5, tf_min=60)
    insert(db_url, candles)
    fake = InMemoryReplaySource(candles)
    windows = [
        ReplaySelection(("AAA", "BBB", "A_B"), (5,)),
        ReplaySelection(("BBB",), (5,)),
        ReplaySelection(
            ("AAA", "A_B"), (5,), START + timedelta(minutes=30), START + timedelta(hours=2)
        ),
        ReplaySelection(("AAA",), (60,)),
    ]
    for asked in windows:
        selection, _ = planned(asked, await source.holdings(asked.tickers))
        assert await source.count(selection) == await fake.count(selection)
        moment = START + timedelta(minutes=47)
        assert await source.seq_at(selection, moment) == await fake.seq_at(selection, moment)
        for seq in (0, 3, 17, 500):
            assert await source.key_at(selection, seq) == await fake.key_at(selection, seq)
        after: ReplayKey | None = None
        for _ in range(50):
            page = await source.page(selection, after, 7)
            assert page == await fake.page(selection, after, 7)
            if len(page) < 7:
                break
            after = key_of(page[-1])


async def test_pages_can_be_read_concurrently(db_url: str, source: PostgresReplaySource) -> None:
    insert(db_url, series("AAA", 30))
    selection = ReplaySelection(("AAA",), (5,))
    pages = await asyncio.gather(*(source.page(selection, None, 10) for _ in range(5)))
    assert all(p == pages[0] for p in pages)
