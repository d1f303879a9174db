"""Live bars are history's bars: candles of the real files written as a feed handler does
(plain SQL, in chunks that cut bars) while a `/ws/live` subscriber watches them with each
bar option, several timeframes and several tickers. Each bar's last version equals what REST
answers afterwards and what the plain-Python reference makes; the updates come in the order
a forming replay of the same candles sends them; deletions reach the subscribers."""

import asyncio
import json
import queue
from collections.abc import Iterator
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from marketdata.adapters.postgres import rollups
from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.candles import Candle
from marketdata.domain.ingest import IngestOptions
from marketdata.domain.timeframes import Rollup
from tests.reference import Spec, bars, first_difference, same
from tests.support import DATA, WARSAW, AppFactory, Client, ingest

NY = "America/New_York"
MOSCOW = IngestOptions(tz=ZoneInfo("Europe/Moscow"), ticker="SBER", tf_min=5)
AUTH = {"Authorization": "Bearer k"}


@pytest.fixture(scope="module")
def files(database_factory: Any) -> dict[str, list[Candle]]:
    """The candles of the real files, as the service's own ingest reads them (their times
    are local times of their exchanges), from a scratch database."""
    url: str = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    ingest(url, [DATA / "amzn.us.txt", DATA / "msft.us.txt"], WARSAW)
    ingest(url, [DATA / "BTCUSDT-1m-2022-08.csv"], IngestOptions())
    ingest(url, [DATA / "TQBR.SBER_M5.csv"], MOSCOW)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ticker, tf_min, ts, open, high, low, close, volume, openint FROM candles"
            " ORDER BY ticker, ts"
        ).fetchall()
    found: dict[str, list[Candle]] = {}
    for row in rows:
        found.setdefault(row[0], []).append(Candle(*row))
    return found


def write_in_chunks(url: str, candles: list[Candle], size: int) -> None:
    """As a feed handler: one INSERT a chunk of about `size`, in time order, the candles of
    one time in one chunk (live sends a write's bars in replay order, and writes in commit
    order); chunks end inside bars."""
    ordered = sorted(candles, key=lambda c: (c.ts, c.ticker))
    chunks: list[list[Candle]] = [[]]
    for c in ordered:
        if len(chunks[-1]) >= size and chunks[-1][-1].ts != c.ts:
            chunks.append([])
        chunks[-1].append(c)
    with psycopg.connect(url, autocommit=True) as conn:
        for chunk in chunks:
            columns = zip(*(_row(c) for c in chunk), strict=True)
            conn.execute(
                "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume,"
                " openint) SELECT * FROM unnest(%s::text[], %s::int4[], %s::timestamptz[],"
                " %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::float8[],"
                " %s::int8[])",
                [list(column) for column in columns],
            )


def _row(c: Candle) -> tuple[Any, ...]:
    return (c.ticker, c.tf_min, c.ts, c.open, c.high, c.low, c.close, c.volume, c.openint)


def drained(ws: Any, quiet: float = 2.0) -> list[dict[str, Any]]:
    """Every message until none comes for `quiet` seconds."""
    messages = []
    while True:
        try:
            messages.append(json.loads(ws.receive_text(timeout=quiet)))
        except queue.Empty:
            return messages


def replayed(client: Client, query: str) -> list[dict[str, Any]]:
    with client.websocket_connect(f"/ws/replay?step_seconds=0&forming=true&{query}") as ws:
        messages = []
        while (message := json.loads(ws.receive_text(timeout=30)))["type"] != "STATUS" or (
            message["message"] != "replay_complete"
        ):
            if message["type"] == "CANDLE":
                messages.append(message)
    return messages


def without_resends(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live sends a bar once more, final, when a later bucket begins in another write than
    its last candle; history knew it from the next candle, and marked that update final:
    the copy folded into the update it repeats."""
    last: dict[tuple[str, int, str], dict[str, Any]] = {}
    kept = []
    for m in messages:
        key = (m["candle"]["ticker"], m["candle"]["tf_min"], m["candle"]["ts"])
        before = last.get(key)
        if before is not None and before["candle"] == m["candle"] and m.get("final"):
            before["final"] = True
            continue
        last[key] = m = dict(m)
        kept.append(m)
    return kept


@pytest.fixture
def client(app_factory: AppFactory, db_url: str) -> Iterator[Client]:
    asyncio.run(rollups.sync(DatabaseConfig(url=db_url), [Rollup(15), Rollup(60), Rollup(1440)]))
    with app_factory(api_keys="k") as started:
        yield started


SESSION = (time(9, 30), time(16))
CASES = [
    # an equity's hours from its open and its days, both kept to the regular session and
    # labelled by their close, across New York's change to summer time
    (
        ["AMZN.US"],
        "tf_min=60,1440&tz=America/New_York&session=09:30-16:00&day_start=09:30&label=close",
        [
            Spec(60, True, NY, day_start=time(9, 30), session=SESSION, label="close"),
            Spec(1440, True, NY, day_start=time(9, 30), session=SESSION, label="close"),
        ],
    ),
    # two tickers' stored bars and their weeks in New York (from a Monday)
    (
        ["AMZN.US", "MSFT.US"],
        "tf_min=5,10080&tz=America/New_York",
        [Spec(5, False, NY), Spec(10080, True, NY)],
    ),
    # 24/7 minutes as UTC hours and days
    (["BTCUSDT"], "tf_min=60,1440", [Spec(60, True), Spec(1440, True)]),
    # Moscow's hours kept to its session, with the holes of the feed
    (
        ["SBER"],
        "tf_min=60&tz=Europe/Moscow&session=10:00-18:45",
        [Spec(60, True, "Europe/Moscow", session=(time(10), time(18, 45)))],
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("tickers", "query", "specs"), CASES)
def test_each_live_bar_ends_as_history_builds_it(
    client: Client,
    db_url: str,
    files: dict[str, list[Candle]],
    tickers: list[str],
    query: str,
    specs: list[Spec],
) -> None:
    candles = [c for t in tickers for c in files[t]]
    with client.websocket_connect(f"/ws/live?tickers={','.join(tickers)}&{query}") as ws:
        assert json.loads(ws.receive_text(timeout=10))["message"] == "live"
        write_in_chunks(db_url, candles, 97)
        messages = drained(ws)
    sent = [m for m in messages if m["type"] == "CANDLE"]
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert len(sent) == len(messages)  # nothing but candles
    # in the order a forming replay of the same candles sends them, no more, no less
    history = replayed(client, f"tickers={','.join(tickers)}&{query}")
    live = without_resends(sent)
    assert [(m["candle"], m.get("final")) for m in live] == [
        (m["candle"], m.get("final")) for m in history
    ]
    for ticker in tickers:
        for spec in specs:
            last: dict[str, dict[str, Any]] = {}
            for m in sent:
                if (m["candle"]["ticker"], m["candle"]["tf_min"]) == (ticker, spec.tf_min):
                    last[m["candle"]["ts"]] = m
            got = [m["candle"] for _, m in sorted(last.items())]
            words = dict(part.split("=") for part in query.split("&"))
            rest = client.get(
                "/candles", params={**words, "ticker": ticker, "tf_min": spec.tf_min, "limit": 5000}
            ).json()["data"]
            assert same(got, rest), (ticker, spec.tf_min, first_difference(got, rest))
            made = bars(spec, files[ticker], ticker)
            assert same(got, made), (ticker, spec.tf_min, first_difference(got, made))
            if spec.resampled:  # every bar final at last, but the one still forming
                assert all(m.get("final") for _, m in sorted(last.items())[:-1])


def test_deletions_reach_live_clients_and_changed_bars_come_again(
    client: Client, db_url: str, files: dict[str, list[Candle]]
) -> None:
    day = [c for c in files["BTCUSDT"] if c.ts.hour < 3]  # three hours of minutes
    write_in_chunks(db_url, day, 1000)
    with client.websocket_connect("/ws/live?ticker=BTCUSDT&tf_min=1,60") as ws:
        assert json.loads(ws.receive_text(timeout=10))["message"] == "live"
        gone = client.delete(
            "/candles",
            params={
                "ticker": "BTCUSDT",
                "tf_min": 1,
                "start": "2022-08-01T01:10:00Z",
                "end": "2022-08-01T01:19:00Z",
            },
            headers=AUTH,
        )
        assert gone.json() == {"deleted": 10}
        messages = drained(ws, quiet=1.5)
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    kinds = [(m["type"], m.get("tf_min") or m["candle"]["tf_min"]) for m in messages]
    assert kinds == [("REMOVED", 60), ("REMOVED", 1), ("CANDLE", 60)]  # by the spans' starts
    hourly, stored, again = messages
    assert (stored["start"], stored["end"]) == ("2022-08-01T01:10:00Z", "2022-08-01T01:19:00Z")
    assert (hourly["start"], hourly["end"]) == ("2022-08-01T01:00:00Z", "2022-08-01T01:00:00Z")
    rest = client.get("/candles", params={"ticker": "BTCUSDT", "tf_min": 60}).json()["data"]
    assert same([again["candle"]], [rest[1]])  # the hour as it stands, again, with a revision
    assert again["revision"] > 0
    assert again["final"] is True


def test_a_bar_ended_by_a_later_one_is_sent_final_once(
    client: Client, db_url: str, files: dict[str, list[Candle]]
) -> None:
    # Hour 0 ends early (its last minute 00:30): it is final when hour 1 begins, and then
    # only; correcting hour 1's candle, writing it again (deleted and inserted in one
    # transaction) or filling hour 1 in later sends hour 1, not hour 0 again.
    minutes = {c.ts.strftime("%H:%M"): c for c in files["BTCUSDT"][:120]}
    write_in_chunks(db_url, [c for at, c in minutes.items() if at <= "00:30"], 1000)
    at = "ticker = 'BTCUSDT' AND ts = '2022-08-01 01:05Z'"
    with client.websocket_connect("/ws/live?ticker=BTCUSDT&tf_min=60") as ws:
        assert json.loads(ws.receive_text(timeout=10))["message"] == "live"
        write_in_chunks(db_url, [minutes["01:05"]], 1)  # hour 1 begins: hour 0 final
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f"UPDATE candles SET close = close + 1 WHERE {at}")
        with psycopg.connect(db_url) as conn:
            conn.execute(f"DELETE FROM candles WHERE {at}")
            conn.execute(
                "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
                " VALUES ('BTCUSDT', 1, '2022-08-01 01:05Z', 1, 2, 0.5, 1.5, 1)"
            )
        write_in_chunks(db_url, [minutes["01:02"]], 1)  # out of order, inside hour 1
        messages = drained(ws, quiet=1.5)
    sent = [(m["candle"]["ts"], m.get("final", False)) for m in messages if m["type"] == "CANDLE"]
    assert sent == [
        ("2022-08-01T00:00:00Z", True),
        ("2022-08-01T01:00:00Z", False),
        ("2022-08-01T01:00:00Z", False),  # corrected
        ("2022-08-01T01:00:00Z", False),  # written again: as the deletion left it,
        ("2022-08-01T01:00:00Z", False),  # then with the candle inserted
        ("2022-08-01T01:00:00Z", False),  # and filled in
    ]


def test_a_bar_s_last_version_holds_what_committed_before_it_whatever_the_xids(
    client: Client, db_url: str, files: dict[str, list[Candle]]
) -> None:
    # A transaction takes its id at its first write, not at its commit: here the later id
    # commits first. The bar sent last must hold both transactions' candles.
    minutes = {c.ts.strftime("%H:%M"): c for c in files["BTCUSDT"][:120]}
    write_in_chunks(db_url, [minutes["00:00"]], 1)
    insert = (
        "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume)"
        " VALUES ('BTCUSDT', 1, %s, 1, 2, 0.5, 1.5, %s)"
    )
    with client.websocket_connect("/ws/live?ticker=BTCUSDT&tf_min=60") as ws:
        assert json.loads(ws.receive_text(timeout=10))["message"] == "live"
        with psycopg.connect(db_url) as first, psycopg.connect(db_url) as second:
            first.execute("SELECT pg_current_xact_id()")  # the lower id, committed last
            second.execute(insert, ("2022-08-01 00:05Z", 10))
            second.commit()
            first.execute(insert, ("2022-08-01 00:20Z", 100))
            first.commit()
        messages = drained(ws, quiet=1.5)
    last = [m["candle"] for m in messages if m["type"] == "CANDLE"][-1]
    rest = client.get("/candles", params={"ticker": "BTCUSDT", "tf_min": 60}).json()["data"]
    assert last["volume"] == rest[0]["volume"] == minutes["00:00"].volume + 110
