"""Prometheus metrics: exact values after known decisions, on a fresh registry."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import pytest
from django.db import router, transaction
from django.test import Client, override_settings
from prometheus_client import CollectorRegistry

from routerkit import consistency_scope, use_primary
from routerkit.conf import get_config
from routerkit.health import LAGGING, get_monitor
from routerkit.state import current_scope
from routerkit.values import Requirement
from tests.billing.models import Invoice
from tests.conftest import healthy_snapshot
from tests.pgcluster import PgCluster
from tests.settings import ROUTERKIT
from tests.testapp.models import Article

DECISIONS = "routerkit_route_decisions_total"


def decisions(registry: CollectorRegistry, database: str, reason: str, op: str = "read") -> float:
    value = registry.get_sample_value(
        DECISIONS, {"operation": op, "database": database, "reason": reason}
    )
    return value or 0.0


def read_in_scope(times: int = 1, **scope: object) -> None:
    with consistency_scope(isolated=True) as opened:
        opened.snapshot = healthy_snapshot(get_config())
        for name, value in scope.items():
            setattr(opened, name, value)
        for _ in range(times):
            router.db_for_read(Article)


class TestDecisions:
    def test_reads_counted_per_replica_when_the_scope_ends(
        self, registry: CollectorRegistry
    ) -> None:
        """Ten reads spread over two replicas count ten, flushed when the scope ends."""
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = healthy_snapshot(get_config())
            for _ in range(10):
                router.db_for_read(Article)
            assert decisions(registry, "replica1", "replica") == 0  # not flushed yet
        total = decisions(registry, "replica1", "replica") + decisions(
            registry, "replica2", "replica"
        )
        assert total == 10

    @pytest.mark.parametrize(
        ("setup", "reason"),
        [
            (lambda scope: scope.written.add("primary"), "written"),
            (
                lambda scope: scope.requirements.update({"primary": Requirement(lsn=2**40)}),
                "token_pending",
            ),
            (
                lambda scope: scope.requirements.update(
                    {"primary": Requirement(until=time.time() + 60)}
                ),
                "sticky",
            ),
            (lambda scope: setattr(scope, "snapshot", _no_usable(LAGGING)), "lagging"),
            (lambda scope: setattr(scope, "snapshot", _no_usable("down")), "unhealthy"),
        ],
        ids=["written", "token_pending", "sticky", "lagging", "unhealthy"],
    )
    def test_each_reason_for_the_primary(
        self, registry: CollectorRegistry, setup: object, reason: str
    ) -> None:
        """A read sent to the primary is counted with the reason that sent it there."""
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = healthy_snapshot(get_config())
            setup(scope)  # type: ignore[operator]
            assert router.db_for_read(Article) == "primary"
        assert decisions(registry, "primary", reason) == 1

    def test_forced_and_no_replicas(self, registry: CollectorRegistry) -> None:
        """use_primary() reads count as forced; a primary without replicas as primary."""
        from django.contrib.auth.models import User

        with consistency_scope(isolated=True) as scope:
            scope.snapshot = healthy_snapshot(get_config())
            with use_primary():
                router.db_for_read(Article)
            router.db_for_read(User)
        assert decisions(registry, "primary", "forced") == 1
        assert decisions(registry, "auth_db", "primary") == 1

    def test_writes_are_counted(self, registry: CollectorRegistry) -> None:
        """db_for_write decisions count as operation="write" on the primary."""
        with consistency_scope(isolated=True):
            router.db_for_write(Invoice)
            router.db_for_write(Invoice)
        assert decisions(registry, "billing", "primary", op="write") == 2

    def test_reads_in_a_transaction(
        self, registry: CollectorRegistry, replication: PgCluster
    ) -> None:
        """Reads inside atomic() on the primary count as transaction."""
        with consistency_scope(isolated=True), transaction.atomic(using="primary"):
            list(Article.objects.all()[:1])
        assert decisions(registry, "primary", "transaction") == 1

    @override_settings(ROUTERKIT={**ROUTERKIT, "METRICS": False})
    def test_metrics_off_counts_nothing(self, registry: CollectorRegistry) -> None:
        """With METRICS False no decision is counted."""
        read_in_scope(times=5)
        assert registry.get_sample_value(DECISIONS, {}) is None
        assert not [
            s for m in registry.collect() for s in m.samples if s.value and "decisions" in s.name
        ]


def _no_usable(state: str) -> object:
    snapshot = healthy_snapshot(get_config())
    replicas = {
        alias: replace(health, state=state) if health.primary == "primary" else health
        for alias, health in snapshot.replicas.items()
    }
    return replace(snapshot, replicas=replicas, usable={**snapshot.usable, "primary": ()})


class TestHealthMetrics:
    def test_lag_and_health_gauges_follow_the_monitor(
        self, registry: CollectorRegistry, replication: PgCluster
    ) -> None:
        """A paused replica behind writes shows lag bytes; a stopped one health 0."""
        replication.pause_replay("replica1")
        replication.execute(
            "primary",
            "INSERT INTO testapp_counter (name) SELECT 'x' FROM generate_series(1, 300)",
            dbname="routerkit",
        )
        replication.wait_replayed("replica2")
        get_monitor(get_config()).refresh()
        assert (
            registry.get_sample_value("routerkit_replica_lag_bytes", {"database": "replica1"}) or 0
        ) > 0
        assert (
            registry.get_sample_value("routerkit_replica_lag_bytes", {"database": "replica2"}) == 0
        )
        assert registry.get_sample_value("routerkit_replica_healthy", {"database": "replica2"}) == 1
        probes = registry.get_sample_value(
            "routerkit_probe_duration_seconds_count", {"database": "replica2"}
        )
        assert probes is not None
        assert probes >= 1

    def test_probe_failures_are_counted(
        self, registry: CollectorRegistry, replication: PgCluster
    ) -> None:
        """A stopped replica makes its probe fail, counted, and its health 0."""
        replication.stop_node("replica2")
        get_monitor(get_config()).refresh()
        assert (
            registry.get_sample_value("routerkit_probe_failures_total", {"database": "replica2"})
            == 1
        )
        assert registry.get_sample_value("routerkit_replica_healthy", {"database": "replica2"}) == 0

    def test_rejected_tokens_are_counted(
        self, registry: CollectorRegistry, replication: PgCluster
    ) -> None:
        """A tampered cookie shows in routerkit_tokens_rejected_total."""
        client = Client()
        client.cookies["routerkit"] = "forged"
        client.get("/articles/1/")
        assert (
            registry.get_sample_value("routerkit_tokens_rejected_total", {"reason": "tampered"})
            == 1
        )


def test_nothing_is_registered_at_import() -> None:
    """Importing every routerkit module leaves the default registry without routerkit metrics."""
    code = (
        "import routerkit, routerkit.metrics, routerkit.views, routerkit.routers, "
        "routerkit.middleware, routerkit.health;"
        "from prometheus_client import REGISTRY;"
        "names = [m.name for m in REGISTRY.collect()];"
        "print([n for n in names if n.startswith('routerkit')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env={"PATH": ""}
    )
    assert result.stdout.strip() == "[]", result.stderr
    assert current_scope() is not None


@pytest.mark.usefixtures("all_replicas_healthy")
class TestDecisionsOutsideAnyScope:
    @staticmethod
    def in_a_bare_thread(work: object) -> None:
        """Run `work` on a new thread: an empty context, as a script's or a shell's."""
        import threading

        from django.db import connections

        def run() -> None:
            try:
                work()  # type: ignore[operator]
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(10)

    def test_the_first_decision_is_counted_at_once(self, registry: CollectorRegistry) -> None:
        """A one-query script's read reaches the metrics although no scope ever ends."""
        self.in_a_bare_thread(lambda: router.db_for_read(Article))
        total = decisions(registry, "replica1", "replica") + decisions(
            registry, "replica2", "replica"
        )
        assert total == 1

    def test_later_decisions_are_flushed_as_they_come(
        self, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the flush interval elapsed, every read and write outside a scope is counted."""
        from routerkit import selection

        monkeypatch.setattr(selection, "UNSCOPED_FLUSH_SECONDS", 0.0)

        def work() -> None:
            for _ in range(5):
                router.db_for_read(Article)
            router.db_for_write(Invoice)

        self.in_a_bare_thread(work)
        total = decisions(registry, "replica1", "replica") + decisions(
            registry, "replica2", "replica"
        )
        assert total == 5
        assert decisions(registry, "billing", "primary", op="write") == 1
