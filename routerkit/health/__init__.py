"""Replica health monitoring: probes and the per-process monitor."""

from __future__ import annotations

from routerkit.health.monitor import (
    DOWN,
    HEALTHY,
    LAGGING,
    NOT_REPLICA,
    RECEIVER_DOWN,
    UNKNOWN,
    Monitor,
    ReplicaHealth,
    Snapshot,
    get_monitor,
)

__all__ = [
    "DOWN",
    "HEALTHY",
    "LAGGING",
    "NOT_REPLICA",
    "RECEIVER_DOWN",
    "UNKNOWN",
    "Monitor",
    "ReplicaHealth",
    "Snapshot",
    "get_monitor",
]
