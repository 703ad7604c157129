"""Routing against real PostgreSQL streaming replication.

Replay is paused on replicas to make staleness certain: a row committed on the
primary is then missing on a paused replica, so a read that finds it was served
by the primary, and a read that misses it was served by a replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from uuid import uuid4

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import connections, transaction
from django.db.utils import InternalError, OperationalError
from django.test import AsyncClient, Client

from routerkit import consistency_scope, use_primary
from routerkit.conf import get_config
from routerkit.env import read_only
from routerkit.health import get_monitor
from tests.billing.models import Invoice
from tests.pgcluster import PgCluster
from tests.testapp.models import Article

REPLICAS = ("replica1", "replica2")


@pytest.fixture
def paused(replication: PgCluster) -> PgCluster:
    """Pause replay on both replicas (restored by the replication fixture)."""
    for replica in REPLICAS:
        replication.pause_replay(replica)
    return replication


def committed_elsewhere(title: str | None = None) -> Article:
    """Commit an article from another unit of work, as another client would."""
    with consistency_scope(isolated=True):
        return Article.objects.create(title=title or uuid4().hex)


def wait_until_usable(primary: str, replicas: Iterable[str], timeout: float = 30.0) -> None:
    """Refresh the process monitor until every replica is in the primary's rotation."""
    monitor = get_monitor(get_config())
    deadline = time.monotonic() + timeout
    while missing := set(replicas) - set(monitor.refresh().usable.get(primary, ())):
        assert time.monotonic() < deadline, f"{sorted(missing)} never came back into rotation"
        time.sleep(0.05)


def read_in_fresh_scope(pk: int) -> Article | None:
    with consistency_scope(isolated=True):
        return Article.objects.filter(pk=pk).first()


class TestWithinOneRequest:
    def test_a_write_then_a_read_sees_the_row_while_both_replicas_are_paused(
        self, paused: PgCluster, client: Client
    ) -> None:
        """The read after a write in the same request is served by the primary."""
        response = client.post("/articles/", {"title": "fresh"})
        assert response.status_code == 200
        assert response.json()["title"] == "fresh"
        assert response.json()["db"] == "primary"

    def test_a_streaming_body_reads_the_requests_own_write(
        self, paused: PgCluster, client: Client
    ) -> None:
        """Reads made while the body streams, after the view returned, still see the write."""
        response = client.get("/stream/")
        assert b"".join(response.streaming_content) == b"True primary"

    def test_async_views_read_their_own_writes(self, paused: PgCluster) -> None:
        """An async view that writes then reads is served by the primary."""
        import asyncio

        async def post() -> dict[str, object]:
            response = await AsyncClient().post("/async/articles/", {"title": "async"})
            assert response.status_code == 200
            return dict(response.json())

        assert asyncio.run(post())["db"] == "primary"


def _save(article: Article) -> None:
    article.title = "renamed"
    article.save()


def _update(article: Article) -> None:
    Article.objects.filter(pk=article.pk).update(title="renamed")


def _bulk_create(article: Article) -> None:
    Article.objects.bulk_create([Article(title="bulk")])


def _delete_other(article: Article) -> None:
    committed = Article.objects.create(title="doomed")
    committed.delete()


def _raw_cursor(article: Article) -> None:
    with connections["primary"].cursor() as cursor:
        cursor.execute("UPDATE testapp_article SET title = %s WHERE id = %s", ["raw", article.pk])


class TestWritesPinTheCluster:
    @pytest.mark.parametrize(
        "write",
        [_save, _update, _bulk_create, _delete_other, _raw_cursor],
        ids=["save", "update", "bulk_create", "delete", "raw_cursor"],
    )
    def test_any_write_sends_later_reads_to_the_primary(
        self, paused: PgCluster, write: Callable[[Article], None]
    ) -> None:
        """After save, update(), bulk_create, delete or raw SQL, reads see the primary."""
        other = committed_elsewhere()
        with consistency_scope(isolated=True):
            # Before writing, reads go to a paused replica: the row is not there.
            assert Article.objects.filter(pk=other.pk).first() is None
            write(other)
            found = Article.objects.get(pk=other.pk)
            assert found._state.db == "primary"

    def test_a_delete_is_seen_at_once(self, replication: PgCluster) -> None:
        """A deleted row is gone for its writer even though replicas still show it."""
        article = committed_elsewhere()
        for replica in REPLICAS:
            replication.wait_replayed(replica)
            replication.pause_replay(replica)
        with consistency_scope(isolated=True):
            Article.objects.filter(pk=article.pk).delete()
            assert not Article.objects.filter(pk=article.pk).exists()
        assert read_in_fresh_scope(article.pk) is not None  # a replica, still stale

    def test_writes_to_one_primary_leave_other_clusters_on_replicas(
        self, paused: PgCluster
    ) -> None:
        """Writing billing does not pin the main cluster's reads."""
        with consistency_scope(isolated=True):
            Invoice.objects.create(number="A-1")
            assert Article.objects.all().db in REPLICAS
            assert Invoice.objects.all().db == "billing"


class TestTransactions:
    def test_reads_inside_atomic_on_the_primary_go_to_the_primary(self, paused: PgCluster) -> None:
        """Even the first read of a transaction, before any write, sees the primary."""
        other = committed_elsewhere()
        with transaction.atomic(using="primary"):
            found = Article.objects.get(pk=other.pk)
            assert found._state.db == "primary"
        assert read_in_fresh_scope(other.pk) is None

    def test_select_for_update_runs_on_the_primary(self, paused: PgCluster) -> None:
        """Row locks are taken on the primary."""
        other = committed_elsewhere()
        with transaction.atomic(using="primary"):
            locked = Article.objects.select_for_update().get(pk=other.pk)
        assert locked._state.db == "primary"

    def test_an_atomic_block_on_another_database_does_not_pin(self, paused: PgCluster) -> None:
        """A transaction on billing leaves the main cluster's reads on its replicas."""
        with transaction.atomic(using="billing"):
            assert Article.objects.all().db in REPLICAS


class TestUsePrimary:
    def test_use_primary_reads_rows_replicas_do_not_have_yet(self, paused: PgCluster) -> None:
        """use_primary() sees another client's fresh write; a plain read does not."""
        other = committed_elsewhere()
        assert read_in_fresh_scope(other.pk) is None
        with use_primary():
            assert Article.objects.get(pk=other.pk)._state.db == "primary"


class TestPinnedClusters:
    def test_a_pinned_app_gets_replica_reads_and_read_your_writes(
        self, replication: PgCluster
    ) -> None:
        """billing reads use billing's replica, except after billing was written."""
        replication.pause_replay("replica1")  # serves billing_replica
        with consistency_scope(isolated=True):
            invoice = Invoice.objects.create(number=uuid4().hex)
            assert Invoice.objects.get(pk=invoice.pk)._state.db == "billing"
        with consistency_scope(isolated=True):
            assert Invoice.objects.filter(pk=invoice.pk).first() is None
        replication.resume_replay("replica1")
        replication.wait_replayed("replica1")
        with consistency_scope(isolated=True):
            assert Invoice.objects.get(pk=invoice.pk)._state.db == "billing_replica"


class TestReplicaSafety:
    def test_a_write_through_a_replica_alias_is_refused(self, replication: PgCluster) -> None:
        """A hot standby refuses writes, so a mistaken using() cannot land there."""
        with pytest.raises((InternalError, OperationalError), match="read-only"):
            Article.objects.using("replica1").create(title="nope")

    def test_read_only_settings_protect_a_replica_alias_pointing_at_a_primary(
        self, replication: PgCluster
    ) -> None:
        """routerkit.env's read-only session option refuses writes even on a primary."""
        options = read_only({"ENGINE": "django.db.backends.postgresql"})["OPTIONS"]["options"]
        with psycopg.connect(replication.primary.dsn("routerkit"), options=options) as conn:
            assert conn.execute("SELECT count(*) >= 0 FROM testapp_article").fetchone() == (True,)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO testapp_article (title) VALUES ('x')")


class TestModelsThatFollowOthers:
    def test_a_proxy_of_user_lives_on_the_auth_database(self, replication: PgCluster) -> None:
        """A proxy model is placed with its concrete model, whatever app it is in."""
        from tests.testapp.models import Staff

        with consistency_scope(isolated=True):
            staff = Staff.objects.create_user(uuid4().hex[:20])
        assert staff._state.db == "auth_db"
        with consistency_scope(isolated=True):
            assert Staff.objects.get(pk=staff.pk)._state.db == "auth_db"

    def test_many_to_many_tables_live_with_the_declaring_model(
        self, replication: PgCluster
    ) -> None:
        """Invoice.tags (an auto-created table) is written and read on billing's cluster."""
        from tests.billing.models import Tag

        with consistency_scope(isolated=True):
            invoice = Invoice.objects.create(number="T-1")
            tag = Tag.objects.create(name="urgent")
            invoice.tags.add(tag)
            assert [t.name for t in invoice.tags.all()] == ["urgent"]
        through = Invoice.tags.through
        assert through.objects.db_manager().db in ("billing_replica",)


class TestDjangoGuideTopology:
    """Django's multi-db guide, written in ROUTERKIT alone (tests/settings.py)."""

    def test_auth_reads_and_writes_on_the_auth_database(self, replication: PgCluster) -> None:
        """Users are created on auth_db and read back from it."""
        username = uuid4().hex[:20]
        with consistency_scope(isolated=True):
            user = User.objects.create_user(username, password="pw")
        assert user._state.db == "auth_db"
        with consistency_scope(isolated=True):
            assert User.objects.get(username=username)._state.db == "auth_db"

    def test_other_reads_spread_over_both_replicas(self, replication: PgCluster) -> None:
        """Reads of everything else land on both replicas, never the primary."""
        article = committed_elsewhere()
        for replica in REPLICAS:
            replication.wait_replayed(replica)
        # An earlier test may have stopped a replica: its next probe has to come.
        wait_until_usable("primary", REPLICAS)
        served = {read_in_fresh_scope(article.pk)._state.db for _ in range(40)}  # type: ignore[union-attr]
        assert served == set(REPLICAS)

    def test_tables_exist_only_where_they_belong(self, replication: PgCluster) -> None:
        """Migrations created each app's tables on its own database and nowhere else."""

        def tables(dbname: str) -> set[str]:
            rows = replication.execute(
                "primary",
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
                dbname=dbname,
            )
            return {row[0] for row in rows} - {"django_migrations"}

        auth, main, billing = (
            tables("routerkit_auth"),
            tables("routerkit"),
            tables("routerkit_billing"),
        )
        assert {"auth_user", "auth_permission", "django_content_type", "django_admin_log"} <= auth
        assert {"testapp_article", "django_session", "django_site", "django_flatpage"} <= main
        assert billing == {
            "billing_invoice",
            "billing_tag",
            "billing_invoice_tags",
            "billing_charge",
        }
        assert not auth & main
        assert not any(name.startswith(("testapp_", "billing_")) for name in auth)
