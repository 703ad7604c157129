"""Around users' own code: threads they start, test code beside the test client, mirrors."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from uuid import uuid4

import pytest
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client, TransactionTestCase, override_settings
from prometheus_client import CollectorRegistry

import routerkit
from routerkit import consistency_scope
from routerkit.conf import get_config
from routerkit.health import HEALTHY, get_monitor
from tests.pgcluster import PgCluster
from tests.test_consistency import REPLICAS, routerkit_settings
from tests.testapp.models import Article

T = TypeVar("T")


@pytest.fixture
def paused(replication: PgCluster) -> Iterator[PgCluster]:
    """Both replicas healthy in the monitor's eyes but no longer replaying."""
    with override_settings(ROUTERKIT=routerkit_settings()):
        for replica in REPLICAS:
            replication.pause_replay(replica)
        get_monitor(get_config()).refresh()
        yield replication


def outside_any_scope(func: Callable[[], T]) -> T:
    """Run `func` as a user's test does: in a context where no unit of work was opened."""
    return contextvars.Context().run(func)


def on_a_thread(func: Callable[[], T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(func).result()


def find(pk: int) -> Article | None:
    return Article.objects.filter(pk=pk).first()


class TestThreads:
    def test_a_plain_thread_does_not_see_its_parents_write(self, paused: PgCluster) -> None:
        """The reason for scoped(): a new thread reads a replica behind the parent's write."""
        with consistency_scope():
            pk = Article.objects.create(title=uuid4().hex).pk
            assert on_a_thread(lambda: find(pk)) is None

    def test_a_scoped_thread_reads_its_parents_write(self, paused: PgCluster) -> None:
        """A callable wrapped in scoped() reads what its parent wrote, from the primary."""
        with consistency_scope():
            pk = Article.objects.create(title=uuid4().hex).pk
            found = on_a_thread(routerkit.scoped(lambda: find(pk)))
        assert found is not None
        assert found._state.db == "primary"

    def test_the_parent_reads_what_a_scoped_thread_wrote(self, paused: PgCluster) -> None:
        """A write made on a scoped thread keeps the parent's later reads on the primary."""
        with consistency_scope():
            create = routerkit.scoped(lambda: Article.objects.create(title=uuid4().hex).pk)
            pk = on_a_thread(create)
            found = find(pk)
        assert found is not None
        assert found._state.db == "primary"

    def test_a_request_sees_what_its_pool_thread_wrote(
        self, paused: PgCluster, client: Client
    ) -> None:
        """In a view: the thread's write is read back, and is in the client's token."""
        response = client.post("/threaded/articles/", {"title": uuid4().hex})
        assert response.status_code == 200
        assert response.json()["db"] == "primary"
        pk = response.json()["id"]
        again = client.get(f"/articles/{pk}/")
        assert (again.status_code, again.json()["db"]) == (200, "primary")

    def test_scoped_passes_arguments_and_runs_concurrently(self, paused: PgCluster) -> None:
        """One wrapped callable may run on several threads at once, with its arguments."""
        with consistency_scope():
            pks = [Article.objects.create(title=uuid4().hex).pk for _ in range(4)]
            lookup = routerkit.scoped(find)
            with ThreadPoolExecutor(max_workers=4) as pool:
                found = list(pool.map(lookup, pks))
        assert [a.pk if a else None for a in found] == pks

    def test_a_scoped_call_on_a_thread_closes_its_connections(self, paused: PgCluster) -> None:
        """As a request does: a worker's open connection would block DROP DATABASE in tests."""

        def query() -> BaseDatabaseWrapper:
            Article.objects.using("primary").exists()
            return connections["primary"]

        with consistency_scope():
            wrapper = on_a_thread(routerkit.scoped(query))
            assert wrapper.connection is None
            # On the caller's own thread nothing is closed: it may be inside atomic().
            wrapper = routerkit.scoped(query)()
            assert wrapper.connection is not None


class TestTestCodeAndTheTestClient:
    def test_a_request_sees_what_the_test_wrote_before_it(self, paused: PgCluster) -> None:
        """ORM writes in a test, then a test-client GET: the request finds the row."""

        def test() -> Any:
            pk = Article.objects.create(title=uuid4().hex).pk
            return pk, Client().get(f"/articles/{pk}/")

        pk, response = outside_any_scope(test)
        assert response.status_code == 200
        assert response.json() == {"id": pk, "title": response.json()["title"], "db": "primary"}

    def test_the_test_sees_what_a_request_wrote(self, paused: PgCluster) -> None:
        """A test-client POST, then ORM reads in the test: the test finds the row."""

        def test() -> Article | None:
            response = Client().post("/articles/", {"title": uuid4().hex})
            return find(int(response.json()["id"]))

        found = outside_any_scope(test)
        assert found is not None
        assert found._state.db == "primary"

    def test_handed_positions_let_replicas_serve_once_replayed(self, paused: PgCluster) -> None:
        """The test's later reads honour positions, not the primary forever."""

        def test() -> tuple[str | None, str | None]:
            pk = Article.objects.create(title=uuid4().hex).pk
            Client().get(f"/articles/{pk}/")  # hands the write over as a position
            before = find(pk)
            for replica in REPLICAS:
                paused.resume_replay(replica)
                paused.wait_replayed(replica)
            get_monitor(get_config()).refresh()
            after = find(pk)
            return before._state.db if before else None, after._state.db if after else None

        before, after = outside_any_scope(test)
        assert before == "primary"
        assert after in REPLICAS


class TestMirrors:
    @override_settings(ROUTERKIT={**routerkit_settings(), "REPLICAS": {"primary": ["reporting"]}})
    def test_a_replica_alias_on_the_primarys_own_database_is_caught_up(
        self, replication: PgCluster
    ) -> None:
        """A TEST MIRROR on the primary's server is healthy, with no lag, and serves reads."""
        health = get_monitor(get_config()).refresh().replicas["reporting"]
        assert (health.state, health.lag_bytes) == (HEALTHY, 0)
        with consistency_scope(isolated=True):
            assert router.db_for_read(Article) == "reporting"


class _PrimaryOnlyCase(TransactionTestCase):
    """A user's test case that lists only the primary, as most do (Django's default)."""

    databases = {"primary", "auth_db"}


@pytest.fixture
def primary_only_test_case() -> Iterator[None]:
    """Django's own set-up of such a test: unlisted aliases raise on use."""
    _PrimaryOnlyCase._add_databases_failures()
    try:
        yield
    finally:
        _PrimaryOnlyCase._remove_databases_failures()


class TestDjangoTestCaseDatabases:
    @pytest.mark.usefixtures("all_replicas_healthy", "primary_only_test_case")
    def test_reads_stay_on_the_primary_when_replicas_are_not_listed(
        self, registry: CollectorRegistry
    ) -> None:
        """A replica the test does not list would fail it: its reads go to the primary."""
        with consistency_scope(isolated=True):
            assert {router.db_for_read(Article) for _ in range(20)} == {"primary"}
        assert (
            registry.get_sample_value(
                "routerkit_route_decisions_total",
                {"operation": "read", "database": "primary", "reason": "unlisted"},
            )
            == 20
        )

    @pytest.mark.usefixtures("all_replicas_healthy")
    def test_listed_replicas_serve(self) -> None:
        """Without the test case's restriction, the same reads use a replica."""
        assert router.db_for_read(Article) in {"replica1", "replica2"}
