"""The health monitor under a slow primary, long batches and fork(), on the real cluster."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.test import override_settings

from routerkit import consistency_scope
from routerkit.conf import get_config
from routerkit.consistency import decode
from routerkit.health import Monitor, get_monitor
from routerkit.health.probes import PostgresProbe
from tests.pgcluster import PgCluster
from tests.settings import ROUTERKIT

REPLICAS = ("replica1", "replica2")


class SlowPrimaryProbe(PostgresProbe):
    """A real probe whose primary answers late, as a loaded primary does."""

    slow = False

    def primary(self) -> Any:
        if SlowPrimaryProbe.slow:
            time.sleep(self.timeout * 3)
        return super().primary()


@pytest.fixture
def fast(replication: PgCluster) -> Iterator[PgCluster]:
    settings = {**ROUTERKIT, "LAG": {"INTERVAL": 0.05, "TIMEOUT": 0.3, "MAX_SECONDS": 0.5}}
    with override_settings(ROUTERKIT=settings):
        yield replication


def test_a_slow_primary_probe_does_not_empty_the_rotation(fast: PgCluster) -> None:
    """Replicas are judged against the primary's last position when its probe is late."""
    monitor = Monitor(get_config(), probe_factory=SlowPrimaryProbe)
    try:
        assert monitor.refresh().usable["primary"] == REPLICAS
        SlowPrimaryProbe.slow = True
        assert monitor.refresh().usable["primary"] == REPLICAS
    finally:
        SlowPrimaryProbe.slow = False
        monitor.close()


def test_a_primary_probe_that_always_answers_late_still_counts(fast: PgCluster) -> None:
    """Its answers arrive after TIMEOUT, every time: they still date the replicas' lag.

    For longer than STALE_INTERVALS: a position known only from the last
    timely answer would have run out, and every read would land on that
    busy primary.
    """
    monitor = Monitor(get_config(), probe_factory=SlowPrimaryProbe)
    SlowPrimaryProbe.slow = True
    try:
        first = monitor.refresh()
        # No answer yet: the replicas are judged against each other (the WAL they received).
        assert first.usable["primary"] == REPLICAS
        deadline = time.monotonic() + 5
        while monitor.positions.newest("primary", since=0.0) is None:
            assert time.monotonic() < deadline, "the late answer was never counted"
            time.sleep(0.05)
        ends = time.monotonic() + 3.0  # twelve times STALE_INTERVALS * INTERVAL
        rounds = 0
        while time.monotonic() < ends:
            snapshot = monitor.refresh()
            assert snapshot.usable["primary"] == REPLICAS, snapshot.replicas
            assert snapshot.primary_lsn["primary"] is not None
            rounds += 1
            time.sleep(0.05)
        assert rounds > 10
    finally:
        SlowPrimaryProbe.slow = False
        monitor.close()


def test_positions_read_by_requests_reach_the_monitor(fast: PgCluster) -> None:
    """A write's position, read after commit, is the newest the monitor knows."""
    from routerkit import capture_token
    from tests.testapp.models import Article

    with consistency_scope(isolated=True):
        Article.objects.create(title="positioned")
        written = capture_token()
    assert written is not None
    position = decode(written, get_config())["primary"].lsn
    assert position is not None
    newest = get_monitor(get_config()).positions.newest("primary", since=0.0)
    assert newest is not None
    assert newest >= position


def test_a_long_batch_without_commits_is_not_lag(fast: PgCluster) -> None:
    """Caught-up replicas are not lagging while a long batch writes WAL but no commit."""
    # A server keeps refreshing (every INTERVAL) while no commit happens for
    # longer than MAX_SECONDS: the time since the last commit alone would
    # call that lag.
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        get_monitor(get_config()).refresh()
        time.sleep(0.05)
    stop = threading.Event()

    def batch() -> None:
        with psycopg.connect(fast.primary.dsn("routerkit")) as conn, conn.transaction():
            while not stop.is_set():
                conn.execute(
                    "INSERT INTO testapp_counter (name) SELECT 'b' FROM generate_series(1, 50)"
                )

    writer = threading.Thread(target=batch)
    writer.start()
    try:
        time.sleep(0.2)
        states = set()
        for _ in range(10):
            snapshot = get_monitor(get_config()).refresh()
            states |= {snapshot.replicas[r].state for r in REPLICAS}
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join(10)
    assert states == {"healthy"}


def test_a_forked_child_does_not_break_the_parents_probes(fast: PgCluster) -> None:
    """A child process probes on connections of its own, and closing them spares the parent's."""
    monitor = get_monitor(get_config())
    assert monitor.refresh().usable["primary"] == REPLICAS
    pid = os.fork()
    if pid == 0:  # the child, as a pre-forking server's worker
        try:
            child = get_monitor(get_config())
            healthy = child is not monitor and child.refresh().usable["primary"] == REPLICAS
            child.close()
        finally:
            os._exit(0 if healthy else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert monitor.refresh().usable["primary"] == REPLICAS
    assert get_monitor(get_config()) is monitor


# One sample per second while the primary writes 1,000 bytes a second.
STEADY = [(100.0 + n, 1_000 * n) for n in range(6)]  # last sample: t=105, lsn 5,000


@pytest.mark.parametrize(
    ("position", "now", "age"),
    [
        (4_990, 105.0, 0.010),  # 10 bytes behind at 1,000 B/s: 10 ms, not one interval
        (4_500, 105.0, 0.5),
        (4_000, 105.0, 1.0),  # exactly at a sample
        (2_250, 105.5, 3.25),  # between older samples, judged half a second later
        (0, 105.0, 5.0),  # at the oldest sample
        (-1, 105.0, None),  # older than the history: unknown here
        (5_000, 105.2, 0.2),  # at the newest sample: the primary passed it then
    ],
)
def test_lag_in_seconds_is_interpolated_between_samples(
    position: int, now: float, age: float | None
) -> None:
    """Lag seconds come from the primary's position history, not rounded to INTERVAL."""
    from collections import deque

    from routerkit.health.judge import age as _age_of

    measured = _age_of(deque(STEADY), position, now)
    if age is None:
        assert measured is None
    else:
        assert measured == pytest.approx(age, abs=1e-9)


@pytest.fixture
def article(fast: PgCluster) -> int:
    """An article both replicas have replayed."""
    from tests.testapp.models import Article

    with consistency_scope(isolated=True):
        pk = Article.objects.create(title="long").pk
    for replica in REPLICAS:
        fast.wait_replayed(replica)
    get_monitor(get_config()).refresh()
    return int(pk)


def read_db(pk: int) -> str | None:
    from tests.testapp.models import Article

    found = Article.objects.filter(pk=pk).first()
    return found._state.db if found is not None else None


def other(replica: str) -> str:
    return next(r for r in REPLICAS if r != replica)


def dies_while_the_unit_runs(cluster: PgCluster, replica: str) -> None:
    """Stop `replica`, let the monitor see it, and let the unit's snapshot expire."""
    cluster.stop_node(replica)
    get_monitor(get_config()).refresh()
    time.sleep(0.35)  # five intervals of 50 ms


class TestLongUnitsOfWork:
    """A unit of work that outlives its health snapshot takes a fresh one."""

    @pytest.mark.parametrize("unit", ["restore_token", "consistency_scope"])
    def test_a_block(self, fast: PgCluster, article: int, unit: str) -> None:
        """A restore_token() block (a task), or a consistency_scope() (a long command)."""
        from routerkit import restore_token

        with restore_token(None) if unit == "restore_token" else consistency_scope():
            first = read_db(article)
            assert first in REPLICAS
            dies_while_the_unit_runs(fast, first)
            assert read_db(article) == other(first)

    def test_a_streaming_body(self, fast: PgCluster, article: int) -> None:
        from django.test import Client

        response = Client().get(f"/stream/articles/{article}/")
        chunks = iter(response.streaming_content)  # type: ignore[attr-defined]
        first = next(chunks).decode().strip()
        assert first in REPLICAS
        dies_while_the_unit_runs(fast, first)
        assert next(chunks).decode().strip() == other(first)

    def test_the_reads_never_go_back_in_time(self, fast: PgCluster, article: int) -> None:
        """The replica left behind passes on its floor: one behind it does not serve."""
        from routerkit import restore_token
        from tests.testapp.models import Article

        monitor = get_monitor(get_config())
        with restore_token(None):
            first = read_db(article)
            assert first in REPLICAS
            fast.pause_replay(other(first))
            with consistency_scope(isolated=True):
                newer = Article.objects.create(title="newer").pk
            fast.wait_replayed(first)
            monitor.refresh()
            assert read_db(newer) == first  # the unit has seen `newer`
            dies_while_the_unit_runs(fast, first)
            # The other replica is up but has not replayed `newer`.
            assert read_db(newer) == "primary"


def test_a_replica_down_for_long_rejoins_at_its_next_probe(fast: PgCluster) -> None:
    """Forty failed probes in a row, then reachable: back within two intervals."""
    monitor = Monitor(get_config())
    try:
        fast.stop_node("replica2")
        failures = 0
        while failures < 40:
            health = monitor.refresh().replicas["replica2"]
            assert health.state == "down"
            failures = health.failures
            time.sleep(0.05)
        fast.start_node("replica2")
        fast.wait_replayed("replica2")
        time.sleep(0.05)  # one INTERVAL: its next probe is due
        assert monitor.refresh().usable["primary"] == REPLICAS
    finally:
        monitor.close()


def test_an_idle_process_does_not_see_a_replica_just_behind_as_lagging(
    replication: PgCluster,
) -> None:
    """No refresh for longer than MAX_SECONDS, then a write: the replica is ms behind."""
    lag = {"INTERVAL": 0.1, "TIMEOUT": 0.3, "MAX_SECONDS": 1.0}
    with override_settings(ROUTERKIT={**ROUTERKIT, "LAG": lag}):
        monitor = Monitor(get_config())
        try:
            assert monitor.refresh().usable["primary"] == REPLICAS
            time.sleep(2.0)  # idle: nobody refreshes
            replication.pause_replay("replica1")  # keep it behind the write below
            replication.execute(
                "primary",
                "INSERT INTO testapp_article (title) VALUES ('after idle')",
                dbname="routerkit",
            )
            judged = monitor.refresh().replicas["replica1"]
            assert judged.lag_bytes is not None
            assert judged.lag_bytes > 0
            assert judged.state == "healthy", judged
            assert judged.lag_seconds is not None
            assert judged.lag_seconds < 0.5
        finally:
            monitor.close()
