"""A unit of work repeats its read decision until something it depends on changes.

Each test makes a read go to a replica (which leaves a route in the scope),
changes one thing the decision depends on, and checks that the next read is
what a fresh decision says, not the repeated one.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from django.apps import apps
from django.db import connections, router, transaction
from django.db.utils import ConnectionRouter
from django.test import override_settings
from prometheus_client import CollectorRegistry

from routerkit import consistency_scope, restore_token, scoped, use_primary
from routerkit.conf import get_config
from routerkit.consistency import encode
from routerkit.health import get_monitor
from routerkit.routers import AppRouter, ContribRouter, PrimaryReplicaRouter, Router
from routerkit.runtime import get_runtime
from routerkit.state import Scope
from routerkit.values import Requirement, Snapshot
from tests.conftest import healthy_snapshot, positioned_snapshot
from tests.pgcluster import PgCluster
from tests.testapp.models import Article

REPLICAS = {"replica1", "replica2"}


@pytest.fixture(autouse=True)
def _replicas_as_in_production() -> None:
    """Give this thread's replica connections their class's methods back.

    A Django test case that did not list them replaced their `connect` and
    put the original back as an instance attribute when it ended; a route is
    only made for a replica whose `connect` is its class's (routerkit.selection).
    """
    for alias in REPLICAS:
        attrs = connections[alias].__dict__
        for name in ("connect", "temporary_connection", "cursor", "chunked_cursor"):
            if type(attrs.get(name)).__name__ == "method":
                del attrs[name]


def _other(replica: str) -> str:
    return next(iter(REPLICAS - {replica}))


@pytest.fixture
def request_scope() -> Iterator[Scope]:
    """A request's scope with a health snapshot in which both replicas serve."""
    with consistency_scope(isolated=True) as scope:
        scope.snapshot = healthy_snapshot(get_config())
        yield scope


def _routed(scope: Scope) -> str:
    """Read once so that the scope holds a route; return the replica it goes to."""
    first = router.db_for_read(Article)
    assert first in REPLICAS
    assert scope.routes[Article].alias == first
    return first


class TestRepeated:
    def test_reads_repeat_the_first_decision_and_are_all_counted(
        self, request_scope: Scope, registry: CollectorRegistry
    ) -> None:
        replica = _routed(request_scope)
        assert {router.db_for_read(Article) for _ in range(19)} == {replica}
        assert request_scope.routes[Article].count == 19
        request_scope.take_counts()  # as at the end of the request
        assert request_scope.routes[Article].count == 0

    def test_every_repeated_read_reaches_the_metrics(self, registry: CollectorRegistry) -> None:
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = healthy_snapshot(get_config())
            replica = _routed(scope)
            for _ in range(19):
                router.db_for_read(Article)
        sample = registry.get_sample_value(
            "routerkit_route_decisions_total",
            {"operation": "read", "database": replica, "reason": "replica"},
        )
        assert sample == 20

    def test_the_reads_of_a_forgotten_route_are_counted(self, registry: CollectorRegistry) -> None:
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = healthy_snapshot(get_config())
            replica = _routed(scope)
            for _ in range(9):
                router.db_for_read(Article)
            scope.snapshot = healthy_snapshot(get_config())  # a new route replaces it
            for _ in range(5):
                router.db_for_read(Article)
            scope.written.add("primary")  # forgets them all
            router.db_for_read(Article)
        labels = {"operation": "read", "database": replica, "reason": "replica"}
        assert registry.get_sample_value("routerkit_route_decisions_total", labels) == 15

    def test_a_read_with_an_instance_follows_the_instance(self, request_scope: Scope) -> None:
        """An object loaded from the other replica keeps its relations' reads there."""
        replica = _routed(request_scope)
        instance = Article(pk=1)
        instance._state.db = _other(replica)
        assert router.db_for_read(Article, instance=instance) == _other(replica)
        assert router.db_for_read(Article) == replica

    def test_only_the_router_that_made_it_repeats_it(self, request_scope: Scope) -> None:
        """ContribRouter has no opinion on Article, whatever the catch-all decided."""
        _routed(request_scope)
        contrib = next(r for r in router.routers if isinstance(r, ContribRouter))
        assert contrib.db_for_read(Article) is None


class TestForgotten:
    @pytest.mark.parametrize(
        "change",
        [
            lambda scope: scope.written.add("primary"),
            lambda scope: scope.written.update({"primary"}),
            lambda scope: scope.written.__ior__({"primary"}),
        ],
        ids=["add", "update", "ior"],
    )
    def test_a_write_sends_the_next_read_to_the_primary(
        self, request_scope: Scope, change: Callable[[Scope], Any]
    ) -> None:
        _routed(request_scope)
        change(request_scope)
        assert router.db_for_read(Article) == "primary"

    @pytest.mark.parametrize(
        "change",
        [
            lambda scope, r: scope.requirements.__setitem__("primary", r),
            lambda scope, r: scope.requirements.update({"primary": r}),
            lambda scope, r: scope.requirements.setdefault("primary", r),
            lambda scope, r: scope.requirements.__ior__({"primary": r}),
            lambda scope, r: setattr(scope, "requirements", {"primary": r}),
        ],
        ids=["setitem", "update", "setdefault", "ior", "assign"],
    )
    def test_a_raised_requirement_is_met(self, change: Callable[[Scope, Requirement], Any]) -> None:
        snapshot = positioned_snapshot(get_config(), {"replica1": 100, "replica2": 300})
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = snapshot
            scope.pinned["primary"] = "replica1"
            assert _routed(scope) == "replica1"
            change(scope, Requirement(lsn=200))
            assert router.db_for_read(Article) == "replica2"

    def test_use_primary_is_obeyed_and_the_route_comes_back_after(
        self, request_scope: Scope
    ) -> None:
        replica = _routed(request_scope)
        with use_primary():
            assert router.db_for_read(Article) == "primary"
        assert router.db_for_read(Article) == replica

    def test_a_nested_block_that_moved_to_another_replica_is_followed(self) -> None:
        """Reads never go back to the replica the request left inside a nested block."""
        snapshot = positioned_snapshot(get_config(), {"replica1": 100, "replica2": 300})
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = snapshot
            scope.pinned["primary"] = "replica1"
            assert _routed(scope) == "replica1"
            with restore_token(encode({"primary": Requirement(lsn=200)})) as nested:
                nested.snapshot = snapshot
                assert router.db_for_read(Article) == "replica2"
            assert router.db_for_read(Article) == "replica2"

    def test_a_new_snapshot_is_judged_afresh(self, request_scope: Scope) -> None:
        replica = _routed(request_scope)
        assert request_scope.snapshot is not None
        request_scope.snapshot = _without(request_scope.snapshot, replica)
        assert router.db_for_read(Article) == _other(replica)

    def test_an_expired_snapshot_is_renewed(
        self, request_scope: Scope, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        snapshot = healthy_snapshot(get_config())
        request_scope.snapshot = replace(snapshot, expires=time.monotonic() + 0.05)
        replica = _routed(request_scope)
        renewed = _without(snapshot, replica)
        monkeypatch.setattr(get_runtime().monitor, "refresh_if_due", lambda: renewed)
        time.sleep(0.1)
        assert router.db_for_read(Article) == _other(replica)

    def test_changed_settings_are_obeyed(self, request_scope: Scope) -> None:
        _routed(request_scope)
        with override_settings(ROUTERKIT={**get_config_settings(), "REPLICAS": {}}):
            assert router.db_for_read(Article) == "primary"


def get_config_settings() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.ROUTERKIT)


def _without(snapshot: Snapshot, replica: str) -> Snapshot:
    usable = tuple(r for r in snapshot.usable["primary"] if r != replica)
    return replace(snapshot, usable={**snapshot.usable, "primary": usable})


class TestOutsideAnyScope:
    """Code outside any unit of work repeats decisions made on the monitor's snapshot."""

    @pytest.fixture
    def monitor_healthy(self) -> Iterator[Any]:
        monitor = get_monitor(get_config())
        saved = monitor.snapshot, monitor.due
        monitor.snapshot, monitor.due = healthy_snapshot(get_config()), time.monotonic() + 60
        try:
            yield monitor
        finally:
            monitor.snapshot, monitor.due = saved

    def test_a_replica_the_monitor_left_is_left(self, monitor_healthy: Any) -> None:
        def reads() -> tuple[str | None, bool, str | None]:
            first = router.db_for_read(Article)
            assert first is not None
            router.db_for_read(Article)  # the first read of a context flushes its counts
            repeated = router.db_for_read(Article) == first
            monitor_healthy.snapshot = _without(monitor_healthy.snapshot, first)
            return first, repeated, router.db_for_read(Article)

        first, repeated, after = contextvars.Context().run(reads)
        assert first in REPLICAS
        assert repeated
        assert after == _other(first)

    def test_repeated_reads_reach_the_metrics_although_no_scope_ends(
        self, monitor_healthy: Any, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from routerkit import selection

        monkeypatch.setattr(selection, "UNSCOPED_FLUSH_SECONDS", 0.05)

        def reads() -> str | None:
            for _ in range(10):
                first = router.db_for_read(Article)
            time.sleep(0.1)
            router.db_for_read(Article)  # flushes what came before it
            return first

        replica = contextvars.Context().run(reads)
        labels = {"operation": "read", "database": replica, "reason": "replica"}
        assert registry.get_sample_value("routerkit_route_decisions_total", labels) >= 10

    def test_a_django_test_case_that_forbids_the_replicas_is_obeyed(
        self, monitor_healthy: Any
    ) -> None:
        """A route made before a test case that lists only the primary is not used in it."""
        from tests.test_user_code import _PrimaryOnlyCase

        def reads() -> tuple[str | None, str | None]:
            first = router.db_for_read(Article)
            router.db_for_read(Article)
            _PrimaryOnlyCase._add_databases_failures()
            try:
                return first, router.db_for_read(Article)
            finally:
                _PrimaryOnlyCase._remove_databases_failures()

        first, during = contextvars.Context().run(reads)
        assert first in REPLICAS
        assert during == "primary"


class TestOnTheDatabase:
    def test_an_atomic_block_reads_the_primary(self, replication: PgCluster) -> None:
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = healthy_snapshot(get_config())
            replica = _routed(scope)
            with transaction.atomic(using="primary"):
                assert router.db_for_read(Article) == "primary"
            assert router.db_for_read(Article) == replica

    def test_an_orm_write_sends_the_next_read_to_the_primary(self, replication: PgCluster) -> None:
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = healthy_snapshot(get_config())
            _routed(scope)
            Article.objects.create(title="routes")
            assert router.db_for_read(Article) == "primary"

    def test_another_thread_in_a_transaction_reads_the_primary(
        self, replication: PgCluster
    ) -> None:
        """A route holds its thread's connection: another thread sharing the scope has its own."""
        found: dict[str, str | None] = {}

        def in_transaction() -> None:
            with transaction.atomic(using="primary"):
                found["thread"] = router.db_for_read(Article)
            connections.close_all()

        with consistency_scope(isolated=True) as scope:
            scope.snapshot = healthy_snapshot(get_config())
            replica = _routed(scope)
            thread = threading.Thread(target=scoped(in_transaction))
            thread.start()
            thread.join(10)
            assert router.db_for_read(Article) == replica
        assert found["thread"] == "primary"


class TestRouter:
    """routerkit.routers.Router decides as ContribRouter, AppRouter, PrimaryReplicaRouter do."""

    chain = ConnectionRouter([ContribRouter(), AppRouter(), PrimaryReplicaRouter()])
    one = ConnectionRouter([Router()])

    def test_every_model_is_placed_as_by_the_three(self) -> None:
        models = apps.get_models(include_auto_created=True)
        assert {m: self.one.db_for_write(m) for m in models} == {
            m: self.chain.db_for_write(m) for m in models
        }
        assert {self.one.db_for_write(m) for m in models} >= {"auth_db", "billing", "primary"}

    def test_every_migration_is_allowed_as_by_the_three(self) -> None:
        from django.conf import settings

        cases = [
            (db, model._meta.app_label, model._meta.model_name, model)
            for db in settings.DATABASES
            for model in apps.get_models(include_auto_created=True)
        ]
        for db, app_label, model_name, model in cases:
            for hints in ({}, {"model": model}):
                one = self.one.allow_migrate(db, app_label, model_name=model_name, **hints)
                chain = self.chain.allow_migrate(db, app_label, model_name=model_name, **hints)
                assert one == chain, (db, app_label, model_name, hints)

    def test_reads_go_to_the_replicas_and_repeat(self, request_scope: Scope) -> None:
        reads = {self.one.db_for_read(Article) for _ in range(10)}
        assert len(reads) == 1
        assert reads <= REPLICAS
        assert request_scope.routes[Article].count == 9

    def test_it_carries_contrib_and_apps_for_the_wiring_check(self) -> None:
        from routerkit.validation.config import check_wiring

        with override_settings(DATABASE_ROUTERS=["routerkit.routers.Router"]):
            assert [m.id for m in check_wiring()] == []
        with override_settings(DATABASE_ROUTERS=["routerkit.routers.PrimaryReplicaRouter"]):
            assert [m.id for m in check_wiring()] == ["routerkit.W005", "routerkit.W005"]
