"""Routing decisions of the three routers, alone and composed (no database needed)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.flatpages.models import FlatPage
from django.contrib.redirects.models import Redirect
from django.contrib.sessions.models import Session
from django.contrib.sites.models import Site
from django.db import router
from django.test import override_settings

from routerkit import consistency_scope, use_primary
from routerkit.balancers import Balancer
from routerkit.conf import get_config
from routerkit.routers import AppRouter, ContribRouter, PrimaryReplicaRouter
from routerkit.state import current_scope
from routerkit.values import Requirement, Snapshot
from tests.billing.models import Invoice
from tests.conftest import positioned_snapshot
from tests.testapp.models import Article, Comment

pytestmark = pytest.mark.usefixtures("all_replicas_healthy")

REPLICAS = ("replica1", "replica2")
ALL_ROUTERS = [
    "routerkit.routers.ContribRouter",
    "routerkit.routers.AppRouter",
    "routerkit.routers.PrimaryReplicaRouter",
]


def reads(model: Any, times: int = 200, **hints: Any) -> Counter[str]:
    """Route `times` reads, each as the first read of a new request (no replica pinned)."""
    scope = current_scope()
    seen: Counter[str] = Counter()
    for _ in range(times):
        scope.pinned.clear()
        seen[router.db_for_read(model, **hints) or ""] += 1
    return seen


class TestPrimaryReplicaRouter:
    def test_writes_go_to_the_primary(self) -> None:
        """Every write of an unplaced model goes to DEFAULT."""
        assert router.db_for_write(Article) == "primary"
        assert router.db_for_write(Comment) == "primary"

    def test_reads_are_spread_over_both_replicas(self) -> None:
        """Random balancing sends reads to every replica and none to the primary."""
        seen = reads(Article)
        assert set(seen) == {"replica1", "replica2"}
        assert min(seen.values()) > 50

    @override_settings(
        ROUTERKIT={
            "DEFAULT": "primary",
            "REPLICAS": {"primary": ["replica1", "replica2"]},
            "BALANCER": "round_robin",
        }
    )
    def test_round_robin_alternates(self) -> None:
        """Round-robin takes the replicas strictly in turn."""
        picks = []
        for _ in range(6):
            current_scope().pinned.clear()
            picks.append(router.db_for_read(Article))
        assert picks[0] != picks[1]
        assert picks == picks[:2] * 3

    @override_settings(
        ROUTERKIT={"DEFAULT": "primary", "REPLICAS": {"primary": {"replica1": 3, "replica2": 1}}}
    )
    def test_weights_shape_the_share_of_reads(self) -> None:
        """Weights 3:1 send about three quarters of the reads to the heavier replica."""
        random.seed(1234)
        seen = reads(Article, times=4000)
        assert 0.70 < seen["replica1"] / 4000 < 0.80

    @override_settings(ROUTERKIT={"DEFAULT": "primary"})
    def test_without_replicas_reads_go_to_the_primary(self) -> None:
        """A primary with no replicas serves its own reads."""
        assert set(reads(Article, times=10)) == {"primary"}

    def test_replicas_never_migrate(self) -> None:
        """No app migrates on a replica; unplaced apps migrate on DEFAULT, not other primaries."""
        for db in ("replica1", "replica2", "billing_replica"):
            assert router.allow_migrate(db, "testapp", model_name="article") is False
            assert router.allow_migrate(db, "auth", model_name="user") is False
        assert router.allow_migrate("primary", "testapp", model_name="article") is True
        assert router.allow_migrate("billing", "testapp", model_name="article") is False

    def test_unmanaged_aliases_migrate_as_without_routerkit(self) -> None:
        """What only the catch-all places migrates, as without routerkit, on other aliases."""
        for unmanaged in ("default", "archive"):
            assert PrimaryReplicaRouter().allow_migrate(unmanaged, "testapp") is None
            assert router.allow_migrate(unmanaged, "testapp", model_name="article") is True
            # CONTRIB and APPS placements are exclusive.
            assert router.allow_migrate(unmanaged, "auth", model_name="user") is False
            assert router.allow_migrate(unmanaged, "billing", model_name="invoice") is False

    def test_a_test_mirror_never_migrates(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A replica known only by TEST["MIRROR"] is still never a migration target."""
        monkeypatch.setitem(settings.DATABASES, "replica3", settings.DATABASES["replica1"])
        assert router.allow_migrate("replica3", "testapp", model_name="article") is False

    def test_relations_within_a_cluster_are_allowed(self) -> None:
        """Objects read from a replica and from its primary may be related."""
        article, comment = Article(), Comment()
        article._state.db, comment._state.db = "replica2", "primary"
        assert router.allow_relation(article, comment) is True

    def test_relations_across_clusters_are_refused(self) -> None:
        """An object of one primary cannot point at an object of another."""
        article, invoice = Article(), Invoice()
        article._state.db, invoice._state.db = "replica1", "billing_replica"
        assert router.allow_relation(article, invoice) is False

    def test_relation_reads_follow_the_instance_replica(self) -> None:
        """Reading a related object stays on the replica its instance came from."""
        article = Article()
        article._state.db = "replica2"
        assert set(reads(Comment, times=20, instance=article)) == {"replica2"}

    def test_one_request_reads_one_replica(self) -> None:
        """Within a scope every read of a cluster goes to the same replica (never back in time)."""
        with consistency_scope(isolated=True):
            assert len({router.db_for_read(Article) for _ in range(50)}) == 1
        assert set(reads(Article, times=50)) == {"replica1", "replica2"}


class TestContribRouter:
    def test_auth_group_lives_on_its_database(self) -> None:
        """auth, contenttypes and admin read and write on the auth database."""
        for model in (User, Group, Permission, ContentType, LogEntry):
            assert router.db_for_write(model) == "auth_db"
            assert router.db_for_read(model) == "auth_db"

    @pytest.mark.parametrize("app_label", ["auth", "contenttypes", "admin"])
    def test_auth_group_migrates_only_on_its_database(self, app_label: str) -> None:
        """The auth group's tables are created on the auth database and nowhere else."""
        assert router.allow_migrate("auth_db", app_label) is True
        for db in ("primary", "billing", "default", "replica1"):
            assert router.allow_migrate(db, app_label) is False

    @override_settings(
        ROUTERKIT={
            "DEFAULT": "primary",
            "CONTRIB": {"sites": "billing", "sessions": "billing"},
            "REPLICAS": {"billing": ["billing_replica"]},
        }
    )
    def test_a_contrib_group_on_a_primary_with_replicas_reads_from_them(self) -> None:
        """Contrib models get replica reads when their database has replicas."""
        for model in (Site, FlatPage, Redirect, Session):
            assert router.db_for_write(model) == "billing"
            assert router.db_for_read(model) == "billing_replica"
        # auth is not placed: it falls through to DEFAULT, all three apps together.
        assert {router.db_for_write(m) for m in (User, ContentType, LogEntry)} == {"primary"}

    def test_relation_to_a_contrib_model_on_another_database_is_refused(self) -> None:
        """A user's object cannot point at a User kept on the auth database."""
        user, article = User(), Article()
        user._state.db, article._state.db = "auth_db", "primary"
        assert router.allow_relation(user, article) is False
        permission = Permission()
        permission._state.db = "auth_db"
        assert router.allow_relation(user, permission) is True


class TestAppRouter:
    def test_pinned_app_writes_to_its_primary_and_reads_its_replica(self) -> None:
        """billing models write to billing and read from billing's replica."""
        assert router.db_for_write(Invoice) == "billing"
        assert set(reads(Invoice, times=20)) == {"billing_replica"}

    def test_pinned_app_migrates_only_on_its_primary(self) -> None:
        """billing tables exist on billing only."""
        assert router.allow_migrate("billing", "billing", model_name="invoice") is True
        assert router.allow_migrate("primary", "billing", model_name="invoice") is False
        assert router.allow_migrate("billing_replica", "billing", model_name="invoice") is False

    @override_settings(
        ROUTERKIT={
            "DEFAULT": "primary",
            "APPS": {"testapp": "billing", "testapp.Comment": "primary"},
            "REPLICAS": {"primary": ["replica1", "replica2"]},
        }
    )
    def test_a_model_entry_wins_over_its_app_entry(self) -> None:
        """'testapp.Comment' overrides 'testapp' for that model only."""
        assert router.db_for_write(Article) == "billing"
        assert router.db_for_write(Comment) == "primary"
        assert router.allow_migrate("billing", "testapp", model_name="article") is True
        assert router.allow_migrate("billing", "testapp", model_name="comment") is False
        assert router.allow_migrate("primary", "testapp", model_name="comment") is True
        # A migration operation with no model follows the app entry.
        assert router.allow_migrate("billing", "testapp") is True

    def test_unpinned_models_get_no_opinion(self) -> None:
        """AppRouter leaves models it does not pin to the next router."""
        app_router = AppRouter()
        assert app_router.db_for_read(Article) is None
        assert app_router.db_for_write(Article) is None
        assert app_router.allow_migrate("primary", "testapp", model_name="article") is None
        assert app_router.allow_relation(Article(), Comment()) is None


class TestModelsThatFollowOthers:
    @override_settings(
        ROUTERKIT={
            "DEFAULT": "primary",
            "APPS": {"billing.Invoice": "billing"},
            "REPLICAS": {"primary": ["replica1", "replica2"]},
        }
    )
    def test_an_auto_created_through_table_follows_a_model_level_pin(self) -> None:
        """A model-level APPS entry places the model's many-to-many table too."""
        through = Invoice.tags.through
        assert router.db_for_write(through) == "billing"
        assert (
            router.allow_migrate(
                "billing", "billing", model_name=through._meta.model_name, model=through
            )
            is True
        )
        assert router.allow_migrate("primary", "billing", model=through) is False

    def test_a_proxy_follows_its_concrete_model(self) -> None:
        """A proxy of auth.User in a project app routes to the auth database."""
        from tests.testapp.models import Staff

        assert router.db_for_write(Staff) == "auth_db"
        assert router.allow_migrate("auth_db", "testapp", model_name="staff", model=Staff)
        assert router.allow_migrate("primary", "testapp", model_name="staff", model=Staff) is False


class TestComposition:
    @override_settings(DATABASE_ROUTERS=["routerkit.routers.PrimaryReplicaRouter"])
    def test_primary_replica_router_alone_places_everything_on_default(self) -> None:
        """Without the other routers, every model belongs to DEFAULT's cluster."""
        assert router.db_for_write(User) == "primary"
        assert router.db_for_write(Invoice) == "primary"
        assert router.db_for_read(Invoice) in {"replica1", "replica2"}

    @override_settings(DATABASE_ROUTERS=["routerkit.routers.AppRouter"])
    def test_app_router_alone_leaves_the_rest_to_django(self) -> None:
        """Alone, AppRouter pins its models and Django's default handles the others."""
        assert router.db_for_write(Invoice) == "billing"
        assert router.db_for_read(Invoice) == "billing_replica"
        assert router.db_for_write(Article) == "default"

    @pytest.mark.parametrize("only", ["ContribRouter", "AppRouter"])
    def test_any_routerkit_router_alone_keeps_migrations_off_replicas(self, only: str) -> None:
        """Even for apps a router does not place, a replica alias never migrates."""
        with override_settings(DATABASE_ROUTERS=[f"routerkit.routers.{only}"]):
            assert router.allow_migrate("replica1", "testapp", model_name="article") is False
            assert router.allow_migrate("primary", "testapp", model_name="article") is True

    @override_settings(DATABASE_ROUTERS=["tests.test_routers.ArchiveRouter", *ALL_ROUTERS])
    def test_a_users_router_before_routerkit_keeps_its_say(self) -> None:
        """A project router placed first decides for its models; routerkit for the rest."""
        assert router.db_for_write(Comment) == "billing"
        assert router.db_for_read(Comment) == "billing"
        assert router.db_for_write(Article) == "primary"
        assert router.allow_migrate("billing", "testapp", model_name="comment") is True

    def test_routers_have_no_opinion_on_unknown_models(self) -> None:
        """ContribRouter answers None for models outside the contrib groups."""
        contrib = ContribRouter()
        assert contrib.db_for_read(Article) is None
        assert contrib.allow_migrate("primary", "testapp") is None
        assert PrimaryReplicaRouter().db_for_write(Article) == "primary"


class ArchiveRouter:
    """A project's own router: comments live on billing (for the composition test)."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return "billing" if model is Comment else None

    db_for_write = db_for_read

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        return db == "billing" if model_name == "comment" else None


class TestForcedAndWritten:
    def test_use_primary_as_context_manager(self) -> None:
        """Inside use_primary(), reads go to the primary; after it, to replicas again."""
        with use_primary():
            assert set(reads(Article, times=20)) == {"primary"}
            assert set(reads(Invoice, times=20)) == {"billing"}
        assert set(reads(Article, times=20)) <= {"replica1", "replica2"}

    def test_use_primary_nests(self) -> None:
        """Leaving an inner use_primary() keeps the outer one in force."""
        forced = use_primary()
        with forced:
            with forced:
                pass
            assert router.db_for_read(Article) == "primary"
        assert router.db_for_read(Article) != "primary"

    def test_use_primary_as_decorator(self) -> None:
        """A decorated function reads from the primary; its caller does not."""

        @use_primary()
        def inside() -> str | None:
            return router.db_for_read(Article)

        assert inside() == "primary"
        assert router.db_for_read(Article) != "primary"

    def test_use_primary_decorates_coroutines(self) -> None:
        """The decorator stays in force across awaits in an async function."""

        @use_primary()
        async def inside() -> str | None:
            await asyncio.sleep(0)
            return router.db_for_read(Article)

        async def outside() -> str | None:
            return router.db_for_read(Article)

        assert asyncio.run(inside()) == "primary"
        assert asyncio.run(outside()) != "primary"

    def test_a_written_cluster_reads_from_its_primary(self) -> None:
        """After a write to billing, billing reads stay on billing; others are untouched."""
        current_scope().written.add("billing")
        assert set(reads(Invoice, times=20)) == {"billing"}
        assert set(reads(Article, times=50)) == {"replica1", "replica2"}


def positioned(replay_lsn: int) -> Snapshot:
    """A fresh snapshot in which both replicas of `primary` are healthy at `replay_lsn`."""
    return positioned_snapshot(get_config(), dict.fromkeys(REPLICAS, replay_lsn))


def first_reads(count: int, snapshot: Callable[[], Snapshot], **requirement: Any) -> Counter[str]:
    """Route `count` reads, each the first of a new unit of work with its own snapshot."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = snapshot()
            if requirement:
                scope.requirements["primary"] = Requirement(**requirement)
            seen[router.db_for_read(Article) or ""] += 1
    return seen


ROUND_ROBIN = {**settings.ROUTERKIT, "BALANCER": "round_robin"}


def weighted(replica1: float, replica2: float) -> dict[str, Any]:
    replicas = {"primary": {"replica1": replica1, "replica2": replica2}}
    return {**settings.ROUTERKIT, "REPLICAS": replicas, "BALANCER": "weighted"}


class TestBalancers:
    @override_settings(ROUTERKIT=ROUND_ROBIN)
    def test_round_robin_rotates_across_snapshots(self) -> None:
        """Each unit of work with a snapshot of its own still takes the next replica."""
        picks = [next(iter(first_reads(1, lambda: positioned(10)))) for _ in range(6)]
        assert picks[0] != picks[1]
        assert picks == picks[:2] * 3

    @override_settings(ROUTERKIT=ROUND_ROBIN)
    def test_round_robin_rotates_across_concurrent_requests(self) -> None:
        """Four threads of first reads, each with fresh snapshots: an exact half each."""
        totals: Counter[str] = Counter()
        lock = threading.Lock()

        def worker() -> None:
            seen = first_reads(50, lambda: positioned(10))
            with lock:
                totals.update(seen)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert totals == {"replica1": 100, "replica2": 100}

    @override_settings(ROUTERKIT=ROUND_ROBIN)
    def test_round_robin_holds_when_a_token_restricts_the_choice(self) -> None:
        picks = [next(iter(first_reads(1, lambda: positioned(10), lsn=5))) for _ in range(4)]
        assert picks[0] != picks[1]
        assert picks == picks[:2] * 2

    @override_settings(ROUTERKIT=weighted(3, 1))
    def test_weights_hold_when_a_token_restricts_the_choice(self) -> None:
        """Both replicas have replayed the client's position: still three to one."""
        random.seed(99)
        seen = first_reads(2000, lambda: positioned(10), lsn=5)
        assert set(seen) == {"replica1", "replica2"}
        assert 0.70 < seen["replica1"] / 2000 < 0.80

    @override_settings(ROUTERKIT=weighted(1, 0))
    def test_a_drained_replica_serves_no_client_with_a_token(self) -> None:
        assert first_reads(200, lambda: positioned(10), lsn=5) == {"replica1": 200}
        assert first_reads(200, lambda: positioned(10)) == {"replica1": 200}

    @override_settings(ROUTERKIT=weighted(1, 0))
    def test_when_only_a_drained_replica_fits_the_primary_serves(self) -> None:
        def replica1_behind() -> Snapshot:
            snapshot = positioned(10)
            replicas = dict(snapshot.replicas)
            replicas["replica1"] = replace(replicas["replica1"], replay_lsn=1)
            return replace(snapshot, replicas=replicas)

        assert first_reads(50, replica1_behind, lsn=5) == {"primary": 50}


def test_balancers_choose_by_policy_and_drain_weight_zero() -> None:
    """The balancer alone: policies, drained replicas, a single candidate."""
    replicas = ("replica1", "replica2", "replica3")
    round_robin = Balancer(replicas, (1, 1, 0), "round_robin")
    assert [round_robin.pick(replicas) for _ in range(4)] == ["replica1", "replica2"] * 2
    assert round_robin.pick(("replica3",)) is None
    assert round_robin.pick(("replica2",)) == "replica2"
    assert Balancer(replicas, (0, 0, 1), "random").pick(replicas) == "replica3"
    assert Balancer(replicas, (0, 2, 0), "weighted").pick(replicas) == "replica2"
