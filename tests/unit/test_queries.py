from datetime import UTC, datetime, timedelta

import pytest

from marketdata.domain.candles import Order
from marketdata.domain.errors import InvalidParameter, InvalidQuery, NotFound
from marketdata.domain.queries import CandleQueries, QueryLimits
from tests.factories import series
from tests.fakes import InMemoryCandleRepository

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


@pytest.fixture
def repo() -> InMemoryCandleRepository:
    return InMemoryCandleRepository(
        series("AAA", 300) + series("AAA", 10, tf_min=60) + series("BBB", 3)
    )


@pytest.fixture
def queries(repo: InMemoryCandleRepository) -> CandleQueries:
    return CandleQueries(repo, QueryLimits(default_tf_min=5, max_limit=250))


async def test_candles_default_to_200_oldest_ascending_on_the_default_timeframe(
    queries: CandleQueries,
) -> None:
    found = await queries.candles("AAA")
    assert len(found) == 200
    assert [c.ts for c in found] == sorted(c.ts for c in found)
    assert found[0].ts == START
    assert {c.tf_min for c in found} == {5}


async def test_candles_desc_gives_the_newest_first(queries: CandleQueries) -> None:
    found = await queries.candles("AAA", limit=3, order=Order.DESC)
    assert [c.ts for c in found] == [START + timedelta(minutes=5 * i) for i in (299, 298, 297)]


async def test_candles_of_another_timeframe(queries: CandleQueries) -> None:
    found = await queries.candles("AAA", tf_min=60)
    assert len(found) == 10
    assert all(c.tf_min == 60 for c in found)


async def test_unknown_ticker_or_timeframe_is_not_found(queries: CandleQueries) -> None:
    with pytest.raises(NotFound, match="'ZZZ'"):
        await queries.candles("ZZZ")
    with pytest.raises(NotFound, match="tf_min=15"):
        await queries.candles("AAA", tf_min=15)


@pytest.mark.parametrize("limit", [0, 251])
async def test_limit_is_bounded_by_max_limit(queries: CandleQueries, limit: int) -> None:
    with pytest.raises(InvalidParameter, match="between 1 and 250"):
        await queries.candles("AAA", limit=limit)


async def test_range_is_inclusive_at_both_ends(queries: CandleQueries) -> None:
    start, end = START + timedelta(minutes=10), START + timedelta(minutes=30)
    found = await queries.candle_range("AAA", start, end)
    assert [c.ts for c in found] == [START + timedelta(minutes=m) for m in (10, 15, 20, 25, 30)]


async def test_range_limit_defaults_to_max_limit(queries: CandleQueries) -> None:
    found = await queries.candle_range("AAA", START, START + timedelta(days=30))
    assert len(found) == 250


async def test_range_start_after_end_is_invalid(queries: CandleQueries) -> None:
    with pytest.raises(InvalidQuery):
        await queries.candle_range("AAA", START + timedelta(minutes=1), START)


async def test_empty_range_is_not_found(queries: CandleQueries) -> None:
    with pytest.raises(NotFound, match="between"):
        await queries.candle_range("AAA", START - timedelta(days=2), START - timedelta(days=1))


async def test_symbols_sorted_with_prefix_and_limit(queries: CandleQueries) -> None:
    assert await queries.symbols() == ["AAA", "BBB"]
    assert await queries.symbols("b") == ["BBB"]
    assert await queries.symbols(limit=1) == ["AAA"]
    with pytest.raises(InvalidParameter, match="limit"):
        await queries.symbols(limit=0)
    with pytest.raises(InvalidParameter, match="prefix"):
        await queries.symbols("x" * 65)
    with pytest.raises(InvalidParameter, match="control characters"):
        await queries.symbols("a\x00")
