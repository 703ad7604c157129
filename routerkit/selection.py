"""Choose the database a read goes to, given the primary that owns the model.

Every router hands its reads here, so a model pinned to any primary gets the
same guarantees. This runs on every query: no I/O, no locks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from routerkit import metrics
from routerkit.balancers import Balancer
from routerkit.health import LAGGING
from routerkit.runtime import Runtime
from routerkit.state import Route, Scope, current_scope, frame_var
from routerkit.values import Requirement, Snapshot, fits

if TYPE_CHECKING:
    from django.db.models import Model

_current_thread = threading.current_thread
# The instance attribute a Django test case sets on a connection it forbids.
_UNLISTED = "connect"
_monotonic = time.monotonic


def read_alias(
    runtime: Runtime,
    primary: str,
    hints: Mapping[str, Any],
    router: object = None,
    model: type[Model] | None = None,
) -> str:
    """Return the alias a read of data owned by `primary` should use.

    Given the `router` and `model`, a read that goes to a replica leaves a
    route that the router repeats for the model's next reads in this unit of
    work, while nothing the decision depends on changes.
    """
    # Function calls dominate the cost of this path, so the helpers of
    # routerkit.state are inlined here.
    frame = frame_var.get()
    scope = frame.scope or current_scope()
    balancer = runtime.balancers.get(primary)
    if balancer is None:
        alias, reason = primary, metrics.PRIMARY
    elif frame.forced:
        alias, reason = primary, metrics.FORCED
    elif primary in scope.written:
        alias, reason = primary, metrics.WRITTEN
    else:
        # The connection wrappers of this thread, cached in the scope (looking
        # them up through django.db.connections costs more than all the rest).
        thread = _current_thread()
        cached = scope.wrappers.get(primary)
        on_primary = cached[1] if cached and cached[0] is thread else scope.connection(primary)
        if on_primary.in_atomic_block:
            # Reads must see the transaction's uncommitted writes and its
            # locks. This also keeps TestCase tests (which run inside an
            # atomic block) reading the data they created.
            alias, reason = primary, metrics.TRANSACTION
        else:
            snapshot = scope.snapshot
            if snapshot is None:
                snapshot = _unscoped_snapshot(runtime)
            elif snapshot.expires < _monotonic():
                snapshot = _renewed(scope, runtime)
            requirement = scope.requirements.get(primary)
            usable = snapshot.usable.get(primary, ())
            pinned = scope.pinned.get(primary)
            source = None
            if "instance" in hints:
                source = _instance_replica(hints["instance"], usable, snapshot, requirement)
            if source is not None:
                alias, reason = source, metrics.REPLICA
            elif (
                pinned is not None
                and pinned in usable
                and (requirement is None or fits(snapshot, pinned, requirement, time.time()))
            ):
                # The replica this request already read from: its position only
                # moves forward, so the request's reads never go back in time. A
                # requirement comes first: a nested restore_token() may have
                # raised it above the replica the request is pinned to.
                alias, reason = pinned, metrics.REPLICA
            elif requirement is not None:
                alias, reason = _satisfying(balancer, primary, snapshot, requirement)
            else:
                prepared = balancer.cached
                if prepared[0] is not usable:
                    prepared = balancer.prepare(usable)
                choose = prepared[1]
                if choose is not None:
                    alias, reason = choose(), metrics.REPLICA
                    guarded = snapshot.guarded
                    if guarded and alias in guarded.get(primary, ()):
                        reason = metrics.CAPACITY
                else:
                    alias, reason = primary, _why_no_replica(primary, snapshot)
            if alias != primary:
                cached = scope.wrappers.get(alias)
                wrapper = cached[1] if cached and cached[0] is thread else scope.connection(alias)
                if _UNLISTED in wrapper.__dict__ and _unlisted(wrapper):
                    alias, reason = primary, metrics.UNLISTED
                else:
                    if alias != pinned:
                        scope.pinned[primary] = alias
                    if source is None and model is not None and _UNLISTED not in wrapper.__dict__:
                        # A decision the hints did not make: the next reads repeat it.
                        scope.routes[model] = _route(
                            runtime, scope, snapshot, alias, on_primary, wrapper, router
                        )
    scope.read_from.add(alias)
    if runtime.config.metrics:
        # Two dict lookups here; the Prometheus counter gets the sum when the
        # scope ends.
        scope.reads[reason][alias] += 1
        if scope.implicit and _monotonic() - scope.flushed_at >= UNSCOPED_FLUSH_SECONDS:
            _flush_unscoped(scope)
    return alias


def _route(
    runtime: Runtime,
    scope: Scope,
    snapshot: Snapshot,
    alias: str,
    on_primary: Any,
    on_replica: Any,
    router: object,
) -> Route:
    """Return the route that repeats this decision while it holds (see Route)."""
    if scope.snapshot is snapshot:
        holder: Any = scope
        expires = snapshot.expires
    else:
        # The monitor's snapshot: valid until the monitor's next refresh is due.
        holder = runtime.monitor
        expires = min(snapshot.expires, runtime.monitor.due)
    if scope.implicit and runtime.config.metrics:
        # A scope that never ends flushes its counts from a decision of its
        # own (this one, at its end, if a flush is due): routes stop for it.
        flushed = scope.flushed_at
        now = _monotonic()
        if now - flushed >= UNSCOPED_FLUSH_SECONDS:
            flushed = now
        expires = min(expires, flushed + UNSCOPED_FLUSH_SECONDS)
    return Route(
        alias=alias,
        # As the pinned replica's next decisions say.
        reason=metrics.REPLICA,
        router=router,
        runtime=runtime,
        wrapper=on_primary,
        replica_attrs=on_replica.__dict__,
        holder=holder,
        snapshot=snapshot,
        expires=expires,
        counted=runtime.config.metrics,
    )


# An implicit scope (a shell, a script, a worker without integration) never
# ends, so its counts are flushed as they come: at most once per this many
# seconds, which bounds the cost of Prometheus' locks to one flush a second.
UNSCOPED_FLUSH_SECONDS = 1.0


def _flush_unscoped(scope: Scope) -> None:
    now = _monotonic()
    if now - scope.flushed_at >= UNSCOPED_FLUSH_SECONDS:
        scope.flushed_at = now
        metrics.get_metrics().record(*scope.take_counts())


def _unlisted(wrapper: Any) -> bool:
    """Tell whether the running Django test case forbids queries to this replica.

    TestCase and TransactionTestCase replace the connection methods of every
    alias a test does not list in `databases` (mirrors included) with a
    `_DatabaseFailure` that fails the test. Such a test uses its primary only,
    as it would without replicas: reads stay there. Outside tests the
    connection has no instance attribute `connect` (_UNLISTED): the caller
    checks that with one dict lookup before calling this.
    """
    connect = wrapper.__dict__.get("connect")
    return connect is not None and type(connect).__name__ == "_DatabaseFailure"


def count_write(runtime: Runtime, primary: str) -> None:
    """Count a write decision (off the read path: writes are rarer)."""
    if runtime.config.metrics:
        scope = frame_var.get().scope or current_scope()
        scope.writes[primary] += 1
        if scope.implicit:
            _flush_unscoped(scope)


def _instance_replica(
    instance: Any, usable: tuple[str, ...], snapshot: Snapshot, requirement: Requirement | None
) -> str | None:
    """Follow a relation from the replica its instance came from, if still fit.

    One object graph is then read from one snapshot of the data.
    """
    if instance is None:
        return None
    source = instance._state.db
    if source not in usable:
        return None
    if requirement is not None and not fits(snapshot, source, requirement, time.time()):
        return None
    return str(source)


def _satisfying(
    balancer: Balancer, primary: str, snapshot: Snapshot, requirement: Requirement
) -> tuple[str, str]:
    """Pick a usable replica that meets the client's requirement, else the primary.

    The balancer chooses among those that do: weights (and drained replicas)
    hold for clients with a token too.
    """
    now = time.time()
    usable = snapshot.usable.get(primary, ())
    candidates = [r for r in usable if fits(snapshot, r, requirement, now)]
    if candidates:
        chosen = balancer.pick(candidates)
        if chosen is not None:
            return chosen, metrics.REPLICA
    if not usable:
        return primary, _why_no_replica(primary, snapshot)
    if requirement.until is not None and requirement.until > now:
        return primary, metrics.STICKY
    return primary, metrics.TOKEN_PENDING


def _why_no_replica(primary: str, snapshot: Snapshot) -> str:
    # All reads of the cluster fall on the primary: say whether lag did it.
    lagging = any(h.state == LAGGING and h.primary == primary for h in snapshot.replicas.values())
    return metrics.LAGGING if lagging else metrics.UNHEALTHY


def _renewed(scope: Scope, runtime: Runtime) -> Snapshot:
    """Give a unit of work that outlived its snapshot the monitor's current one.

    A task, a restore_token() block or a streaming body can run for longer
    than a snapshot is trusted; a replica may have died meanwhile.
    """
    snapshot = runtime.monitor.refresh_if_due()
    _move(scope, snapshot)
    return snapshot


def _move(scope: Scope, snapshot: Snapshot) -> None:
    """Give a unit of work another snapshot, keeping its reads from going back in time.

    The replicas it read from keep their floors: a replica it moves to must
    have replayed what the old one had (as last probed).
    """
    old = scope.snapshot
    for primary, replica in scope.pinned.items():
        seen = [s.position(replica) for s in (old, snapshot) if s is not None]
        position = max(filter(None, seen), default=None)
        if position is not None:
            previous = scope.requirements.get(primary, Requirement())
            scope.requirements[primary] = previous.merge(lsn=position)
    scope.snapshot = snapshot


def retry_alias(runtime: Runtime, primary: str, failed: frozenset[str], *, down: bool) -> str:
    """Return where a read runs again after it failed on the replicas `failed`.

    A unit of work leaves them for the rest of its reads, with what it read
    from them kept as a floor; a replica that went `down` is already out of
    the monitor's snapshot for everybody (Monitor.mark_down()). Counted as a
    routing decision of its own.
    """
    scope = current_scope()
    own = scope.snapshot
    snapshot = own if own is not None and not down else runtime.monitor.current()
    if own is not None:
        _move(scope, snapshot)
    usable = tuple(r for r in snapshot.usable.get(primary, ()) if r not in failed)
    scope.snapshot = replace(snapshot, usable={**snapshot.usable, primary: usable})
    if scope.pinned.get(primary) in failed:
        del scope.pinned[primary]
    try:
        return read_alias(runtime, primary, {})
    finally:
        if own is None:
            scope.snapshot = None


def _unscoped_snapshot(runtime: Runtime) -> Snapshot:
    # Outside ConsistencyMiddleware and restore_token() nobody took a health
    # snapshot for this unit of work: ask the monitor, which probes at most
    # once per interval. Most reads find a refresh not due: one clock read.
    monitor = runtime.monitor
    snapshot = monitor.snapshot
    now = _monotonic()
    if now < monitor.due and now <= snapshot.expires:
        return snapshot
    return monitor.refresh_if_due()
