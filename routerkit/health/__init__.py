"""Replica health monitoring: probes, the judge and the per-process monitor."""

from __future__ import annotations

from routerkit.health.monitor import (
    COMMAND_TIMEOUT,
    Monitor,
    command_monitor,
    get_monitor,
)
from routerkit.health.probes import select_text
from routerkit.values import (
    DOWN,
    HEALTHY,
    LAGGING,
    NOT_REPLICA,
    RECEIVER_DOWN,
    UNKNOWN,
    ReplicaHealth,
    Snapshot,
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
    "select_text",
]
