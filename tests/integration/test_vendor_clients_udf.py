"""TradingView's UDF datafeed against a running server. There is no Python client: `Datafeed`
below does what the Charting Library's `UDFCompatibleDatafeed` does (its requester, symbol
resolution, history provider and data pulse, read from its TypeScript source): the same
requests in the same order, the same reading of the answers, the same pulse logic."""

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.ingest import IngestOptions
from tests.factories import series
from tests.support import DATA, free_port, get_json, ingest, insert, served

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

KEY = "udf-key"
DAY = datetime(2022, 8, 1, tzinfo=UTC)  # BTCUSDT's minutes
LIVE = datetime(2024, 7, 1, 9, tzinfo=UTC)  # LIVEUSDT: one minute, the rest posted

Bar = dict[str, float]


class Rejected(Exception):
    """What the datafeed's promise rejects with."""


class Datafeed:
    """The UDF datafeed as the Charting Library's adapter runs it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[str] = []
        self.config = self._send("config")
        # the adapter throws unless exactly one of them is on
        assert self.config["supports_search"] != self.config["supports_group_request"]
        self._subscribers: dict[str, dict[str, Any]] = {}

    def _send(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """requester.ts: GET url/path?k=v&..., then JSON.parse of the text, whatever the
        status."""
        query = urllib.parse.urlencode(params or {})
        self.requests.append(f"{path}?{query}")
        try:
            with urllib.request.urlopen(f"{self.url}/{path}?{query}", timeout=10) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            text = error.read().decode()
        return json.loads(text)

    def resolve(self, name: str) -> dict[str, Any]:
        """resolveSymbol: an answer with `s` is unknown_symbol."""
        info: dict[str, Any] = self._send("symbols", {"symbol": name})
        if "s" in info:
            raise Rejected("unknown_symbol")
        info.setdefault("supported_resolutions", self.config["supported_resolutions"])
        return info

    def server_time(self) -> int:
        return int(self._send("time"))

    def get_bars(
        self,
        info: dict[str, Any],
        resolution: str,
        start: int,
        to: int,
        count_back: int | None = None,
    ) -> tuple[list[Bar], dict[str, Any]]:
        """history-provider.ts getBars: the answer as bars (time in ms) and meta."""
        params: dict[str, Any] = {
            "symbol": info.get("ticker") or "",
            "resolution": resolution,
            "from": start,
            "to": to,
        }
        if count_back is not None:
            params["countback"] = count_back
        response = self._send("history", params)
        if response["s"] not in ("ok", "no_data"):
            raise Rejected(response["errmsg"])
        meta: dict[str, Any] = {"noData": False}
        bars: list[Bar] = []
        if response["s"] == "no_data":
            meta = {"noData": True, "nextTime": response.get("nextTime")}
        else:
            for i, t in enumerate(response["t"]):
                bar = {"time": t * 1000, "close": float(response["c"][i])}
                bar |= {"open": bar["close"], "high": bar["close"], "low": bar["close"]}
                if "o" in response:
                    bar |= {
                        "open": float(response["o"][i]),
                        "high": float(response["h"][i]),
                        "low": float(response["l"][i]),
                    }
                if "v" in response:
                    bar["volume"] = float(response["v"][i])
                bars.append(bar)
        return bars, meta

    # data-pulse-provider.ts

    def subscribe_bars(
        self, info: dict[str, Any], resolution: str, listener: Callable[[Bar], None], guid: str
    ) -> None:
        self._subscribers[guid] = {
            "lastBarTime": None,
            "listener": listener,
            "resolution": resolution,
            "symbolInfo": info,
        }

    def pulse(self) -> None:
        """One tick of the update interval: the last two bars up to now, per subscriber."""
        for record in self._subscribers.values():
            to = int(time.time())
            start = to - period_length_seconds(record["resolution"], 10)
            bars, _ = self.get_bars(record["symbolInfo"], record["resolution"], start, to, 2)
            if not bars:
                continue
            last = bars[-1]
            if record["lastBarTime"] is not None and last["time"] < record["lastBarTime"]:
                continue
            if record["lastBarTime"] is not None and last["time"] > record["lastBarTime"]:
                if len(bars) < 2:
                    raise Rejected("Not enough bars in history for proper pulse update.")
                record["listener"](bars[-2])
            record["lastBarTime"] = last["time"]
            record["listener"](last)


def period_length_seconds(resolution: str, periods: int) -> int:
    if resolution in ("D", "1D"):
        days = periods
    elif resolution in ("M", "1M"):
        days = 31 * periods
    elif resolution in ("W", "1W"):
        days = 7 * periods
    else:
        days = periods * int(resolution) / (24 * 60)
    return int(days * 24 * 60 * 60)


@pytest.fixture(scope="module")
def base(database_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url: str = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    assert ingest(url, [DATA / "BTCUSDT-1m-2022-08.csv"], IngestOptions()) == 0
    insert(url, series("LIVEUSDT", 1, 1, LIVE))
    port = free_port()
    cwd: Path = tmp_path_factory.mktemp("udf")
    with served(cwd, url, port, API_KEYS=KEY, LOG_LEVEL="WARNING"):
        yield f"http://127.0.0.1:{port}"


def ours(base: str, ticker: str, tf_min: int) -> list[Bar]:
    status, body = get_json(f"{base}/candles?ticker={ticker}&tf_min={tf_min}&limit=5000")
    assert status == 200
    data: list[dict[str, Any]] = body["data"]  # type: ignore[assignment]
    return [
        {
            "time": datetime.fromisoformat(c["ts"]).timestamp() * 1000,
            **{k: c[k] for k in ("open", "high", "low", "close", "volume")},
        }
        for c in data
    ]


def post(base: str, ts: datetime, close: float, volume: float) -> None:
    row = {"ticker": "LIVEUSDT", "tf_min": 1, "ts": ts.isoformat(), "open": 1.0}
    row |= {"high": 9.0, "low": 0.5, "close": close, "volume": volume}
    request = urllib.request.Request(
        f"{base}/candles",
        data=json.dumps([row]).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_a_chart_loads_and_scrolls_back_through_every_bar(base: str) -> None:
    feed = Datafeed(f"{base}/udf")
    info = feed.resolve("BTCUSDT")
    assert "1" in info["supported_resolutions"]
    assert abs(feed.server_time() - time.time()) < 5
    # the first request: bars up to now; then each earlier page up to the first bar's time
    to = int(time.time())
    loaded: list[Bar] = []
    while True:
        bars, meta = feed.get_bars(info, "1", to - 300 * 60, to, 300)
        if meta["noData"]:
            break
        assert len(bars) <= 300
        assert all(b["time"] < to * 1000 for b in bars)
        loaded = bars + loaded
        to = int(bars[0]["time"] // 1000)
    assert meta == {"noData": True, "nextTime": None}  # nothing older
    assert loaded == ours(base, "BTCUSDT", 1)
    assert len([r for r in feed.requests if r.startswith("history")]) == 6  # 5 x 300, then none


def test_a_resampled_resolution_and_a_gap_with_next_time(base: str) -> None:
    feed = Datafeed(f"{base}/udf")
    info = feed.resolve("MARKETDATA:BTCUSDT")
    day = int(DAY.timestamp())
    bars, _ = feed.get_bars(info, "60", day, day + 86400)
    assert [b["time"] for b in bars] == [b["time"] for b in ours(base, "BTCUSDT", 60)]
    assert bars == [pytest.approx(b) for b in ours(base, "BTCUSDT", 60)]
    # a range after the data (an older library, no countback): where the last bar is
    later = day + 40 * 86400
    none, meta = feed.get_bars(info, "60", later, later + 86400)
    assert none == []
    assert meta == {"noData": True, "nextTime": day + 23 * 3600}
    found, _ = feed.get_bars(info, "60", meta["nextTime"], meta["nextTime"] + 3600)
    assert [b["time"] for b in found] == [meta["nextTime"] * 1000]


def test_the_pulse_shows_a_new_bar_on_the_next_poll(base: str) -> None:
    feed = Datafeed(f"{base}/udf")
    info = feed.resolve("LIVEUSDT")
    minutes: list[Bar] = []
    fives: list[Bar] = []
    feed.subscribe_bars(info, "1", minutes.append, "1m")
    feed.subscribe_bars(info, "5", fives.append, "5m")
    feed.pulse()
    start = LIVE.timestamp() * 1000
    assert [b["time"] for b in minutes] == [start]
    assert [(b["time"], b["volume"]) for b in fives] == [(start, 1000.0)]
    post(base, LIVE + timedelta(minutes=1), close=2.0, volume=7.0)
    feed.pulse()
    # a new minute: the previous bar first (final), then the new one; the 5-minute bar grows
    assert [b["time"] for b in minutes] == [start, start, start + 60_000]
    assert minutes[-1]["close"] == 2.0
    assert [(b["time"], b["close"], b["volume"]) for b in fives[1:]] == [(start, 2.0, 1007.0)]
    post(base, LIVE + timedelta(minutes=1), close=2.5, volume=8.0)  # corrected
    feed.pulse()
    assert [b["time"] for b in minutes[3:]] == [start + 60_000]
    assert minutes[-1]["close"] == 2.5
    assert [(b["time"], b["close"], b["volume"]) for b in fives[2:]] == [(start, 2.5, 1008.0)]


def test_the_datafeed_rejects_what_is_wrong(base: str) -> None:
    feed = Datafeed(f"{base}/udf")
    with pytest.raises(Rejected, match="unknown_symbol"):
        feed.resolve("NOPE")
    info = feed.resolve("BTCUSDT")
    with pytest.raises(Rejected, match="resolution"):
        feed.get_bars(info, "1M", 0, int(time.time()), 2)
    with pytest.raises(Rejected, match="from"):
        feed.get_bars(info, "1", int(time.time()), 0)
    with pytest.raises(Rejected, match="unknown_symbol"):
        feed.get_bars({"ticker": "NOPE"}, "1", 0, int(time.time()), 2)
