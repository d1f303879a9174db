"""Probes and metrics: `/health` (the seed's), `/health/live`, `/health/ready`, `/metrics`."""

from typing import Any

from dishka.integrations.litestar import FromDishka, inject
from litestar import Controller, Request, Response, get

from marketdata.domain.errors import StoreUnavailable
from marketdata.domain.ports import ReplicaHealth, StoreHealth
from marketdata.entrypoints.http.docs import spec
from marketdata.entrypoints.metrics import CONTENT_TYPE
from marketdata.entrypoints.schemas import HealthBody, ProbeBody, ReplicaOut


class HealthController(Controller):
    path = "/"

    @get(
        "/health",
        tags=["health"],
        summary="Service and database health",
        responses={
            503: spec(
                HealthBody,
                "The database is unreachable",
                {
                    "status": "degraded",
                    "database": "disconnected",
                    "error": "database at db:5432 is unavailable: connection refused",
                },
            )
        },
    )
    @inject
    async def health(self, store: FromDishka[StoreHealth]) -> Response[HealthBody]:
        try:
            await store.ping()
        except StoreUnavailable as error:
            return Response(
                HealthBody(status="degraded", database="disconnected", error=error.message),
                status_code=503,
            )
        return Response(HealthBody(status="ok", database="connected"))

    @get("/health/live", summary="Liveness: the process answers", tags=["health"])
    async def live(self) -> ProbeBody:
        return ProbeBody(status="alive")

    @get(
        "/health/ready",
        tags=["health"],
        summary="Readiness: the database answers and its schema is up to date",
        description="Replicas (DATABASE_REPLICA_URLS) do not decide readiness: reads go to "
        "the primary while they are out. The body names those that are out, when any is: "
        '`{"status":"ready","replicas_out":[{"replica":"db-replica:5432","reason":"..."}]}`.',
        responses={
            503: spec(
                ProbeBody,
                "The database is unreachable, or migrations are pending",
                {"status": "not_ready", "reason": "pending migrations: 0002_timescaledb"},
            )
        },
    )
    @inject
    async def ready(
        self, store: FromDishka[StoreHealth], replicas: FromDishka[ReplicaHealth]
    ) -> Response[ProbeBody]:
        try:
            await store.ping()  # pending_migrations() stops asking once the schema is up to date
            pending = await store.pending_migrations()
        except StoreUnavailable as error:
            return Response(ProbeBody(status="not_ready", reason=error.message), status_code=503)
        if pending:
            reason = f"pending migrations: {', '.join(pending)}"
            return Response(ProbeBody(status="not_ready", reason=reason), status_code=503)
        out = [
            ReplicaOut(replica=r.name, reason=r.reason or "out")
            for r in replicas.status()
            if not r.up
        ]
        return Response(ProbeBody(status="ready", replicas_out=out or None))

    @get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        description="Requests by route and status with latency histograms, the database pool "
        "(size, in use, waiting, connections reclaimed), database errors by kind, replay "
        "sessions, candles sent and rows written, and each replica's lag, state and reads "
        "(with DATABASE_REPLICA_URLS), in the Prometheus text format.",
        media_type=CONTENT_TYPE,
    )
    async def metrics(self, request: Request[Any, Any, Any]) -> bytes:
        rendered: bytes = request.app.state.metrics.render()
        return rendered
