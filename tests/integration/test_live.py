"""The live feed against real PostgreSQL: every listener of the database (several
instances) receives each committed candle once, corrections with their revision, forming
bars of resampled streams; a listener cut off catches up without a gap; a slow subscriber
is cut, never the others."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from marketdata.adapters.postgres.live import PostgresLiveFeed
from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.subscriptions import EVENT_BYTES, LiveLimits
from marketdata.adapters.postgres.writes import PostgresCandleWriter
from marketdata.domain.bar_options import BarOptions, bar_options
from marketdata.domain.candles import Candle
from marketdata.domain.errors import TooSlow
from marketdata.domain.ingest import Row
from marketdata.domain.replay import Stream, Wake
from marketdata.domain.timeframes import Resample
from tests.proxy import TcpProxy
from tests.support import through

START = datetime(2024, 5, 1, 14, 0, tzinfo=UTC)


def row(ticker: str, i: int, price: float = 100.0, tf: int = 5) -> Row:
    return (ticker, tf, START + timedelta(minutes=tf * i), price, price + 1, price - 1, price, i, 0)


class Instance:
    """A process's share of the service: a pool and a live feed."""

    def __init__(
        self, url: str, listen_url: str | None = None, limits: LiveLimits | None = None
    ) -> None:
        self.database = Database(DatabaseConfig(url=url, pool_min_size=1))
        self.feed = PostgresLiveFeed(
            DatabaseConfig(url=listen_url or url, connect_timeout=2), self.database, None, limits
        )

    async def __aenter__(self) -> "Instance":
        await self.database.open()
        await self.feed.start()
        await asyncio.wait_for(self.feed.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.feed.close()
        await self.database.close()


async def received(
    subscription: object, wake: Wake, count: int, within: float = 10
) -> list[Candle]:
    got: list[Candle] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            wake.clear()
            taken = subscription.take(1000)  # type: ignore[attr-defined]
            if not taken:
                await wake.wait()
            got += taken
    return got


@pytest.fixture
async def writer(db_url: str) -> AsyncIterator[PostgresCandleWriter]:
    database = Database(DatabaseConfig(url=db_url, pool_min_size=1))
    await database.open()
    yield PostgresCandleWriter(database)
    await database.close()


async def test_every_instance_receives_each_commit_and_corrections_carry_revisions(
    db_url: str, writer: PostgresCandleWriter
) -> None:
    async with Instance(db_url) as one, Instance(db_url) as two:
        wakes = [Wake(), Wake()]
        subs = [
            one.feed.subscribe([Stream("LV", 5)], wakes[0]),
            two.feed.subscribe([Stream("LV", 5)], wakes[1]),
        ]
        other = one.feed.subscribe([Stream("ELSE", 5)], Wake())
        await writer.write([row("LV", i) for i in range(3)])
        await writer.write([row("LV", 1, price=101)])  # a correction
        await writer.write([row("LV", 2)])  # the same values: nothing is written
        await writer.write([row("LV", 3)])
        for sub, wake in zip(subs, wakes, strict=True):
            got = await received(sub, wake, 5)
            assert [(c.ts, c.close, c.revision) for c in got] == [
                (START, 100, 0),
                (START + timedelta(minutes=5), 100, 0),
                (START + timedelta(minutes=10), 100, 0),
                (START + timedelta(minutes=5), 101, 1),
                (START + timedelta(minutes=15), 100, 0),
            ]
            await asyncio.sleep(0.2)
            assert sub.take(100) == []  # nothing more: the unchanged rewrite sent nothing
        assert other.take(100) == []
        assert one.feed.subscribers == 2
        other.close()
        assert one.feed.subscribers == 1


async def test_a_resampled_stream_gets_forming_bars(
    db_url: str, writer: PostgresCandleWriter
) -> None:
    async with Instance(db_url) as instance:
        wake = Wake()
        sub = instance.feed.subscribe([Stream("FM", 15, Resample(5))], wake)
        await writer.write([row("FM", 0, 100)])
        await writer.write([row("FM", 1, 103)])
        await writer.write([row("FM", 2, 102)])
        bars = await received(sub, wake, 3)
        assert [(b.ts, b.tf_min, b.open, b.high, b.close, b.final) for b in bars] == [
            (START, 15, 100, 101, 100, False),
            (START, 15, 100, 104, 103, False),
            (START, 15, 100, 104, 102, True),  # the bucket's last 5 minutes
        ]


async def test_a_listener_cut_off_catches_up_without_a_gap(
    db_url: str, writer: PostgresCandleWriter, proxy: TcpProxy
) -> None:
    async with Instance(db_url, listen_url=through(proxy, db_url)) as instance:
        wake = Wake()
        sub = instance.feed.subscribe([Stream("CUT", 5)], wake)
        written = 0

        async def write(n: int) -> None:
            nonlocal written
            for _ in range(n):
                await writer.write([row("CUT", written)])
                written += 1
                await asyncio.sleep(0.005)

        await write(20)
        proxy.cut()  # the listener's connection goes; the writer's does not
        await write(30)
        await asyncio.sleep(0.5)
        proxy.restore()
        await write(20)
        got = await received(sub, wake, 70, within=20)
        await asyncio.sleep(0.3)
        got += sub.take(1000)
        assert [c.ts for c in got] == [START + timedelta(minutes=5 * i) for i in range(70)]
        assert instance.feed.connected.is_set()


async def test_a_subscriber_that_stops_taking_is_cut_one_that_takes_never(
    db_url: str, writer: PostgresCandleWriter
) -> None:
    """Backpressure by progress: a burst far past what a count bound would allow reaches a
    subscriber that keeps taking; one that takes nothing is cut when its events pass the
    byte bound, or when it took none for the stall time while some waited."""
    async with Instance(db_url, limits=LiveLimits(max_bytes=100 * EVENT_BYTES)) as small:
        stalled_wake, taking_wake = Wake(), Wake()
        stalled = small.feed.subscribe([Stream("SL", 5)], stalled_wake)
        taking = small.feed.subscribe([Stream("SL", 5)], taking_wake)
        got: list[Candle] = []
        for burst in range(5):  # 5 x 80 candles: each taken before the next burst
            await writer.write([row("SL", burst * 80 + i) for i in range(80)])
            got += await received(taking, taking_wake, 80)
        assert [c.ts for c in got] == [START + timedelta(minutes=5 * i) for i in range(400)]
        with pytest.raises(TooSlow, match="LIVE_MAX_BYTES"):
            stalled.take(100)
        assert stalled.cut.is_set()
    async with Instance(db_url, limits=LiveLimits(stall_seconds=0.5)) as patient:
        wake = Wake()
        idle = patient.feed.subscribe([Stream("ST", 5)], wake)
        await writer.write([row("ST", 0)])
        await asyncio.wait_for(idle.cut.wait(), 5)  # the listener's sweep, within a second
        with pytest.raises(TooSlow, match="LIVE_STALL_SECONDS"):
            idle.take(100)


async def test_an_idle_listener_keeps_its_connection_and_what_it_knows(db_url: str) -> None:
    """Nothing written for seconds is no reason to reconnect: each reconnection forgets
    every series this process knew (their next requests go to the database again)."""
    async with Instance(db_url) as one:
        epoch = one.feed.known.epoch
        await asyncio.sleep(2.5)
        assert one.feed.connected.is_set()
        assert one.feed.known.epoch == epoch, "the listener reconnected while idle"


class Counting(Database):
    """The pool, counting the statements it runs."""

    statements = 0

    async def fetch(self, query: Any, params: Any) -> list[tuple[Any, ...]]:
        Counting.statements += 1
        return await super().fetch(query, params)


async def test_a_write_reaches_each_group_of_resampled_streams_with_one_query(
    db_url: str, writer: PostgresCandleWriter
) -> None:
    """However many candles a write holds: one query reads them back, and one more builds
    the bars of each group of streams built alike (subscribers of the same bars share it)."""
    ny = BarOptions("America/New_York")
    session = bar_options("America/New_York", None, "09:30-16:00")
    streams = [
        Stream("QC", 60, Resample(1)),
        Stream("QC", 60, Resample(1)),  # the same bars: the same query
        Stream("QC", 60, Resample(1), options=ny),
        Stream("QC", 1440, Resample(1), options=session),
        Stream("QC", 1),
    ]
    await writer.write([row("QC", 0, tf=1)])
    database = Counting(DatabaseConfig(url=db_url, pool_min_size=1))
    feed = PostgresLiveFeed(DatabaseConfig(url=db_url, connect_timeout=2), database)
    await database.open()
    await feed.start()
    try:
        await asyncio.wait_for(feed.connected.wait(), 10)
        wakes = [Wake() for _ in streams]
        subs = [feed.subscribe([s], w) for s, w in zip(streams, wakes, strict=True)]
        Counting.statements = 0
        await writer.write([row("QC", i, tf=1) for i in range(1, 501)])
        got = [await received(s, w, 1) for s, w in zip(subs, wakes, strict=True)]
        await asyncio.sleep(0.3)
        assert all(got)
        assert Counting.statements == 1 + 3  # read back, then the three kinds of bars
    finally:
        await feed.close()
        await database.close()


async def test_a_transaction_heard_over_two_deliveries_reaches_each_ticker_once(
    db_url: str,
) -> None:
    # Each statement notifies its own tickers; a transaction's notifications may be heard
    # in two reads of the socket, the delivery between them reading another transaction's
    # too (here A: MA then MB; B: MB then MA, its MA heard after a delivery).
    insert = (
        "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    xids = []
    with psycopg.connect(db_url) as conn:
        for statements in ((("MA", 0), ("MB", 0)), (("MB", 1), ("MA", 1)), (("MA", 2), ("MB", 2))):
            for ticker, i in statements:
                conn.execute(insert, row(ticker, i))
            xids.append(conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0])
            conn.commit()
    database = Database(DatabaseConfig(url=db_url, pool_min_size=1))
    await database.open()
    feed = PostgresLiveFeed(DatabaseConfig(url=db_url), database)  # not listening: fed here
    wake = Wake()
    sub = feed.subscribe([Stream("MA", 5), Stream("MB", 5)], wake)

    async def heard(*notes: tuple[int, str | None]) -> None:
        for xid, ticker in notes:  # None: a notification too long to name its tickers
            named = f', "t": ["{ticker}"]' if ticker else ""
            await feed._notified(f'{{"x": {xid}, "v": 1{named}}}')
        queued = []
        while not feed._heard.empty():
            queued.append(feed._heard.get_nowait())
        await feed._deliver(queued)

    a, b, c = xids
    await heard((a, "MA"), (a, "MB"), (b, "MB"))
    await heard((b, "MA"), (c, "MA"))
    await heard((c, None))  # C's second statement named too many tickers: MB, not MA again
    got = sorted((x.ticker, x.ts) for x in sub.take(100))
    await database.close()
    assert got == sorted(
        (t, START + timedelta(minutes=5 * i)) for t in ("MA", "MB") for i in range(3)
    )
