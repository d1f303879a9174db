"""The chart page at `/` (and `/chart`), with its script and style sheet, from the package.

Nothing is fetched from elsewhere: the page works offline. The settings the page needs (the
replay's pace bounds, MAX_LIMIT, the default timeframe) are written into it once, at start-up.
"""

import hashlib
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Router
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.static_files import create_static_files_router

from marketdata.adapters.settings import Settings

WEB = Path(__file__).with_name("web")


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
        # JSON inside <script>: "<" escaped, so no value can close the element
        script = msgspec.json.encode(config).decode().replace("<", "\\u003c")
        # the files' digest in their URLs: a browser never pairs this page with a cached
        # script or style sheet of another version
        digest = hashlib.sha256()
        for name in ("chart.js", "chart.css"):
            digest.update((WEB / "static" / name).read_bytes())
        template = (WEB / "index.html").read_text(encoding="utf-8")
        html = template.replace("{{CONFIG}}", script).replace("{{ASSETS}}", digest.hexdigest()[:12])
        self._html = html.encode()

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self._html


def static_files() -> Router:
    return create_static_files_router(
        path="/static", directories=[WEB / "static"], include_in_schema=False
    )
