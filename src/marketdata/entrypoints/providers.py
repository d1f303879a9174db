"""The composition root as a table: what provides each port, and for how long it lives."""

from collections.abc import AsyncIterator

from dishka import Provider, Scope, alias, from_context, provide

from marketdata.adapters.clock import SystemClock
from marketdata.adapters.columnar import ArrowBodies
from marketdata.adapters.postgres.channel import CandleWatch
from marketdata.adapters.postgres.known import KnownSeries
from marketdata.adapters.postgres.live import PostgresLiveFeed
from marketdata.adapters.postgres.migrations import PostgresHealth
from marketdata.adapters.postgres.pool import Database, DatabaseConfig
from marketdata.adapters.postgres.reads import PostgresCandleRepository
from marketdata.adapters.postgres.replay import PostgresReplaySource
from marketdata.adapters.postgres.replicas import ReplicaSet
from marketdata.adapters.postgres.routing import Reads
from marketdata.adapters.postgres.sessions import PostgresSessions, SessionWatch
from marketdata.adapters.postgres.subscriptions import LiveLimits
from marketdata.adapters.postgres.writes import PostgresCandleWriter
from marketdata.domain.imports import CandleImport
from marketdata.domain.ports import (
    CandleRepository,
    CandleWriter,
    ColumnarReader,
    ReplicaHealth,
    Sessions,
    StoreHealth,
)
from marketdata.domain.queries import CandleQueries, QueryLimits
from marketdata.domain.replay import Clock, LiveFeed, ReplaySource, Writes
from marketdata.entrypoints.http.caching import Answers
from marketdata.entrypoints.metrics import Metrics
from marketdata.entrypoints.settings import Settings
from marketdata.entrypoints.vendors.common import Present, wall_clock
from marketdata.entrypoints.websocket import ReplayRegistry


def database_config(settings: Settings) -> DatabaseConfig:
    if settings.database_url is None:
        raise RuntimeError("DATABASE_URL is not set")
    return DatabaseConfig(
        url=settings.database_url,
        connect_timeout=settings.db_connect_timeout,
        command_timeout=settings.db_command_timeout,
        pool_min_size=settings.db_pool_min_size,
        pool_max_size=settings.db_pool_max_size,
        pool_timeout=settings.db_pool_timeout,
    )


class SettingsProvider(Provider):
    scope = Scope.APP
    settings = from_context(provides=Settings)
    metrics = from_context(provides=Metrics)

    @provide
    def answers(self, settings: Settings) -> Answers:
        return Answers(settings.response_cache_mb * 2**20)

    @provide
    def limits(self, settings: Settings) -> QueryLimits:
        return QueryLimits(default_tf_min=settings.default_tf_min, max_limit=settings.max_limit)


class PostgresProvider(Provider):
    scope = Scope.APP

    @provide
    def repository(self, database: Database, known: KnownSeries, reads: Reads) -> CandleRepository:
        return PostgresCandleRepository(database, known, reads)

    @provide
    def reads(self, database: Database, replicas: ReplicaSet) -> Reads:
        return Reads(database, replicas)

    @provide
    def replay_source(self, database: Database, reads: Reads) -> ReplaySource:
        return PostgresReplaySource(database, reads)

    known = provide(KnownSeries)  # the catalog as this process knows it (live listener)
    session_watch = provide(SessionWatch)  # who follows which session (live listener)
    candle_watch = provide(CandleWatch)  # who follows which ticker's writes (live listener)
    writes = alias(source=CandleWatch, provides=Writes)
    sessions = provide(PostgresSessions, provides=Sessions)
    health = provide(PostgresHealth, provides=StoreHealth)

    @provide
    def config(self, settings: Settings) -> DatabaseConfig:
        return database_config(settings)

    @provide
    def writer(self, database: Database, known: KnownSeries) -> CandleWriter:
        return PostgresCandleWriter(database, known)

    @provide
    async def database(self, config: DatabaseConfig, metrics: Metrics) -> AsyncIterator[Database]:
        database = Database(config)
        await database.open()
        metrics.watch_pool(database.stats)
        yield database
        await database.close()

    @provide
    async def replicas(
        self, config: DatabaseConfig, settings: Settings, metrics: Metrics
    ) -> AsyncIterator[ReplicaSet]:
        """DATABASE_REPLICA_URLS for candle reads (none: an empty set, nothing polled)."""
        replicas = ReplicaSet(
            settings.replica_url_list,
            config,
            max_lag_seconds=settings.replica_max_lag_seconds,
            wait_seconds=settings.replica_wait_ms / 1000,
        )
        await replicas.open()
        if replicas.configured:
            metrics.watch_replicas(replicas.status)
        yield replicas
        await replicas.close()

    replica_health = alias(source=ReplicaSet, provides=ReplicaHealth)

    @provide
    async def live(
        self,
        config: DatabaseConfig,
        database: Database,
        metrics: Metrics,
        known: KnownSeries,
        settings: Settings,
        sessions: SessionWatch,
        written: CandleWatch,
    ) -> AsyncIterator[LiveFeed]:
        limits = LiveLimits(settings.live_max_bytes, settings.live_stall_seconds)
        feed = PostgresLiveFeed(config, database, known, limits, sessions, written)
        await feed.start()
        metrics.watch_live(lambda: feed.subscribers, lambda: feed.delivered)
        yield feed
        await feed.close()


class ReplayProvider(Provider):
    scope = Scope.APP
    clock = provide(SystemClock, provides=Clock)

    @provide
    def present(self) -> Present:
        return wall_clock  # the vendor protocols' "now"

    @provide
    def registry(self, settings: Settings) -> ReplayRegistry:
        # as many replays start at once as the pool has connections for their first reads
        return ReplayRegistry(settings.ws_max_sessions, starting=settings.db_pool_max_size)


class UseCaseProvider(Provider):
    scope = Scope.REQUEST
    queries = provide(CandleQueries)
    imports = provide(CandleImport)
    bodies = provide(ArrowBodies, provides=ColumnarReader, scope=Scope.APP)


class BulkWriteProvider(Provider):
    """For `marketdata ingest`: the same writer without the statement timeout (a file may
    take minutes)."""

    scope = Scope.APP

    @provide
    def writer(self, database: Database) -> CandleWriter:
        return PostgresCandleWriter(database, None, bounded=False)
