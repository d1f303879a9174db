"""The chart page in a time zone, and the timeframes the server says it can serve: AMZN.US's
5-minute candles (New York's regular session, 14:30-21:00 UTC in winter) read on New York's
clock, and its days resampled in New York with the session's hours, drawn and replayed."""

import urllib.parse
from datetime import datetime
from typing import Any

from tests.browser.conftest import ChartServer, Tab
from tests.browser.test_chart_page import OpenTab, api, open_chart, stamps

NEW_YORK = "America/New_York"
OPEN_WINTER = "2026-02-23T14:30:00.000Z"  # 09:30 in New York (EST, UTC-5)
OPEN_SUMMER = "2026-03-23T13:30:00.000Z"  # 09:30 in New York (EDT, UTC-4, since 8 March)


def api_all(base: str, ticker: str, tf: int, **params: Any) -> list[datetime]:
    """Every bar's ts, following the cursor of /candles/range."""
    found: list[datetime] = []
    cursor: dict[str, str] = {}
    span = {"start": "2000-01-01", "end": "2100-01-01"}
    while True:
        status, body = api(
            base, "/candles/range", ticker=ticker, tf_min=tf, **span, **params, **cursor
        )
        assert status == 200, body
        found += [datetime.fromisoformat(c["ts"]) for c in body["data"]]
        if not body.get("next"):
            return found
        cursor = {"cursor": body["next"]}


def hover(opened: Tab, ts: str) -> str:
    """Moves the pointer over the candle at `ts`; the legend's text."""
    page = opened.page
    position = page.evaluate("(ts) => window.marketdata.positionOf(ts)", ts)
    assert position is not None, f"{ts} is not in view"
    box = page.locator("#chart").bounding_box()
    page.mouse.move(box["x"] + position["x"], box["y"] + position["y"])
    page.wait_for_function(f"document.getElementById('legend').dataset.ts === '{ts}'")
    return page.inner_text("#legend")


def zoom_to(opened: Tab, ts: str, before: int, after: int) -> dict[str, Any]:
    """The view from `before` candles before the one at `ts` to `after` after it."""
    i = opened.state()["candles"].index(ts)
    opened.page.evaluate(
        "([right, count]) => window.marketdata.setView(right, count)",
        [i + after + 1, before + after + 1],
    )
    return opened.state()


def ticks(state: dict[str, Any]) -> dict[str, str]:
    return {a["ts"]: a["label"] for a in state["axis"] if not a.get("crosshair")}


def test_the_timeframes_offered_are_those_the_server_serves(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    _, coverage = api(chart_server.url, "/symbols/AMZN.US")
    served = coverage["served"]
    assert [s["tf_min"] for s in served] == [5, 10, 15, 30, 60, 120, 240, 360, 720, 1440, 10080]
    opened = open_chart(tab, chart_server.url, "?ticker=AMZN.US&tf=5")
    page = opened.page
    offered = page.eval_on_selector_all(
        "#tf option", "os => os.map(o => [Number(o.value), o.textContent, o.title])"
    )
    assert [tf for tf, _, _ in offered] == [s["tf_min"] for s in served]
    assert offered[0] == [5, "5m", "stored"]
    labels = {tf: text for tf, text, _ in offered}
    assert labels[10] == "10m (resampled)"
    assert labels[360] == "6h (resampled)"
    assert labels[10080] == "1w (resampled)"
    titles = {tf: title for tf, _, title in offered}
    for s in served[1:]:
        assert "resampled from the 5m candles" in titles[s["tf_min"]]
        assert ("rollup" in titles[s["tf_min"]]) == (s["source"] == "rollup")
    assert opened.state()["timeframes"] == [
        {"tf": s["tf_min"], "source": s["source"]} for s in served
    ]
    page.select_option("#tf", "360")
    page.wait_for_function("window.marketdata.state().tf === 360")
    page.wait_for_function("window.marketdata.state().drawn > 0")
    assert stamps(opened.state()) == api_all(chart_server.url, "AMZN.US", 360)
    assert opened.errors == []


def test_the_axis_and_the_legend_read_new_york_s_clock(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    opened = open_chart(tab, chart_server.url, f"?ticker=AMZN.US&tf=5&tz={NEW_YORK}&end=2026-02-24")
    page = opened.page
    assert opened.state()["zone"] == NEW_YORK
    assert page.input_value("#zone-mode") == "other"
    assert page.input_value("#zone") == NEW_YORK
    assert page.inner_text("#from-zone") == NEW_YORK

    # a winter candle at 14:30 UTC is New York's 09:30, on the axis and in the legend
    zoom_to(opened, OPEN_WINTER, 5, 30)
    legend = hover(opened, OPEN_WINTER)
    assert "2026-02-23 09:30 EST" in legend
    state = opened.state()
    assert {"ts": OPEN_WINTER, "label": "2026-02-23 09:30", "crosshair": True} in state["axis"]
    assert ticks(state)[OPEN_WINTER] == "23 Feb"  # the session opens New York's day
    assert ticks(state)["2026-02-23T15:00:00.000Z"] == "10:00"
    assert "15:00" not in ticks(state).values()
    opened.shot("new-york-winter")

    # after New York's clocks moved (8 March), 09:30 is 13:30 UTC
    opened = open_chart(tab, chart_server.url, f"?ticker=AMZN.US&tf=5&tz={NEW_YORK}&end=2026-03-24")
    page = opened.page
    zoom_to(opened, OPEN_SUMMER, 5, 30)
    assert "2026-03-23 09:30 EDT" in hover(opened, OPEN_SUMMER)
    assert ticks(opened.state())["2026-03-23T14:00:00.000Z"] == "10:00"
    info = page.inner_text("#info")
    # 36 candles: the feed misses 10:45-11:15 that day (tests/data/SOURCES.md)
    assert info == "36 candles · 2026-03-20 15:35 → 2026-03-23 12:35 America/New_York"

    # back to UTC: the same candles, labelled in UTC, and the address says so
    requests = len(opened.requests)
    page.select_option("#zone-mode", "utc")
    page.wait_for_function("window.marketdata.state().zone === 'UTC'")
    page.wait_for_function("document.getElementById('legend').textContent.includes('UTC')")
    assert "2026-03-23 13:30 UTC" in hover(opened, OPEN_SUMMER)
    assert ticks(opened.state())["2026-03-23T14:00:00.000Z"] == "14:00"
    assert "tz=" not in page.url
    # a stored timeframe is served as stored: a zone only labels it, nothing is read again
    assert not [url for url in opened.requests[requests:] if "/candles" in url]
    assert opened.errors == []


def test_new_york_days_with_the_session_are_drawn_and_replayed_as_the_api_makes_them(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    bars = {"tz": NEW_YORK, "session": "09:30-16:00"}
    query = urllib.parse.urlencode({"ticker": "AMZN.US", "tf": 1440, **bars})
    opened = tab()
    page = opened.page
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(f"{chart_server.url}/?{query}")
    page.wait_for_function("window.marketdata && window.marketdata.state().drawn > 0")
    assert page.is_visible("#day-options")
    assert page.input_value("#session") == "09:30-16:00"
    state = opened.state()
    expected = api_all(chart_server.url, "AMZN.US", 1440, **bars)
    assert stamps(state) == expected
    # New York's midnight: 05:00 UTC in winter, 04:00 UTC in summer
    assert {ts.hour for ts in expected} == {4, 5}
    asked = [url for url in opened.requests if "/candles" in url]
    assert asked
    assert all("tz=America%2FNew_York" in url for url in asked)
    assert all("session=09%3A30-16%3A00" in url for url in asked)
    legend = hover(opened, "2026-02-23T05:00:00.000Z")
    assert "2026-02-23 00:00 EST" in legend
    day_range = {"start": "2026-02-23T05:00:00Z", "end": "2026-02-24T05:00:00Z"}
    _, day = api(
        chart_server.url, "/candles/range", ticker="AMZN.US", tf_min=1440, **bars, **day_range
    )
    assert page.get_attribute("#legend [data-field=open]", "data-value") == str(
        day["data"][0]["open"]
    )
    opened.shot("new-york-days")

    # a replay from New York's 20 February, with the same options
    page.fill("#pace", "0.02")
    page.fill("#from", "2026-02-20T00:00")
    page.click("#play")
    page.wait_for_function("window.marketdata.state().replay.nextSeq >= 5")
    state = opened.state()
    assert state["replay"]["start"] == "2026-02-20T05:00:00.000Z"
    replayed = stamps(state)[state["replay"]["seqOfFirst"] :]
    assert replayed == [ts for ts in expected if ts.isoformat() >= "2026-02-20T05"][: len(replayed)]
    assert sockets
    assert "tz=America%2FNew_York" in sockets[-1]
    assert "session=09%3A30-16%3A00" in sockets[-1]
    page.click("#stop")

    # a session the server refuses is said in its words
    page.fill("#session", "9-16")
    page.press("#session", "Enter")
    page.wait_for_selector("#message:not([hidden])")
    assert "Could not load AMZN.US 1d. session: " in page.inner_text("#message-text")


def test_the_browser_s_zone_and_a_typed_one_are_offered_and_checked(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    opened = open_chart(tab, chart_server.url, "?ticker=AMZN.US&tf=60", timezone_id="Asia/Tokyo")
    page = opened.page
    assert page.inner_text("#zone-local") == "Browser (Asia/Tokyo)"
    assert page.input_value("#zone-mode") == "utc"
    page.select_option("#zone-mode", "local")
    page.wait_for_function("window.marketdata.state().zone === 'Asia/Tokyo'")
    assert "tz=Asia%2FTokyo" in page.url
    # 60 is resampled: its bars are cut in Tokyo's hours, asked for with tz
    page.wait_for_function("window.marketdata.state().drawn > 0")
    assert any("tz=Asia%2FTokyo" in url for url in opened.requests if "/candles" in url)

    page.select_option("#zone-mode", "other")
    page.fill("#zone", "Mars/Olympus_Mons")
    page.press("#zone", "Enter")
    page.wait_for_selector("#message:not([hidden])")
    assert '"Mars/Olympus_Mons" is not a time zone' in page.inner_text("#message-text")
    assert opened.state()["zone"] == "Asia/Tokyo"  # unchanged

    page.fill("#zone", "europe/london")
    page.press("#zone", "Enter")
    page.wait_for_function("window.marketdata.state().zone === 'Europe/London'")
    page.wait_for_function("window.marketdata.state().drawn > 0")
    assert "tz=Europe%2FLondon" in page.url
    assert opened.errors == []

    bad = tab()
    bad.page.goto(f"{chart_server.url}/?ticker=AMZN.US&tf=5&tz=Nowhere")
    bad.page.wait_for_function("window.marketdata && window.marketdata.state().drawn > 0")
    assert "not a time zone" in bad.page.inner_text("#message-text")
    assert bad.state()["zone"] == "UTC"
