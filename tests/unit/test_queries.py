from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from marketdata.domain.bar_options import bar_options
from marketdata.domain.candles import Candle, Order
from marketdata.domain.errors import InvalidParameter, InvalidQuery, NotFound
from marketdata.domain.queries import CandleQueries, CandleQuery, QueryLimits
from marketdata.domain.timeframes import Holdings, Rollup
from tests.factories import series
from tests.fakes import InMemoryCandleRepository, holdings_of, resample_reference
from tests.support import read_plan

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
    with pytest.raises(NotFound, match="tf_min=7"):
        await queries.candles("AAA", tf_min=7)  # nothing stored divides 7


async def test_an_unstored_timeframe_is_resampled_from_the_finest_divisor(
    queries: CandleQueries, repo: InMemoryCandleRepository
) -> None:
    found = await queries.candles("AAA", tf_min=15, limit=3)
    assert [c.tf_min for c in found] == [15, 15, 15]
    assert found == resample_reference(await repo.bars(read_plan("AAA", 5, 300, Order.ASC)), 15)[:3]
    # 120 is divided by 5 and by 60: the finest (5) is used
    hourly2 = await queries.candles("AAA", tf_min=120, limit=1)
    five = await repo.bars(read_plan("AAA", 5, 300, Order.ASC))
    assert hourly2[0].volume == sum(c.volume for c in five if c.ts < START + timedelta(hours=1.5))


async def test_a_stored_timeframe_is_served_as_stored(
    queries: CandleQueries, repo: InMemoryCandleRepository
) -> None:
    assert await queries.candles("AAA", tf_min=60) == await repo.bars(
        read_plan("AAA", 60, 200, Order.ASC)
    )


async def test_a_bad_time_zone_is_refused(queries: CandleQueries) -> None:
    # bar options are read once, by their value objects, before any query
    with pytest.raises(InvalidParameter, match="tz"):
        await queries.candles("AAA", tf_min=1440, options=bar_options(tz="Mars/Olympus"))


async def test_range_pages_say_whether_more_remain(queries: CandleQueries) -> None:
    end = START + timedelta(days=30)
    first = await queries.candle_range("AAA", START, end, limit=100)
    assert (len(first.candles), first.more) == (100, True)
    rest = await queries.candle_range("AAA", START, end, limit=250, after=first.candles[-1].ts)
    assert (len(rest.candles), rest.more) == (200, False)
    assert rest.candles[0].ts == first.candles[-1].ts + timedelta(minutes=5)


async def test_export_is_uncapped_and_not_found_comes_first(queries: CandleQueries) -> None:
    plan = await queries.plan(CandleQuery(ticker="AAA", export=True))
    exported = [c async for c in await queries.export(plan)]
    assert len(exported) == 300  # over max_limit (250)
    with pytest.raises(NotFound):
        await queries.plan(CandleQuery(ticker="ZZZ", export=True))
    with pytest.raises(InvalidParameter, match="limit"):
        await queries.plan(CandleQuery(ticker="AAA", limit=2**70, export=True))


class RollupsReady(InMemoryCandleRepository):
    """The fake, with rollups ready (the in-memory one keeps none)."""

    rollups: tuple[Rollup, ...] = ()

    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        held = await super().holdings(tickers)
        return Holdings(held.series, self.rollups)


async def test_rollups_made_ready_change_what_served_says_and_its_version() -> None:
    repo = RollupsReady(series("AAA", 300))
    queries = CandleQueries(repo, QueryLimits(default_tf_min=5, max_limit=250))
    _, served, before = await queries.coverage("AAA")
    assert {s.tf_min: s.source for s in served}[60] == "resampled"
    repo.rollups = (Rollup(15), Rollup(60))
    _, served, after = await queries.coverage("AAA")
    assert {s.tf_min: s.source for s in served}[60] == "rollup"
    assert after != before  # no 304 with the old sources
    with pytest.raises(NotFound):
        await queries.coverage("ZZZ")


async def test_coverage_and_gaps(queries: CandleQueries, repo: InMemoryCandleRepository) -> None:
    coverage, listed, _ = await queries.coverage("AAA")
    assert [(c.tf_min, c.count) for c in coverage] == [(5, 300), (60, 10)]
    served = {s.tf_min: (s.source, s.from_tf_min) for s in listed}
    assert served[5] == ("stored", 5)
    assert served[60] == ("stored", 60)
    assert served[1440] == ("resampled", 5)  # the fake keeps no rollups
    assert 1 not in served
    assert (await queries.gaps("AAA", 5, None, None)).gaps == []
    repo.stored = [
        c
        for c in repo.stored
        if not (c.tf_min == 5 and 10 <= (c.ts - START).total_seconds() / 300 < 13)
    ]
    report = await queries.gaps("AAA", 5, None, None)
    assert (report.tf_min, report.min_gap, report.count) == (5, 5, 1)
    gaps = report.gaps
    assert [(g.after, g.minutes) for g in gaps] == [(START + timedelta(minutes=45), 20.0)]
    assert (await queries.gaps("AAA", 5, 30, None)).gaps == []
    with pytest.raises(NotFound):
        await queries.gaps("AAA", 15, None, None)


@pytest.mark.parametrize("limit", [0, 251])
async def test_limit_is_bounded_by_max_limit(queries: CandleQueries, limit: int) -> None:
    with pytest.raises(InvalidParameter, match="between 1 and 250"):
        await queries.candles("AAA", limit=limit)


async def test_range_is_inclusive_at_both_ends(queries: CandleQueries) -> None:
    start, end = START + timedelta(minutes=10), START + timedelta(minutes=30)
    found = (await queries.candle_range("AAA", start, end)).candles
    assert [c.ts for c in found] == [START + timedelta(minutes=m) for m in (10, 15, 20, 25, 30)]


async def test_range_limit_defaults_to_max_limit(queries: CandleQueries) -> None:
    page = await queries.candle_range("AAA", START, START + timedelta(days=30))
    assert len(page.candles) == 250
    assert page.more


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


class KnowsTooMuch(InMemoryCandleRepository):
    """What the process knew before a write it has not heard of yet."""

    def __init__(self, candles: list[Candle], known: Holdings) -> None:
        super().__init__(candles)
        self.knowledge = known

    def known(self, ticker: str) -> Holdings | None:
        return self.knowledge


async def test_nothing_where_the_known_catalog_says_candles_is_read_again_not_a_404() -> None:
    """Another writer deleted the stored hourly candles; this process has not heard it yet:
    the read it planned from what it knew finds nothing, and reads again with the catalog's
    row (now resampled from five minutes) instead of answering 'No candles found'."""
    before = series("AAA", 300) + series("AAA", 10, tf_min=60)
    repo = KnowsTooMuch(series("AAA", 300), holdings_of(before, ["AAA"]))
    queries = CandleQueries(repo, QueryLimits(default_tf_min=5, max_limit=250))
    page = await queries.page(queries.draft(CandleQuery(ticker="AAA", tf_min=60, limit=3)))
    assert page.plan.resample is not None  # served as it is now: resampled
    assert page.bars.count == 3
