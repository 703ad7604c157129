"""The status report of routerkit_status: replica health beside the routing decisions.

Built here as plain data (the command renders it as text or JSON): every
cluster with replicas, each replica's state, lag and position, and the
decisions counted so far, read from this process, PROMETHEUS_MULTIPROC_DIR or
a /metrics URL.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http.client import HTTPException
from typing import Any

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from routerkit.conf import Config
from routerkit.health import COMMAND_TIMEOUT
from routerkit.metrics import get_metrics
from routerkit.values import UNKNOWN, ReplicaHealth, Snapshot, format_lsn

DECISIONS_SAMPLE = "routerkit_route_decisions_total"
THIS_PROCESS = "(this process only)"


@dataclass(frozen=True)
class Decisions:
    """Routing decisions counted so far, and where they were read."""

    # How the header names the source; never carries credentials.
    source: str
    # (operation, database, reason) -> decisions
    counts: Mapping[tuple[str, str, str], int]
    error: str | None = None

    def of(self, alias: str, operation: str) -> dict[str, int] | None:
        """Return the decisions of one operation that went to `alias`, by reason."""
        if self.error is not None:
            return None
        found: dict[str, int] = {}
        for (op, database, reason), number in sorted(self.counts.items()):
            if op == operation and database == alias:
                found[reason] = found.get(reason, 0) + number
        return found


def read_decisions(url: str | None, token: str | None) -> Decisions:
    """Read the decisions counted so far: from `url`, the multiprocess files, or this process."""
    if url is not None:
        return _from_url(url, token)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # As the /metrics view does: every worker writes its own files, and a
        # registry built per read sums them.
        source = "from PROMETHEUS_MULTIPROC_DIR"
        registry = CollectorRegistry()
        try:
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return Decisions(source, _count(registry.collect()))
        except (OSError, ValueError) as error:
            return Decisions(source, {}, f"cannot read PROMETHEUS_MULTIPROC_DIR: {_reason(error)}")
    return Decisions(THIS_PROCESS, _count(get_metrics().registry.collect()))


def _count(families: Iterable[Metric]) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for family in families:
        for sample in family.samples:
            if sample.name != DECISIONS_SAMPLE:
                continue
            labels = sample.labels
            key = (
                labels.get("operation", ""),
                labels.get("database", ""),
                labels.get("reason", ""),
            )
            counts[key] = counts.get(key, 0) + int(sample.value)
    return counts


def _from_url(url: str, token: str | None) -> Decisions:
    parts = urllib.parse.urlsplit(url)
    # Shown in the header and in errors: without the query, which may hold a key.
    shown = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    source = f"from {shown}"
    request = urllib.request.Request(url, headers={"Accept": "text/plain; version=0.0.4"})
    if token:
        # Unredirected: a redirect to another host must not carry the token there.
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT) as response:
            text = response.read().decode("utf-8")
        return Decisions(source, _count(text_string_to_metric_families(text)))
    except (OSError, HTTPException, ValueError) as error:
        reason = _reason(error)
        if token:
            reason = reason.replace(token, "***")
        return Decisions(source, {}, f"cannot read decisions from {shown}: {reason}")


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        reason = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        reason = str(error.reason)
    else:
        reason = str(error) or type(error).__name__
    return " ".join(reason.split())[:200]


# -- the report ---------------------------------------------------------------------------


def now(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="seconds")


def build_report(config: Config, snapshot: Snapshot, decisions: Decisions) -> dict[str, Any]:
    """Return the report of every cluster with replicas (JSON-ready)."""
    clusters = []
    for primary, cluster in config.clusters.items():
        if not cluster.replicas:
            continue
        lsn = snapshot.primary_lsn.get(primary)
        reads, writes = decisions.of(primary, "read"), decisions.of(primary, "write")
        clusters.append(
            {
                "primary": primary,
                "primary_lsn": format_lsn(lsn) if lsn is not None else None,
                "decisions": None
                if reads is None or writes is None
                else {"read": reads, "write": writes},
                "replicas": [
                    _replica(
                        snapshot.replicas.get(r, ReplicaHealth(r, primary, UNKNOWN)),
                        decisions.of(r, "read"),
                    )
                    for r in cluster.replicas
                ],
            }
        )
    return {
        "time": now(snapshot.taken_at or time.time()),
        "decisions_from": decisions.source,
        "error": decisions.error,
        "clusters": clusters,
    }


def _replica(health: ReplicaHealth, reads: dict[str, int] | None) -> dict[str, Any]:
    return {
        "alias": health.alias,
        "state": health.state,
        "healthy": health.healthy,
        "lag_seconds": health.lag_seconds,
        "lag_bytes": health.lag_bytes,
        "replay_lsn": format_lsn(health.replay_lsn) if health.replay_lsn is not None else None,
        "probe_ms": round(health.probe_seconds * 1000, 3)
        if health.probe_seconds is not None
        else None,
        "decisions": reads,
    }
