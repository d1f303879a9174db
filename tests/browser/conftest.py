"""A real server with real candles, a real headless Chromium, and a page per test.

The browser is Debian's `chromium` (not one Playwright downloads: this machine reaches no
browser download site). Without it the tests are skipped, unless MARKETDATA_REQUIRE_BROWSER
is set (CI sets it), when they fail: a browser missing in CI must not pass as green.
Screenshots of each state go to test-artifacts/chart/.
"""

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright

from marketdata.adapters.postgres.migrations import migrate
from marketdata.adapters.postgres.pool import DatabaseConfig
from tests.browser.chromium import CHROMIUM, FLAGS
from tests.proxy import TcpProxy
from tests.support import DATA, WARSAW, database_proxy, free_port, ingest, served, through

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "chart"
FILES = ["amzn.us.txt", "msft.us.txt"]
MAX_LIMIT = 250


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    browser_tests = [item for item in items if "tests/browser/" in item.nodeid]
    for item in browser_tests:
        item.add_marker(pytest.mark.slow)
    if not browser_tests or shutil.which(CHROMIUM):
        return
    missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("MARKETDATA_REQUIRE_BROWSER"):
        raise pytest.UsageError(missing)
    for item in browser_tests:
        item.add_marker(pytest.mark.skip(reason=missing))


@dataclass
class ChartServer:
    """The server, reached directly at `url` or through `front` (a proxy that a test can cut
    to kill its WebSockets); its database is reached through `database` (cut: an outage)."""

    url: str
    front: TcpProxy
    database: TcpProxy

    @property
    def front_url(self) -> str:
        return f"http://127.0.0.1:{self.front.port}"


@pytest.fixture(scope="module")
def chart_server(
    database_factory: Callable[[], str], admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartServer]:
    url = database_factory()
    asyncio.run(migrate(DatabaseConfig(url=url)))
    assert ingest(url, [DATA / name for name in FILES], WARSAW) == 0
    with database_proxy(admin_url) as database:
        port = free_port()
        env = {
            "WS_MIN_STEP_SECONDS": "0.01",
            "DB_CONNECT_TIMEOUT": "2",
            "LOG_LEVEL": "WARNING",
            # small pages: loading older candles has to follow the range API's cursor
            "MAX_LIMIT": str(MAX_LIMIT),
            "API_KEYS": "chart",  # the live test writes candles of a ticker of its own
        }
        cwd = tmp_path_factory.mktemp("chart-server")
        with served(cwd, through(database, url), port, **env), TcpProxy("127.0.0.1", port) as front:
            yield ChartServer(f"http://127.0.0.1:{port}", front, database)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope: Playwright's sync API runs an event loop in this thread while it is
    # open, and pytest-asyncio cannot run the async tests of later modules beside it.
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@dataclass
class Tab:
    """A page and what it said: console errors, uncaught exceptions, the URLs it asked for."""

    page: Any
    name: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate("window.marketdata.state()")
        return result

    def shot(self, state: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{state}.png"))


@pytest.fixture
def tab(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Tab]]:
    contexts: list[Any] = []

    def open_tab(**options: Any) -> Tab:
        context = browser.new_context(viewport={"width": 1280, "height": 720}, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        opened = Tab(page, request.node.name.removeprefix("test_"))
        page.on("console", lambda m: m.type == "error" and opened.errors.append(m.text))
        page.on("pageerror", lambda e: opened.errors.append(f"uncaught: {e}"))
        page.on("request", lambda r: opened.requests.append(r.url))
        return opened

    yield open_tab
    for context in contexts:
        context.close()
