"""Reads as of a moment (a time-travel session's present): nothing that closes after it; a
bar made of finer candles as it stood then; a stored bar only once it has closed."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.reads import PostgresCandleRepository
from marketdata.domain.candles import Candle, Order
from marketdata.domain.errors import NotFound
from marketdata.domain.queries import CandleQueries, QueryLimits
from tests.factories import series
from tests.fakes import resample_reference
from tests.support import insert

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
MINUTES = series("X", 120, tf_min=1, start=START)  # 14:30 to 16:29


@pytest.fixture
async def queries(db_url: str) -> AsyncIterator[CandleQueries]:
    insert(db_url, MINUTES)
    database = Database(DatabaseConfig(url=db_url, pool_min_size=1, command_timeout=5))
    await database.open()
    yield CandleQueries(PostgresCandleRepository(database), QueryLimits(max_limit=5000))
    await database.close()


def known_at(at: datetime) -> list[Candle]:
    return [c for c in MINUTES if c.ts + timedelta(minutes=1) <= at]


@pytest.mark.parametrize("seconds", [0, 30, 60, 7 * 60 + 30, 45 * 60, 119 * 60, 10**6])
async def test_nothing_after_the_present_not_even_in_part(
    queries: CandleQueries, seconds: int
) -> None:
    at = START + timedelta(seconds=seconds)
    known = known_at(at)
    if not known:
        with pytest.raises(NotFound):
            await queries.candles("X", 1, 500, as_of=at)
        return
    assert await queries.candles("X", 1, 500, as_of=at) == known
    for tf in (5, 15, 60):
        # the bucket holding the present as it stood then: made of the minutes closed by it
        made = resample_reference(known, tf)
        assert await queries.candles("X", tf, 500, as_of=at) == made
        assert await queries.candles("X", tf, 2, Order.DESC, as_of=at) == made[::-1][:2]
        end = START + timedelta(hours=3)
        inside = [c for c in made if c.ts >= START and c.ts + timedelta(minutes=tf - 1) <= end]
        if not inside:  # a range holds whole buckets only: the hour of 14:00 starts before
            with pytest.raises(NotFound):
                await queries.candle_range("X", START, end, tf, as_of=at)
            continue
        window = await queries.candle_range("X", START, end, tf, as_of=at)
        assert window.candles == inside
    assert await queries.candles("X", 1, 500) == MINUTES  # without: everything
