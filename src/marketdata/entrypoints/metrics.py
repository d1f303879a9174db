"""Prometheus metrics: one registry per app (tests build many apps in one process)."""

import math
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from marketdata.domain.ports import ReplicaStatus

CONTENT_TYPE = "text/plain; version=0.0.4"  # Litestar adds the charset


class _PoolCollector(Collector):
    """Reads the pool's numbers at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        size = stats.get("pool_size", 0)
        available = stats.get("pool_available", 0)
        yield GaugeMetricFamily("marketdata_db_pool_size", "Connections the pool holds", value=size)
        yield GaugeMetricFamily(
            "marketdata_db_pool_in_use", "Connections lent out", value=size - available
        )
        yield GaugeMetricFamily(
            "marketdata_db_pool_waiting",
            "Requests waiting for a connection",
            value=stats.get("requests_waiting", 0),
        )
        yield CounterMetricFamily(
            "marketdata_db_pool_reclaimed",
            "Pool connections taken back from holders that ended without giving them back",
            value=stats.get("reclaimed", 0),
        )


class _ReplicaCollector(Collector):
    """Each replica's state at scrape time, labelled by its host:port."""

    def __init__(self, status: Callable[[], Sequence[ReplicaStatus]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "marketdata_replica_lag_seconds",
            "Seconds the replica is behind the primary (0: it has replayed everything the"
            " primary had written; NaN: unknown, e.g. unreachable)",
            labels=["replica"],
        )
        up = GaugeMetricFamily(
            "marketdata_replica_up",
            "1 while the replica may serve reads, 0 while it is out (unreachable, not a"
            " standby, lagging more than REPLICA_MAX_LAG_SECONDS, or a read just failed)",
            labels=["replica"],
        )
        reads = CounterMetricFamily(
            "marketdata_replica_reads", "Reads sent to the replica", labels=["replica"]
        )
        for replica in self._status():
            seconds = math.nan if replica.lag_seconds is None else replica.lag_seconds
            lag.add_metric([replica.name], seconds)
            up.add_metric([replica.name], 1.0 if replica.up else 0.0)
            reads.add_metric([replica.name], replica.reads)
        yield from (lag, up, reads)


class _CandlesSentCollector(Collector):
    def __init__(self, metrics: "Metrics") -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "marketdata_replay_candles_sent",
            "Candles sent by replays",
            value=self._metrics.candles_sent,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "marketdata_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "marketdata_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.db_errors = Counter(
            "marketdata_db_errors",
            "Database failures reported to callers, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.replays = Gauge(
            "marketdata_replay_sessions", "Replay sessions playing now", registry=self.registry
        )
        # Counted as a plain number on the hot path (a Counter takes a lock per call) and
        # read when scraped.
        self.candles_sent = 0
        self.registry.register(_CandlesSentCollector(self))
        self.live_subscribers = Gauge(
            "marketdata_live_subscribers",
            "Clients receiving live candles in this process",
            registry=self.registry,
        )
        self.live_changes = Gauge(
            "marketdata_live_changes",
            "Changes (a series written by one transaction) this process's listener delivered",
            registry=self.registry,
        )
        self.rows_ingested = Counter(
            "marketdata_rows_ingested",
            "Rows written through POST /candles (inserted or updated)",
            registry=self.registry,
        )

    def watch_pool(self, stats: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_PoolCollector(stats))

    def watch_replicas(self, status: Callable[[], Sequence[ReplicaStatus]]) -> None:
        self.registry.register(_ReplicaCollector(status))

    def watch_replays(self, active: Callable[[], int]) -> None:
        self.replays.set_function(active)

    def watch_live(self, subscribers: Callable[[], int], changes: Callable[[], int]) -> None:
        self.live_subscribers.set_function(subscribers)
        self.live_changes.set_function(changes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
