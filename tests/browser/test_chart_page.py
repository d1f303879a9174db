"""The chart page in a real headless Chromium against a real server holding real candles
(AMZN.US and MSFT.US, 5-minute, from shared/data). The page's numbers are checked against
the REST API and the data files, not against themselves."""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.browser.conftest import ChartServer, Tab
from tests.support import DATA, data_lines

OpenTab = Callable[..., Tab]


def api(base: str, path: str, **params: object) -> tuple[int, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def api_range(base: str, ticker: str, tf: int, start: str, end: str) -> list[datetime]:
    """Every candle's ts in [start, end], following the cursor."""
    stamps: list[datetime] = []
    cursor: dict[str, str] = {}
    while True:
        status, body = api(
            base, "/candles/range", ticker=ticker, tf_min=tf, start=start, end=end, **cursor
        )
        assert status == 200, body
        stamps += [datetime.fromisoformat(c["ts"]) for c in body["data"]]
        if not body.get("next"):
            return stamps
        cursor = {"cursor": body["next"]}


def count_in_view(base: str, state: dict[str, Any]) -> int:
    """The API's count of candles between the first and the last one the page drew."""
    return len(api_range(base, state["ticker"], state["tf"], state["first"], state["last"]))


def stamps(state: dict[str, Any]) -> list[datetime]:
    return [datetime.fromisoformat(ts) for ts in state["candles"]]


def assert_contiguous(base: str, state: dict[str, Any]) -> None:
    """The page's series is exactly the stored one between its ends: no gap, no duplicate."""
    shown = stamps(state)
    assert shown, "the page holds no candles"
    # up to the end of the last candle: a resampled bucket cut by the range's end is left out
    end = shown[-1] + timedelta(minutes=state["tf"]) - timedelta(seconds=1)
    expected = api_range(base, state["ticker"], state["tf"], state["candles"][0], end.isoformat())
    assert shown == expected


def open_chart(tab: OpenTab, base: str, query: str = "", **options: Any) -> Tab:
    opened = tab(**options)
    opened.page.goto(f"{base}/{query}")
    opened.page.wait_for_function("window.marketdata && window.marketdata.state().drawn > 0")
    return opened


def canvas_pixels(opened: Tab) -> dict[str, int]:
    """How many device pixels differ from the background, and how many are exactly the
    up and down colours (candle bodies are filled on whole device pixels)."""
    result: dict[str, int] = opened.page.evaluate(
        """() => {
        const canvas = document.getElementById('chart');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const css = getComputedStyle(document.documentElement);
        const rgb = (name) => {
          const hex = css.getPropertyValue(name).trim().slice(1);
          return [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
        };
        const [up, down] = [rgb('--up'), rgb('--down')];
        const same = (i, c) => data[i] === c[0] && data[i + 1] === c[1] && data[i + 2] === c[2];
        const bg = [data[0], data[1], data[2]];
        let differing = 0, ups = 0, downs = 0;
        for (let i = 0; i < data.length; i += 4) {
          if (!same(i, bg)) differing++;
          if (same(i, up)) ups++;
          if (same(i, down)) downs++;
        }
        return {differing, ups, downs, total: data.length / 4, background: bg[0] + bg[1] + bg[2]};
      }"""
    )
    return result


def test_picking_a_ticker_draws_the_candles_the_api_has_for_the_view(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    opened = open_chart(tab, chart_server.url)
    page = opened.page
    page.fill("#ticker", "MSFT.US")
    page.press("#ticker", "Enter")
    page.wait_for_function(
        "window.marketdata.state().ticker === 'MSFT.US' && window.marketdata.state().drawn > 0"
    )
    page.wait_for_timeout(100)
    state = opened.state()
    in_view = count_in_view(chart_server.url, state)
    assert state["drawn"] == in_view > 100
    assert page.get_attribute("#chart", "data-drawn") == str(in_view)
    pixels = canvas_pixels(opened)
    assert pixels["differing"] > pixels["total"] // 50
    assert pixels["ups"] > 0
    assert pixels["downs"] > 0
    # the newest candle is the API's newest
    _, newest = api(chart_server.url, "/candles", ticker="MSFT.US", tf_min=5, limit=1, order="desc")
    assert datetime.fromisoformat(newest["data"][0]["ts"]) == stamps(state)[-1]
    opened.shot("drawn")
    assert opened.errors == []
    origin = chart_server.url
    assert [url for url in opened.requests if not url.startswith((origin, "data:"))] == []


def test_zooming_out_loads_older_candles_and_dragging_pans(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    opened = open_chart(tab, chart_server.url, "?ticker=AMZN.US&tf=5")
    page = opened.page
    before = opened.state()
    box = page.locator("#chart").bounding_box()
    page.mouse.move(box["x"] + 600, box["y"] + 300)
    for _ in range(3):
        page.mouse.wheel(0, 500)
    page.wait_for_function(f"window.marketdata.state().loaded > {before['loaded']}")
    page.wait_for_function("window.marketdata.state().drawn > 400")
    zoomed = opened.state()
    assert zoomed["drawn"] > before["drawn"]
    assert zoomed["candles"][-1] == before["candles"][-1]
    assert_contiguous(chart_server.url, zoomed)  # the older pages joined without a hole
    assert any("/candles/range" in url and "cursor=" in url for url in opened.requests)
    in_view = count_in_view(chart_server.url, zoomed)
    assert zoomed["drawn"] == in_view
    opened.shot("zoomed-out")

    page.mouse.move(box["x"] + 300, box["y"] + 300)
    page.mouse.down()
    page.mouse.move(box["x"] + 900, box["y"] + 300, steps=10)
    page.mouse.up()
    page.wait_for_timeout(100)
    panned = opened.state()
    assert panned["first"] < zoomed["first"]
    assert panned["last"] < zoomed["last"]
    in_view = count_in_view(chart_server.url, panned)
    assert panned["drawn"] == in_view
    opened.shot("panned")
    assert opened.errors == []


def test_a_resampled_timeframe_is_offered_and_drawn(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    opened = open_chart(tab, chart_server.url, "?ticker=AMZN.US&tf=5")
    page = opened.page
    options = page.eval_on_selector_all("#tf option", "os => os.map(o => o.textContent)")
    assert options[0] == "5m"
    assert "15m (resampled)" in options
    assert "1d (resampled)" in options
    page.select_option("#tf", "15")
    page.wait_for_function(
        "window.marketdata.state().tf === 15 && window.marketdata.state().drawn > 0"
    )
    state = opened.state()
    assert_contiguous(chart_server.url, state)
    assert all(ts.minute % 15 == 0 for ts in stamps(state))
    opened.shot("resampled-15m")
    assert opened.errors == []


def test_hovering_a_candle_shows_its_ohlcv_from_the_file(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    # a known candle, read from the file itself: row 3001 of amzn.us.txt (Warsaw time)
    row = data_lines(DATA / "amzn.us.txt")[3000]
    local = datetime.strptime(row[2] + row[3], "%Y%m%d%H%M%S").replace(
        tzinfo=ZoneInfo("Europe/Warsaw")
    )
    ts = local.astimezone(ZoneInfo("UTC"))
    end = (ts + timedelta(hours=2)).isoformat()
    opened = open_chart(
        tab, chart_server.url, f"?ticker=AMZN.US&tf=5&end={urllib.parse.quote(end)}"
    )
    page = opened.page
    position = page.evaluate("(ts) => window.marketdata.positionOf(ts)", ts.isoformat())
    assert position is not None, "the known candle is not in view"
    box = page.locator("#chart").bounding_box()
    page.mouse.move(box["x"] + position["x"], box["y"] + position["y"])
    shown_ts = ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    page.wait_for_function(f"document.getElementById('legend').dataset.ts === '{shown_ts}'")
    shown = {
        field: float(page.get_attribute(f"#legend [data-field={field}]", "data-value") or "nan")
        for field in ["open", "high", "low", "close", "volume"]
    }
    expected = dict(
        zip(["open", "high", "low", "close", "volume"], map(float, row[4:9]), strict=True)
    )
    assert shown == expected
    assert ts.strftime("%Y-%m-%d %H:%M") in page.inner_text("#legend")
    opened.shot("hover")
    assert opened.errors == []


def wait_seq(opened: Tab, at_least: int) -> dict[str, Any]:
    opened.page.wait_for_function(f"window.marketdata.state().replay.nextSeq >= {at_least}")
    return opened.state()


def test_replay_adds_candles_pauses_steps_resumes_and_seeks(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    opened = open_chart(tab, chart_server.url, "?ticker=AMZN.US&tf=5")
    page = opened.page
    page.fill("#pace", "0.05")
    page.fill("#from", "2026-02-23T14:30")
    page.click("#play")
    page.wait_for_function("document.body.dataset.replay === 'playing'")
    state = wait_seq(opened, 10)
    start = state["replay"]["start"]
    assert start == "2026-02-23T14:30:00.000Z"
    first_seq = state["replay"]["seqOfFirst"]
    # the replayed candles are the stored ones from the start, one after another
    replayed = stamps(state)[first_seq:]
    assert replayed == api_range(chart_server.url, "AMZN.US", 5, start, state["candles"][-1])
    assert_contiguous(chart_server.url, state)
    opened.shot("replay-playing")

    page.click("#pause")
    page.wait_for_function("document.body.dataset.replay === 'paused'")
    time.sleep(0.2)  # a step already being sent when the pause arrived may still land
    paused = opened.state()["replay"]["nextSeq"]
    time.sleep(0.6)  # 12 steps' worth at 0.05 s
    assert opened.state()["replay"]["nextSeq"] == paused
    opened.shot("replay-paused")

    page.click("#step")
    wait_seq(opened, paused + 1)
    time.sleep(0.3)
    assert opened.state()["replay"]["nextSeq"] == paused + 1

    page.click("#resume")
    state = wait_seq(opened, paused + 10)
    assert state["replay"]["state"] == "playing"

    total = state["replay"]["total"]
    target = state["replay"]["nextSeq"] + 300
    assert target < total
    page.evaluate(
        """(target) => {
        const bar = document.getElementById('progress');
        bar.value = target;
        bar.dispatchEvent(new Event('input'));
        bar.dispatchEvent(new Event('change'));
      }""",
        target,
    )
    state = wait_seq(opened, target + 3)
    assert target in state["replay"]["received"]
    # the candle shown for seq `target` is the replay's candle number `target`
    expected = api_range(chart_server.url, "AMZN.US", 5, start, "2100-01-01")[target]
    assert stamps(state)[state["replay"]["seqOfFirst"] + target] == expected
    assert_contiguous(chart_server.url, state)  # history was loaded up to the jump
    assert int(page.input_value("#progress")) >= target
    opened.shot("replay-seeked")

    page.fill("#pace", "0.02")  # a new pace applies to the running replay
    page.dispatch_event("#pace", "change")
    page.wait_for_function("window.marketdata.state().replay.lastStatus === 'speed_changed'")
    wait_seq(opened, opened.state()["replay"]["nextSeq"] + 10)
    page.click("#stop")
    page.wait_for_function("document.body.dataset.replay === 'idle'")
    assert opened.errors == []


def post_candles(base: str, candles: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        f"{base}/candles",
        data=json.dumps(candles).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer chart"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def live_candle(i: int, close: float = 10.0) -> dict[str, Any]:
    ts = datetime(2026, 7, 1, 14, 30, tzinfo=UTC) + timedelta(minutes=5 * i)
    return {
        "ticker": "LIVE.TEST",
        "tf_min": 5,
        "ts": ts.isoformat(),
        "open": 10.0,
        "high": max(11.0, close),
        "low": min(9.0, close),
        "close": close,
        "volume": 100 + i,
    }


def test_the_chart_follows_live_candles_when_the_replay_reaches_the_present(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    post_candles(chart_server.url, [live_candle(i) for i in range(30)])
    opened = open_chart(tab, chart_server.url, "?ticker=LIVE.TEST&tf=5")
    page = opened.page
    page.fill("#pace", "0.01")
    page.fill("#from", "2026-07-01T14:30")
    page.click("#play")
    page.wait_for_function("document.body.dataset.replay === 'live'")
    assert page.is_visible("#live-badge")
    opened.shot("live")
    post_candles(chart_server.url, [live_candle(30, 10.5)])
    wait_seq(opened, 31)
    state = opened.state()
    assert stamps(state)[-1] == datetime(2026, 7, 1, 17, 0, tzinfo=UTC)
    # a correction of the newest candle is drawn in its place, not as another candle
    count = len(state["candles"])
    post_candles(chart_server.url, [live_candle(30, 11.5)])
    wait_seq(opened, 32)
    state = opened.state()
    assert len(state["candles"]) == count
    assert page.evaluate("window.marketdata.state().lastClose") == 11.5
    page.click("#stop")
    page.wait_for_function("document.body.dataset.replay === 'idle'")
    assert not page.is_visible("#live-badge")
    assert opened.errors == []


def test_a_killed_socket_reconnects_with_no_gap_or_duplicate(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    opened = open_chart(tab, chart_server.front_url, "?ticker=MSFT.US&tf=5")
    page = opened.page
    page.fill("#pace", "0.05")
    page.click("#play")  # from the left edge of the view
    before = wait_seq(opened, 15)
    chart_server.front.cut()  # every connection through the proxy dies, and it stops listening
    try:
        page.wait_for_function("document.body.dataset.replay === 'reconnecting'")
        message = page.inner_text("#message")
        assert "replay connection was lost" in message
        assert "Reconnecting" in message
        opened.shot("replay-connection-lost")
        time.sleep(0.5)
    finally:
        chart_server.front.restore()
    page.wait_for_function("window.marketdata.state().replay.reconnects >= 1")
    after = wait_seq(opened, before["replay"]["nextSeq"] + 15)
    received = after["replay"]["received"]
    assert received == list(range(len(received)))  # each seq once, in order
    assert after["replay"]["nextSeq"] == len(received)
    assert_contiguous(chart_server.front_url, after)
    first = after["replay"]["seqOfFirst"]
    assert stamps(after)[first] == datetime.fromisoformat(after["replay"]["start"])
    page.wait_for_function(
        "document.getElementById('message').hidden || "
        "document.getElementById('message').textContent.includes('Reconnected')"
    )
    opened.shot("replay-reconnected")
    page.click("#stop")
    # while the proxy was down, Chromium logs each refused WebSocket: those and only those
    assert all("WebSocket" in error for error in opened.errors), opened.errors


def test_errors_read_as_messages(chart_server: ChartServer, tab: OpenTab) -> None:
    opened = open_chart(tab, chart_server.url)
    page = opened.page
    page.fill("#ticker", "NOPE.US")
    page.press("#ticker", "Enter")
    page.wait_for_selector("#message:not([hidden])")
    assert (
        page.inner_text("#message-text")
        == 'Unknown ticker "NOPE.US": no candles are stored for it.'
    )
    # the chart is drawn again on the next animation frame (late on a loaded machine)
    page.wait_for_function("window.marketdata.state().drawn === 0", timeout=10_000)
    assert opened.state()["drawn"] == 0
    opened.shot("unknown-ticker")

    empty = tab()
    empty.page.goto(f"{chart_server.url}/?ticker=AMZN.US&tf=5&end=2001-01-01T00:00:00Z")
    empty.page.wait_for_selector("#message:not([hidden])")
    assert "the range is empty" in empty.page.inner_text("#message-text")
    empty.shot("empty-range")

    opened = open_chart(tab, chart_server.url, "?ticker=AMZN.US&tf=5")
    opened.page.fill("#from", "2030-01-01T00:00")
    opened.page.click("#play")
    opened.page.wait_for_selector("#message:not([hidden])")
    assert "No candles found for ticker 'AMZN.US'" in opened.page.inner_text("#message-text")
    opened.page.wait_for_function("document.body.dataset.replay === 'idle'")
    opened.shot("replay-empty-range")

    opened.page.fill("#pace", "1000")
    opened.page.fill("#from", "")
    opened.page.click("#play")
    assert "must be between" in opened.page.inner_text("#message-text")


def test_a_database_outage_shows_the_503_and_retry_recovers(
    chart_server: ChartServer, tab: OpenTab
) -> None:
    opened = tab()
    page = opened.page
    chart_server.database.cut()
    try:
        page.goto(chart_server.url + "/?ticker=AMZN.US&tf=5")
        page.wait_for_selector("#message:not([hidden])")
        text = page.inner_text("#message-text")
        assert text.startswith("Could not list the tickers. The database is unavailable:")
        assert page.is_visible("#retry")
        opened.shot("database-outage")
    finally:
        chart_server.database.restore()
    deadline = time.monotonic() + 20
    while opened.state()["drawn"] == 0:
        assert time.monotonic() < deadline, page.inner_text("#message")
        if page.is_visible("#retry"):
            page.click("#retry")
        page.wait_for_timeout(300)
    opened.shot("database-back")
    # Chromium logs each failed fetch as an error: the 503s, and nothing else
    assert all("503" in error for error in opened.errors), opened.errors


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_theme_follows_the_system_and_the_canvas_is_sharp_on_high_dpi(
    chart_server: ChartServer, tab: OpenTab, scheme: str
) -> None:
    opened = open_chart(
        tab, chart_server.url, "?ticker=AMZN.US&tf=5", color_scheme=scheme, device_scale_factor=2
    )
    size = opened.page.evaluate(
        "(() => { const c = document.getElementById('chart');"
        " return [c.width, c.height, c.clientWidth, c.clientHeight]; })()"
    )
    assert size[0] == 2 * size[2]
    assert size[1] == 2 * size[3]
    background = canvas_pixels(opened)["background"]
    assert background < 100 if scheme == "dark" else background > 700
    opened.shot(scheme)
    assert opened.errors == []
