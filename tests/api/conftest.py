from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from marketdata.adapters.settings import Settings
from marketdata.entrypoints.app import create_app


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:  # type: ignore[type-arg]
    app = create_app(Settings(database_url=db_url, db_connect_timeout=2, db_pool_min_size=1))
    with TestClient(app) as test_client:
        yield test_client
