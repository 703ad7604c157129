"""Prometheus metrics: where reads went and why, replica lag and health.

Nothing is registered at import. `install(registry)` creates the metrics on a
registry (tests pass a fresh CollectorRegistry); otherwise the first use
creates them on prometheus_client's default registry.

Routing decisions are the hot path: a decision adds one to a plain dict on
its request's scope, and the scope's counts go into the Prometheus counter
when the scope ends (a prometheus_client Counter costs more per increment than
a whole routing decision). In multiprocess mode (PROMETHEUS_MULTIPROC_DIR) the
flush is what writes the shared files, so every worker's decisions are seen.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from routerkit import stats, values
from routerkit.values import Snapshot

# Why a decision went where it did (see routerkit.values).
PRIMARY = values.PRIMARY
REPLICA = values.REPLICA
FORCED = values.FORCED
WRITTEN = values.WRITTEN
TRANSACTION = values.TRANSACTION
STICKY = values.STICKY
TOKEN_PENDING = values.TOKEN_PENDING
LAGGING = values.LAGGING_REASON
UNHEALTHY = values.UNHEALTHY
UNLISTED = values.UNLISTED
CAPACITY = values.CAPACITY
REASONS = values.REASONS

PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """routerkit's metrics on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "routerkit_route_decisions",
            "Routing decisions, by operation, chosen database and reason.",
            ["operation", "database", "reason"],
            registry=registry,
        )
        self._decision_children: dict[tuple[str, ...], Any] = {}
        # In multiprocess mode every worker measures the same replicas: the
        # most recent measurement is the one to show.
        self.lag_seconds = Gauge(
            "routerkit_replica_lag_seconds",
            "Replay lag of a replica in seconds (0 when it has replayed all the primary has).",
            ["database"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.lag_bytes = Gauge(
            "routerkit_replica_lag_bytes",
            "Replay lag of a replica in bytes of WAL.",
            ["database"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.healthy = Gauge(
            "routerkit_replica_healthy",
            "1 if the replica is in the read rotation, else 0.",
            ["database"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.capacity_guard = Gauge(
            "routerkit_capacity_guard_replicas",
            "Lagging replicas of a primary kept serving by LAG['MIN_REPLICAS'].",
            ["database"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.probe_duration = Histogram(
            "routerkit_probe_duration_seconds",
            "Time taken by one health probe of a replica.",
            ["database"],
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.probe_failures = Counter(
            "routerkit_probe_failures",
            "Health probes that failed or timed out.",
            ["database"],
            registry=registry,
        )
        self.read_retries = Counter(
            "routerkit_read_retries",
            "Reads run again elsewhere after failing on a replica, by replica and reason.",
            ["database", "reason"],
            registry=registry,
        )
        self.replica_checks = Counter(
            "routerkit_replica_checks",
            "Replicas asked for their replay position at the start of a request whose "
            "client's position the last probe did not show, by replica and outcome.",
            ["database", "outcome"],
            registry=registry,
        )
        self.tokens_rejected = Counter(
            "routerkit_tokens_rejected",
            "Consistency tokens ignored, by reason (tampered, expired, oversized, malformed).",
            ["reason"],
            registry=registry,
        )

    def record(self, reads: Mapping[str, Mapping[str, int]], writes: Mapping[str, int]) -> None:
        """Add decision counts: reads by reason and database, writes by database."""
        for reason, by_database in reads.items():
            for database, number in by_database.items():
                self._decision("read", database, reason).inc(number)
        for database, number in writes.items():
            self._decision("write", database, PRIMARY).inc(number)

    def _decision(self, *key: str) -> Any:
        # labels() costs more than the increment: each child is looked up once.
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(*key)
        return child

    def observe(self, snapshot: Snapshot) -> None:
        """Record a health snapshot: lag, rotation and probe time of each replica,
        and per primary the lagging replicas kept for capacity."""
        for primary, kept in snapshot.guarded.items():
            self.capacity_guard.labels(primary).set(len(kept))
        for health in snapshot.replicas.values():
            alias = health.alias
            self.healthy.labels(alias).set(1 if health.healthy else 0)
            if health.lag_seconds is not None:
                self.lag_seconds.labels(alias).set(health.lag_seconds)
            if health.lag_bytes is not None:
                self.lag_bytes.labels(alias).set(health.lag_bytes)
            if health.probe_seconds is not None:
                self.probe_duration.labels(alias).observe(health.probe_seconds)

    def event(self, key: tuple[str, ...]) -> None:
        """Export the stats events that have a metric."""
        if key[0] == "token_rejected":
            self.tokens_rejected.labels(key[1]).inc()
        elif key[0] == "probe_failure":
            self.probe_failures.labels(key[1]).inc()
        elif key[0] == "replica_check":
            self.replica_checks.labels(key[1], key[2]).inc()
        elif key[0] == "read_retry":
            self.read_retries.labels(key[1], key[2]).inc()


_metrics: Metrics | None = None
_lock = threading.Lock()


def install(registry: CollectorRegistry | None = None) -> Metrics:
    """Create routerkit's metrics on `registry` (default: prometheus_client's) and use them."""
    global _metrics
    registry = registry if registry is not None else REGISTRY
    with _lock:
        if _metrics is None or _metrics.registry is not registry:
            # A registry takes each metric name once: installing twice on the
            # same one keeps the metrics already there.
            _metrics = Metrics(registry)
            stats.listener = _metrics.event
        return _metrics


def get_metrics() -> Metrics:
    """Return the metrics in use, creating them on the default registry on first use."""
    metrics = _metrics
    if metrics is None:
        with _lock:
            metrics = _metrics
        if metrics is None:
            metrics = install()
    return metrics
