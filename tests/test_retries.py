"""Reads that fail on a replica run again elsewhere, on the real cluster (issue 10 item 1).

The monitor refreshes only once here (INTERVAL is a minute), so a replica
that fails stays in the snapshot the test began with: only routerkit's
retry stands between the failure and the caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connections, transaction
from django.test import override_settings
from prometheus_client import CollectorRegistry

from routerkit import PrimaryUnavailable, consistency_scope, stats
from routerkit.conf import get_config
from routerkit.health import DOWN, HEALTHY, Monitor, get_monitor
from routerkit.health.probes import PostgresProbe
from routerkit.state import current_scope
from tests.pgcluster import PgCluster
from tests.settings import ROUTERKIT
from tests.test_replication import committed_elsewhere
from tests.testapp.models import Article

REPLICAS = ("replica1", "replica2")


@pytest.fixture
def steady(replication: PgCluster) -> Iterator[PgCluster]:
    """Both replicas healthy in a snapshot that is not refreshed during the test."""
    settings = {**ROUTERKIT, "LAG": {"INTERVAL": 60.0, "TIMEOUT": 2.0}}
    with override_settings(ROUTERKIT=settings):
        snapshot = get_monitor(get_config()).refresh()
        assert snapshot.usable["primary"] == REPLICAS
        yield replication


def pinned_read() -> tuple[str, list[str]]:
    """Read in the current scope; return the replica it went to and the titles read."""
    titles = sorted(Article.objects.values_list("title", flat=True))
    replica = current_scope().pinned["primary"]
    assert replica in REPLICAS
    return replica, titles


def other(replica: str) -> str:
    return next(r for r in REPLICAS if r != replica)


def retries(replica: str, reason: str) -> int:
    return stats.get("read_retry", replica, reason)


def test_a_read_whose_replica_crashed_runs_on_the_other(
    steady: PgCluster, registry: CollectorRegistry
) -> None:
    committed_elsewhere("kept")
    steady.wait_replayed("replica1")
    steady.wait_replayed("replica2")
    with consistency_scope(isolated=True):
        replica, before = pinned_read()  # its connection is open now
        counted = retries(replica, "connection_lost")
        steady.stop_node(replica)  # a crash: the open connection breaks
        after = sorted(Article.objects.values_list("title", flat=True))
        assert after == before
        assert "kept" in after
        assert current_scope().pinned["primary"] == other(replica)
    assert retries(replica, "connection_lost") == counted + 1
    sample = registry.get_sample_value(
        "routerkit_read_retries_total", {"database": replica, "reason": "connection_lost"}
    )
    assert sample == 1.0
    # Out of the whole process's rotation at once, not at the next refresh.
    snapshot = get_monitor(get_config()).current()
    assert snapshot.replicas[replica].state == DOWN
    assert snapshot.usable["primary"] == (other(replica),)
    assert registry.get_sample_value("routerkit_replica_healthy", {"database": replica}) == 0.0
    with consistency_scope(isolated=True):
        assert Article.objects.filter(title="kept").exists()
        assert current_scope().pinned["primary"] == other(replica)


@pytest.mark.parametrize("debug", [False, True], ids=["", "queries logged"])
def test_a_replica_that_cannot_be_connected_to_is_left_for_another(
    steady: PgCluster, debug: bool
) -> None:
    """Also with DEBUG's query log, whose cursor formats the failed statement again."""
    with consistency_scope(isolated=True):
        replica, before = pinned_read()
        connections[replica].close()
        for alias in REPLICAS:
            connections[alias].force_debug_cursor = debug
        steady.refuse_connections(replica, "routerkit")
        counted = retries(replica, "connect")
        assert sorted(Article.objects.values_list("title", flat=True)) == before
        assert retries(replica, "connect") == counted + 1
        assert current_scope().pinned["primary"] == other(replica)
        if debug:
            logged = connections[other(replica)].queries
            assert any("testapp_article" in query["sql"] for query in logged)
    for alias in REPLICAS:
        connections[alias].force_debug_cursor = False
    assert get_monitor(get_config()).current().replicas[replica].state == DOWN


def test_with_both_replicas_gone_a_read_ends_on_the_primary(steady: PgCluster) -> None:
    with consistency_scope(isolated=True):
        _, before = pinned_read()
        for name in REPLICAS:
            steady.stop_node(name)
        assert sorted(Article.objects.values_list("title", flat=True)) == before
        assert "primary" in current_scope().read_from
        assert "primary" not in current_scope().pinned
    snapshot = get_monitor(get_config()).current()
    assert {snapshot.replicas[r].state for r in REPLICAS} == {DOWN}


def test_an_iterator_read_keeps_a_server_side_cursor_on_the_new_database(
    steady: PgCluster,
) -> None:
    with consistency_scope(isolated=True):
        replica, before = pinned_read()
        steady.stop_node(replica)
        titles = sorted(a.title for a in Article.objects.iterator(chunk_size=2))
        assert titles == before


def attempt(kind: str, replica: str, article: Article) -> None:
    if kind == "raw update":
        with connections[replica].cursor() as cursor:
            cursor.execute(
                "UPDATE testapp_article SET title = 'changed' WHERE id = %s", [article.pk]
            )
    elif kind == "atomic block":
        with transaction.atomic(using=replica):
            list(Article.objects.using(replica).all())
    else:
        current_scope().pinned.clear()  # nothing routed there in this unit of work
        list(Article.objects.using(replica).all())


@pytest.mark.parametrize("kind", ["raw update", "atomic block", "explicit using"])
def test_what_is_not_a_routed_read_outside_a_transaction_is_not_retried(
    steady: PgCluster, kind: str
) -> None:
    """Writes never run twice or elsewhere; a transaction or an explicit alias keeps its error."""
    article = committed_elsewhere("original")
    steady.wait_replayed("replica1")
    steady.wait_replayed("replica2")
    with consistency_scope(isolated=True):
        replica, _ = pinned_read()
        steady.stop_node(replica)
        with pytest.raises(OperationalError):
            attempt(kind, replica, article)
    assert Article.objects.using("primary").get(pk=article.pk).title == "original"
    assert get_monitor(get_config()).current().replicas[replica].state == DOWN


def test_a_read_cancelled_by_a_recovery_conflict_runs_again(steady: PgCluster) -> None:
    """A replica cancels a read to replay an ACCESS EXCLUSIVE lock; the read still answers."""
    committed_elsewhere("conflicted")
    for name in REPLICAS:
        steady.configure(name, max_standby_streaming_delay="100ms")
        steady.wait_replayed(name)

    def lock_on_the_primary() -> None:
        time.sleep(0.5)  # the read below is sleeping on the replica by then
        with psycopg.connect(steady.primary.dsn("routerkit")) as connection:
            connection.execute("LOCK TABLE testapp_article IN ACCESS EXCLUSIVE MODE")

    with consistency_scope(isolated=True):
        replica, _ = pinned_read()
        counted = retries(replica, "recovery_conflict")
        locker = threading.Thread(target=lock_on_the_primary)
        locker.start()
        slow = Article.objects.extra(select={"slept": "pg_sleep(1.5)"}).filter(title="conflicted")
        assert [a.title for a in slow] == ["conflicted"]
        locker.join()
        assert retries(replica, "recovery_conflict") == counted + 1
        assert current_scope().pinned.get("primary") != replica
    # A conflict says nothing against the replica's health.
    assert get_monitor(get_config()).current().replicas[replica].state == HEALTHY


def test_a_write_to_a_primary_that_is_down_raises_primary_unavailable(steady: PgCluster) -> None:
    connections["primary"].close()
    steady.stop_node("primary")
    with pytest.raises(PrimaryUnavailable) as raised:
        Article.objects.create(title="lost")
    error = raised.value
    assert isinstance(error, OperationalError)
    assert error.alias == "primary"
    assert "'primary'" in str(error)
    # The driver's error (and the connection settings it holds) is not chained.
    assert error.__cause__ is None
    assert error.__suppress_context__


class HeldProbe(PostgresProbe):
    """A real probe whose replica answers only once the test lets it."""

    gate = threading.Event()

    def replica(self) -> Any:
        status = super().replica()
        HeldProbe.gate.wait(5)
        return status


def test_a_refresh_under_way_does_not_bring_back_a_replica_marked_down(steady: PgCluster) -> None:
    """Its probe answered before the replica failed: the failure a request saw is newer."""
    monitor = Monitor(get_config(), probe_factory=HeldProbe)
    try:
        HeldProbe.gate.set()
        assert monitor.refresh().usable["primary"] == REPLICAS
        HeldProbe.gate.clear()
        refresher = threading.Thread(target=monitor.refresh)
        refresher.start()
        time.sleep(0.3)  # both replica probes have read a healthy status and wait
        monitor.mark_down("replica1")
        assert monitor.current().usable["primary"] == ("replica2",)
        HeldProbe.gate.set()
        refresher.join()
        snapshot = monitor.current()
        assert snapshot.replicas["replica1"].state == DOWN
        assert snapshot.usable["primary"] == ("replica2",)
    finally:
        HeldProbe.gate.set()
        monitor.close()
