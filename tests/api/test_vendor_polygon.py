"""Polygon (Massive) aggregates under /polygon, through the app against real PostgreSQL:
our own API's candles in Polygon's shapes; `next_url` followed as a browser follows it and
as the massive client does; Polygon's errors; the stream's minute aggregates."""

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import pytest
from litestar.exceptions import WebSocketDisconnect

from marketdata.domain.candles import Candle
from marketdata.entrypoints.websocket import ReplayRegistry
from tests.alpaca_polygon_support import fixed_present, minute_bar, ms, ours, sessions
from tests.api.test_vendor_alpaca import dailies
from tests.support import AppFactory, Client, insert

AGGS = "/polygon/v2/aggs/ticker"
WHOLE = {"start": "2024-01-02T05:00:00Z", "end": "2024-01-04T04:59:59.999999Z"}  # NY days


@pytest.fixture
def stored(db_url: str) -> dict[str, list[Candle]]:
    held = {
        "AAPL": sessions("AAPL", base=180.0),
        "BTCUSD": sessions("BTCUSD", days=1, tf_min=1, base=42000.0),
    }
    insert(db_url, [c for candles in held.values() for c in candles])
    return held


def aggs(client: Client, path: str) -> Any:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def polygon_agg(candle: dict[str, Any]) -> dict[str, Any]:
    """One of our candles as Polygon's aggregate."""
    return {
        "v": candle["volume"],
        "o": candle["open"],
        "c": candle["close"],
        "h": candle["high"],
        "l": candle["low"],
        "t": ms(candle["ts"]),
    }


def test_aggregates_are_our_candles(client: Client, stored: dict[str, list[Candle]]) -> None:
    response = client.get(f"{AGGS}/AAPL/range/5/minute/2024-01-02/2024-01-03")
    body = response.json()
    expected = [polygon_agg(c) for c in ours(client, "AAPL", **WHOLE, tf_min=5)]
    assert len(expected) == 156
    assert body == {
        "ticker": "AAPL",
        "queryCount": 156,
        "resultsCount": 156,
        "adjusted": True,
        "status": "OK",
        "request_id": response.headers["x-request-id"],
        "count": 156,
        "results": expected,
    }
    # the same bounds in Unix milliseconds
    start, end = ms(WHOLE["start"]), ms(WHOLE["end"])
    assert aggs(client, f"{AGGS}/AAPL/range/5/minute/{start}/{end}")["results"] == expected


def test_resampled_aggregates(client: Client, stored: dict[str, list[Candle]]) -> None:
    hours = aggs(client, f"{AGGS}/AAPL/range/1/hour/2024-01-02/2024-01-03")["results"]
    assert hours == [polygon_agg(c) for c in ours(client, "AAPL", **WHOLE, tf_min=60)]
    days = aggs(client, f"{AGGS}/AAPL/range/1/day/2024-01-02/2024-01-03?adjusted=false")
    new_york = ours(client, "AAPL", **WHOLE, tf_min=1440, tz="America/New_York")
    assert days["results"] == [polygon_agg(c) for c in new_york]
    assert [d["t"] for d in days["results"]] == [
        ms("2024-01-02T05:00:00Z"),
        ms("2024-01-03T05:00:00Z"),
    ]
    assert days["adjusted"] is False
    # a bar comes when it opens in [from, to]: the 15:00 hour by a `to` of 15:00
    to = ms("2024-01-02T15:00:00Z")
    last = aggs(client, f"{AGGS}/AAPL/range/1/hour/2024-01-02/{to}")["results"]
    assert [a["t"] for a in last] == [ms("2024-01-02T14:00:00Z"), to]
    assert last[-1] == hours[1]


def test_a_crypto_ticker_is_its_stored_pair_with_utc_days(
    client: Client, stored: dict[str, list[Candle]]
) -> None:
    body = aggs(client, f"{AGGS}/X:BTCUSD/range/1/day/2024-01-02/2024-01-02")
    assert body["ticker"] == "X:BTCUSD"
    assert [a["t"] for a in body["results"]] == [ms("2024-01-02T00:00:00Z")]
    assert body["results"][0]["v"] == sum(c.volume for c in stored["BTCUSD"])


def follow(client: Client, first: str, doubled: bool) -> list[Any]:
    """Every page from `first`: each `next_url` followed as a browser follows it (its path
    as given), or as massive does (its base, `.../polygon`, before the path)."""
    pages = [aggs(client, first)]
    while "next_url" in pages[-1]:
        url = urlparse(pages[-1]["next_url"])
        assert url.path.startswith("/polygon/v2/aggs/")
        assert set(url.query.split("=")[0:1]) == {"cursor"}
        path = f"{url.path}?{url.query}"
        pages.append(aggs(client, "/polygon" + path if doubled else path))
    return pages


@pytest.mark.parametrize("doubled", [False, True])
@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_next_url_reaches_every_page(
    client: Client, stored: dict[str, list[Candle]], doubled: bool, sort: str
) -> None:
    pages = follow(
        client, f"{AGGS}/AAPL/range/5/minute/2024-01-02/2024-01-03?limit=50&sort={sort}", doubled
    )
    assert [p["resultsCount"] for p in pages] == [50, 50, 50, 6]
    assert "next_url" not in pages[-1]  # absent, not null, on the last page
    got = [a for p in pages for a in p["results"]]
    expected = [polygon_agg(c) for c in ours(client, "AAPL", **WHOLE, tf_min=5)]
    assert got == (expected if sort == "asc" else expected[::-1])


@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_a_page_holds_its_limit_read_max_limit_at_a_time(
    app_factory: AppFactory, stored: dict[str, list[Candle]], sort: str
) -> None:
    # massive's and polygon-api-client's get_aggs do not follow next_url: a page must hold
    # what `limit` asks (up to Polygon's 50,000) whatever MAX_LIMIT, read in pieces of it
    asked = f"{AGGS}/AAPL/range/5/minute/2024-01-02/2024-01-03?sort={sort}&limit="
    with app_factory(max_limit=100) as client:
        whole = follow(client, f"{asked}50000", False)
        pieces = follow(client, f"{asked}120", False)
        expected = [polygon_agg(c) for c in ours(client, "AAPL", **WHOLE, tf_min=5)]
    assert [p["resultsCount"] for p in whole] == [156]
    assert [p["resultsCount"] for p in pieces] == [120, 36]
    for pages in (whole, pieces):
        got = [a for p in pages for a in p["results"]]
        assert got == (expected if sort == "asc" else expected[::-1])


def test_nothing_in_range(client: Client, stored: dict[str, list[Candle]]) -> None:
    body = aggs(client, f"{AGGS}/AAPL/range/5/minute/2023-01-02/2023-01-03")
    assert body["resultsCount"] == 0
    assert "results" not in body
    assert "next_url" not in body


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("AAPL/range/5/fortnight/2024-01-02/2024-01-03", "invalid timespan"),
        ("AAPL/range/1/month/2024-01-02/2024-01-03", "not served"),
        ("AAPL/range/1/second/2024-01-02/2024-01-03", "not served"),
        ("AAPL/range/0/minute/2024-01-02/2024-01-03", "invalid multiplier"),
        ("AAPL/range/x/minute/2024-01-02/2024-01-03", "invalid multiplier"),
        ("AAPL/range/5/minute/2024-13-02/2024-01-03", "time parameter: 'from'"),
        ("AAPL/range/5/minute/2024-01-02/tomorrow", "time parameter: 'to'"),
        ("AAPL/range/5/minute/2024-01-03/2024-01-02", "must not be after"),
        ("AAPL/range/5/minute/2024-01-02/2024-01-03?limit=0", "invalid limit"),
        ("AAPL/range/5/minute/2024-01-02/2024-01-03?limit=50001", "invalid limit"),
        ("AAPL/range/5/minute/2024-01-02/2024-01-03?sort=up", "invalid sort"),
        ("AAPL/range/5/minute/2024-01-02/2024-01-03?adjusted=maybe", "invalid adjusted"),
        ("AAPL/range/5/minute/2024-01-02/2024-01-03?cursor=zzz", "invalid cursor"),
    ],
)
def test_errors_are_polygons(
    client: Client, stored: dict[str, list[Candle]], path: str, words: str
) -> None:
    response = client.get(f"{AGGS}/{path}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body == {
        "status": "ERROR",
        "request_id": response.headers["x-request-id"],
        "error": body["error"],
    }
    assert words in body["error"]


def test_an_unknown_ticker_is_not_found(client: Client, stored: dict[str, list[Candle]]) -> None:
    response = client.get(f"{AGGS}/NOPE/range/5/minute/2024-01-02/2024-01-03")
    assert response.status_code == 404
    assert response.json() == {
        "status": "NOT_FOUND",
        "request_id": response.headers["x-request-id"],
        "message": "Ticker not found: NOPE",
    }


def test_the_present_ends_every_read(
    app_factory: AppFactory, stored: dict[str, list[Candle]]
) -> None:
    with app_factory(fixed_present(datetime(2024, 1, 2, 15, 2, tzinfo=UTC))) as client:
        body = aggs(client, f"{AGGS}/AAPL/range/5/minute/2024-01-02/2024-01-03")
        assert [a["t"] for a in body["results"]][-1] == ms("2024-01-02T15:00:00Z")
        assert body["resultsCount"] == 7
        # the present's hour is not over: its bar is not made yet
        hours = aggs(client, f"{AGGS}/AAPL/range/1/hour/2024-01-02/2024-01-03")["results"]
        assert [a["t"] for a in hours] == [ms("2024-01-02T14:00:00Z")]


def test_described_in_the_openapi_document(client: Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    polygon = [p for p in paths if p.startswith("/polygon")]
    assert polygon == [
        "/polygon/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from_}/{to}"
    ]
    operation = paths[polygon[0]]["get"]
    assert operation["tags"] == ["polygon"]
    assert {"200", "400", "404", "500", "503"} <= set(operation["responses"])


# -- the stream ------------------------------------------------------------------------------

MINUTE = datetime(2024, 1, 5, 14, 30, tzinfo=UTC)


def received(ws: Any) -> list[dict[str, Any]]:
    frame: list[dict[str, Any]] = json.loads(ws.receive_text())
    return frame


@pytest.mark.timeout(60)
def test_stream_sends_minute_aggregates_as_written(app_factory: AppFactory, db_url: str) -> None:
    with app_factory() as client, client.websocket_connect("/polygon/stocks") as ws:
        assert received(ws) == [
            {"status": "connected", "message": "Connected Successfully", "ev": "status"}
        ]
        ws.send_text(json.dumps({"action": "subscribe", "params": "AM.AAPL"}))
        assert received(ws)[0]["status"] == "error"  # not authorised yet
        ws.send_text(json.dumps({"action": "auth", "params": "any-key"}))
        assert received(ws) == [
            {"status": "auth_success", "message": "authenticated", "ev": "status"}
        ]
        ws.send_text(json.dumps({"action": "subscribe", "params": "AM.AAPL,T.AAPL,AM.MSFT"}))
        statuses = received(ws)
        assert [(s["status"], s["message"]) for s in statuses] == [
            ("success", "subscribed to: AM.AAPL"),
            ("success", "subscribed to: AM.MSFT"),
            ("error", "not served: T.AAPL (only AM.<ticker>)"),
        ]
        insert(db_url, [minute_bar("IBM", MINUTE)])
        insert(db_url, [minute_bar("AAPL", MINUTE, 187.5)])
        assert received(ws) == [
            {
                "sym": "AAPL",
                "v": 100.0,
                "o": 187.5,
                "c": 188.0,
                "h": 188.5,
                "l": 186.5,
                "s": ms("2024-01-05T14:30:00Z"),
                "e": ms("2024-01-05T14:31:00Z"),
                "ev": "AM",
            }
        ]
        ws.send_text(json.dumps({"action": "unsubscribe", "params": "AM.AAPL"}))
        assert received(ws)[0]["message"] == "unsubscribed to: AM.AAPL"
        later = MINUTE + timedelta(minutes=1)
        insert(db_url, [minute_bar("AAPL", later), minute_bar("MSFT", later)])
        assert [(a["ev"], a["sym"]) for a in received(ws)] == [("AM", "MSFT")]


def test_stored_days_are_stamped_at_new_york_midnight_of_their_date(
    db_url: str, client: Client
) -> None:
    # A daily file's dates stored at 00:00 UTC: `from`/`to` are New York's days and `t` is
    # the day's New York midnight, so the days asked for are those dates, not the next.
    dates = [datetime(2025, 3, d, tzinfo=UTC) for d in (28, 31)] + [
        datetime(2025, 4, 1, tzinfo=UTC)
    ]
    insert(
        db_url,
        [
            Candle("KO", 1440, at, 60.0 + i, 61.0 + i, 59.0 + i, 60.5 + i, 10.0 + i, 0)
            for i, at in enumerate(dates)
        ],
    )
    got = aggs(client, f"{AGGS}/KO/range/1/day/2025-03-31/2025-03-31")["results"]
    assert [(a["t"], a["o"]) for a in got] == [(ms("2025-03-31T04:00:00Z"), 61.0)]
    every = aggs(client, f"{AGGS}/KO/range/1/day/2025-03-01/2025-04-30")["results"]
    assert [a["t"] for a in every] == [
        ms("2025-03-28T04:00:00Z"),
        ms("2025-03-31T04:00:00Z"),
        ms("2025-04-01T04:00:00Z"),
    ]
    newest = aggs(client, f"{AGGS}/KO/range/1/day/2025-03-01/2025-04-30?sort=desc")["results"]
    assert newest == every[::-1]
    # a crypto ticker's days are UTC's: as stored
    insert(db_url, [Candle("ETHUSD", 1440, dates[0], 1.0, 1.0, 1.0, 1.0, 1.0, 0)])
    crypto = aggs(client, f"{AGGS}/X:ETHUSD/range/1/day/2025-03-28/2025-03-28")["results"]
    assert [a["t"] for a in crypto] == [ms("2025-03-28T00:00:00Z")]


@pytest.mark.parametrize("path", ["/polygon/stocks", "/alpaca/v2/iex"])
def test_a_server_shutdown_closes_streams_as_a_restart(app_factory: AppFactory, path: str) -> None:
    # 1012 (service restart): massive returns for good on a close of 1000 or 1001
    # (websockets' ConnectionClosedOK) and retries on any other; alpaca-py retries on all
    with app_factory() as client, client.websocket_connect(path) as ws:
        ws.receive_text(timeout=10)  # connected
        registry: ReplayRegistry = client.blocking_portal.call(
            client.app.state.dishka_container.get, ReplayRegistry
        )
        client.blocking_portal.call(registry.shutdown)
        code = None
        while code is None:
            try:
                ws.receive_text(timeout=10)
            except WebSocketDisconnect as closed:
                code = closed.code
    assert code == 1012


def test_weeks_begin_sunday_and_from_goes_back_to_its_bar(client: Client, db_url: str) -> None:
    # "weekly bars begin Sunday at 12:00:00 AM EST", and `from` is snapped back to the
    # start of the bar it falls in (Polygon's knowledge base)
    hours = [
        Candle(
            "WK", 60, datetime(2024, 3, 1, tzinfo=UTC) + timedelta(hours=i), 1, 2, 0.5, 1.5, 1, 0
        )
        for i in range(24 * 20)
    ]
    insert(db_url, hours)
    weeks = aggs(client, f"{AGGS}/WK/range/1/week/2024-03-06/2024-03-20")["results"]
    sundays = [
        datetime(2024, 3, 3, 5, tzinfo=UTC),  # New York's midnight (EST)
        datetime(2024, 3, 10, 5, tzinfo=UTC),  # clocks go forward later that night
        datetime(2024, 3, 17, 4, tzinfo=UTC),  # (EDT)
    ]
    assert [w["t"] for w in weeks] == [ms(s.isoformat()) for s in sundays]
    assert [w["v"] for w in weeks] == [
        sum(c.volume for c in hours if a <= c.ts < b)
        for a, b in zip(sundays, [*sundays[1:], datetime(2024, 3, 24, 4, tzinfo=UTC)], strict=True)
    ]
    # from the year 1: its Sunday would be before it
    assert client.get(f"{AGGS}/WK/range/1/week/0001-01-01/2024-03-20").status_code == 200
    # a `from` in milliseconds inside an hour: that hour comes first
    inside = ms("2024-03-06T10:30:00+00:00")
    first = aggs(client, f"{AGGS}/WK/range/1/hour/{inside}/2024-03-06")["results"][0]
    assert first["t"] == ms("2024-03-06T10:00:00+00:00")


@pytest.mark.parametrize(("multiplier", "timespan"), [(2, "day"), (1, "week")])
def test_bars_of_stored_days_are_cut_by_their_dates(
    client: Client, db_url: str, multiplier: int, timespan: str
) -> None:
    # Stored days are dates (stamped 00:00 UTC, New York's evening before): two-day bars
    # counted from 1970-01-01 and weeks from Sunday hold the dates they name, shown at New
    # York's midnight of their first date
    days = dailies("DLY", datetime(2026, 2, 23, tzinfo=UTC), 26)
    insert(db_url, days)
    got = aggs(
        client, f"/polygon/v2/aggs/ticker/DLY/range/{multiplier}/{timespan}/2026-03-09/2026-03-13"
    )
    epoch = date(1970, 1, 1)

    def first_date(d: date) -> date:
        if timespan == "day":
            return epoch + timedelta(days=(d - epoch).days // 2 * 2)
        return d - timedelta(days=(d.weekday() + 1) % 7)  # its Sunday

    start = first_date(date(2026, 3, 9))
    groups: dict[date, list[Candle]] = {}
    for c in days:
        if start <= c.ts.date() <= date(2026, 3, 13):
            groups.setdefault(first_date(c.ts.date()), []).append(c)
    new_york = ZoneInfo("America/New_York")
    assert [(r["t"], r["o"], r["c"], r["v"]) for r in got["results"]] == [
        (
            int(datetime.combine(at, datetime.min.time(), new_york).timestamp() * 1000),
            g[0].open,
            g[-1].close,
            sum(c.volume for c in g),
        )
        for at, g in groups.items()
    ]
