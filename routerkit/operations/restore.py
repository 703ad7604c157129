"""Restore a routed site's archive into the databases its routers write to now.

A model goes where `router.db_for_write` sends it today, wherever it was
dumped from: a backup can move an app to another database. Nothing loads
until every check has passed (models installed, targets primaries, migration
state as in the archive, tables empty or `replace`). Then each target database
loads in one transaction, opened together; counts and checksums are verified,
re-serialized from the targets, before any of them commits.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import CommandError
from django.core.management.color import no_style
from django.core.serializers import python
from django.core.serializers.base import DeserializationError, DeserializedObject
from django.db import connections, models, router, transaction

from routerkit.conf import Config
from routerkit.operations.archive import (
    BATCH,
    Archive,
    ArchiveError,
    Checksummed,
    ModelEntry,
    auto_m2m,
    migration_state,
    serialize,
)


@dataclass
class Load:
    """One model of the archive and where it goes."""

    entry: ModelEntry
    source: str
    target: str
    existing: int = 0


@dataclass
class Plan:
    loads: list[Load]
    # target -> what differs from the archive's migration state there
    migrations: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "loads": [
                {
                    "model": load.entry.label,
                    "rows": load.entry.rows,
                    "from": load.source,
                    "to": load.target,
                    "existing_rows": load.existing,
                }
                for load in self.loads
            ],
            "migrations": self.migrations,
            "problems": self.problems,
        }

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(load.target for load in self.loads))

    def models_on(self, target: str) -> list[type[models.Model]]:
        return [load.entry.model for load in self.loads if load.target == target]


def plan(archive: Archive, config: Config, *, replace: bool, only: list[str] | None = None) -> Plan:
    """Work out where every model goes and whether it may; change nothing.

    With `only`, the models whose target is not one of those databases are left out.
    """
    loads = []
    unknown = []
    for database in archive.databases:
        for entry in database.models:
            try:
                model = entry.model
            except (LookupError, ValueError):
                unknown.append(entry.label)
                continue
            loads.append(Load(entry, database.alias, router.db_for_write(model)))
    if unknown:
        raise ArchiveError(
            f"The archive has models this project does not install: {', '.join(unknown)}."
        )
    if only:
        loads = [load for load in loads if load.target in only]
    result = Plan(loads)
    for load in loads:
        if load.target in config.replica_of or not router.allow_migrate_model(
            load.target, load.entry.model
        ):
            result.problems.append(
                f"{load.entry.label} would load into {load.target!r}, which is a replica or "
                "where the model has no table."
            )
    sources = {database.alias: database for database in archive.databases}
    for target in result.targets:
        state = migration_state(target)
        differences = []
        apps = {
            (load.entry.model._meta.app_label, load.source)
            for load in loads
            if load.target == target
        }
        for app_label, source in sorted(apps):
            archived = set(sources[source].migrations.get(app_label, []))
            here = set(state.get(app_label, []))
            differences += [
                f"{app_label}.{name} not applied on {target}" for name in sorted(archived - here)
            ]
            differences += [
                f"{app_label}.{name} applied on {target}, not in the archive"
                for name in sorted(here - archived)
            ]
        if differences:
            result.migrations[target] = differences
    for load in loads:
        if not result.migrations.get(load.target) and not result.problems:
            load.existing = _count(load.entry.model, load.target)
    if not replace:
        full = [
            f"{load.entry.label} on {load.target} ({load.existing} rows)"
            for load in loads
            if load.existing
        ]
        if full:
            result.problems.append(
                "Tables already hold rows: " + ", ".join(full) + ". Restore does not mix rows: "
                "use --replace to empty them first (a freshly migrated database already holds "
                "the content types and permissions Django's post_migrate created)."
            )
    return result


def _count(model: type[models.Model], target: str) -> int:
    count = model._base_manager.using(target).count()
    for _, through in auto_m2m(model):
        count += through._base_manager.using(target).count()
    return count


def restore(archive: Archive, restore_plan: Plan, *, replace: bool) -> None:
    """Load the archive as planned: all targets commit, or none does."""
    with contextlib.ExitStack() as stack:
        for target in restore_plan.targets:
            stack.enter_context(transaction.atomic(using=target))
        if replace:
            for target in restore_plan.targets:
                _empty(target, restore_plan.models_on(target))
        for load in restore_plan.loads:
            _load(archive, load)
        for target in restore_plan.targets:
            _reset_sequences(target, restore_plan.models_on(target))
        for load in restore_plan.loads:
            _verify(load)


def _tables(models_: list[type[models.Model]]) -> list[str]:
    tables = []
    for model in models_:
        tables.append(model._meta.db_table)
        tables += [through._meta.db_table for _, through in auto_m2m(model)]
    return tables


def _empty(target: str, models_: list[type[models.Model]]) -> None:
    connection = connections[target]
    statements = connection.ops.sql_flush(no_style(), _tables(models_), allow_cascade=False)
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _reset_sequences(target: str, models_: list[type[models.Model]]) -> None:
    connection = connections[target]
    statements = connection.ops.sequence_reset_sql(no_style(), models_)
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _objects(archive: Archive, entry: ModelEntry) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(archive.lines(entry), start=1):
        try:
            data = json.loads(line)
        except ValueError as error:
            raise CommandError(f"{entry.member}, line {number}: not JSON ({error}).") from None
        if not isinstance(data, dict) or data.get("model") != entry.label:
            raise CommandError(f"{entry.member}, line {number}: not a row of {entry.label}.")
        yield data


def _load(archive: Archive, load: Load) -> None:
    model = load.entry.model
    objects = python.Deserializer(
        _objects(archive, load.entry), using=load.target, handle_forward_references=True
    )
    batch: list[DeserializedObject] = []
    deferred: list[DeserializedObject] = []
    try:
        for item in objects:
            batch.append(item)
            if item.deferred_fields:
                deferred.append(item)
            if len(batch) >= BATCH:
                _insert(model, load.target, batch)
                batch = []
        _insert(model, load.target, batch)
        for item in deferred:
            item.save_deferred_fields(using=load.target)
    except DeserializationError as error:
        raise CommandError(f"{load.entry.member}: {error}") from None


def _insert(model: type[models.Model], target: str, batch: list[DeserializedObject]) -> None:
    if not batch:
        return
    model._base_manager.using(target).bulk_create([item.object for item in batch])
    for m2m, through in auto_m2m(model):
        source = through._meta.get_field(m2m.m2m_field_name()).attname
        other = through._meta.get_field(m2m.m2m_reverse_field_name()).attname
        rows = [
            through(**{source: item.object.pk, other: related})
            for item in batch
            for related in (item.m2m_data or {}).get(m2m.name, ())
        ]
        through._base_manager.using(target).bulk_create(rows, batch_size=BATCH)


def _verify(load: Load) -> None:
    entry = load.entry
    written = Checksummed()
    serialize(entry.model._base_manager.using(load.target).all(), entry.natural, written)
    if written.rows != entry.rows or written.digest.hexdigest() != entry.sha256:
        raise CommandError(
            f"{entry.label} on {load.target} does not match the archive after loading "
            f"({written.rows} rows, the archive has {entry.rows}): nothing was committed."
        )
