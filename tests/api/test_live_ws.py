"""`WS /ws/live` and `WS /ws/replay?...&live=true` through the app, against real PostgreSQL,
with a writer committing candles from another thread (as another instance or
`marketdata ingest` would)."""

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.writes import PostgresCandleWriter
from marketdata.domain.ingest import Row
from tests.support import AppFactory

START = datetime(2024, 6, 3, 13, 30, tzinfo=UTC)


def row(ticker: str, i: int, price: float = 100.0) -> Row:
    return (ticker, 5, START + timedelta(minutes=5 * i), price, price + 1, price - 1, price, i, 0)


class Writer(threading.Thread):
    """Commits candles one write at a time, `pause` apart, from a thread of its own."""

    def __init__(self, url: str, rows: list[list[Row]], pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.url, self.rows, self.pause = url, rows, pause
        self.error: BaseException | None = None

    def run(self) -> None:
        async def write() -> None:
            database = Database(DatabaseConfig(url=self.url, pool_min_size=1))
            await database.open()
            try:
                writer = PostgresCandleWriter(database)
                for rows in self.rows:
                    await writer.write(rows)
                    await asyncio.sleep(self.pause)
            finally:
                await database.close()

        try:
            asyncio.run(write())
        except BaseException as error:
            self.error = error


def receive(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.receive_text())
    return message


def test_live_sends_each_committed_candle_with_revisions(
    app_factory: AppFactory, db_url: str
) -> None:
    with app_factory() as client, client.websocket_connect("/ws/live?tickers=LA,LB&tf_min=5") as ws:
        started = receive(ws)
        assert (started["type"], started["message"]) == ("STATUS", "live")
        writer = Writer(
            db_url,
            [[row("LA", 0)], [row("LB", 0), row("LA", 1)], [row("LA", 0, 99.5)], [row("LC", 0)]],
        )
        writer.start()
        got = [receive(ws) for _ in range(4)]
        writer.join()
        assert writer.error is None
        assert [m["seq"] for m in got] == [0, 1, 2, 3]
        assert [(m["candle"]["ticker"], m["candle"]["ts"], m.get("revision")) for m in got] == [
            ("LA", "2024-06-03T13:30:00Z", None),
            ("LB", "2024-06-03T13:30:00Z", None),  # one write: in replay order (close, ticker)
            ("LA", "2024-06-03T13:35:00Z", None),
            ("LA", "2024-06-03T13:30:00Z", 1),  # written again with other values
        ]
        assert got[3]["candle"]["close"] == 99.5
        assert "revision" not in got[3]["candle"]


def test_live_hears_every_ticker_of_a_transaction_of_many_statements(
    app_factory: AppFactory, db_url: str
) -> None:
    # A feed handler's transaction: a statement per ticker (psycopg's executemany, pandas'
    # to_sql in chunks); each statement notifies its own tickers, all at the commit.
    insert = (
        "INSERT INTO candles (ticker, tf_min, ts, open, high, low, close, volume, openint)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    with (
        app_factory() as client,
        client.websocket_connect("/ws/live?tickers=MA,MB,MC&tf_min=5") as ws,
    ):
        assert receive(ws)["message"] == "live"
        with psycopg.connect(db_url) as conn:
            for ticker, i in (("MA", 0), ("MB", 0), ("MC", 0), ("MA", 1)):
                conn.execute(insert, row(ticker, i))
        got = [json.loads(ws.receive_text(timeout=10)) for _ in range(4)]
    assert sorted((m["candle"]["ticker"], m["candle"]["ts"]) for m in got) == [
        ("MA", "2024-06-03T13:30:00Z"),
        ("MA", "2024-06-03T13:35:00Z"),
        ("MB", "2024-06-03T13:30:00Z"),
        ("MC", "2024-06-03T13:30:00Z"),
    ]


def test_replay_runs_into_live_without_a_gap_or_a_repeat_while_writes_arrive(
    app_factory: AppFactory, db_url: str
) -> None:
    history = 300
    Writer(db_url, [[row("RL", i) for i in range(history)]]).run()
    extra = 200
    writer = Writer(db_url, [[row("RL", history + i)] for i in range(extra)], pause=0.003)
    with (
        app_factory(ws_page_size=20) as client,
        client.websocket_connect("/ws/replay?ticker=RL&step_seconds=0.002&live=true") as ws,
    ):
        assert receive(ws)["message"] == "replay_starting"
        writer.start()  # writes arrive while the history plays, at the switch, after it
        candles: list[dict[str, Any]] = []
        statuses: list[str] = []
        deadline = time.monotonic() + 60
        while len(candles) < history + extra and time.monotonic() < deadline:
            message = receive(ws)
            if message["type"] == "CANDLE":
                candles.append(message)
            else:
                statuses.append(message["message"])
        writer.join()
        assert writer.error is None
        ws.send_text(json.dumps({"action": "stop"}))
    assert statuses.count("live") == 1
    assert [m["seq"] for m in candles] == list(range(history + extra))
    stamps = [m["candle"]["ts"] for m in candles]
    assert stamps == sorted(set(stamps))  # in order, none twice
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT count(*) FROM candles WHERE ticker = 'RL'").fetchone()
    assert stored == (len(stamps),)


def test_a_replay_goes_live_while_a_writer_keeps_writing(
    app_factory: AppFactory, db_url: str
) -> None:
    """A busy series: 20 candles every 50 ms throughout, faster than the replay plays them.
    The replay plays what was there once it subscribed and goes live while the writer still
    writes (it once waited for the writer to stop); every candle exactly once, in order."""
    history = 300
    Writer(db_url, [[row("BZ", i) for i in range(history)]]).run()
    extra = 150 * 20  # 7.5 s of writes at twice the replay's pace
    writes = [[row("BZ", history + w * 20 + i) for i in range(20)] for w in range(150)]
    writer = Writer(db_url, writes, pause=0.05)
    with (
        app_factory(ws_page_size=20) as client,
        client.websocket_connect("/ws/replay?ticker=BZ&step_seconds=0.005&live=true") as ws,
    ):
        assert receive(ws)["message"] == "replay_starting"
        writer.start()
        candles: list[dict[str, Any]] = []
        live_while_writing = None
        deadline = time.monotonic() + 60
        while len(candles) < history + extra and time.monotonic() < deadline:
            message = receive(ws)
            if message["type"] == "CANDLE":
                candles.append(message)
            elif message["message"] == "live":
                live_while_writing = writer.is_alive()
        writer.join()
        assert writer.error is None
        ws.send_text(json.dumps({"action": "stop"}))
    assert live_while_writing is True
    assert [m["seq"] for m in candles] == list(range(history + extra))
    stamps = [m["candle"]["ts"] for m in candles]
    assert stamps == sorted(set(stamps))


def test_a_seek_into_the_past_goes_back_to_replay_then_live_again(
    app_factory: AppFactory, db_url: str
) -> None:
    Writer(db_url, [[row("SK", i) for i in range(30)]]).run()
    with (
        app_factory() as client,
        client.websocket_connect("/ws/replay?ticker=SK&step_seconds=0&live=true") as ws,
    ):
        messages = [receive(ws) for _ in range(32)]  # starting, 30 candles, live
        assert messages[-1]["message"] == "live"
        ws.send_text(json.dumps({"action": "seek", "seq": 25}))
        after = [receive(ws) for _ in range(7)]  # seeked, 5 candles, live
        assert [m.get("message") for m in after if m["type"] == "STATUS"] == ["seeked", "live"]
        assert [m["seq"] for m in after if m["type"] == "CANDLE"] == [25, 26, 27, 28, 29]
        Writer(db_url, [[row("SK", 30)]]).run()
        assert receive(ws)["seq"] == 30
