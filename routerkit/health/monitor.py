"""Replica health: up or down, lag in bytes and seconds, replay position.

The monitor keeps an immutable `Snapshot` that routing decisions read without
locks. A refresh probes every primary and replica in parallel, never waits
longer than LAG.TIMEOUT for them, happens at most once per LAG.INTERVAL (with
jitter) per process, and only one thread refreshes at a time: the others keep
using the current snapshot.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created

from routerkit import stats
from routerkit.conf import Config
from routerkit.health.probes import (
    PrimaryStatus,
    Probe,
    ProbeError,
    ReplicaStatus,
    as_mirror,
    is_mirror,
    probe_for,
)

# A replica that left the rotation for lag comes back only under this share of
# the limits, so that it does not flap around the threshold.
HYSTERESIS = 0.5
# Backoff for a replica that refused connections: INTERVAL doubled per failure, up to this many.
MAX_BACKOFF_INTERVALS = 30
# Past this many intervals without a refresh, a snapshot says nothing any more;
# the same bound applies to the primary's last known position.
STALE_INTERVALS = 5
# Samples of the primary's position kept for time lag (one per refresh).
HISTORY = 64
# A probe still running after this many timeouts is given up: the next refresh
# probes on a new connection (the stuck thread ends when its socket does).
ABANDON_TIMEOUTS = 10

HEALTHY = "healthy"
LAGGING = "lagging"
DOWN = "down"
UNKNOWN = "unknown"
NOT_REPLICA = "not_replica"
RECEIVER_DOWN = "receiver_down"


@dataclass(frozen=True)
class ReplicaHealth:
    alias: str
    primary: str
    state: str
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    replay_lsn: int | None = None
    probe_seconds: float | None = None
    checked_at: float = 0.0  # wall clock

    @property
    def healthy(self) -> bool:
        return self.state == HEALTHY


@dataclass(frozen=True)
class Snapshot:
    """Health of every replica at one moment; read by routing decisions."""

    taken_at: float  # wall clock, comparable across processes
    expires: float  # time.monotonic() after which it is ignored
    replicas: Mapping[str, ReplicaHealth]
    primary_lsn: Mapping[str, int | None]
    # primary -> replicas in the read rotation, in configuration order
    usable: Mapping[str, tuple[str, ...]]

    def position(self, alias: str) -> int | None:
        """Return the replay position of a replica, or the WAL position of a primary."""
        health = self.replicas.get(alias)
        if health is not None:
            return health.replay_lsn
        return self.primary_lsn.get(alias)


def unknown_snapshot(config: Config) -> Snapshot:
    """A snapshot in which no replica is known to be usable (before the first probe)."""
    return Snapshot(
        taken_at=0.0,
        expires=float("inf"),
        replicas={
            replica: ReplicaHealth(replica, primary, UNKNOWN)
            for replica, primary in config.replica_of.items()
        },
        primary_lsn={},
        usable={primary: () for primary in config.clusters},
    )


ProbeFactory = Callable[[str, float], Probe]


class Monitor:
    def __init__(self, config: Config, probe_factory: ProbeFactory = probe_for) -> None:
        self.config = config
        self.snapshot = unknown_snapshot(config)
        self._probe_factory = probe_factory
        self._probes: dict[str, Probe] = {}
        self._lock = threading.Lock()
        self._due = 0.0
        self._last = 0.0
        self._in_flight: dict[str, tuple[Future[Any], float]] = {}
        # primary -> (its last probed position, when), for a slow primary probe.
        self._last_primary: dict[str, tuple[int | None, float]] = {}
        # primary -> its recent (time, position) samples, oldest first: a
        # replica's time lag is the age of the newest position it has replayed.
        self._history: dict[str, deque[tuple[float, int]]] = {}
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._excluded: set[str] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    # -- reading ----------------------------------------------------------

    def current(self) -> Snapshot:
        """Return the snapshot, or an all-unknown one if it is too old to trust."""
        snapshot = self.snapshot
        if snapshot.expires < time.monotonic():
            return unknown_snapshot(self.config)
        return snapshot

    def refresh_if_due(self, max_age: float | None = None) -> Snapshot:
        """Refresh if the interval (or `max_age`) has passed and nobody else is refreshing."""
        now = time.monotonic()
        due = self._due if max_age is None else min(self._due, self._last + max_age)
        if now >= due and self._lock.acquire(blocking=False):
            try:
                self._refresh()
            finally:
                self._lock.release()
        return self.current()

    def refresh(self) -> Snapshot:
        """Probe now, waiting for a refresh under way to finish first."""
        with self._lock:
            self._refresh()
        return self.snapshot

    def close(self) -> None:
        """Close the probes' connections."""
        for probe in self._probes.values():
            probe.close()
        self._probes.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- probing ----------------------------------------------------------

    def _probe(self, alias: str) -> Probe:
        probe = self._probes.get(alias)
        if probe is None:
            probe = self._probes[alias] = self._probe_factory(alias, self.config.lag.timeout)
        return probe

    def _call(self, alias: str) -> Callable[[], object]:
        """Return the probe call that reads `alias`'s status."""
        probe = self._probe(alias)
        primary = self.config.replica_of.get(alias)
        if primary is None:
            return probe.primary
        if is_mirror(alias, primary):
            return lambda: as_mirror(probe.primary())
        return probe.replica

    def _pool(self, size: int) -> ThreadPoolExecutor:
        # Threads do not survive fork(): a pre-forking server needs a new pool per process.
        if self._executor is None or self._pid != os.getpid():
            # Room for probes given up on (see ABANDON_TIMEOUTS) beside live ones.
            self._executor = ThreadPoolExecutor(
                max_workers=max(2 * size, 4), thread_name_prefix="routerkit-probe"
            )
            self._pid = os.getpid()
            self._in_flight.clear()
        return self._executor

    def _refresh(self) -> None:
        config = self.config
        lag = config.lag
        started = time.monotonic()
        targets: list[tuple[str, Callable[[], object]]] = []
        for primary, cluster in config.clusters.items():
            if cluster.replicas:
                targets.append((primary, self._call(primary)))
            for replica in cluster.replicas:
                if self._retry_at.get(replica, 0.0) <= started:
                    targets.append((replica, self._call(replica)))
        pool = self._pool(len(targets))
        futures: dict[str, Future[Any]] = {}
        for alias, call in targets:
            running = self._in_flight.get(alias)
            if running is not None and not running[0].done():
                if started - running[1] < lag.timeout * ABANDON_TIMEOUTS:
                    continue  # still waiting on the last probe: do not pile up
                # Stuck (a hung server or network): forget that connection
                # without closing it under the thread that uses it.
                self._probes.pop(alias, None)
                call = self._call(alias)
            submitted: Future[Any] = pool.submit(_timed, call)
            futures[alias] = submitted
            self._in_flight[alias] = (submitted, started)
        wait(futures.values(), timeout=lag.timeout)

        wall = time.time()
        previous = self.snapshot.replicas
        primary_lsn: dict[str, int | None] = {}
        for primary in config.clusters:
            status = _result(futures.get(primary))
            if isinstance(status, PrimaryStatus) and not status.in_recovery:
                primary_lsn[primary] = status.lsn
                self._last_primary[primary] = (status.lsn, started)
                if status.lsn is not None:
                    history = self._history.setdefault(primary, deque(maxlen=HISTORY))
                    history.append((started, status.lsn))
                continue
            # A slow or failed primary probe must not empty the rotation (every
            # read would land on that busy primary): judge the replicas against
            # its last position while recent. That underestimates their lag by
            # what the primary wrote since, for at most STALE_INTERVALS.
            last = self._last_primary.get(primary)
            recent = last is not None and started - last[1] <= lag.interval * STALE_INTERVALS
            primary_lsn[primary] = last[0] if recent and last is not None else None

        replicas: dict[str, ReplicaHealth] = {}
        for replica, primary in config.replica_of.items():
            future = futures.get(replica)
            if future is None:
                # In backoff (or a probe still running): keep what we knew, never healthy.
                old = previous.get(replica, ReplicaHealth(replica, primary, UNKNOWN))
                state = old.state if old.state in (DOWN, UNKNOWN) else UNKNOWN
                replicas[replica] = ReplicaHealth(
                    replica, primary, state, replay_lsn=old.replay_lsn, checked_at=old.checked_at
                )
                continue
            outcome = _result(future)
            seconds = _duration(future)
            if isinstance(outcome, ProbeError):
                failures = self._failures[replica] = self._failures.get(replica, 0) + 1
                backoff = lag.interval * min(2 ** (failures - 1), MAX_BACKOFF_INTERVALS)
                self._retry_at[replica] = started + backoff
                stats.incr("probe_failure", replica)
                replicas[replica] = ReplicaHealth(replica, primary, DOWN, checked_at=wall)
                continue
            if not isinstance(outcome, ReplicaStatus):
                # Timed out: the probe goes on in the background; we do not know.
                stats.incr("probe_failure", replica)
                replicas[replica] = ReplicaHealth(replica, primary, UNKNOWN, checked_at=wall)
                continue
            self._failures.pop(replica, None)
            self._retry_at.pop(replica, None)
            judged = self._judge(replica, primary, outcome, primary_lsn[primary], started)
            replicas[replica] = replace(judged, probe_seconds=seconds, checked_at=wall)

        self.snapshot = Snapshot(
            taken_at=wall,
            expires=time.monotonic() + lag.interval * STALE_INTERVALS,
            replicas=replicas,
            primary_lsn=primary_lsn,
            usable={
                primary: tuple(r for r in cluster.replicas if replicas[r].healthy)
                for primary, cluster in config.clusters.items()
            },
        )
        self._last = time.monotonic()
        self._due = self._last + lag.interval * random.uniform(0.8, 1.2)
        if config.metrics:
            from routerkit.metrics import get_metrics

            get_metrics().observe(self.snapshot)

    def _judge(
        self,
        replica: str,
        primary: str,
        status: ReplicaStatus,
        primary_lsn: int | None,
        now: float,
    ) -> ReplicaHealth:
        def health(
            state: str, lag_bytes: int | None = None, lag_seconds: float | None = None
        ) -> ReplicaHealth:
            return ReplicaHealth(
                replica, primary, state, lag_bytes, lag_seconds, replay_lsn=status.replay_lsn
            )

        if not status.in_recovery:
            # Promoted or mis-pointed: it no longer follows this primary.
            return health(NOT_REPLICA)
        if status.replay_lsn is None and primary_lsn is None and status.streaming:
            return health(HEALTHY, 0, 0.0)  # a backend without positions to compare
        if status.replay_lsn is None or primary_lsn is None:
            return health(UNKNOWN)
        if status.streaming is False:
            return health(RECEIVER_DOWN)
        lag_bytes = max(0, primary_lsn - status.replay_lsn)
        # Idle-safe: a replica that has replayed everything the primary had lags
        # by no time, however long ago the last commit was.
        lag_seconds = 0.0 if lag_bytes == 0 else self._age(primary, status, now)
        if lag_seconds is None:
            return health(UNKNOWN, lag_bytes)
        share = HYSTERESIS if replica in self._excluded else 1.0
        limits = self.config.lag
        if lag_bytes > limits.max_bytes * share or lag_seconds > limits.max_seconds * share:
            self._excluded.add(replica)
            return health(LAGGING, lag_bytes, lag_seconds)
        self._excluded.discard(replica)
        return health(HEALTHY, lag_bytes, lag_seconds)

    def _age(self, primary: str, status: ReplicaStatus, now: float) -> float | None:
        """How old the newest data of a replica is, from the primary's position history.

        Not the time since the last replayed commit: a long batch writes WAL
        but no commit, and would make caught-up replicas look minutes behind.
        Interpolated between position samples (see `_age_of`); before there is
        history, falls back to the time since the last replayed commit.
        """
        assert status.replay_lsn is not None
        age = _age_of(self._history.get(primary, deque()), status.replay_lsn, now)
        return age if age is not None else status.replay_age


def _timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    try:
        outcome: object = call()
    except ProbeError as exc:
        outcome = exc
    return outcome, time.perf_counter() - started


def _age_of(history: deque[tuple[float, int]], position: int, now: float) -> float | None:
    """Return how long ago the primary passed `position`, if the history covers it.

    That is the age of the oldest data the replica lacks. Between the two
    samples around `position` the primary is taken to have written at an even
    rate: a replica 10 ms behind reports about 10 ms, not one INTERVAL (the
    time since the sample before it), which would keep an excluded replica
    out for good when INTERVAL exceeds the hysteresis limit.
    """
    before: tuple[float, int] | None = None
    for when, lsn in history:
        if lsn > position:
            if before is None:
                return None  # older than the whole history
            then, passed = before
            share = (position - passed) / (lsn - passed)
            return max(0.0, now - (then + (when - then) * share))
        before = (when, lsn)
    # At or past the newest sample: the primary passed it after that sample.
    return None if before is None else max(0.0, now - before[0])


def _forget_after_fork() -> None:
    # A forked child shares its parent's probe sockets: using or closing them
    # would break the parent's. Start afresh, and keep the old monitor
    # referenced so that garbage collection never closes those sockets.
    global _monitor
    if _monitor is not None:
        _inherited.append(_monitor)
        _monitor = None


_inherited: list[Monitor] = []


def _release_probes(sender: object, connection: Any, **kwargs: Any) -> None:
    # Django connects to no database in particular to create or drop one, as
    # its test runner does around every run. An open probe connection to the
    # database being dropped makes DROP DATABASE fail ("is being accessed by
    # other users"), so close them all; the next refresh reconnects.
    if connection.alias == NO_DB_ALIAS and _monitor is not None:
        _monitor.close()


def _result(future: Future[Any] | None) -> object:
    if future is None or not future.done():
        return None
    outcome = future.result()
    assert isinstance(outcome, tuple)
    return outcome[0]


def _duration(future: Future[Any]) -> float | None:
    if not future.done():
        return None
    outcome = future.result()
    assert isinstance(outcome, tuple)
    return float(outcome[1])


# A command (routerkit_validate, routerkit_status) may wait longer than a request.
COMMAND_TIMEOUT = 2.0


def command_monitor(config: Config) -> Monitor:
    """Return a monitor of its own for a management command; close it when done.

    It probes with COMMAND_TIMEOUT and records no metrics: in multiprocess mode
    the command's probes would otherwise land in the server's metric files.
    """
    lag = replace(config.lag, timeout=max(config.lag.timeout, COMMAND_TIMEOUT))
    return Monitor(replace(config, metrics=False, lag=lag))


_monitor: Monitor | None = None
_monitor_lock = threading.Lock()


def get_monitor(config: Config) -> Monitor:
    """Return this process's monitor for the current settings."""
    global _monitor
    monitor = _monitor
    if monitor is None or monitor.config is not config:
        with _monitor_lock:
            monitor = _monitor
            if monitor is None or monitor.config is not config:
                if monitor is not None:
                    monitor.close()
                else:
                    os.register_at_fork(after_in_child=_forget_after_fork)
                    connection_created.connect(_release_probes, dispatch_uid="routerkit.health")
                monitor = _monitor = Monitor(config)
    return monitor
