"""Objects remember their database: writes and related reads follow the instance."""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connections, router
from django.test import Client
from django.utils.functional import SimpleLazyObject

from routerkit.state import current_scope
from tests.billing.models import Invoice
from tests.pgcluster import PgCluster
from tests.testapp.models import Article, Comment, Label, Labelling

ARCHIVE = "archive"  # in DATABASES, unknown to ROUTERKIT


def loaded_from(instance: Any, alias: str) -> Any:
    """Mark `instance` as read from `alias`, as a queryset does."""
    instance._state.db = alias
    instance._state.adding = False
    return instance


def reads(model: Any, times: int = 50, **hints: Any) -> set[str | None]:
    """The aliases `times` reads of `model` go to, each as a new request's first read."""
    seen = set()
    for _ in range(times):
        current_scope().pinned.clear()
        seen.add(router.db_for_read(model, **hints))
    return seen


@pytest.mark.usefixtures("all_replicas_healthy")
class TestRouting:
    def test_new_object_follows_its_model(self) -> None:
        """An unsaved object is written where its model belongs."""
        assert router.db_for_write(Article, instance=Article()) == "primary"

    def test_object_from_another_primary_is_saved_there(self) -> None:
        """An object loaded with using() from another primary is written back to it."""
        article = loaded_from(Article(pk=1), "billing")
        assert router.db_for_write(Article, instance=article) == "billing"

    def test_object_from_a_replica_is_written_to_its_primary(self) -> None:
        """A replica stands for its primary: never a write to the replica itself."""
        assert router.db_for_write(Article, instance=loaded_from(Article(), "replica2")) == (
            "primary"
        )
        invoice = loaded_from(Invoice(), "billing_replica")
        assert router.db_for_write(Invoice, instance=invoice) == "billing"

    def test_object_from_an_unmanaged_alias_stays_there(self) -> None:
        """Writes and related reads of an object from an alias outside ROUTERKIT stay on it."""
        article = loaded_from(Article(pk=1), ARCHIVE)
        assert router.db_for_write(Article, instance=article) == ARCHIVE
        assert router.db_for_write(Comment, instance=article) == ARCHIVE
        assert reads(Comment, instance=article) == {ARCHIVE}

    def test_related_read_of_a_replica_object_stays_on_its_replica(self) -> None:
        """One object graph is read from the one replica the object came from."""
        article = loaded_from(Article(pk=1), "replica2")
        assert reads(Comment, instance=article) == {"replica2"}

    def test_related_read_of_an_object_from_another_primary_uses_that_cluster(self) -> None:
        """A relation of an object from billing is read from billing's cluster."""
        article = loaded_from(Article(pk=1), "billing")
        assert reads(Comment, instance=article) == {"billing_replica"}

    def test_relation_placed_across_databases_follows_the_related_model(self) -> None:
        """Only a relation that crosses databases by configuration follows the model's placement."""
        article = loaded_from(Article(pk=1), "replica1")  # where Article belongs
        assert router.db_for_write(Invoice, instance=article) == "billing"
        assert reads(Invoice, instance=article) == {"billing_replica"}

    def test_lazy_objects_are_routed_and_related(self) -> None:
        """request.user is a SimpleLazyObject: allow_relation and hints accept it."""
        user = loaded_from(User(pk=1), "auth_db")
        lazy = SimpleLazyObject(lambda: user)
        entry = loaded_from(LogEntry(), "auth_db")
        assert router.allow_relation(lazy, entry) is True
        assert router.allow_relation(entry, lazy) is True
        assert router.db_for_write(Group, instance=lazy) == "auth_db"
        assert router.allow_relation(lazy, loaded_from(Article(), "primary")) is False


@pytest.fixture(scope="module")
def archive(django_db_setup: None, django_db_blocker: Any) -> None:
    """An unmanaged database with its own copy of the test app's and auth's tables."""
    with django_db_blocker.unblock():
        with connections[ARCHIVE].schema_editor() as editor:
            for model in (ContentType, Permission, Group, User, Article, Comment, Label, Labelling):
                editor.create_model(model)
        connections[ARCHIVE].close()


def unique_pk() -> int:
    return random.randrange(10**9, 2 * 10**9)


@pytest.fixture
def twins(replication: PgCluster, archive: None) -> int:
    """An article on the primary and another on the archive, with the same primary key."""
    pk = unique_pk()
    Article.objects.create(pk=pk, title="live")
    Article.objects.using(ARCHIVE).create(pk=pk, title="archived")
    return pk


@pytest.mark.usefixtures("replication")
class TestOnRealDatabases:
    def test_saving_an_object_from_an_explicit_database_keeps_it_there(self, twins: int) -> None:
        """obj.save() writes to the database obj came from, never over the row on DEFAULT."""
        article = Article.objects.using(ARCHIVE).get(pk=twins)
        article.title = "archived, edited"
        article.save()
        assert Article.objects.using(ARCHIVE).get(pk=twins).title == "archived, edited"
        assert Article.objects.using("primary").get(pk=twins).title == "live"

    def test_deleting_an_object_from_an_explicit_database_deletes_it_there(
        self, twins: int
    ) -> None:
        """obj.delete() removes the row it was loaded from and leaves DEFAULT's twin alone."""
        Article.objects.using(ARCHIVE).get(pk=twins).delete()
        assert not Article.objects.using(ARCHIVE).filter(pk=twins).exists()
        assert Article.objects.using("primary").filter(pk=twins).exists()

    def test_related_managers_of_an_object_from_an_explicit_database(self, twins: int) -> None:
        """u.groups.add(g) and u.groups.all() use the database u and g were loaded from."""
        user = User.objects.using(ARCHIVE).create(username=f"u{twins}")
        group = Group.objects.using(ARCHIVE).create(name=f"g{twins}")
        user = User.objects.using(ARCHIVE).get(pk=user.pk)
        user.groups.add(group)
        (member,) = user.groups.all()
        assert member == group
        assert member._state.db == ARCHIVE
        assert not User.groups.through.objects.using("auth_db").filter(user_id=user.pk).exists()
        article = Article.objects.using(ARCHIVE).get(pk=twins)
        article.comments.create(body="on the archive")
        assert Comment.objects.using(ARCHIVE).filter(article_id=twins).count() == 1
        assert not Comment.objects.using("primary").filter(article_id=twins).exists()

    def test_logged_in_view_relates_an_object_to_request_user(self) -> None:
        """Model(fk=request.user) in a logged-in view works, and is written with auth."""
        user = User.objects.create(username=f"logged-in-{unique_pk()}")
        client = Client()
        client.force_login(user)
        response = client.post("/log/")
        assert response.status_code == 201, response.content
        entry = LogEntry.objects.using("auth_db").get(pk=response.json()["id"])
        assert entry.user_id == user.pk
