"""Probes and metrics: what an operator sees."""

import json
from collections.abc import Callable

from tests.factories import series
from tests.proxy import TcpProxy
from tests.support import AppFactory, insert, metric, through


def test_readiness_needs_the_schema(
    app_factory: AppFactory, database_factory: Callable[[], str]
) -> None:
    fresh = database_factory()
    with app_factory(url=fresh) as client:
        assert client.get("/health/live").json() == {"status": "alive"}
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert "pending migrations: 0001_candles" in response.json()["reason"]


def test_probes_during_an_outage(app_factory: AppFactory, db_url: str, proxy: TcpProxy) -> None:
    with app_factory(url=through(proxy, db_url), db_pool_timeout=0.5) as client:
        assert client.get("/health/ready").json() == {"status": "ready"}
        proxy.cut()
        live = client.get("/health/live")
        ready = client.get("/health/ready")
        failed = client.get("/candles?ticker=X")
        text = client.get("/metrics").text
        proxy.restore()
    assert live.status_code == 200
    assert ready.status_code == 503
    assert "unavailable" in ready.json()["reason"]
    assert failed.status_code == 503
    errors = sum(
        metric(text, "marketdata_db_errors_total", kind=kind)
        for kind in ("connection", "pool_timeout")
    )
    assert errors >= 1


def test_metrics_count_requests_replays_and_writes(app_factory: AppFactory, db_url: str) -> None:
    insert(db_url, series("M.US", 5))
    with app_factory(api_keys="key") as client:
        for _ in range(3):
            client.get("/candles?ticker=M.US")
        client.get("/candles?ticker=NOPE")
        with client.websocket_connect("/ws/replay?ticker=M.US&step_seconds=60") as ws:
            json.loads(ws.receive_text())
            json.loads(ws.receive_text())
            during = client.get("/metrics").text
        body = [
            {
                "ticker": "W",
                "tf_min": 5,
                "ts": "2024-01-01T00:00:00Z",
                "open": 1,
                "high": 2,
                "low": 0.5,
                "close": 1.5,
            }
        ]
        client.post("/candles", json=body, headers={"Authorization": "Bearer key"})
        after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert metric(text, "marketdata_requests_total", route="/candles", status="200") == 3
    assert metric(text, "marketdata_requests_total", route="/candles", status="404") == 1
    assert metric(text, "marketdata_request_duration_seconds_count", route="/candles") == 4
    assert metric(during, "marketdata_replay_sessions") == 1
    assert metric(text, "marketdata_replay_sessions") == 0
    assert metric(text, "marketdata_replay_candles_sent_total") >= 1
    assert metric(text, "marketdata_rows_ingested_total") == 1
    assert metric(text, "marketdata_db_pool_size") >= 1
    assert "marketdata_db_pool_in_use" in text
    assert "marketdata_db_pool_waiting" in text
