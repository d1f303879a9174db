"""Conditional requests, answers kept in the process, compression: through the app against
real PostgreSQL, with the repository's reads counted."""

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
import pytest
from dishka import Provider, Scope, provide

from marketdata.adapters.postgres.known import KnownSeries
from marketdata.adapters.postgres.pool import Database
from marketdata.adapters.postgres.reads import PostgresCandleRepository
from marketdata.domain.ports import CandleRepository
from tests.factories import series
from tests.support import AppFactory, Client, insert, run_sql

KEY = "k-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


class Counting(PostgresCandleRepository):
    """The repository, counting the reads that reach the database."""

    reads: ClassVar[Counter[str]] = Counter()
    knowledge: ClassVar[KnownSeries]

    def __init__(self, database: Database, known: KnownSeries) -> None:
        super().__init__(database, known)
        Counting.knowledge = known

    async def encoded(self, plan: Any, extra: int = 0) -> Any:
        Counting.reads["candle_range" if plan.ranged else "candles"] += 1
        return await super().encoded(plan, extra)

    async def bars(self, plan: Any, extra: int = 0) -> Any:  # (the vendor protocols' reads)
        Counting.reads["candle_range" if plan.ranged else "candles"] += 1
        return await super().bars(plan, extra)

    async def holdings(self, tickers: Any) -> Any:
        if self.known(tickers[0]) is None:
            Counting.reads["holdings"] += 1
        return await super().holdings(tickers)


class CountingProvider(Provider):
    scope = Scope.APP

    @provide(override=True)
    def repository(self, database: Database, known: KnownSeries) -> CandleRepository:
        return Counting(database, known)


@pytest.fixture
def client(app_factory: AppFactory, db_url: str) -> Iterator[Client]:
    Counting.reads.clear()
    # A and B: 5-minute candles (A's hours are resampled from them); A also stores days
    insert(db_url, series("A", 300) + series("B", 300) + series("A", 20, tf_min=1440))
    with app_factory(CountingProvider(), api_keys=KEY, response_cache_mb=64) as client:
        for _ in range(100):  # until the live listener is up: A is known from then on
            client.get("/candles?ticker=A")
            if Counting.knowledge.get("A") is not None:
                break
            time.sleep(0.05)
        yield client


def write(client: Client, ticker: str, minutes: int, close: float) -> None:
    ts = datetime(2024, 1, 2, 14, 30, tzinfo=UTC) + timedelta(minutes=minutes)
    candle = {
        "ticker": ticker,
        "tf_min": 5,
        "ts": ts.isoformat(),
        "open": close,
        "high": close + 1,
        "low": close - 1,
        "close": close,
        "volume": 1,
        "openint": 0,
    }
    assert client.post("/candles", json=[candle], headers=AUTH).status_code == 200


URLS = {
    "A 5m": "/candles?ticker=A&tf_min=5&limit=50",
    "A 1h (resampled from 5m)": "/candles?ticker=A&tf_min=60",
    "A 5m range": "/candles/range?ticker=A&start=2024-01-02&end=2024-01-03&tf_min=5",
    "A days (stored)": "/candles?ticker=A&tf_min=1440",
    "B 5m": "/candles?ticker=B&tf_min=5",
    "A coverage": "/symbols/A",
    "B coverage": "/symbols/B",
    "symbols": "/symbols",
}


def tags(client: Client) -> dict[str, str]:
    found = {}
    for name, url in URLS.items():
        response = client.get(url)
        assert response.status_code == 200, url
        found[name] = response.headers["etag"]
    return found


def test_a_write_changes_the_etags_of_its_series_and_no_other(client: Client) -> None:
    before = tags(client)
    assert all(t.startswith('"') and t.endswith('"') for t in before.values())  # strong
    write(client, "A", 10, 123.0)  # a candle of A's 5-minute series, changed
    after = tags(client)
    changed = {name for name in URLS if before[name] != after[name]}
    assert changed == {"A 5m", "A 1h (resampled from 5m)", "A 5m range", "A coverage", "symbols"}


@pytest.mark.parametrize("name", list(URLS))
def test_if_none_match_gets_304_with_no_body(client: Client, name: str) -> None:
    first = client.get(URLS[name])
    again = client.get(URLS[name], headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    other = client.get(URLS[name], headers={"If-None-Match": '"0.nope", W/"1.nope"'})
    assert other.status_code == 200
    listed = client.get(URLS[name], headers={"If-None-Match": f'"x", W/{first.headers["etag"]}'})
    assert listed.status_code == 304


def test_a_304_and_a_repeated_question_read_no_candles(client: Client) -> None:
    url = "/candles?ticker=A&tf_min=60&limit=100"
    first = client.get(url)
    reads = Counting.reads.copy()
    assert client.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    again = client.get(url)
    assert again.json() == first.json()
    assert Counting.reads == reads  # neither read candles, nor the catalog
    write(client, "A", 15, 99.0)
    fresh = client.get(url)
    assert fresh.json() != first.json()  # the write is seen at once by this process
    assert fresh.headers["etag"] != first.headers["etag"]


def test_a_timeframe_not_stored_is_one_read(client: Client) -> None:
    Counting.reads.clear()
    response = client.get("/candles?ticker=A&tf_min=15&limit=10&order=desc")
    assert response.status_code == 200
    assert Counting.reads == Counter(candles=1)  # no stored read first, no catalog read


def test_cache_control_follows_the_setting(app_factory: AppFactory, db_url: str) -> None:
    insert(db_url, series("C", 10))
    with app_factory() as client:
        assert client.get("/candles?ticker=C").headers["cache-control"] == "no-cache"
    with app_factory(cache_max_age=300) as client:
        response = client.get("/candles?ticker=C")
        assert response.headers["cache-control"] == "public, max-age=300"
        assert client.get("/symbols").headers["cache-control"] == "public, max-age=300"


def test_nothing_found_has_no_etag(client: Client) -> None:
    response = client.get("/candles?ticker=NOPE")
    assert response.status_code == 404
    assert "etag" not in response.headers


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_bodies_are_compressed_when_asked_for(client: Client, encoding: str) -> None:
    url = "/candles?ticker=A&limit=300"
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    response = client.get(url, headers={"Accept-Encoding": encoding})
    assert response.headers["content-encoding"] == encoding
    assert int(response.headers["content-length"]) < len(plain.content) / 5  # as sent
    assert response.json() == plain.json()  # as the client decodes it
    small = client.get("/symbols?limit=1", headers={"Accept-Encoding": encoding})
    assert "content-encoding" not in small.headers  # under the threshold
    export = client.get(f"{url}&format=csv", headers={"Accept-Encoding": encoding})
    assert export.headers["content-encoding"] == encoding  # streamed exports too
    assert export.text.count("\n") == 301


def test_each_representation_has_its_own_tag(client: Client) -> None:
    url = "/candles?ticker=A&limit=20"
    json_tag = client.get(url).headers["etag"]
    csv = client.get(url, headers={"Accept": "text/csv"})
    assert csv.headers["etag"] != json_tag
    assert (
        client.get(url, headers={"Accept": "text/csv", "If-None-Match": json_tag}).status_code
        == 200
    )
    parquet = client.get(f"{url}&format=parquet")
    assert len({json_tag, csv.headers["etag"], parquet.headers["etag"]}) == 3


QUESTIONS = [
    "/candles?ticker=A&tf_min=5&limit=7",
    "/candles?ticker=A&tf_min=15&limit=7&order=desc",  # resampled from 5m
    "/candles?ticker=A&tf_min=1440&limit=7",  # stored
    "/candles?ticker=A&tf_min=10080&limit=7",  # resampled from days
    "/candles/range?ticker=A&start=2024-01-02&end=2024-01-03&tf_min=30&limit=7",
    "/candles?ticker=B&tf_min=60&limit=7",
]


def round_trips(client: Client, url: str) -> tuple[int, Any]:
    Counting.reads.clear()
    response = client.get(url)
    assert response.status_code == 200, url
    return sum(Counting.reads.values()), response


@pytest.mark.parametrize("knowledge", ["up to date", "stale", "none"])
def test_a_new_question_of_any_timeframe_is_one_round_trip(
    client: Client, db_url: str, knowledge: str
) -> None:
    """Known up to date, the plan costs nothing; else it is a guess that the read checks,
    in its own statement: one round trip either way, as right as the other."""
    answers = {url: client.get(url).json() for url in QUESTIONS}
    if knowledge == "none":  # the listener is behind: nothing is known up to date
        Counting.knowledge.pending = lambda: True
    for i, url in enumerate(QUESTIONS):
        if knowledge == "stale":  # another program wrote A and B: what was known is a hint
            for change in ("+ 1", "- 1"):
                run_sql(db_url, f"UPDATE candles SET volume = volume {change}")
            while Counting.knowledge.get(url.split("=")[1].split("&")[0]) is not None:
                time.sleep(0.01)  # until this process has heard of it
        trips, response = round_trips(client, f"{url}&q={i}")  # never asked: nothing kept
        assert trips == 1, url
        assert response.json() == answers[url]
        assert response.headers["etag"] == client.get(url).headers["etag"]


def test_a_wrong_guess_is_read_again_and_answers_right(client: Client, db_url: str) -> None:
    url = "/candles?ticker=A&tf_min=1440&limit=5"
    stored = client.get(url).json()["data"]
    run_sql(db_url, "DELETE FROM candles WHERE ticker = 'A' AND tf_min = 1440")
    trips, response = round_trips(client, f"{url}&again")  # guessed stored: now resampled
    # 2: the guess read with the catalog's row, then the right read; 3 when the DELETE's
    # notification had not arrived yet (the known plan found nothing, and is read again)
    assert trips in (2, 3)
    assert response.json()["data"] != stored
    assert response.json() == client.get("/candles?ticker=A&tf_min=1440&limit=5&x").json()
    run_sql(db_url, "DELETE FROM candles WHERE ticker = 'A'")
    assert client.get(f"{url}&gone").status_code == 404


def test_the_symbols_etag_changes_whenever_the_list_does(client: Client, db_url: str) -> None:
    # Versions are taken by statements, not at commit: a transaction that took its version
    # early and commits late can swap one ticker for another under the same highest version
    # and the same number of series.
    insert(db_url, series("OLD", 3))
    columns = "ticker, tf_min, ts, open, high, low, close, volume"
    with psycopg.connect(db_url) as late, psycopg.connect(db_url, autocommit=True) as early:
        late.execute("DELETE FROM candles WHERE ticker = 'OLD'")
        late.execute(
            f"INSERT INTO candles ({columns}) SELECT 'NEW', {columns[8:]}"
            " FROM (SELECT * FROM candles WHERE ticker = 'B' LIMIT 3) b"
        )
        early.execute(
            f"INSERT INTO candles ({columns}) SELECT 'C', {columns[8:]}"
            " FROM (SELECT * FROM candles WHERE ticker = 'B' LIMIT 3) b"
        )
        before = client.get("/symbols")
        late.commit()
    after = client.get("/symbols", headers={"If-None-Match": before.headers["etag"]})
    assert "OLD" in before.json()["symbols"]
    assert after.status_code == 200
    assert "NEW" in after.json()["symbols"]
