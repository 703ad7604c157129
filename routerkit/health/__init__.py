"""Replica health monitoring: probes and the per-process monitor."""

from __future__ import annotations

from routerkit.health.monitor import (
    COMMAND_TIMEOUT,
    DOWN,
    HEALTHY,
    LAGGING,
    NOT_REPLICA,
    RECEIVER_DOWN,
    UNKNOWN,
    Monitor,
    ReplicaHealth,
    Snapshot,
    command_monitor,
    get_monitor,
)

__all__ = [
    "COMMAND_TIMEOUT",
    "DOWN",
    "HEALTHY",
    "LAGGING",
    "NOT_REPLICA",
    "RECEIVER_DOWN",
    "UNKNOWN",
    "Monitor",
    "ReplicaHealth",
    "Snapshot",
    "command_monitor",
    "get_monitor",
]
