"""Admin classes bound to one database, for a second `AdminSite` per alias.

With routerkit's routers installed, Django's admin needs nothing from this module:
it goes through the routers, so a model on any primary is read and written where it
lives and the admin sees its own changes. These classes are the other pattern of
Django's multiple-database guide, an admin that works on one alias whatever the
routers say (an archive, a database the routers do not place anything on)::

    class ArchiveAdmin(UsingModelAdmin):
        using = "archive"

    archive_site = admin.AdminSite(name="archive")
    archive_site.register(Invoice, ArchiveAdmin)

Writes go to `using`, so it must name a primary, never a replica routerkit knows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Field, Model, QuerySet
from django.forms import ModelChoiceField, ModelMultipleChoiceField
from django.http import HttpRequest

from routerkit.conf import get_config

__all__ = ["UsingInlineMixin", "UsingModelAdmin"]


class _Using:
    """The alias every query of the admin class runs on."""

    using: str = ""

    def _check_using(self) -> None:
        if not self.using:
            raise ImproperlyConfigured(
                f"{type(self).__qualname__} must set `using` to the database alias it works on."
            )
        primary = get_config().replica_of.get(self.using)
        if primary is not None:
            raise ImproperlyConfigured(
                f"{type(self).__qualname__}.using is {self.using!r}, a replica of "
                f"{primary!r}: an admin writes, so bind it to the primary."
            )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(self.using)  # type: ignore[misc, no-any-return]

    def formfield_for_foreignkey(
        self, db_field: Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        # The choices come from the same database as the object that refers to them.
        return super().formfield_for_foreignkey(  # type: ignore[misc, no-any-return]
            db_field, request, using=self.using, **kwargs
        )

    def formfield_for_manytomany(
        self, db_field: Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelMultipleChoiceField[Any] | None:
        return super().formfield_for_manytomany(  # type: ignore[misc, no-any-return]
            db_field, request, using=self.using, **kwargs
        )


class UsingModelAdmin(_Using, admin.ModelAdmin):  # type: ignore[type-arg]
    """A `ModelAdmin` that reads and writes its objects on the alias `using`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check_using()

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        obj.save(using=self.using)

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        obj.delete(using=self.using)


class UsingInlineMixin(_Using):
    """Mix into a `TabularInline` or `StackedInline` to read its rows on `using`.

    Inline rows are saved through their parent's form, on the parent's database,
    so the parent's admin should be a `UsingModelAdmin` with the same alias.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check_using()
