"""Choose the database a read goes to, given the primary that owns the model.

Every router hands its reads here, so a model pinned to any primary gets the
same guarantees. This runs on every query: no I/O, no locks.
"""

from __future__ import annotations

import bisect
import itertools
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from routerkit.conf import Cluster, Config
from routerkit.state import _forced, _scope, current_scope

Picker = Callable[[], str]


def random_picker(replicas: tuple[str, ...]) -> Picker:
    """Pick a replica uniformly at random."""
    draw = random.random
    count = len(replicas)
    # random.choice() goes through _randbelow(); this is about four times cheaper.
    return lambda: replicas[int(draw() * count)]


def round_robin_picker(replicas: tuple[str, ...]) -> Picker:
    """Pick replicas in turn (per process)."""
    return itertools.cycle(replicas).__next__


def weighted_picker(replicas: tuple[str, ...], weights: tuple[float, ...]) -> Picker:
    """Pick a replica with probability proportional to its weight."""
    bounds = list(itertools.accumulate(weights))
    total = bounds[-1]
    draw = random.random
    last = len(replicas) - 1
    return lambda: replicas[min(bisect.bisect(bounds, draw() * total), last)]


def make_picker(cluster: Cluster, balancer: str) -> Picker:
    if balancer == "round_robin":
        return round_robin_picker(cluster.replicas)
    if balancer == "weighted":
        return weighted_picker(cluster.replicas, cluster.weights)
    return random_picker(cluster.replicas)


class _Plan:
    """Pickers built once per parsed configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pickers: Mapping[str, Picker] = {
            primary: make_picker(cluster, config.balancer)
            for primary, cluster in config.clusters.items()
            if cluster.replicas
        }


_plan: _Plan | None = None


def _plan_for(config: Config) -> _Plan:
    global _plan
    plan = _plan
    if plan is None or plan.config is not config:
        plan = _plan = _Plan(config)
    return plan


_get_ident = threading.get_ident


def read_alias(config: Config, primary: str, hints: Mapping[str, Any]) -> str:
    """Return the alias a read of data owned by `primary` should use."""
    # Function calls dominate the cost of this path, so the helpers of
    # routerkit.state are inlined here.
    plan = _plan
    if plan is None or plan.config is not config:
        plan = _plan_for(config)
    pick = plan.pickers.get(primary)
    if pick is None or _forced.get():
        return primary
    scope = _scope.get() or current_scope()
    if primary in scope.written:
        return primary
    cached = scope._connections.get(primary)
    connection = (
        cached[1] if cached is not None and cached[0] == _get_ident() else scope.connection(primary)
    )
    # Inside a transaction on the primary, reads must see its uncommitted
    # writes and its locks. This also keeps TestCase tests (which run inside
    # an atomic block) reading the data they created.
    if connection.in_atomic_block:
        return primary
    instance = hints.get("instance")
    if instance is not None:
        # Follow a relation from the replica the instance came from, so one
        # object graph is read from one snapshot.
        source = instance._state.db
        if config.replica_of.get(source) == primary:
            return str(source)
    return pick()
