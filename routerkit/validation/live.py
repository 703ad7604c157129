"""Rules checked against the live databases named with --database."""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps
from django.core.checks import CheckMessage, Error, Info, Warning
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Model
from django.db.utils import DatabaseError

from routerkit.conf import get_config
from routerkit.health import COMMAND_TIMEOUT, command_monitor
from routerkit.health.probes import is_mirror, probe_for
from routerkit.validation.static import Placement, has_table, is_dummy
from routerkit.values import ProbeError, format_lsn


def check_live(databases: Iterable[str]) -> list[CheckMessage]:
    """Run the live rules on the named databases; return Django check messages."""
    config = get_config()
    placement = Placement(config)
    named = list(dict.fromkeys(databases))
    messages: list[CheckMessage] = []
    for alias in named:
        if alias in placement.replicas or is_dummy(alias):
            # A replica has its primary's tables (its role is checked below);
            # an empty alias (ENGINE dummy) has nothing to look at.
            continue
        messages += _tables(placement, alias)
    messages += _roles(placement, named)
    return messages


def _tables(placement: Placement, alias: str) -> list[CheckMessage]:
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            tables = set(connection.introspection.table_names(cursor))
        missing = _migrated_tables(connection) - tables
        recorded = sorted(MigrationRecorder(connection).applied_migrations())
    except DatabaseError:
        return [
            Warning(
                f"Cannot connect to {alias!r} to look at its tables.",
                hint="Check that the server is up and the settings are right.",
                obj=alias,
                id="routerkit.W004",
            )
        ]
    messages: list[CheckMessage] = []
    for model in apps.get_models(include_auto_created=True):
        if not has_table(model):
            continue
        table = model._meta.db_table
        migrates = router.allow_migrate_model(alias, model)
        # Only a table that the applied migrations have created can be missing:
        # any other is pending, and `migrate` (which runs these checks first) is
        # about to create it. Apps without migrations are never reported: nothing
        # records whether `migrate --run-syncdb` has created their tables yet.
        if placement.write(model) == alias and migrates and table in missing:
            messages.append(
                Error(
                    f"Table {table!r} of {model._meta.label} is missing on {alias!r}, "
                    "where its writes go.",
                    hint=f"Its migrations are recorded as applied on {alias!r}: it was dropped "
                    "or renamed outside migrations. Restore it from a backup, or recreate it "
                    f"from `manage.py sqlmigrate {model._meta.app_label} <migration> "
                    f"--database {alias}` for the migration that created it.",
                    obj=model,
                    id="routerkit.E006",
                )
            )
        elif not migrates and table in tables:
            messages.append(
                Warning(
                    f"Table {table!r} of {model._meta.label} exists on {alias!r}, where "
                    "it may not migrate: it will not follow schema changes."
                    + _recorded(recorded, model, alias, placement.write(model)),
                    hint="Drop the stale copy (after moving any rows it holds with "
                    "routerkit_dump and routerkit_restore), or let the model migrate there.",
                    obj=model,
                    id="routerkit.W008",
                )
            )
    return messages


def _recorded(recorded: list[tuple[str, str]], model: type[Model], alias: str, home: str) -> str:
    """Name what django_migrations says about a stray table's app, if anything."""
    app_label = model._meta.app_label
    names = [name for app, name in recorded if app == app_label]
    if not names:
        return ""
    return (
        f" django_migrations on {alias!r} records {app_label}'s migrations up to "
        f"{names[-1]}: they ran here before the router sent {model._meta.label} to "
        f"{home!r}, or migrate ran without the routers."
    )


def _migrated_tables(connection: BaseDatabaseWrapper) -> set[str]:
    """Return the tables that the migrations applied on `connection` have created."""
    loader = MigrationLoader(connection, ignore_no_migrations=True)
    # A recorded migration whose file is gone is not in the graph.
    applied = {key for key in loader.applied_migrations if key in loader.graph.nodes}
    # The project state after the last applied migrations includes everything
    # they depend on; a model or a db_table change in an unapplied one is not in it.
    last = [
        key
        for key in applied
        if not any(child.key in applied for child in loader.graph.node_map[key].children)
    ]
    if not last:
        return set()
    # Rendered, so that table names (defaults, db_table, many-to-many tables)
    # are the ones Django computes; `migrate` renders this same state.
    state = loader.project_state(last).apps
    return {
        model._meta.db_table
        for model in state.get_models(include_auto_created=True)
        # An unmanaged model (in that state) has no table made by migrations.
        if model._meta.app_label in loader.migrated_apps and has_table(model)
    }


def _roles(placement: Placement, named: list[str]) -> list[CheckMessage]:
    config = placement.config
    messages: list[CheckMessage] = []
    primaries = {a for a in named if a in config.clusters}
    primaries |= {config.replica_of[a] for a in named if a in config.replica_of}
    for primary in sorted(primaries):
        if connections[primary].vendor != "postgresql":
            continue
        try:
            status = probe_for(primary, COMMAND_TIMEOUT).primary()
        except ProbeError:
            continue  # reported by _tables() when named
        if status.in_recovery:
            messages.append(
                Warning(
                    f"Primary {primary!r} is in recovery: it is a standby.",
                    hint="Point this alias at the current primary.",
                    obj=primary,
                    id="routerkit.W004",
                )
            )
    if not primaries:
        return messages
    monitor = command_monitor(config)
    try:
        snapshot = monitor.refresh()
    finally:
        monitor.close()
    for replica, health in sorted(snapshot.replicas.items()):
        if health.primary not in primaries:
            continue
        if is_mirror(replica, health.primary):
            # Safe to read (the monitor takes it as caught up), but no replica.
            messages.append(
                Warning(
                    f"Replica {replica!r} is its primary's own database, not a replica.",
                    hint="Reads on it take no load off the primary: point it at a "
                    "streaming replica.",
                    obj=replica,
                    id="routerkit.W004",
                )
            )
        problem = _ROLE_PROBLEMS.get(health.state)
        if problem is not None:
            messages.append(
                Warning(
                    f"Replica {replica!r} {problem}.",
                    hint="Reads avoid it until this is fixed; check the server and "
                    "its replication settings.",
                    obj=replica,
                    id="routerkit.W004",
                )
            )
        if health.lag_bytes is not None:
            position = format_lsn(health.replay_lsn) if health.replay_lsn is not None else "?"
            messages.append(
                Info(
                    f"Replica {replica!r}: {health.state}, lag {health.lag_bytes} bytes, "
                    f"{health.lag_seconds or 0.0:.3f} s, replayed up to {position}.",
                    obj=replica,
                    id="routerkit.I001",
                )
            )
    return messages


_ROLE_PROBLEMS = {
    "not_replica": "is not in recovery: it is a primary, not a replica",
    "receiver_down": "is not streaming from its primary",
    "down": "cannot be reached",
    "unknown": "did not report its replication state in time",
}
