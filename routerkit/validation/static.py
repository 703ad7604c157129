"""Rules checked on the configuration alone, under the project's real router chain.

Every rule asks Django's router (all of DATABASE_ROUTERS, the project's own
included) where each installed model is written and where it may migrate, so
it judges the configuration as it will actually behave.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.db import router
from django.db.models import DO_NOTHING, Model

from routerkit import env
from routerkit.conf import CONTRIB_GROUPS, Config, get_config

# One model per contrib app stands for the app's placement.
_CONTRIB_MODELS = {
    "auth": "auth.Permission",
    "contenttypes": "contenttypes.ContentType",
    "admin": "admin.LogEntry",
    "sites": "sites.Site",
    "flatpages": "flatpages.FlatPage",
    "redirects": "redirects.Redirect",
}
# The group each app must share a database with, and why (Django's multi-db guide).
_CONTRIB_PARTNERS = {
    "auth": ("contenttypes", "auth's Permission points at ContentType"),
    "admin": ("auth", "admin's LogEntry points at User and ContentType"),
    "flatpages": ("sites", "FlatPage points at Site"),
    "redirects": ("sites", "Redirect points at Site"),
}


class Placement:
    """Where the router chain writes each model, and where it lets it migrate."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.aliases = list(settings.DATABASES)
        self.replicas = replica_aliases(config)
        self._write: dict[type[Model], str] = {}

    def write(self, model: type[Model]) -> str:
        """Return the primary a model's writes go to."""
        try:
            return self._write[model]
        except KeyError:
            alias = self._write[model] = self.config.primary_of(router.db_for_write(model))
            return alias

    def migrates_on(self, model: type[Model]) -> list[str]:
        """Return the aliases `migrate` may create the model's table on (never a dummy)."""
        return [a for a in self.aliases if not is_dummy(a) and router.allow_migrate_model(a, model)]


def replica_aliases(config: Config) -> dict[str, str]:
    """Return replica -> primary, from ROUTERKIT and from TEST["MIRROR"]."""
    replicas = dict(config.replica_of)
    for primary, mirrors in env.replicas(settings.DATABASES).items():
        for alias in mirrors:
            replicas.setdefault(alias, primary)
    return replicas


def has_table(model: type[Model]) -> bool:
    meta = model._meta
    return meta.managed and not meta.proxy and not meta.swapped


def check_static(models_: Sequence[type[Model]] | None = None) -> list[CheckMessage]:
    """Run every static rule over `models_` (default: every installed model)."""
    config = get_config()
    placement = Placement(config)
    # Whether a database is used at all can only be judged on every model.
    whole = models_ is None
    if models_ is None:
        models_ = apps.get_models()
    all_models = _with_auto_created(models_)
    messages: list[CheckMessage] = []
    messages += relations(placement, models_)
    messages += contrib(placement)
    messages += replicas_migrate(placement, all_models)
    messages += missing_tables(placement, all_models)
    messages += empty_default(placement, all_models)
    messages += duplicated_contenttypes(placement)
    messages += router_order(all_models)
    messages += mirrors(placement)
    if whole:
        messages += unused_aliases(placement, all_models)
    return messages


def _with_auto_created(models_: Sequence[type[Model]]) -> list[type[Model]]:
    """Add the auto-created many-to-many tables of `models_`."""
    result = list(models_)
    for model in models_:
        for field in model._meta.local_many_to_many:
            through = getattr(field.remote_field, "through", None)
            if isinstance(through, type) and through._meta.auto_created:  # type: ignore[attr-defined]
                result.append(through)
    return result


# -- E001: relations across databases --------------------------------------


def _relations(model: type[Model]) -> Iterator[tuple[Any, type[Model], str]]:
    """Yield (field, related model, kind) for each relation that needs one database."""
    generic: tuple[type, ...] = ()
    # Importing contenttypes' fields loads ContentType, which raises when the
    # app is not installed: contrib apps stay optional.
    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes.fields import GenericRelation

        generic = (GenericRelation,)

    for field in model._meta.get_fields(include_hidden=False):
        if not field.is_relation or field.related_model is None:
            continue
        # A multi-table child's parent link is auto-created, but it is a real
        # one-to-one column: every query of the child joins the parent's table.
        parent_link = field.concrete and getattr(field.remote_field, "parent_link", False)
        if field.auto_created and not parent_link:
            continue
        # Django 6.1 no longer calls a ManyToManyField concrete (it has no column).
        if not (field.concrete or field.many_to_many or isinstance(field, generic)):
            continue
        related = field.related_model
        if isinstance(related, str):
            continue  # an unresolved lazy reference: Django's own checks report it
        if isinstance(field, generic):
            from django.contrib.contenttypes.models import ContentType

            yield field, related, "GenericRelation"
            # Generic relations look ContentType up on the object's database.
            yield field, ContentType, "GenericRelation (its content types)"
            continue
        if parent_link:
            yield field, related, "Multi-table inheritance parent link"
            continue
        yield field, related, type(field).__name__
        if field.many_to_many:
            through = getattr(field.remote_field, "through", None)
            if (
                isinstance(through, type)
                and issubclass(through, Model)
                and not (through._meta.auto_created)
            ):
                yield field, through, "ManyToManyField (its through model)"


def relations(placement: Placement, models_: Iterable[type[Model]]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for model in models_:
        if model._meta.proxy:
            continue  # its concrete model carries the same fields
        home = placement.write(model)
        for field, related, kind in _relations(model):
            other = placement.write(related)
            if other != home:
                cascade = _cascade(model, field, related, kind)
                hint = (
                    "Put both models on one database (ROUTERKIT['APPS'] or ['CONTRIB']), "
                    "or replace the relation by a plain id field"
                )
                if cascade:
                    hint += (
                        " and delete the related rows in a post_delete handler (README: "
                        "'Deletes that span databases')"
                    )
                messages.append(
                    Error(
                        f"{kind} {model._meta.label}.{field.name} joins {model._meta.label} "
                        f"(written to {home!r}) and {related._meta.label} "
                        f"(written to {other!r}).{cascade}",
                        hint=f"{hint}.",
                        obj=field,
                        id="routerkit.E001",
                    )
                )
    return messages


def _cascade(model: type[Model], field: Any, related: type[Model], kind: str) -> str:
    """Say what a delete would have to do across databases, if anything."""
    if kind == "GenericRelation":
        # Deleting the object deletes what points at it through its generic relation.
        return (
            f" Deleting a {model._meta.label} deletes its {related._meta.label} rows: "
            "Django's deletion collector works on one database."
        )
    on_delete = getattr(field.remote_field, "on_delete", None)
    if field.many_to_many or on_delete is None or on_delete is DO_NOTHING:
        return ""
    return (
        f" Deleting a {related._meta.label} would have to {on_delete.__name__} the "
        f"{model._meta.label} rows that refer to it, on another database: Django's "
        "deletion collector works on one database."
    )


# -- E002: contrib placement ---------------------------------------------------


def contrib(placement: Placement) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    homes: dict[str, str] = {}
    for app_label, label in _CONTRIB_MODELS.items():
        if apps.is_installed(f"django.contrib.{app_label}"):
            homes[app_label] = placement.write(apps.get_model(label))
    for app_label, (partner, why) in _CONTRIB_PARTNERS.items():
        if app_label in homes and partner in homes and homes[app_label] != homes[partner]:
            group = next(g for g, members in CONTRIB_GROUPS.items() if app_label in members)
            messages.append(
                Error(
                    f"django.contrib.{app_label} is written to {homes[app_label]!r} but "
                    f"{partner} to {homes[partner]!r} ({why}).",
                    hint=f"Place the whole group with ROUTERKIT['CONTRIB'][{group!r}], "
                    "and make sure no router of yours splits it.",
                    obj=f"django.contrib.{app_label}",
                    id="routerkit.E002",
                )
            )
    return messages


# -- E004: replicas allowed to migrate -------------------------------------------


def replicas_migrate(placement: Placement, models_: Iterable[type[Model]]) -> list[CheckMessage]:
    allowed: dict[str, list[str]] = defaultdict(list)
    for model in models_:
        if has_table(model):
            for replica in placement.replicas:
                if router.allow_migrate_model(replica, model):
                    allowed[replica].append(model._meta.label)
    return [
        Error(
            f"Replica {replica!r} is allowed to migrate {len(labels)} model(s), "
            f"e.g. {', '.join(sorted(labels)[:3])}.",
            hint="Migrations on a replica fail or diverge from its primary: make your "
            "routers return False from allow_migrate() for replica aliases.",
            obj=replica,
            id="routerkit.E004",
        )
        for replica, labels in allowed.items()
    ]


# -- E005: written where its table is never created -------------------------------


def missing_tables(placement: Placement, models_: Iterable[type[Model]]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for model in models_:
        # A proxy writes to its concrete model's table, so that table must be
        # where the proxy is written; a router keyed on app_label can split them.
        concrete = model._meta.concrete_model if model._meta.proxy else model
        if concrete is None or not has_table(concrete):
            continue
        home = placement.write(model)
        if home in settings.DATABASES and is_dummy(home):
            continue  # reported once, as E007
        if router.allow_migrate_model(home, concrete):
            continue
        table = concrete._meta.db_table
        if concrete is model:
            msg = f"{model._meta.label} is written to {home!r}, where it may not migrate"
            hint = "Make db_for_write() and allow_migrate() agree for this model."
        else:
            msg = (
                f"Proxy {model._meta.label} is written to {home!r}, where "
                f"{concrete._meta.label} may not migrate"
            )
            hint = f"Route the proxy to the database {concrete._meta.label} is written to."
        messages.append(
            Error(
                f"{msg}: its table {table!r} will be missing there.",
                hint=hint,
                obj=model,
                id="routerkit.E005",
            )
        )
    return messages


# -- E007: routed to an empty default -------------------------------------------------


def is_dummy(alias: str) -> bool:
    """Tell whether an alias is left empty (the dummy backend)."""
    engine = settings.DATABASES[alias].get("ENGINE") or "django.db.backends.dummy"
    return str(engine).endswith(".dummy")


def empty_default(placement: Placement, models_: Iterable[type[Model]]) -> list[CheckMessage]:
    if "default" not in settings.DATABASES or not is_dummy("default"):
        return []
    stranded: dict[str, list[str]] = defaultdict(list)
    for model in models_:
        if has_table(model) and placement.write(model) == "default":
            stranded[model._meta.app_label].append(model._meta.object_name or "")
    return [
        Error(
            f"DATABASES['default'] is empty, but the routers send app {app_label!r} "
            f"there ({', '.join(sorted(names)[:3])}).",
            hint="Set ROUTERKIT['DEFAULT'] to a real primary, or place the app "
            "with ROUTERKIT['APPS'].",
            obj=app_label,
            id="routerkit.E007",
        )
        for app_label, names in sorted(stranded.items())
    ]


# -- W001: contenttypes or auth on several databases ---------------------------------------


def duplicated_contenttypes(placement: Placement) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for label in ("contenttypes.ContentType", "auth.Permission"):
        app_label = label.partition(".")[0]
        if not apps.is_installed(f"django.contrib.{app_label}"):
            continue
        # Among routerkit's primaries: an alias outside its clusters that holds a
        # full copy of the site (reached with explicit using()) is consistent in itself.
        on = [
            a
            for a in placement.migrates_on(apps.get_model(label))
            if a in placement.config.managed and a not in placement.replicas
        ]
        if len(on) > 1:
            messages.append(
                Warning(
                    f"{app_label} is migrated on {len(on)} databases: {', '.join(on)}.",
                    hint="Their primary keys can diverge between copies; migrate it on "
                    "one primary only (ROUTERKIT['CONTRIB']['auth']).",
                    obj=f"django.contrib.{app_label}",
                    id="routerkit.W001",
                )
            )
    return messages


# -- W002: a catch-all router shadows a later one ---------------------------------------


def router_order(models_: Iterable[type[Model]]) -> list[CheckMessage]:
    routers = list(router.routers)
    models_ = [m for m in models_ if has_table(m)]
    answers = [
        {m for m in models_ if _opinion(r, m)} for r in routers
    ]  # per router, the models it places
    messages: list[CheckMessage] = []
    everything = set(models_)
    for i, placed in enumerate(answers):
        if placed != everything or not everything:
            continue
        for later, later_placed in zip(routers[i + 1 :], answers[i + 1 :], strict=True):
            if later_placed:
                messages.append(
                    Warning(
                        f"{_name(routers[i])} places every model, so "
                        f"{_name(later)} after it is never asked.",
                        hint=f"Move {_name(later)} before {_name(routers[i])} in DATABASE_ROUTERS.",
                        obj="DATABASE_ROUTERS",
                        id="routerkit.W002",
                    )
                )
        break
    return messages


def _opinion(router_: Any, model: type[Model]) -> bool:
    method = getattr(router_, "db_for_write", None)
    return method is not None and method(model) is not None


def _name(router_: Any) -> str:
    cls = type(router_)
    return f"{cls.__module__}.{cls.__qualname__}"


# -- W003: replicas without a test mirror --------------------------------------------------


def mirrors(placement: Placement) -> list[CheckMessage]:
    return [
        Warning(
            f"Replica {replica!r} has no TEST['MIRROR'].",
            hint=f"Set DATABASES[{replica!r}]['TEST'] = {{'MIRROR': {primary!r}}}, or "
            "Django's test runner will create a separate, empty test database for it.",
            obj=replica,
            id="routerkit.W003",
        )
        for replica, primary in placement.replicas.items()
        if replica in settings.DATABASES
        and not settings.DATABASES[replica].get("TEST", {}).get("MIRROR")
    ]


# -- W009: a database nothing is routed to ------------------------------------------------


def unused_aliases(placement: Placement, models_: Iterable[type[Model]]) -> list[CheckMessage]:
    tabled = [m for m in models_ if has_table(m)]
    used = set(placement.replicas) | {placement.write(m) for m in tabled}
    messages: list[CheckMessage] = []
    for alias in placement.aliases:
        if alias in used or is_dummy(alias):
            continue
        # routerkit leaves migrations on such an alias to Django (allow_migrate None).
        migrated = sum(1 for m in tabled if router.allow_migrate_model(alias, m))
        messages.append(
            Warning(
                f"No router sends reads or writes to {alias!r}.",
                hint="Place an app there (ROUTERKIT['APPS']) or list it as a replica; if only "
                f"explicit using() reaches it, silence routerkit.W009. migrate --database={alias} "
                f"creates {migrated} of the {len(tabled)} tables there.",
                obj=alias,
                id="routerkit.W009",
            )
        )
    return messages
