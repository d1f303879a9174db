"""OpenAPI documents, CORS and the access log: the parts of the app around the handlers."""

import gc
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from dishka import AsyncContainer
from litestar import Request

from marketdata.entrypoints import page as page_module
from tests.factories import series
from tests.fakes import InMemoryCandleRepository, fake_store
from tests.support import AppFactory, Client

UNUSED = "postgresql://unused@127.0.0.1:1/x"  # the fakes answer; no database is reached


@pytest.fixture
def fake_client(app_factory: AppFactory) -> Iterator[Client]:
    repo = InMemoryCandleRepository(series("AMZN.US", 3))
    with app_factory(fake_store(repo), url=UNUSED, cors_origins="https://charts.example") as client:
        yield client


def test_swagger_redoc_and_schema_are_served(fake_client: Client) -> None:
    assert "swagger" in fake_client.get("/docs").text.lower()
    assert "redoc" in fake_client.get("/redoc").text.lower()
    assert fake_client.get("/openapi.json").json()["info"]["title"] == "marketdata"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_nothing_from_another_host(fake_client: Client, page: str) -> None:
    """Swagger UI and ReDoc come from the installed package: the pages work offline."""
    html = fake_client.get(page).text
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), html[:2000]
    assets = [a for a in re.findall(r"(?:src|href)=[\"']([^\"']+)[\"']", html) if a != "data:,"]
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts, "the page loads its script"
    for asset in assets:
        response = fake_client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 1000 or asset.endswith((".png", ".ico")), asset


def chart_modules(client: Client, page: str) -> list[str]:
    """The chart's modules, through the page's import map: every one of them, each at a URL
    that carries the digest of its content, and every module one imports is in the map."""
    found = re.search(r'<script type="importmap">(.*?)</script>', page, re.DOTALL)
    assert found, "the page has an import map"
    imports: dict[str, str] = json.loads(found.group(1))["imports"]
    folder = Path(page_module.__file__).with_name("web") / "static" / "chart"
    assert sorted(imports) == sorted(f"/static/chart/{p.name}" for p in folder.glob("*.js"))
    assert f'<script type="module" src="{imports["/static/chart/main.js"]}">' in page
    texts = []
    for name, url in imports.items():
        assert f'<link rel="modulepreload" href="{url}">' in page
        script = client.get(url)
        assert script.status_code == 200, url
        assert "javascript" in script.headers["content-type"]
        assert url == f"{name}?v={hashlib.sha256(script.content).hexdigest()[:12]}"
        for imported in re.findall(r'^import .* from "([^"]+)";$', script.text, re.MULTILINE):
            assert imported.startswith("./"), imported  # no bare names: nothing outside the map
            assert f"/static/chart/{imported[2:]}" in imports, imported
        texts.append(script.text)
    return texts


def test_the_chart_page_owns_the_root_and_carries_the_settings_it_needs(
    app_factory: AppFactory,
) -> None:
    repo = InMemoryCandleRepository(series("AMZN.US", 3))
    with app_factory(
        fake_store(repo), url=UNUSED, max_limit=300, ws_min_step_seconds=0.5, default_tf_min=15
    ) as client:
        for path in ["/", "/chart"]:
            page = client.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert '"maxLimit":300' in page.text
            assert '"minStep":0.5' in page.text
            assert '"defaultTf":15' in page.text
        style = client.get("/static/chart.css")
        for text in (page.text, style.text, *chart_modules(client, page.text)):
            assert "http://" not in text  # nothing from another host
            assert "https://" not in text
        assert style.headers["content-type"].startswith("text/css")
        assert client.get("/static/index.html").status_code == 404  # the template is not served
        missing = client.get("/static/nothing.js")
        assert missing.status_code == 404
        assert set(missing.json()) == {"error"}
        paths = client.get("/openapi.json").json()["paths"]
        assert not {"/", "/chart"} & set(paths)
        assert not [path for path in paths if path.startswith("/static")]


BAR_OPTIONS = {"day_start", "session", "fill", "label"}
EXPECTED = {
    "/health": ({"200", "503"}, set()),
    "/symbols": ({"200", "422", "500", "503"}, {"prefix", "limit"}),
    "/candles": (
        {"200", "404", "422", "500", "503"},
        {"ticker", "tf_min", "limit", "order", "tz", "format", "Accept", *BAR_OPTIONS},
    ),
    "/candles/range": (
        {"200", "400", "404", "422", "500", "503"},
        {"ticker", "tf_min", "start", "end", "limit", "tz", "cursor", "format", "Accept"}
        | BAR_OPTIONS,
    ),
    "/symbols/{ticker}": ({"200", "404", "422", "500", "503"}, {"ticker"}),
    "/symbols/{ticker}/gaps": (
        {"200", "404", "422", "500", "503"},
        {"ticker", "tf_min", "min_gap", "limit"},
    ),
}


@pytest.mark.parametrize("path", EXPECTED)
def test_every_parameter_and_error_response_is_documented(fake_client: Client, path: str) -> None:
    operation = fake_client.get("/openapi.json").json()["paths"][path]["get"]
    statuses, names = EXPECTED[path]
    assert set(operation["responses"]) == statuses
    for status, response in operation["responses"].items():
        assert response["description"], status
        if status != "200":
            assert response["content"]["application/json"]["examples"], status
    parameters = {p["name"]: p for p in operation.get("parameters", [])}
    assert set(parameters) == names
    for parameter in parameters.values():
        assert parameter.get("description"), parameter["name"]


def test_cors_allows_only_configured_origins(fake_client: Client) -> None:
    allowed = fake_client.get("/symbols", headers={"Origin": "https://charts.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://charts.example"
    other = fake_client.get("/symbols", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_one_access_line_per_request_with_its_request_id(fake_client: Client) -> None:
    with structlog.testing.capture_logs() as logs:
        response = fake_client.get("/candles?ticker=AMZN.US", headers={"X-Request-ID": "abc-1"})
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert (line["method"], line["path"], line["status"]) == ("GET", "/candles", 200)
    assert line["duration_ms"] >= 0
    assert response.headers["x-request-id"] == "abc-1"


def test_request_id_is_bound_for_every_line_of_the_request(fake_client: Client) -> None:
    # capture_logs drops contextvars, so look at the bound context the way the renderer does
    seen: list[dict[str, object]] = []

    def grab(_: object, __: str, event: dict[str, object]) -> dict[str, object]:
        seen.append(dict(event))
        raise structlog.DropEvent

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, grab],
        cache_logger_on_first_use=False,
    )
    try:
        fake_client.get("/health", headers={"X-Request-ID": "req-42"})
        fake_client.get("/health")
    finally:
        structlog.reset_defaults()
    ids = [entry.get("request_id") for entry in seen if entry["event"] == "request"]
    assert ids[0] == "req-42"
    assert isinstance(ids[1], str)
    assert ids[1] != "req-42"


def test_a_hostile_request_id_is_replaced(fake_client: Client) -> None:
    response = fake_client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert len(response.headers["x-request-id"]) == 32


def test_a_request_leaves_nothing_for_the_garbage_collector(fake_client: Client) -> None:
    """A request's scope, its Request and its dishka container point at one another; left
    so, every request is freed only by a collection of the young generation, and those
    collections (thousands of such objects each) were the p99 of bench/http_bench.py."""
    fake_client.get("/candles?ticker=AMZN.US")  # what a first request builds once
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept to look at
    try:
        for _ in range(5):
            assert fake_client.get("/candles?ticker=AMZN.US").status_code == 200
        gc.collect()
        left = Counter(
            type(o).__name__ for o in gc.garbage if isinstance(o, Request | AsyncContainer)
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not left, left
