"""Replica health: up or down, lag in bytes and seconds, replay position.

The monitor keeps an immutable `Snapshot` that routing decisions read without
locks. A refresh probes every primary and replica in parallel, never waits
longer than LAG.TIMEOUT for them, happens at most once per LAG.INTERVAL (with
jitter) per process, and only one thread refreshes at a time: the others keep
using the current snapshot.
"""

from __future__ import annotations

import functools
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import Any

from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created

from routerkit import stats
from routerkit.conf import Cluster, Config
from routerkit.health.judge import (
    RATE_SPAN,
    Answer,
    History,
    answered,
    down,
    due,
    judge,
    not_probed,
    worth_asking,
)
from routerkit.health.probes import Probe, as_mirror, is_mirror, probe_for
from routerkit.values import (
    DOWN,
    LAGGING,
    UNKNOWN,
    PrimaryStatus,
    ProbeError,
    ReplicaHealth,
    ReplicaStatus,
    Snapshot,
)

# Past this many intervals without a refresh, a snapshot says nothing any more.
STALE_INTERVALS = 5
# Samples of the primary's position kept for time lag, at least this share of
# INTERVAL apart: they cover 64 intervals or more.
HISTORY = 256
HISTORY_SPACING = 0.25
# A probe still running after this many timeouts is given up: the next refresh
# probes on a new connection (the stuck thread ends when its socket does).
ABANDON_TIMEOUTS = 10


def unknown_snapshot(config: Config, expires: float = float("inf")) -> Snapshot:
    """A snapshot in which no replica is known to be usable (before the first probe)."""
    return Snapshot(
        taken_at=0.0,
        expires=expires,
        replicas={
            replica: ReplicaHealth(replica, primary, UNKNOWN)
            for replica, primary in config.replica_of.items()
        },
        primary_lsn={},
        usable={primary: () for primary in config.clusters},
    )


class Positions:
    """The newest position known of each primary, and its recent history.

    Positions arrive from the monitor's probes, including those that answer
    after LAG.TIMEOUT, and from requests that read the primary's position
    after a write: replicas are judged against the newest, however it
    arrived. Samples rise in both time and position, and are kept at least
    `spacing` apart (the newest one moves forward until then), so that busy
    request traffic does not shrink the time the history covers.
    """

    def __init__(self, spacing: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._spacing = spacing
        self._clock = clock
        self._lock = threading.Lock()
        self._newest: dict[str, tuple[int, float]] = {}  # primary -> (lsn, confirmed at)
        self._history: dict[str, deque[tuple[float, int]]] = {}

    def add(self, primary: str, lsn: int) -> None:
        with self._lock:
            now = self._clock()
            newest = self._newest.get(primary)
            if newest is not None and newest[0] > lsn:
                return  # an answer that arrived after a newer one
            self._newest[primary] = (lsn, now)
            history = self._history.setdefault(primary, deque(maxlen=HISTORY))
            if history and history[-1][1] == lsn:
                # Still there (idle): the primary passed this position after
                # the latest time it was seen at it, which is what dates the
                # data a replica lacks. An idle primary fills no history.
                history[-1] = (now, lsn)
            elif len(history) >= 2 and now - history[-2][0] < self._spacing:
                history[-1] = (now, lsn)
            else:
                history.append((now, lsn))

    def newest(self, primary: str, since: float) -> int | None:
        """Return the primary's newest position if confirmed at or after `since`."""
        newest = self._newest.get(primary)
        return newest[0] if newest is not None and newest[1] >= since else None

    def history(self, primary: str) -> History:
        with self._lock:
            return tuple(self._history.get(primary, ()))


ProbeFactory = Callable[[str, float], Probe]


class Monitor:
    """Schedule probes and publish what the judge makes of them.

    Judging lives in routerkit.health.judge; the monitor decides when to
    probe, collects the outcomes and swaps in a new snapshot.
    """

    def __init__(self, config: Config, probe_factory: ProbeFactory = probe_for) -> None:
        self.config = config
        self.snapshot = unknown_snapshot(config)
        self.positions = Positions(spacing=config.lag.interval * HISTORY_SPACING)
        self._probe_factory = probe_factory
        self._probes: dict[str, Probe] = {}
        self._lock = threading.Lock()
        # Guards publishing a snapshot: a refresh and mark_down() both do.
        self._publish = threading.Lock()
        # replica -> when (monotonic) a request found it unreachable
        self._marked: dict[str, float] = {}
        # replica -> its last answer to replay_position(), and the one its
        # replay rate is measured from
        self._answers: dict[str, Answer] = {}
        self._rate_from: dict[str, Answer] = {}
        # replica -> the question being asked of it (replay_position)
        self._asks: dict[str, Future[Answer | None]] = {}
        self._asking = threading.Lock()
        # When (time.monotonic()) the next refresh is due; read by unscoped reads.
        self.due = 0.0
        self._in_flight: dict[str, tuple[Future[Any], float]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pid = 0

    # -- reading ----------------------------------------------------------

    def current(self) -> Snapshot:
        """Return the snapshot, or an all-unknown one if it is too old to trust."""
        snapshot = self.snapshot
        now = time.monotonic()
        if snapshot.expires < now:
            # Good for one interval: a unit of work that keeps it looks again then.
            return unknown_snapshot(self.config, expires=now + self.config.lag.interval)
        return snapshot

    def refresh_if_due(self) -> Snapshot:
        """Refresh if the interval has passed and nobody else is refreshing."""
        if time.monotonic() >= self.due and self._lock.acquire(blocking=False):
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

    def mark_down(self, replica: str) -> None:
        """Take a replica that a request could not reach out of the rotation now.

        Every unit of work that takes a snapshot from here on leaves it, in
        every thread, without waiting for the next refresh; its next probe,
        one INTERVAL on, may bring it back. A refresh already under way (whose
        probe may have answered before the replica failed) keeps it down too.
        """
        now = time.monotonic()
        with self._publish:
            self._marked[replica] = now
            snapshot = self.snapshot
            health = snapshot.replicas.get(replica)
            if health is None or health.state == DOWN:
                return
            self.snapshot = _published(
                self.config, snapshot, {replica: down(health, now=now, lag=self.config.lag)}
            )
            published = self.snapshot
        if self.config.metrics:
            from routerkit.metrics import get_metrics

            get_metrics().observe(published)

    def replay_position(self, replica: str, want: int) -> int | None:
        """Return how far a replica has replayed, asking it if it may have reached `want`.

        For a request whose client's position (`want`) is newer than the last
        probe. Asked on the probe's connection, in the probes' pool: the
        request waits at most LAG.TIMEOUT for the answer, as a refresh waits
        for probes (None then; the answer still arrives and is published). A
        replica whose connection fails is marked down. One question per
        replica at a time: requests arriving meanwhile wait for its answer. A
        fresh answer is given again instead of asking when it says the replica
        cannot be at `want` yet (judge.worth_asking()), so that under load the
        questions do not grow with the requests. Answers are published: every
        unit of work that takes a snapshot from here on sees them.
        """
        now = time.monotonic()
        answer = self._answers.get(replica)
        if not worth_asking(answer, want, now):
            return answer.position if answer is not None else None
        with self._asking:
            asking = self._asks.get(replica)
            if asking is None or asking.done():
                answer = self._answers.get(replica)
                if answer is not None and answer.asked >= now:
                    return answer.position  # asked since this request looked
                asking = self._asks[replica] = self._pool().submit(self._ask, replica)
        try:
            answer = asking.result(timeout=self.config.lag.timeout)
        except FutureTimeout:
            return None
        return answer.position if answer is not None else None

    def _ask(self, replica: str) -> Answer | None:
        asked = time.monotonic()
        primary = self.config.replica_of[replica]
        probe = self._probe(replica)
        try:
            # A mirror (the test runner's) is its primary's own database.
            position = probe.primary().lsn if is_mirror(replica, primary) else probe.replay()
        except ProbeError:
            self._answers.pop(replica, None)
            self.mark_down(replica)
            return None
        if position is None:
            return None
        reference = self._rate_from.get(replica)
        answer = answered(self._answers.get(replica), reference, asked, position)
        self._answers[replica] = answer
        if reference is None or asked - reference.asked >= RATE_SPAN:
            self._rate_from[replica] = answer
        with self._publish:
            self.snapshot = self.snapshot.advanced(replica, position)
        return answer

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
            # Requests ask replicas too (replay_position): one probe wins.
            probe = self._probes.setdefault(
                alias, self._probe_factory(alias, self.config.lag.timeout)
            )
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

    def _pool(self) -> ThreadPoolExecutor:
        # Threads do not survive fork(): a pre-forking server needs a new pool per process.
        with self._pool_lock:
            if self._executor is None or self._pid != os.getpid():
                # Room for probes given up on (see ABANDON_TIMEOUTS) beside live
                # ones, and for requests' questions (replay_position).
                size = len(self.config.clusters) + len(self.config.replica_of)
                self._executor = ThreadPoolExecutor(
                    max_workers=max(3 * size, 4), thread_name_prefix="routerkit-probe"
                )
                self._pid = os.getpid()
                self._in_flight.clear()
                self._asks.clear()
            return self._executor

    def _submit(self, started: float) -> dict[str, Future[Any]]:
        """Start this round's probes: every primary, and every replica whose retry is due."""
        config = self.config
        previous = self.snapshot.replicas
        targets = []
        for primary, cluster in config.clusters.items():
            if cluster.replicas:
                targets.append(primary)
            targets.extend(r for r in cluster.replicas if due(previous[r], started))
        pool = self._pool()
        futures: dict[str, Future[Any]] = {}
        for alias in targets:
            running = self._in_flight.get(alias)
            if running is not None and not running[0].done():
                if started - running[1] < config.lag.timeout * ABANDON_TIMEOUTS:
                    continue  # still waiting on the last probe: do not pile up
                # Stuck (a hung server or network): forget that connection
                # without closing it under the thread that uses it.
                self._probes.pop(alias, None)
            submitted: Future[Any] = pool.submit(_timed, self._call(alias))
            if alias in config.clusters:
                # Counted whenever it answers, also after the timeout: a slow
                # primary must not leave the replicas without a position to
                # be judged against.
                submitted.add_done_callback(functools.partial(self._primary_answered, alias))
            futures[alias] = submitted
            self._in_flight[alias] = (submitted, started)
        return futures

    def _primary_answered(self, primary: str, future: Future[Any]) -> None:
        status = _result(future)
        if isinstance(status, PrimaryStatus) and not status.in_recovery and status.lsn is not None:
            self.positions.add(primary, status.lsn)

    def _refresh(self) -> None:
        config = self.config
        lag = config.lag
        started = time.monotonic()
        futures = self._submit(started)
        wait(futures.values(), timeout=lag.timeout)
        for primary in config.clusters:
            # wait() can return before a done future's callbacks have run.
            answered = futures.get(primary)
            if answered is not None and answered.done():
                self._primary_answered(primary, answered)

        now = time.monotonic()
        wall = time.time()
        # A late answer counts while its probe is not given up on.
        since = now - max(lag.interval * STALE_INTERVALS, lag.timeout * ABANDON_TIMEOUTS)
        primary_lsn = {p: self.positions.newest(p, since) for p in config.clusters}
        orphaned = {
            p for p in config.clusters if not isinstance(_result(futures.get(p)), PrimaryStatus)
        }
        reference = {
            p: _reference(c, self.positions, futures) if p in orphaned else primary_lsn[p]
            for p, c in config.clusters.items()
        }
        previous = self.snapshot.replicas
        replicas: dict[str, ReplicaHealth] = {}
        for replica, primary in config.replica_of.items():
            old = previous.get(replica) or ReplicaHealth(replica, primary, UNKNOWN)
            future = futures.get(replica)
            if future is None:
                replicas[replica] = not_probed(old)
                continue
            outcome = _result(future)
            if not isinstance(outcome, (ReplicaStatus, ProbeError)):
                outcome = None
            if outcome is None or isinstance(outcome, ProbeError):
                stats.incr("probe_failure", replica)
            replicas[replica] = judge(
                old,
                outcome,
                primary_lsn=reference[primary],
                history=self.positions.history(primary),
                lag=lag,
                now=now,
                wall=wall,
                probe_seconds=_duration(future),
                orphaned=primary in orphaned,
            )

        snapshot = Snapshot(
            taken_at=wall,
            expires=time.monotonic() + lag.interval * STALE_INTERVALS,
            replicas=replicas,
            primary_lsn=primary_lsn,
            usable={},
        )
        with self._publish:
            marked = {
                replica: down(replicas[replica], now=when, lag=lag)
                for replica, when in self._marked.items()
                if when >= started and replicas[replica].state != DOWN
            }
            self._marked.clear()
            self.snapshot = _published(config, snapshot, marked)
        self.due = time.monotonic() + lag.interval * random.uniform(0.8, 1.2)
        if config.metrics:
            from routerkit.metrics import get_metrics

            get_metrics().observe(self.snapshot)


def _reference(
    cluster: Cluster, positions: Positions, futures: dict[str, Future[Any]]
) -> int | None:
    """The newest position known of a cluster whose primary did not answer.

    Its last known position, or WAL a replica received after it: while the
    primary is down (or frozen, or cut off) no replica can be ahead of both,
    so replicas are judged against each other and what was last seen.
    """
    known = [positions.newest(cluster.primary, since=-math.inf)]
    for replica in cluster.replicas:
        status = _result(futures.get(replica))
        if isinstance(status, ReplicaStatus):
            known.extend((status.receive_lsn, status.replay_lsn))
    return max(filter(None, known), default=None)


def _published(config: Config, snapshot: Snapshot, changed: dict[str, ReplicaHealth]) -> Snapshot:
    """Return `snapshot` with some replicas' health replaced and the rotation to match."""
    replicas = {**snapshot.replicas, **changed}
    usable: dict[str, tuple[str, ...]] = {}
    guarded: dict[str, tuple[str, ...]] = {}
    for primary, cluster in config.clusters.items():
        healthy = [r for r in cluster.replicas if replicas[r].healthy]
        kept = _kept_for_capacity(config.lag.min_replicas - len(healthy), cluster, replicas)
        usable[primary] = tuple(r for r in cluster.replicas if r in healthy or r in kept)
        guarded[primary] = kept
    return replace(snapshot, replicas=replicas, usable=usable, guarded=guarded)


def _kept_for_capacity(
    missing: int, cluster: Cluster, replicas: dict[str, ReplicaHealth]
) -> tuple[str, ...]:
    """The least lagging replicas that keep a cluster at LAG["MIN_REPLICAS"] serving.

    Excluding every lagging replica at once would put all of a cluster's reads
    on its primary (Vitess keeps a minimum serving set for the same reason).
    Only replicas out for lag qualify: one down, unknown or not replaying is
    not a capacity to keep. Readers with a token still need their position.
    """
    if missing <= 0:
        return ()
    lagging = [replicas[r] for r in cluster.replicas if replicas[r].state == LAGGING]
    lagging.sort(key=lambda h: (h.lag_bytes or 0, h.lag_seconds or 0.0))
    return tuple(h.alias for h in lagging[:missing])


def _timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    try:
        outcome: object = call()
    except ProbeError as exc:
        outcome = exc
    return outcome, time.perf_counter() - started


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
