"""Migrations across routed databases: which primaries, in what order, and the plan.

Django migrates one database per `migrate` call and leaves the set of calls to
the user. routerkit knows the set: every primary it places data on, never a
replica. The order is fixed so that `post_migrate` finds its tables: the
database that holds contenttypes first (content types and permissions of every
app are created there), then auth's, then DEFAULT, then the other primaries in
DATABASES order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.management.base import CommandError
from django.db import connections, router
from django.db.migrations.exceptions import AmbiguityError
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.operations import RunPython, RunSQL, SeparateDatabaseAndState
from django.db.migrations.operations.base import Operation

from routerkit.conf import Config

# (app label, model) of the models whose database goes first, in this order.
_FIRST = (("contenttypes", "ContentType"), ("auth", "Permission"))


@dataclass(frozen=True)
class Step:
    """One operation of a planned migration on one database."""

    description: str
    # False when allow_migrate keeps the operation off this database: the
    # migration is still recorded there, as Django's migrate does.
    applies: bool


@dataclass(frozen=True)
class PlannedMigration:
    label: str  # "app_label.name"
    backwards: bool
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class DatabasePlan:
    database: str
    migrations: tuple[PlannedMigration, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "migrations": [
                {
                    "migration": migration.label,
                    "backwards": migration.backwards,
                    "operations": [
                        {"description": step.description, "applies": step.applies}
                        for step in migration.steps
                    ],
                }
                for migration in self.migrations
            ],
        }


def primaries(config: Config, databases: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Return every primary routerkit manages, in migration order.

    An alias routerkit does not manage (reached only with explicit using())
    is left out: Django's own `migrate --database` stays the tool for it.
    """
    found = [
        alias
        for alias, settings_dict in databases.items()
        if alias in config.managed
        and alias not in config.replica_of
        and not settings_dict.get("TEST", {}).get("MIRROR")
        and settings_dict.get("ENGINE") != "django.db.backends.dummy"
    ]
    first: list[str] = []
    for app_label, model_name in _FIRST:
        if not apps.is_installed(f"django.contrib.{app_label}"):
            continue
        model = apps.get_model(app_label, model_name)
        first += [a for a in found if a not in first and router.allow_migrate_model(a, model)][:1]
    if config.default in found and config.default not in first:
        first.append(config.default)
    return first + [alias for alias in found if alias not in first]


def chosen(
    config: Config, databases: Mapping[str, Mapping[str, Any]], asked: list[str]
) -> list[str]:
    """Return the primaries a command was asked for (all when none), in migration order.

    Raises CommandError (status 2) for an alias that is not one of them.
    """
    every = primaries(config, databases)
    if not every:
        raise CommandError(
            "No primary: DATABASES has no database routerkit places data on.", returncode=2
        )
    for alias in asked:
        if alias in every:
            continue
        if alias in config.replica_of or alias not in databases:
            why = "is a replica" if alias in databases else "is not in DATABASES"
        else:
            why = "is not a primary routerkit manages (use Django's command with --database)"
        raise CommandError(
            f"Database {alias!r} {why}. Primaries: {', '.join(every)}.", returncode=2
        )
    return [alias for alias in every if not asked or alias in asked]


def plan(database: str, app_label: str | None, migration_name: str | None) -> DatabasePlan:
    """Return what `migrate` would do on one database, operation by operation."""
    connection = connections[database]
    executor = MigrationExecutor(connection)
    executor.loader.check_consistent_history(connection)
    conflicts = executor.loader.detect_conflicts()
    if conflicts:
        found = "; ".join(f"{', '.join(names)} in {app}" for app, names in conflicts.items())
        raise CommandError(
            f"Conflicting migrations detected ({found}). "
            "Run 'manage.py makemigrations --merge' first.",
            returncode=2,
        )
    targets = _targets(executor, app_label, migration_name)
    migrations = []
    for migration, backwards in executor.migration_plan(targets):
        app_label = migration.app_label
        steps = tuple(
            Step(_describe(operation, backwards), _applies(database, app_label, operation))
            for operation in migration.operations
        )
        migrations.append(PlannedMigration(f"{app_label}.{migration.name}", backwards, steps))
    return DatabasePlan(database, tuple(migrations))


def check_app_label(app_label: str) -> None:
    """Raise a CommandError (status 2) unless `app_label` is an installed app with migrations."""
    try:
        apps.get_app_config(app_label)
    except LookupError as error:
        raise CommandError(str(error), returncode=2) from None


def _targets(
    executor: MigrationExecutor, app_label: str | None, migration_name: str | None
) -> list[tuple[str, str | None]]:
    """Resolve the targets of the command line as Django's migrate does."""
    loader = executor.loader
    if app_label is None:
        return list(loader.graph.leaf_nodes())
    if app_label not in loader.migrated_apps:
        raise CommandError(f"App '{app_label}' does not have migrations.", returncode=2)
    if migration_name is None:
        return [key for key in loader.graph.leaf_nodes() if key[0] == app_label]
    if migration_name == "zero":
        return [(app_label, None)]
    try:
        migration = loader.get_migration_by_prefix(app_label, migration_name)
    except AmbiguityError:
        raise CommandError(
            f"More than one migration matches '{migration_name}' in app '{app_label}'. "
            "Please be more specific.",
            returncode=2,
        ) from None
    except KeyError:
        raise CommandError(
            f"Cannot find a migration matching '{migration_name}' from app '{app_label}'.",
            returncode=2,
        ) from None
    target = (app_label, migration.name)
    # A partly applied squashed migration is not in the graph: aim at its last replaced one.
    if target not in loader.graph.nodes and target in loader.replacements:
        target = loader.replacements[target].replaces[-1]
    return [target]


def _describe(operation: Operation, backwards: bool) -> str:
    description = str(operation.describe())
    if not backwards:
        return description
    if not operation.reversible:
        return f"IRREVERSIBLE: {description}"
    return f"Undo {description}"


def _applies(database: str, app_label: str, operation: Operation) -> bool:
    """Whether allow_migrate lets `operation` change this database, as it will when it runs."""
    if isinstance(operation, SeparateDatabaseAndState):
        return any(_applies(database, app_label, op) for op in operation.database_operations)
    if isinstance(operation, RunPython | RunSQL):
        return bool(router.allow_migrate(database, app_label, **operation.hints))
    model_name = getattr(operation, "model_name_lower", None) or getattr(
        operation, "name_lower", None
    )
    if model_name is None:
        return bool(router.allow_migrate(database, app_label))
    try:
        # The current model knows whether it is managed, a proxy, or swapped.
        model = apps.get_model(app_label, model_name)
    except LookupError:  # removed since: its placement is the app's
        return bool(router.allow_migrate(database, app_label, model_name=model_name))
    return router.allow_migrate_model(database, model)
