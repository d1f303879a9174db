"""The pages: the chart at `/` (and `/chart`), Swagger UI at `/docs`, ReDoc at `/redoc`,
with their scripts and style sheets served from installed packages.

Nothing is fetched from elsewhere: the pages work offline. The settings the chart needs (the
replay's pace bounds, MAX_LIMIT, the default timeframe) are written into it once, at start-up.
The chart's script is ES modules under `static/chart/`, loaded as they are (no build step):
an import map written into the page sends each module's URL to the same URL with the digest
of its content, so a browser never pairs this page with a cached module of another version.
Swagger UI and ReDoc are the builds that `drf-spectacular-sidecar` distributes (it follows
their releases); its files are read from where it is installed, never imported (its package
imports Django, which nothing here needs).
"""

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Router
from litestar.openapi.plugins import OpenAPIRenderPlugin, RedocRenderPlugin, SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from marketdata.entrypoints.settings import Settings

WEB = Path(__file__).with_name("web")
MODULES = "chart"  # the chart page's modules: /static/chart/*.js, main.js the entry


class PageConfig(msgspec.Struct, rename="camel"):
    max_limit: int
    min_step: float
    max_step: float
    default_step: float
    default_tf: int


class ChartPage(OpenAPIRenderPlugin):
    """The OpenAPI router is mounted at "/" (it serves /docs, /redoc and /openapi.json) and
    owns the root; a render plugin with the path "/" is Litestar's way to put another page
    there."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(path=["/", "/chart"])
        config = PageConfig(
            max_limit=settings.max_limit,
            min_step=settings.ws_min_step_seconds,
            max_step=settings.ws_max_step_seconds,
            default_step=settings.ws_default_step_seconds,
            default_tf=settings.default_tf_min,
        )
        modules = _module_urls()
        preloads = "\n".join(f'<link rel="modulepreload" href="{url}">' for url in modules.values())
        html = (
            (WEB / "index.html")
            .read_text(encoding="utf-8")
            .replace("{{CONFIG}}", _in_script(config))
            .replace("{{STYLE}}", _versioned("chart.css"))
            .replace("{{IMPORTS}}", _in_script({"imports": modules}))
            .replace("{{PRELOADS}}", preloads)
            .replace("{{MAIN}}", modules[f"/static/{MODULES}/main.js"])
        )
        self._html = html.encode()

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self._html


def _versioned(name: str) -> str:
    """The URL of a file under static/, with the digest of its content."""
    digest = hashlib.sha256((WEB / "static" / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


def _module_urls() -> dict[str, str]:
    """The chart page's import map: the URL of each of its modules, as the modules import
    one another, to that URL with the module's digest."""
    return {
        f"/static/{MODULES}/{path.name}": _versioned(f"{MODULES}/{path.name}")
        for path in sorted((WEB / "static" / MODULES).glob("*.js"))
    }


def _in_script(value: object) -> str:
    """JSON inside <script>: "<" escaped, so no value can close the element."""
    return msgspec.json.encode(value).decode().replace("<", "\\u003c")


def _sidecar() -> Path:
    spec = importlib.util.find_spec("drf_spectacular_sidecar")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover (a dependency)
        raise RuntimeError("drf-spectacular-sidecar is not installed: pip install -e .")
    return Path(next(iter(spec.submodule_search_locations))) / "static" / "drf_spectacular_sidecar"


_DOCS = "/static/docs"
_ICON = "<link rel='icon' href='data:,'>"  # none (Litestar's default is on a CDN)


def api_doc_pages() -> list[OpenAPIRenderPlugin]:
    swagger = f"{_DOCS}/swagger-ui-dist"
    return [
        SwaggerRenderPlugin(
            path="/docs",
            js_url=f"{swagger}/swagger-ui-bundle.js",
            css_url=f"{swagger}/swagger-ui.css",
            standalone_preset_js_url=f"{swagger}/swagger-ui-standalone-preset.js",
            favicon=_ICON,
        ),
        RedocRenderPlugin(
            path="/redoc",
            js_url=f"{_DOCS}/redoc/bundles/redoc.standalone.js",
            google_fonts=False,
            favicon=_ICON,
        ),
    ]


def static_files() -> list[Router]:
    return [
        create_static_files_router(
            path="/static", directories=[WEB / "static"], include_in_schema=False
        ),
        create_static_files_router(path=_DOCS, directories=[_sidecar()], include_in_schema=False),
    ]
