"""The database going away and coming back, errors without internals, and no password leaks."""

import time
from collections.abc import Iterator

import pytest
import structlog

from tests.factories import series
from tests.fakes import InMemoryCandleRepository, fake_store
from tests.proxy import TcpProxy
from tests.support import AppFactory, Client, insert, through

PASSWORD = "s3cr3t-Pa55"

UNAVAILABLE_KEYS = {"error", "message", "type"}


@pytest.fixture
def proxied(app_factory: AppFactory, db_url: str, proxy: TcpProxy) -> Iterator[Client]:
    insert(db_url, series("AMZN.US", 10))
    with app_factory(url=through(proxy, db_url, password=PASSWORD), db_pool_timeout=0.5) as client:
        yield client


def test_503_while_the_database_is_down_then_200_again_without_restart(
    proxied: Client, proxy: TcpProxy
) -> None:
    assert proxied.get("/candles?ticker=AMZN.US").status_code == 200
    proxy.cut()
    with structlog.testing.capture_logs() as logs:
        responses = [
            proxied.get("/candles?ticker=AMZN.US"),
            proxied.get("/symbols"),
            proxied.get("/candles/range?ticker=AMZN.US&start=2024-01-01&end=2024-02-01"),
        ]
        health = proxied.get("/health")
    for response in responses:
        assert response.status_code == 503
        body = response.json()
        assert set(body) == UNAVAILABLE_KEYS
        assert body["error"] == "Service Unavailable"
        assert body["type"] == "database_connection_error"
        assert f"127.0.0.1:{proxy.port}" in body["message"]
        assert PASSWORD not in response.text
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert health.json()["database"] == "disconnected"
    assert PASSWORD not in health.json()["error"]
    assert logs, "the outage is logged"
    assert PASSWORD not in repr(logs)

    proxy.restore()
    deadline = time.monotonic() + 10
    while (response := proxied.get("/candles?ticker=AMZN.US")).status_code != 200:
        assert response.status_code == 503
        assert time.monotonic() < deadline, "no recovery within 10 s"
        time.sleep(0.05)
    assert response.json()["count"] == 10
    assert proxied.get("/health").json() == {"status": "ok", "database": "connected"}


class BrokenRepository(InMemoryCandleRepository):
    async def symbols(self, prefix: str, limit: int) -> list[str]:
        raise RuntimeError(f"internal detail: postgresql://postgres:{PASSWORD}@db/x")


def test_an_unexpected_error_is_a_bare_500_and_logged(app_factory: AppFactory) -> None:
    broken = fake_store(BrokenRepository())
    app = app_factory(broken, url="postgresql://unused@127.0.0.1:1/x")
    with structlog.testing.capture_logs() as logs, app as client:
        response = client.get("/symbols")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal Server Error"}
    assert PASSWORD not in response.text
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "unhandled error"
    ]


def test_the_service_starts_while_the_database_is_down(
    app_factory: AppFactory, unused_port: int
) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{unused_port}/x"
    with app_factory(url=url, db_pool_timeout=0.5) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert PASSWORD not in response.text
