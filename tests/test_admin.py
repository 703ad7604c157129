"""routerkit.admin: a second AdminSite bound to an alias the routers do not place on."""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test import Client, RequestFactory
from django.urls import path

from routerkit.admin import UsingInlineMixin, UsingModelAdmin
from tests.billing.models import Invoice, Tag
from tests.pgcluster import PgCluster
from tests.testapp.models import Article, Comment

ARCHIVE = "archive"  # in DATABASES, unknown to ROUTERKIT: the routers send nothing there
Tagging = Invoice.tags.through


class TaggingInline(UsingInlineMixin, admin.TabularInline):  # type: ignore[type-arg]
    model = Tagging
    using = ARCHIVE
    extra = 0


class ArchivedInvoiceAdmin(UsingModelAdmin):
    using = ARCHIVE
    inlines = [TaggingInline]


archive_site = admin.AdminSite(name="archive")
archive_site.register(Invoice, ArchivedInvoiceAdmin)


class CommentInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Comment
    extra = 0


class ArticleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    inlines = [CommentInline]


# A plain admin, as a project has it: the routers place everything it touches.
routed_site = admin.AdminSite(name="routed")
routed_site.register(Article, ArticleAdmin)
urlpatterns = [
    path("archive-admin/", archive_site.urls),
    path("routed-admin/", routed_site.urls),
]


@pytest.fixture(scope="module")
def archive_tables(django_db_setup: None, django_db_blocker: Any) -> None:
    """The billing app's tables on the archive, which nothing migrates."""
    with django_db_blocker.unblock():
        with connections[ARCHIVE].schema_editor() as editor:
            for model in (Tag, Invoice):
                editor.create_model(model)  # the many-to-many table comes with Invoice
        connections[ARCHIVE].close()


@pytest.fixture
def superuser(replication: Any, archive_tables: None) -> User:
    """A superuser, written where auth lives (its own database)."""
    return User.objects.create_superuser(f"admin-{random.randrange(10**9)}", password="x")


@pytest.fixture
def staff(superuser: User, settings: Any) -> Client:
    """A client logged in as the superuser, on a URLconf with the archive's admin."""
    settings.ROOT_URLCONF = "tests.test_admin"
    client = Client()
    client.force_login(superuser)
    return client


@pytest.mark.usefixtures("replication")
class TestUsingModelAdmin:
    def test_add_list_edit_delete_stay_on_the_bound_alias(self, staff: Client) -> None:
        """The admin's whole flow reads and writes the archive; billing is never touched."""
        number = f"A-{random.randrange(10**9)}"
        tag = Tag.objects.using(ARCHIVE).create(name=f"archived-{number}")
        billing_invoices = Invoice.objects.using("billing").count()
        response = staff.post(
            "/archive-admin/billing/invoice/add/",
            {
                "number": number,
                "tags": [tag.pk],
                "Invoice_tags-TOTAL_FORMS": "0",
                "Invoice_tags-INITIAL_FORMS": "0",
            },
        )
        assert response.status_code == 302, response.content.decode()[:3000]
        invoice = Invoice.objects.using(ARCHIVE).get(number=number)
        assert list(invoice.tags.values_list("pk", flat=True)) == [tag.pk]
        assert Invoice.objects.using("billing").count() == billing_invoices
        # The admin's history goes where auth's placement says: with auth.
        assert LogEntry.objects.using("auth_db").filter(object_id=str(invoice.pk)).exists()

        listed = staff.get("/archive-admin/billing/invoice/")
        assert number in listed.content.decode()

        edited = staff.post(
            f"/archive-admin/billing/invoice/{invoice.pk}/change/",
            {
                "number": f"{number}-edited",
                "tags": [],
                "Invoice_tags-TOTAL_FORMS": "0",
                "Invoice_tags-INITIAL_FORMS": "0",
            },
        )
        assert edited.status_code == 302, edited.content.decode()[:3000]
        invoice = Invoice.objects.using(ARCHIVE).get(pk=invoice.pk)
        assert invoice.number == f"{number}-edited"
        assert not invoice.tags.exists()

        deleted = staff.post(
            f"/archive-admin/billing/invoice/{invoice.pk}/delete/", {"post": "yes"}
        )
        assert deleted.status_code == 302, deleted.content.decode()[:3000]
        assert not Invoice.objects.using(ARCHIVE).filter(pk=invoice.pk).exists()
        assert Invoice.objects.using("billing").count() == billing_invoices

    def test_choices_and_inline_rows_come_from_the_bound_alias(self, superuser: User) -> None:
        """Form field choices and inline querysets run on `using`, not where routers send."""
        request = RequestFactory().get("/")
        request.user = superuser
        model_admin = archive_site.get_model_admin(Invoice)
        tags = model_admin.formfield_for_manytomany(Invoice._meta.get_field("tags"), request)
        assert tags is not None
        assert tags.queryset.db == ARCHIVE
        assert model_admin.get_queryset(request).db == ARCHIVE
        (inline,) = model_admin.get_inline_instances(request)
        assert inline.get_queryset(request).db == ARCHIVE
        tag = inline.formfield_for_foreignkey(Tagging._meta.get_field("tag"), request)
        assert tag is not None
        assert tag.queryset.db == ARCHIVE


@pytest.mark.usefixtures("replication")
class TestRoutedAdmin:
    def test_the_admin_sees_its_own_changes_while_replay_is_paused(
        self, staff: Client, replication: PgCluster
    ) -> None:
        """Plain ModelAdmin, auth on its own database, articles on a primary with two
        replicas that replay nothing: add, change list, edit, delete each see the last step."""
        for replica in replication.replicas:
            replication.pause_replay(replica)
        title = f"admin-{random.randrange(10**9)}"
        formset = {"comments-TOTAL_FORMS": "0", "comments-INITIAL_FORMS": "0"}
        added = staff.post("/routed-admin/testapp/article/add/", {"title": title, **formset})
        assert added.status_code == 302, added.content.decode()[:3000]
        article = Article.objects.using("primary").get(title=title)
        for replica in ("replica1", "replica2"):
            assert not Article.objects.using(replica).filter(pk=article.pk).exists()

        change = f"/routed-admin/testapp/article/{article.pk}/change/"
        assert change in staff.get("/routed-admin/testapp/article/").content.decode()
        assert staff.get(change).status_code == 200

        edited = staff.post(change, {"title": f"{title}-edited", **formset})
        assert edited.status_code == 302, edited.content.decode()[:3000]
        assert f"{title}-edited" in staff.get(change).content.decode()

        deleted = staff.post(f"/routed-admin/testapp/article/{article.pk}/delete/", {"post": "yes"})
        assert deleted.status_code == 302, deleted.content.decode()[:3000]
        # The message says what was deleted; the list no longer links to it.
        assert change not in staff.get("/routed-admin/testapp/article/").content.decode()
        assert not Article.objects.using("primary").filter(pk=article.pk).exists()


class TestMisconfigured:
    def test_without_an_alias(self) -> None:
        class Unbound(UsingModelAdmin):
            pass

        with pytest.raises(ImproperlyConfigured, match="must set `using`"):
            Unbound(Invoice, admin.AdminSite(name="unbound"))

    def test_bound_to_a_replica(self) -> None:
        """An admin writes: a replica routerkit knows is refused, naming its primary."""

        class OnReplica(UsingModelAdmin):
            using = "billing_replica"

        with pytest.raises(ImproperlyConfigured, match="replica of 'billing'"):
            OnReplica(Invoice, admin.AdminSite(name="replica"))

    def test_inline_bound_to_a_replica(self) -> None:
        class OnReplica(UsingInlineMixin, admin.TabularInline):  # type: ignore[type-arg]
            model = Tagging
            using = "replica1"

        with pytest.raises(ImproperlyConfigured, match="replica of 'primary'"):
            OnReplica(Invoice, admin.AdminSite(name="replica"))
