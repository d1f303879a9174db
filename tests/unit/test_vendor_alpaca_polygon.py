"""The pure parts of the Alpaca and Polygon translations, and a connection's live bars over
a fake live feed: following more tickers loses nothing and repeats nothing."""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import msgspec
import pytest

from marketdata.domain.candles import Candle, LiveEvent
from marketdata.domain.errors import InvalidParameter, InvalidQuery, TooSlow
from marketdata.domain.replay import Stream, Wake
from marketdata.domain.timeframes import Holdings
from marketdata.entrypoints.vendors import alpaca_bars as alpaca
from marketdata.entrypoints.vendors import alpaca_stream
from marketdata.entrypoints.vendors import polygon_aggs as polygon
from marketdata.entrypoints.vendors.alpaca_polygon_common import (
    Window,
    decode_token,
    encode_token,
    window,
)
from marketdata.entrypoints.vendors.alpaca_polygon_live import LiveBars

T = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("timeframe", "minutes"),
    [
        ("1Min", 1),
        ("59T", 59),
        ("5Min", 5),
        ("1Hour", 60),
        ("4H", 240),
        ("1Day", 1440),
        ("1D", 1440),
        ("1Week", 10080),
        ("1W", 10080),
    ],
)
def test_alpaca_timeframes(timeframe: str, minutes: int) -> None:
    assert alpaca.minutes_of(timeframe) == minutes


@pytest.mark.parametrize(
    "timeframe", ["", "0Min", "60Min", "24Hour", "2Day", "2Week", "1Month", "3M", "5min", "1Sec"]
)
def test_alpaca_timeframes_refused(timeframe: str) -> None:
    with pytest.raises(InvalidParameter) as raised:
        alpaca.minutes_of(timeframe)
    assert raised.value.name == "timeframe"


def test_polygon_bounds() -> None:
    assert polygon.bound("1704205800000", "from", "UTC", end=False) == T
    # a date's day in its zone: New York's from 05:00 UTC in winter, to its end
    assert polygon.bound("2024-01-02", "from", "America/New_York", end=False) == T.replace(
        hour=5, minute=0
    )
    assert polygon.bound("2024-01-02", "to", "America/New_York", end=True) == datetime(
        2024, 1, 3, 4, 59, 59, 999999, tzinfo=UTC
    )
    for bad in ("2024-1-2", "yesterday", "9" * 16, "9999-12-31T00:00"):
        with pytest.raises(InvalidQuery):
            polygon.bound(bad, "from", "UTC", end=False)
    with pytest.raises(InvalidQuery):
        polygon.bound("9999-12-31", "to", "UTC", end=True)


def test_polygon_timespans() -> None:
    assert polygon.minutes_of("15", "minute") == 15
    assert polygon.minutes_of("2", "hour") == 120
    assert polygon.minutes_of("1", "week") == 10080
    for multiplier, timespan in [("0", "minute"), ("-1", "minute"), ("1", "month"), ("1", "x")]:
        with pytest.raises(InvalidParameter):
            polygon.minutes_of(multiplier, timespan)


def test_polygon_tickers() -> None:
    assert polygon.tickers_of("AAPL") == (["AAPL"], "America/New_York")
    assert polygon.tickers_of("X:BTCUSD") == (["X:BTCUSD", "BTCUSD"], "UTC")
    assert alpaca.crypto_tickers("BTC/USD") == ["BTC/USD", "BTCUSD"]


def test_a_window_ends_at_the_present_and_reads_a_bucket_and_an_hour_further() -> None:
    present = T + timedelta(days=1)
    stored = window(T, T + timedelta(hours=2), present, 5, stored=True)
    assert stored == Window(T, T + timedelta(hours=2), T + timedelta(hours=2))
    made = window(T, T + timedelta(hours=2), present, 60, stored=False)
    assert made is not None
    # a bucket past the end, and an hour more (a local day may last 25 hours)
    assert made.reads_to == T + timedelta(hours=4) - timedelta(microseconds=1)
    late = window(T, T + timedelta(days=9), present, 1440, stored=False)
    assert late == Window(T, present, present)
    assert (
        window(present + timedelta(hours=1), present + timedelta(days=1), present, 5, True) is None
    )
    with pytest.raises(InvalidQuery):
        window(T, T - timedelta(minutes=1), present, 5, stored=True)


def test_tokens_round_trip_and_refuse_forgeries() -> None:
    token = alpaca.PageToken("AAPL", 1704205800000000)
    assert decode_token(alpaca.PageToken, encode_token(token), "page_token") == token
    far = encode_token(alpaca.PageToken("AAPL", 10**19))  # past any datetime
    for forged in ("", "!!!", "e30", encode_token(polygon.AggsQuery()), far):
        with pytest.raises(InvalidParameter):
            decode_token(alpaca.PageToken, forged, "page_token")


# -- live bars ---------------------------------------------------------------------------------


class FakeSubscription:
    def __init__(self, feed: "FakeFeed", streams: Sequence[Stream], wake: Wake) -> None:
        self.feed, self.streams, self.wake = feed, tuple(streams), wake
        self.queue: list[LiveEvent] = []
        self.reason: str | None = None
        self.closed = False

    def put(self, *events: LiveEvent) -> None:
        self.queue += events
        self.wake.set()

    def take(self, most: int) -> list[LiveEvent]:
        if self.reason is not None:
            raise TooSlow(self.reason)
        taken, self.queue = self.queue[:most], self.queue[most:]
        return taken

    def touch(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeFeed:
    def __init__(self) -> None:
        self.subscriptions: list[FakeSubscription] = []

    def subscribe(
        self, streams: Sequence[Stream], wake: Wake, cut: asyncio.Event
    ) -> FakeSubscription:
        self.subscriptions.append(FakeSubscription(self, streams, wake))
        return self.subscriptions[-1]


class FakeSource:
    async def holdings(self, tickers: Sequence[str]) -> Holdings:
        return Holdings()


def bar(ticker: str, i: int) -> Candle:
    return Candle(ticker, 1, T + timedelta(minutes=i), 1.0, 2.0, 0.5, 1.5, 1.0, 0)


async def test_following_more_tickers_loses_and_repeats_nothing() -> None:
    feed = FakeFeed()
    bars = LiveBars(feed, FakeSource(), tf_min=1)  # type: ignore[arg-type]
    await bars.follow(["A"])
    (first,) = feed.subscriptions
    assert [(s.ticker, s.tf_min, s.available) for s in first.streams] == [("A", 1, False)]
    first.put(bar("A", 0), bar("A", 1))
    await bars.follow(["B", "A"])
    assert first.closed
    second = feed.subscriptions[1]
    assert sorted(s.ticker for s in second.streams) == ["A", "B"]
    assert second.streams[1] is first.streams[0]  # A's stream goes on as it was
    second.put(bar("B", 2))
    assert await bars.next(1) == [bar("A", 0)]
    assert await bars.next(10) == [bar("A", 1)]
    assert await bars.next(10) == [bar("B", 2)]
    # the same tickers: the subscription stays
    await bars.follow(["A", "B"])
    assert len(feed.subscriptions) == 2
    # dropping A drops what waits of it
    second.put(bar("A", 3), bar("B", 3))
    await bars.follow(["B"])
    assert await bars.next(10) == [bar("B", 3)]
    # nothing: no subscription at all
    await bars.follow([])
    assert feed.subscriptions[-1].closed
    assert bars.tickers == frozenset()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await bars.next(10)


async def test_a_client_cut_for_reading_slowly_hears_why() -> None:
    feed = FakeFeed()
    bars = LiveBars(feed, FakeSource(), tf_min=1)  # type: ignore[arg-type]
    await bars.follow(["A"])
    feed.subscriptions[0].reason = "too slow"
    with pytest.raises(TooSlow):
        await bars.next(10)
    assert bars.reason == "too slow"
    bars.close()
    assert bars.reason == "too slow"


def test_alpaca_a_minute_first_heard_corrected_is_a_new_bar() -> None:
    # A minute written and corrected (two transactions close together) before the live
    # listener reads it comes once, at revision 1: to a client that never had it, a bar
    # (alpaca-py hands "u" to updatedBars handlers only, so a bars client lost the minute).
    socket = SimpleNamespace(headers={})
    client = alpaca_stream.Connection(socket, None, None, "iex")  # type: ignore[arg-type]
    client.channels = {"bars": {"MSFT"}, "updatedBars": {"MSFT"}}
    minute = datetime(2024, 1, 5, 14, 30, tzinfo=UTC)
    first = Candle("MSFT", 1, minute, 1.0, 2.0, 0.5, 1.5, 10.0, 0, revision=1)

    def kind(event: Candle) -> str | None:
        message = client.message_of(event)
        return None if message is None else message.kind

    assert kind(first) == "b"
    assert kind(msgspec.structs.replace(first, revision=2)) == "u"
    later = msgspec.structs.replace(first, ts=minute + timedelta(minutes=1))
    assert [kind(later), kind(msgspec.structs.replace(later, revision=1))] == ["b", "u"]
    assert kind(msgspec.structs.replace(first, revision=3)) == "u"  # an older minute, again
    # a session's stream after a seek back: the minutes come again as written, bars again
    assert kind(msgspec.structs.replace(first, revision=0)) == "b"
