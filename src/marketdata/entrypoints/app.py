"""`create_app`: the one factory that builds the service."""

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from dishka import AsyncContainer, Provider, make_async_container
from dishka.integrations.litestar import setup_dishka
from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.datastructures import Headers
from litestar.enums import CompressionEncoding
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.middleware.compression import CompressionMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp, Receive, Scope, Send

import marketdata
from marketdata.adapters.postgres import rollups
from marketdata.adapters.postgres.migrations import Migrated, migrate, migrate_when_reachable
from marketdata.adapters.postgres.pool import DatabaseConfig
from marketdata.domain.demo import demo_rows
from marketdata.domain.errors import DomainError, StoreUnavailable
from marketdata.domain.imports import CandleImport
from marketdata.domain.ports import ReplicaHealth, StoreHealth
from marketdata.domain.queries import CandleQueries
from marketdata.domain.replay import LiveFeed
from marketdata.entrypoints.errors import (
    domain_error_response,
    internal_error_response,
    json_not_found,
    validation_error_response,
)
from marketdata.entrypoints.http import ROUTES, unrouted_error
from marketdata.entrypoints.logging import access_log_middleware
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.page import ChartPage, api_doc_pages, static_files
from marketdata.entrypoints.providers import (
    PostgresProvider,
    ReplayProvider,
    SettingsProvider,
    UseCaseProvider,
    database_config,
)
from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.travel import DEPENDENCIES
from marketdata.entrypoints.websocket import ReplayRegistry, live_candles, replay

log = structlog.get_logger(logger_name="marketdata")


async def _prepare_schema(
    settings: Settings,
    container: AsyncContainer,
    migrating: Callable[[DatabaseConfig], Awaitable[Migrated]],
) -> None:
    """Migrations, then the demo data when asked for (through the import use case, when no
    candle is stored). At start-up this is tried once before serving; when the database
    does not answer, it goes on in the background (with `migrate_when_reachable`) and the
    service serves, not ready, meanwhile."""
    migrated = await migrating(database_config(settings))
    applied = migrated.applied
    log.info("migrations applied" if applied else "schema up to date", versions=applied)
    if not settings.demo_data:
        return
    async with container() as request:
        if await (await request.get(CandleQueries)).symbols(limit=1):
            log.info("demo data skipped: the database has data")
            return
        loaded = await (await request.get(CandleImport)).load(demo_rows())
    log.info("demo data loaded", rows=loaded.rows)


async def _keep_rollups(settings: Settings, schema: Awaitable[None] | None) -> None:
    """After the schema (when it is still being prepared): the rollups of ROLLUP_TF_MINS,
    built for the data already stored. Readers use each once it is complete."""
    if schema is not None:
        await schema
    await rollups.sync(database_config(settings), settings.rollups)


def _report_failure(job: "asyncio.Task[Any]") -> None:
    if not job.cancelled() and (error := job.exception()) is not None:
        log.error("preparing the schema or the rollups failed", exc_info=error)


def create_app(settings: Settings, *providers: Provider) -> Litestar:
    """Build the service. `providers` override the defaults (tests pass fakes here)."""
    metrics = Metrics()
    container = make_async_container(
        SettingsProvider(),
        PostgresProvider(),
        ReplayProvider(),
        UseCaseProvider(),
        *providers,
        context={Settings: settings, Metrics: metrics},
    )

    jobs: list[asyncio.Task[Any]] = []

    async def open_store() -> None:
        # Open the pool at start-up rather than on the first request.
        await container.get(StoreHealth)
        await container.get(LiveFeed)  # its listener starts with the service
        await container.get(ReplicaHealth)  # the replicas' pools and their monitor too
        registry = await container.get(ReplayRegistry)
        metrics.watch_replays(lambda: registry.active)
        # what start-up built lives as long as the process: out of the collector's sight,
        # so that its full collections do not walk it (30-70 ms pauses at p99 otherwise)
        gc.collect()
        gc.freeze()
        if settings.migrate_on_start and settings.database_url is not None:
            schema: Awaitable[None] | None = None
            try:
                await _prepare_schema(settings, container, migrate)
            except StoreUnavailable as error:
                log.warning("database unreachable: migrations wait for it", reason=error.message)
                schema = _prepare_schema(settings, container, migrate_when_reachable)
            job = _keep_rollups(settings, schema)
            jobs.append(asyncio.create_task(job, name="marketdata-schema"))
            jobs[-1].add_done_callback(_report_failure)

    async def close_container() -> None:
        # Replays first (they say goodbye with STATUS server_shutdown and 1001), then the pool.
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await (await container.get(ReplayRegistry)).shutdown()
        await container.close()

    app = Litestar(
        route_handlers=[*ROUTES, replay, live_candles, *static_files()],
        on_startup=[open_store],
        dependencies=DEPENDENCIES,  # what a vendor's handlers answer as of (travel.py)
        on_shutdown=[close_container],
        after_request=json_not_found,
        middleware=[DefineMiddleware(access_log_middleware, metrics=metrics)],
        cors_config=CORSConfig(allow_origins=settings.cors_origin_list),
        exception_handlers={
            DomainError: domain_error_response,
            ValidationException: validation_error_response,
            HTTPException: unrouted_error,
            Exception: internal_error_response,
        },
        openapi_config=OpenAPIConfig(
            title="marketdata",
            version=marketdata.__version__,
            description="OHLCV candles from PostgreSQL: REST queries and WebSocket replay. "
            "A chart page that draws them and plays replays is at [/](/).",
            path="/",
            render_plugins=[ChartPage(settings), *api_doc_pages()],
        ),
        logging_config=None,
        request_max_body_size=settings.max_body_bytes,
        # brotli when the client accepts it, else gzip (a vendor's routes: gzip); levels
        # chosen for speed (bench/README.md: ratio and CPU per request)
        compression_config=CompressionConfig(
            backend="brotli",
            middleware_class=_VendorsGzip,
            minimum_size=settings.compression_min_bytes,
            brotli_quality=4,
            gzip_compress_level=5,
            brotli_gzip_fallback=True,
        ),
    )
    app.state.metrics = metrics
    _document_validation_as_422(app)
    setup_dishka(container, app)
    app.asgi_handler = _unlinked_when_done(app.asgi_handler)
    return app


class _VendorsGzip(CompressionMiddleware):
    """Compression as configured, but on a vendor's routes (`VENDOR_ROUTES`) gzip where the
    client takes it, else none."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        if handler is None or not handler.opt.get("gzip_only"):
            await super().__call__(scope, receive, send)
        elif "gzip" in Headers.from_scope(scope).get("accept-encoding", ""):
            gzip = CompressionEncoding.GZIP
            await self.app(scope, receive, self.create_compression_send_wrapper(send, gzip, scope))
        else:
            await self.app(scope, receive, send)


def _unlinked_when_done(handler: ASGIApp) -> ASGIApp:
    """Around everything a connection goes through: once it is answered, its scope's state
    (Litestar's connection state, dishka's request container, which holds the Request, which
    holds the scope) is emptied. Left linked, each request's objects wait for the garbage
    collector, and under load its young collections took 8-17 ms each: most of the p99
    (bench/README.md)."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await handler(scope, receive, send)
        finally:
            scope.get("state", {}).clear()

    return handle


def _document_validation_as_422(app: Litestar) -> None:
    """Litestar documents a 400 for every handler with parameters; we answer such errors
    with 422 (the seed's contract), so a 400 stays only where a handler declares one."""
    declared = {
        (route.path_format or "/", method.lower()): handler.responses or {}
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        for method in getattr(handler, "http_methods", ())
    }
    for path, item in (app.openapi_schema.paths or {}).items():
        for method in ("get", "post", "delete"):
            operation = getattr(item, method, None)
            if operation and operation.responses and 400 not in declared.get((path, method), {}):
                operation.responses.pop("400", None)
