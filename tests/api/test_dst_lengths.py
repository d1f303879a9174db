"""A bar that is not its nominal length (a local day of 23 or 25 hours, a 4-hour bucket of 5
hours when clocks go back) is whole inside a range when its own last source candle is,
read from the candles or from a rollup of those days (found comparing with
tests/reference.py in zones the other tests do not visit)."""

import asyncio
import json
import queue
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from marketdata.adapters.postgres import rollups
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.candles import Candle
from marketdata.domain.timeframes import Rollup
from tests.reference import Spec, bars, first_difference, forming, same
from tests.support import AppFactory, insert

LONDON = "Europe/London"


def hours(ticker: str, start: datetime, count: int) -> list[Candle]:
    return [
        Candle(
            ticker, 60, start + timedelta(hours=i), 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 1.0, 0
        )
        for i in range(count)
    ]


def days(client: Any, start: str, end: str) -> list[tuple[str, float]]:
    response = client.get(
        "/candles/range",
        params={"ticker": "LON", "tf_min": 1440, "tz": LONDON, "start": start, "end": end},
    )
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [(bar["ts"], bar["volume"]) for bar in response.json()["data"]]


@pytest.mark.parametrize("kept", [False, True])
def test_days_of_23_and_25_hours_are_whole_by_their_own_close(
    app_factory: AppFactory, db_url: str, kept: bool
) -> None:
    # London's 2024-03-31 lasts 23 hours (00:00Z to 23:00Z), its 2024-10-27 25 hours
    # (2024-10-26T23:00Z to 2024-10-28T00:00Z); hourly candles cover both and around them
    insert(db_url, hours("LON", datetime(2024, 3, 30, tzinfo=UTC), 72))
    insert(db_url, hours("LON", datetime(2024, 10, 26, tzinfo=UTC), 72))
    if kept:
        asyncio.run(rollups.sync(DatabaseConfig(url=db_url), [Rollup(1440, LONDON)]))
    with app_factory() as client:
        # the short day's last hour opens at 22:00Z: it is whole in a range ending then
        assert days(client, "2024-03-31T00:00:00Z", "2024-03-31T22:00:00Z") == [
            ("2024-03-31T00:00:00Z", 23.0)
        ]
        # the long day's last hour opens at 2024-10-27T23:00Z: a range ending before it
        # cuts the day, which is left out; one ending then holds all 25 hours
        assert days(client, "2024-10-26T23:00:00Z", "2024-10-27T22:59:00Z") == []
        assert days(client, "2024-10-26T23:00:00Z", "2024-10-27T23:00:00Z") == [
            ("2024-10-26T23:00:00Z", 25.0)
        ]


def minutes(ticker: str, start: datetime, count: int) -> list[Candle]:
    return [
        Candle(
            ticker,
            1,
            start + timedelta(minutes=i),
            100.0 + (i * 7919) % 97,
            200.0,
            50.0 + (i * 104729) % 13,
            100.0 + (i * 31) % 89,
            1.0 + i % 5,
            0,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("limit", [3, 5, 7, 10])
def test_pages_across_a_repeated_local_hour_hold_every_bar_whole(
    app_factory: AppFactory, db_url: str, limit: int
) -> None:
    # London's 01:00-02:00 comes twice on 2024-10-27 (00:00Z-01:00Z, then 01:00Z-02:00Z):
    # a 15-minute bucket of local time holds two runs of candles an hour apart. Pages of a
    # range, of any size, join into the reference's bars; the newest `limit` bars are its.
    candles = minutes("LONM", datetime(2024, 10, 26, 22, tzinfo=UTC), 300)
    insert(db_url, candles)
    expected = bars(Spec(15, True, LONDON), candles, "LONM")
    params: dict[str, Any] = {
        "ticker": "LONM",
        "tf_min": 15,
        "tz": LONDON,
        "limit": limit,
        "start": "2024-10-26T22:00:00Z",
        "end": "2024-10-27T02:59:00Z",
    }
    got: list[dict[str, Any]] = []
    with app_factory() as client:
        while True:
            body = client.get("/candles/range", params=params).json()
            got += body["data"]
            if "next" not in body:
                break
            params["cursor"] = body["next"]
        assert same(got, expected), first_difference(got, expected)
        for newest in (limit, 9, 12):
            asked = {"ticker": "LONM", "tf_min": 15, "tz": LONDON, "limit": newest}
            page = client.get("/candles", params=asked | {"order": "desc"}).json()["data"]
            assert same(page, expected[::-1][:newest]), first_difference(page, expected[::-1])


def fives(
    ticker: str, start: datetime, end: datetime, skip: tuple[datetime, datetime]
) -> list[Candle]:
    """Five-minute candles from start to end, none in [skip)."""
    found, at, i = [], start, 0
    while at < end:
        if not skip[0] <= at < skip[1]:
            found.append(Candle(ticker, 5, at, 10.0 + i % 7, 12.0, 9.0, 10.0 + i % 5, 1.0, 0))
        at, i = at + timedelta(minutes=5), i + 1
    return found


@pytest.mark.parametrize(
    ("zone", "session", "tf_min", "start", "skip"),
    [
        # an empty 20:00-24:00 local bucket holds 22:00-24:00 of a session wrapping midnight
        (
            "America/Sao_Paulo",
            (22, 2),
            240,
            datetime(2024, 3, 28, tzinfo=UTC),
            (datetime(2024, 3, 28, 23, tzinfo=UTC), datetime(2024, 3, 29, 3, tzinfo=UTC)),
        ),
        # London's 01:00-02:00 of 2024-03-31 does not exist: no bar is made up for it
        (
            LONDON,
            (22, 2),
            60,
            datetime(2024, 3, 30, tzinfo=UTC),
            (datetime(2024, 3, 30, 23, tzinfo=UTC), datetime(2024, 3, 31, 2, tzinfo=UTC)),
        ),
        # 7-hour buckets: the empty 21:00-04:00 holds the next day's opening of 00:30-06:00
        (
            "UTC",
            (0.5, 6),
            420,
            datetime(2024, 3, 28, tzinfo=UTC),
            (datetime(2024, 3, 28, 20, tzinfo=UTC), datetime(2024, 3, 29, 5, tzinfo=UTC)),
        ),
    ],
)
@pytest.mark.parametrize("fill", ["null", "prev"])
def test_filled_buckets_of_a_session_wrapping_midnight_are_the_reference_s(
    app_factory: AppFactory,
    db_url: str,
    zone: str,
    session: tuple[float, float],
    tf_min: int,
    start: datetime,
    skip: tuple[datetime, datetime],
    fill: str,
) -> None:
    candles = fives("FILL", start, start + timedelta(days=3), skip)
    insert(db_url, candles)
    opens, closes = (time(int(h), int(h % 1 * 60)) for h in session)
    spec = Spec(tf_min, True, zone, session=(opens, closes), fill=fill)
    expected = bars(spec, candles, "FILL")
    asked = {
        "ticker": "FILL",
        "tf_min": tf_min,
        "tz": zone,
        "fill": fill,
        "session": f"{opens:%H:%M}-{closes:%H:%M}",
        "start": (start - timedelta(days=1)).isoformat(),
        "end": (start + timedelta(days=4)).isoformat(),
        "limit": 5000,
    }
    with app_factory() as client:
        got = client.get("/candles/range", params=asked).json()["data"]
    assert same(got, expected), first_difference(got, expected)


@pytest.mark.parametrize("fill", ["null", "prev"])
def test_filled_hours_stay_on_their_grid_after_a_half_hour_change(
    app_factory: AppFactory, db_url: str, fill: str
) -> None:
    # Lord Howe goes from +10:30 to +11:00 at 02:00 local on 2024-10-06 (15:30Z the day
    # before): the hour of 02:00 starts at 02:30, the next at 03:00. Filled hours follow
    # the local grid, not the close of the short hour plus an hour.
    zone = "Australia/Lord_Howe"
    start = datetime(2024, 10, 5, 10, tzinfo=UTC)
    skip = (datetime(2024, 10, 5, 13, tzinfo=UTC), datetime(2024, 10, 5, 19, tzinfo=UTC))
    candles = fives("HOWE", start, start + timedelta(hours=14), skip)
    insert(db_url, candles)
    expected = bars(Spec(60, True, zone, fill=fill), candles, "HOWE")
    asked = {
        "ticker": "HOWE",
        "tf_min": 60,
        "tz": zone,
        "fill": fill,
        "start": (start - timedelta(days=1)).isoformat(),
        "end": (start + timedelta(days=1)).isoformat(),
    }
    with app_factory() as client:
        got = client.get("/candles/range", params=asked).json()["data"]
    assert [b["ts"][11:16] for b in got if b.get("filled")] == [
        "13:30",
        "14:30",
        "15:30",
        "16:00",
        "17:00",
        "18:00",
    ]
    assert same(got, expected), first_difference(got, expected)


NONE = (datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC))


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("zone", "tf_min", "day_start", "start", "end", "first"),
    [
        # Lord Howe's 02:00 hour starts at 02:30 (15:30Z) and closes at 03:00 (16:00Z)
        ("Australia/Lord_Howe", 60, time(0), "2024-10-05T15:30:00Z", "2024-10-05T18:55:00Z", 1),
        # Santiago's 2024-09-08 starts at 01:00 (04:00Z; the clocks skipped midnight) and
        # closes at the next midnight (03:00Z): 23 hours, whole in a range ending then
        ("America/Santiago", 1440, time(0), "2024-09-08T04:00:00Z", "2024-09-09T02:55:00Z", 1),
        ("America/Santiago", 1440, time(0), "2024-09-08T04:00:00Z", "2024-09-11T02:55:00Z", 3),
        # Chatham's clocks go from 02:45 to 03:45 (14:00Z): its 03:00 hour is the quarter of
        # an hour from 14:00Z, apart from the 04:00 hour (14:15Z)
        ("Pacific/Chatham", 60, time(0), "2024-09-28T13:15:00Z", "2024-09-28T16:10:00Z", 3),
        # New York's day starting at 02:30 on 2024-03-10 starts at 03:00 EDT (07:00Z)
        ("America/New_York", 1440, time(2, 30), "2024-03-09T07:30:00Z", "2024-03-12T06:25:00Z", 3),
    ],
)
@pytest.mark.parametrize("fill", ["none", "null", "prev"])
def test_a_bucket_that_starts_in_a_gap_of_local_time_holds_what_is_left_of_it(
    app_factory: AppFactory,
    db_url: str,
    zone: str,
    tf_min: int,
    day_start: time,
    start: str,
    end: str,
    first: int,
    fill: str,
) -> None:
    since, until = datetime.fromisoformat(start), datetime.fromisoformat(end)
    candles = fives("GAP", since - timedelta(days=2), until + timedelta(days=2), NONE)
    insert(db_url, candles)
    spec = Spec(tf_min, True, zone, day_start=day_start, fill=fill, label="open")
    five = timedelta(minutes=5)
    expected = [
        b
        for b in bars(spec, candles, "GAP")
        if since <= moment(b["ts"]) and moment(b["ts_close"]) - five <= until
    ]
    asked = {
        "ticker": "GAP",
        "tf_min": tf_min,
        "tz": zone,
        "fill": fill,
        "label": "open",
        "start": start,
        "end": end,
    }
    if day_start != time(0):
        asked["day_start"] = f"{day_start:%H:%M}"
    with app_factory() as client:
        got = client.get("/candles/range", params=asked).json()["data"]
    assert len(got) >= first
    assert not any(b.get("filled") for b in got)  # no bucket is missing
    assert [b["ts_close"] for b in got[:-1]] == [b["ts"] for b in got[1:]]  # none overlaps
    assert same(got, expected), first_difference(got, expected)


def forming_messages(ws: Any) -> list[dict[str, Any]]:
    """A forming replay's bars as sent, each with its `final`, to `replay_complete`."""
    sent = []
    while (message := json.loads(ws.receive_text(timeout=30)))["type"] != "STATUS" or (
        message["message"] != "replay_complete"
    ):
        if message["type"] == "CANDLE":
            sent.append({"candle": message["candle"], "final": message["final"]})
    return sent


@pytest.mark.parametrize("tf_min", [15, 60])
def test_forming_bars_of_a_repeated_local_hour_end_once_and_whole(
    app_factory: AppFactory, db_url: str, tf_min: int
) -> None:
    # New York's 01:00-02:00 comes twice on 2024-11-03 (05:00Z-06:00Z EDT, then 06:00Z-07:00Z
    # EST): a bucket of it holds two runs of candles an hour apart; as it forms, it is final
    # at the end of its second run only, and holds both.
    start = datetime(2024, 11, 3, 4, tzinfo=UTC)
    candles = fives("FOLD", start, start + timedelta(hours=4), NONE)
    insert(db_url, candles)
    spec = Spec(tf_min, True, "America/New_York")
    expected = forming(spec, candles, "FOLD", 5)
    query = (
        f"ticker=FOLD&tf_min={tf_min}&tz=America/New_York&forming=true&step_seconds=0"
        f"&start={start.isoformat()}&end={(start + timedelta(hours=4)).isoformat()}"
    )
    with (
        app_factory(ws_min_step_seconds=0) as client,
        client.websocket_connect(f"/ws/replay?{query}".replace("+00:00", "Z")) as ws,
    ):
        sent = forming_messages(ws)
    assert [m["final"] for m in sent] == [e["final"] for e in expected]
    assert same([m["candle"] for m in sent], [e["candle"] for e in expected])


@pytest.mark.parametrize("page", [3, 4, 5, 6, 7])
def test_a_replay_page_that_ends_between_the_two_runs_of_a_bucket_keeps_it_open(
    app_factory: AppFactory, db_url: str, page: int
) -> None:
    # New York's 01:00-01:30 comes twice on 2024-11-03 (05:00Z-05:30Z, then 06:00Z-06:30Z):
    # a page of the replay that ends after the first run (its candles read up to 05:40Z,
    # say) must not call the bucket's bar final there; it is final at 06:25Z.
    start = datetime(2024, 11, 3, 0, tzinfo=UTC)
    candles = fives("PAGE", start, start + timedelta(hours=8), NONE)
    insert(db_url, candles)
    spec = Spec(30, True, "America/New_York")
    expected = forming(spec, candles, "PAGE", 5)
    query = (
        "ticker=PAGE&tf_min=30&tz=America/New_York&forming=true&step_seconds=0"
        f"&start={start.isoformat()}&end={(start + timedelta(hours=8)).isoformat()}"
    )
    with (
        app_factory(ws_min_step_seconds=0, ws_page_size=page) as client,
        client.websocket_connect(f"/ws/replay?{query}".replace("+00:00", "Z")) as ws,
    ):
        sent = forming_messages(ws)
    finals = [m["candle"]["ts"] for m in sent if m["final"]]
    assert finals == [e["candle"]["ts"] for e in expected if e["final"]]
    assert [m["final"] for m in sent] == [e["final"] for e in expected]
    assert same([m["candle"] for m in sent], [e["candle"] for e in expected])


def test_live_bars_of_a_repeated_local_hour_end_as_history_does(
    app_factory: AppFactory, db_url: str
) -> None:
    start = datetime(2024, 11, 3, 4, tzinfo=UTC)
    candles = fives("LFOLD", start, start + timedelta(hours=4), NONE)
    insert(db_url, candles[:24])  # up to 06:00Z: the first run of 01:00-02:00
    with (
        app_factory() as client,
        client.websocket_connect("/ws/live?tickers=LFOLD&tf_min=15&tz=America/New_York") as ws,
    ):
        assert json.loads(ws.receive_text(timeout=10))["message"] == "live"
        for candle in candles[24:]:  # the second run and after, a candle a statement
            insert(db_url, [candle])
        last: dict[str, dict[str, Any]] = {}
        while True:
            try:
                message = json.loads(ws.receive_text(timeout=2))
            except queue.Empty:
                break
            if message["type"] == "CANDLE":
                last[message["candle"]["ts"]] = message["candle"]
        asked = {"ticker": "LFOLD", "tf_min": 15, "tz": "America/New_York", "limit": 100}
        rest = {b["ts"]: b for b in client.get("/candles", params=asked).json()["data"]}
    assert last
    assert all(same([bar], [rest[ts]]) for ts, bar in last.items()), [
        (ts, bar["volume"], rest[ts]["volume"]) for ts, bar in last.items()
    ]
