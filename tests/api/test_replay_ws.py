"""The replay protocol through Litestar's test client, against real PostgreSQL."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.exceptions import WebSocketDisconnect

from marketdata.adapters.postgres.pool import Database
from marketdata.domain.candles import Candle
from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.replay import ReplayKey, ReplaySelection, ReplaySource
from marketdata.domain.timeframes import Holdings, Series
from marketdata.entrypoints.websocket import ReplayRegistry
from tests.factories import series
from tests.support import AppFactory, Client, insert, wire

Session = Any  # litestar's WebSocketTestSession


@pytest.fixture
def stored(db_url: str) -> list[Candle]:
    candles = series("AMZN.US", 30)
    insert(db_url, candles + series("MSFT.US", 10))
    return candles


@pytest.fixture
def client(app_factory: AppFactory, stored: list[Candle]) -> Iterator[Client]:
    with app_factory(ws_page_size=7) as started:
        yield started


def receive_all(ws: Session) -> tuple[list[dict[str, Any]], int]:
    """Every message until the server closes, and the close code."""
    messages = []
    while True:
        try:
            messages.append(json.loads(ws.receive_text(timeout=10)))
        except WebSocketDisconnect as closed:
            return messages, closed.code


def candles_of(messages: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(m["seq"], m["candle"]) for m in messages if m["type"] == "CANDLE"]


def until(ws: Session, message: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        seen.append(json.loads(ws.receive_text(timeout=10)))
        if seen[-1]["type"] == "STATUS" and seen[-1]["message"] == message:
            return seen


def test_the_seed_message_sequence(client: Client, stored: list[Candle]) -> None:
    with client.websocket_connect("/ws/replay?ticker=AMZN.US&tf_min=5&step_seconds=0") as ws:
        messages, code = receive_all(ws)
    assert code == 1000
    assert messages[0] == {
        "type": "STATUS",
        "message": "replay_starting",
        "ticker": "AMZN.US",
        "tf_min": 5,
        "step_seconds": 0.0,
        "total_candles": 30,
    }
    assert candles_of(messages) == [(i, wire(c)) for i, c in enumerate(stored)]
    assert messages[-1]["type"] == "STATUS"
    assert messages[-1]["message"] == "replay_complete"
    assert messages[-1]["total_candles"] == 30
    assert len(messages) == 32


def test_defaults_come_from_settings(client: Client) -> None:
    # no tf_min: DEFAULT_TF_MIN (5); no step_seconds: WS_DEFAULT_STEP_SECONDS (15)
    with client.websocket_connect("/ws/replay?ticker=AMZN.US") as ws:
        first = json.loads(ws.receive_text(timeout=10))
        second = json.loads(ws.receive_text(timeout=10))
    assert (first["tf_min"], first["step_seconds"]) == (5, 15.0)
    assert second["seq"] == 0


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("tf_min=5", "ticker"),
        ("ticker=AMZN.US&tf_min=abc", "tf_min"),
        ("ticker=AMZN.US&tf_min=0", "tf_min"),
        ("ticker=AMZN.US&step_seconds=61", "step_seconds"),
        ("ticker=AMZN.US&step_seconds=nan", "step_seconds"),
        ("ticker=AMZN.US&speed=0", "speed"),
        ("ticker=AMZN.US&speed=10&step_seconds=5", "step_seconds"),
        ("ticker=AMZN.US&tickers=MSFT.US", "tickers"),
        ("ticker=AMZN.US&mode=turbo", "mode"),
        ("ticker=AMZN.US&start=yesterday", "start"),
        ("ticker=AMZN.US&start=2024-02-01&end=2024-01-01", "start"),
        ("ticker=AMZN.US&from_seq=-1", "from_seq"),
        ("ticker=AMZN.US&from_seq=31", "from_seq"),
        ("ticker=NOPE.US", "NOPE.US"),
        ("ticker=AMZN.US&tf_min=7", "tf_min=7"),
    ],
)
def test_bad_parameters_or_unknown_ticker_get_a_status_then_1008(
    client: Client, query: str, name: str
) -> None:
    with client.websocket_connect(f"/ws/replay?{query}") as ws:
        messages, code = receive_all(ws)
    assert code == 1008
    assert len(messages) == 1
    assert messages[0]["type"] == "STATUS"
    assert messages[0]["message"] == "error"
    assert name in messages[0]["error"]


def test_several_tickers_merge_in_timestamp_order(client: Client) -> None:
    with client.websocket_connect("/ws/replay?tickers=MSFT.US,AMZN.US&step_seconds=0") as ws:
        messages, code = receive_all(ws)
    assert code == 1000
    assert messages[0]["tickers"] == ["MSFT.US", "AMZN.US"]
    assert messages[0]["total_candles"] == 40
    candles = [c for _, c in candles_of(messages)]
    keys = [(c["ts"], c["ticker"]) for c in candles]
    assert keys == sorted(keys)
    assert [s for s, _ in candles_of(messages)] == list(range(40))


def test_range_replay(client: Client, stored: list[Candle]) -> None:
    start, end = stored[5].ts.isoformat(), stored[9].ts.isoformat()
    with client.websocket_connect(
        "/ws/replay", params={"ticker": "AMZN.US", "step_seconds": 0, "start": start, "end": end}
    ) as ws:
        messages, _ = receive_all(ws)
    assert candles_of(messages) == [(i, wire(c)) for i, c in enumerate(stored[5:10])]


def test_control_messages_are_acknowledged(client: Client, stored: list[Candle]) -> None:
    with client.websocket_connect("/ws/replay?ticker=AMZN.US&step_seconds=60") as ws:
        until(ws, "replay_starting")
        assert json.loads(ws.receive_text(timeout=10))["seq"] == 0
        ws.send_text(json.dumps({"action": "pause"}))
        until(ws, "paused")
        ws.send_text(json.dumps({"action": "step"}))
        stepped = until(ws, "stepping")
        stepped += [json.loads(ws.receive_text(timeout=10))]
        assert [m["seq"] for m in stepped if m["type"] == "CANDLE"] == [1]
        ws.send_text(json.dumps({"action": "seek", "seq": 20}))
        assert until(ws, "seeked")[-1]["seq"] == 20
        ws.send_text(json.dumps({"action": "speed", "step_seconds": 0}))
        until(ws, "speed_changed")
        ws.send_text(json.dumps({"action": "resume"}))
        rest, code = receive_all(ws)
    assert code == 1000
    assert [s for s, _ in candles_of(rest)] == list(range(20, 30))
    assert rest[-1]["message"] == "replay_complete"


def test_stop_ends_with_1000(client: Client) -> None:
    with client.websocket_connect("/ws/replay?ticker=AMZN.US&step_seconds=60") as ws:
        until(ws, "replay_starting")
        ws.send_text(json.dumps({"action": "stop"}))
        messages, code = receive_all(ws)
    assert code == 1000
    assert messages[-1]["message"] == "replay_stopped"


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        '{"action": "dance"}',
        '{"action": "seek", "seq": "ten"}',
        '{"action": "speed", "step_seconds": 999}',
        '{"action": "pause", "extra": 1}',
        "[]",
        "x" * 5000,
    ],
)
def test_garbage_frames_get_an_error_and_the_replay_goes_on(client: Client, frame: str) -> None:
    with client.websocket_connect("/ws/replay?ticker=AMZN.US&step_seconds=60") as ws:
        until(ws, "replay_starting")
        ws.send_text(frame)
        error = until(ws, "error")[-1]
        assert error["error"]
        ws.send_bytes(b"\xff\xfe")
        assert until(ws, "error")[-1]["error"]
        ws.send_text(json.dumps({"action": "speed", "step_seconds": 0}))
        messages, code = receive_all(ws)
    assert code == 1000
    assert [s for s, _ in candles_of(messages)][-1] == 29


def test_lockstep_waits_for_each_ack(client: Client) -> None:
    with client.websocket_connect("/ws/replay?ticker=AMZN.US&mode=lockstep&step_seconds=0") as ws:
        until(ws, "replay_starting")
        received = []
        for expected in range(30):
            message = json.loads(ws.receive_text(timeout=10))
            assert message["type"] == "CANDLE"
            received.append(message["seq"])
            assert received == list(range(expected + 1))
            ws.send_text('{"action": "ack"}')
            assert until(ws, "acknowledged")[0]["message"] == "acknowledged"
        messages, code = receive_all(ws)
    assert messages[-1]["message"] == "replay_complete"
    assert code == 1000


def test_from_seq_resumes_where_the_client_left(client: Client, stored: list[Candle]) -> None:
    with client.websocket_connect("/ws/replay?tickers=AMZN.US,MSFT.US&step_seconds=0") as ws:
        whole, _ = receive_all(ws)
    with client.websocket_connect(
        "/ws/replay?tickers=AMZN.US,MSFT.US&step_seconds=0&from_seq=17"
    ) as ws:
        tail, _ = receive_all(ws)
    assert candles_of(tail) == candles_of(whole)[17:]


def test_sessions_over_the_cap_are_refused_with_1013(
    app_factory: AppFactory, stored: list[Candle]
) -> None:
    app = app_factory(ws_max_sessions=1)
    with (
        app as client,
        client.websocket_connect("/ws/replay?ticker=AMZN.US&step_seconds=60") as first,
    ):
        until(first, "replay_starting")
        with client.websocket_connect("/ws/replay?ticker=AMZN.US") as second:
            messages, code = receive_all(second)
        assert code == 1013
        assert messages[0]["message"] == "server_busy"
        assert "WS_MAX_SESSIONS" in messages[0]["error"]


def test_shutdown_says_goodbye_with_1001(app_factory: AppFactory, stored: list[Candle]) -> None:
    with app_factory() as client:
        registry: ReplayRegistry = client.blocking_portal.call(
            client.app.state.dishka_container.get, ReplayRegistry
        )
        with client.websocket_connect("/ws/replay?ticker=AMZN.US&step_seconds=60") as ws:
            until(ws, "replay_starting")
            client.blocking_portal.call(registry.shutdown)
            messages, code = receive_all(ws)
    assert code == 1001
    assert messages[-1]["message"] == "server_shutdown"


class FailingSource:
    """Serves one page, then the database goes away."""

    def __init__(self, candles: list[Candle]) -> None:
        self.candles = candles
        self.pages = 0

    async def holdings(self, tickers: object) -> Holdings:
        first, last = self.candles[0], self.candles[-1]
        return Holdings((Series(first.ticker, first.tf_min, first.ts, last.ts, len(self.candles)),))

    async def count(self, selection: ReplaySelection) -> int:
        return len(self.candles)

    async def seq_at(self, selection: ReplaySelection, ts: object) -> int:
        return 0

    async def key_at(self, selection: ReplaySelection, seq: int) -> ReplayKey | None:
        return None

    async def page(
        self, selection: ReplaySelection, after: ReplayKey | None, size: int
    ) -> list[Candle]:
        self.pages += 1
        if self.pages > 1:
            raise StoreUnavailable("db", "5432", "connection lost")
        return self.candles[:size]


def test_a_database_failure_mid_replay_gets_a_status_then_1011(app_factory: AppFactory) -> None:
    from dishka import Provider, Scope

    failing = Provider(scope=Scope.APP)
    failing.provide(lambda: FailingSource(series("AMZN.US", 30)), provides=ReplaySource)
    app = app_factory(failing, ws_page_size=5)
    with (
        app as client,
        client.websocket_connect("/ws/replay?ticker=AMZN.US&step_seconds=0") as ws,
    ):
        messages, code = receive_all(ws)
    assert code == 1011
    seqs = [s for s, _ in candles_of(messages)]
    assert seqs == list(range(len(seqs)))  # what was sent was in order, then it stopped
    assert 0 < len(seqs) <= 5
    assert messages[-1]["message"] == "error"
    assert "db:5432" in messages[-1]["error"]


def test_a_client_that_disconnects_leaves_nothing_running(
    app_factory: AppFactory, stored: list[Candle]
) -> None:
    with app_factory(ws_page_size=3) as client:
        container = client.app.state.dishka_container
        registry: ReplayRegistry = client.blocking_portal.call(container.get, ReplayRegistry)
        pool: Database = client.blocking_portal.call(container.get, Database)
        with client.websocket_connect("/ws/replay?ticker=AMZN.US&step_seconds=0.2") as ws:
            until(ws, "replay_starting")
            ws.receive_text(timeout=10)
            assert registry.active == 1
        # the client has gone: wait for the server to notice

        async def settled() -> tuple[int, list[str], dict[str, int]]:
            for _ in range(200):
                replay_tasks = [
                    repr(t.get_coro())
                    for t in asyncio.all_tasks()
                    if any(n in repr(t.get_coro()) for n in ("ReplaySession", "stream", "_receive"))
                ]
                stats = pool.stats()
                if (
                    registry.active == 0
                    and not replay_tasks
                    and stats["pool_available"] == stats["pool_size"]
                ):
                    break
                await asyncio.sleep(0.02)
            return registry.active, replay_tasks, pool.stats()

        active, tasks, stats = client.blocking_portal.call(settled)
    assert active == 0
    assert tasks == []
    assert stats["pool_available"] == stats["pool_size"]


def test_a_resampled_replay_plays_buckets(client: Client, stored: list[Candle]) -> None:
    from tests.fakes import resample_reference

    with client.websocket_connect("/ws/replay?ticker=AMZN.US&tf_min=15&step_seconds=0") as ws:
        messages, code = receive_all(ws)
    assert code == 1000
    expected = resample_reference(stored, 15)
    assert messages[0]["total_candles"] == len(expected)
    assert candles_of(messages) == [(i, wire(c)) for i, c in enumerate(expected)]
    with client.websocket_connect(
        "/ws/replay?tickers=AMZN.US,MSFT.US&tf_min=15&step_seconds=0"
    ) as ws:
        both, _ = receive_all(ws)
    with client.websocket_connect(
        "/ws/replay?tickers=AMZN.US,MSFT.US&tf_min=15&step_seconds=0&from_seq=5"
    ) as ws:
        tail, _ = receive_all(ws)
    assert candles_of(tail) == candles_of(both)[5:]
    keys = [(c["ts"], c["ticker"]) for _, c in candles_of(both)]
    assert keys == sorted(keys)
    assert {c["tf_min"] for _, c in candles_of(both)} == {15}


def test_batch_sends_candles_frames_with_the_first_seq(
    client: Client, stored: list[Candle]
) -> None:
    with client.websocket_connect("/ws/replay?ticker=AMZN.US&step_seconds=0&batch=8") as ws:
        messages, code = receive_all(ws)
    assert code == 1000
    frames = [m for m in messages if m["type"] == "CANDLES"]
    assert [(f["seq"], len(f["candles"])) for f in frames] == [(0, 8), (8, 8), (16, 8), (24, 6)]
    assert [c for f in frames for c in f["candles"]] == [wire(c) for c in stored]
    assert messages[-1]["message"] == "replay_complete"
    assert messages[-1]["seq"] == 30
    with client.websocket_connect(
        "/ws/replay?ticker=AMZN.US&step_seconds=0&batch=8&from_seq=25"
    ) as ws:
        resumed, _ = receive_all(ws)
    assert [(m["seq"], len(m["candles"])) for m in resumed if m["type"] == "CANDLES"] == [(25, 5)]


@pytest.mark.parametrize("batch", ["0", "1001", "many"])
def test_a_bad_batch_is_refused_with_1008(client: Client, batch: str) -> None:
    with client.websocket_connect(f"/ws/replay?ticker=AMZN.US&batch={batch}") as ws:
        messages, code = receive_all(ws)
    assert code == 1008
    assert messages[0]["error"].startswith("batch: ")
