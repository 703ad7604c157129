"""Back up a routed site: every model read from the primary it is written to.

Each database is read in one REPEATABLE READ, READ ONLY transaction on
PostgreSQL, so that its counts, checksums and rows are of one moment. A replica
is read only with `from_replica`, and only once it has replayed the position
the primary had when the backup of that database began.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import django
from django.apps import apps
from django.core.management.base import CommandError
from django.core.serializers import sort_dependencies
from django.db import connections, models, router, transaction

from routerkit.conf import Config
from routerkit.health.probes import probe_for
from routerkit.operations.archive import (
    FORMAT,
    MANIFEST,
    VERSION,
    Checksummed,
    migration_state,
    natural_fields,
    serialize,
)
from routerkit.values import format_lsn

# Seconds between two looks at a replica's replay position.
_POLL = 0.05


@dataclass
class DumpedDatabase:
    alias: str
    read_from: str
    position: str | None = None
    models: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(int(m["rows"]) for m in self.models)


def homes() -> dict[type[models.Model], str]:
    """Where each model that has a table of its own is written, by the routers."""
    found = {}
    for model in apps.get_models():
        meta = model._meta
        if meta.proxy or not meta.managed or meta.swapped:
            continue
        database = router.db_for_write(model)
        # A model written where it may not migrate has no table there (E005).
        if router.allow_migrate_model(database, model):
            found[model] = database
    return found


def by_database(
    home: dict[type[models.Model], str], databases: Sequence[str]
) -> dict[str, list[type[models.Model]]]:
    """The models of each database, in dependency order (natural keys first)."""
    grouped: dict[str, list[type[models.Model]]] = {alias: [] for alias in databases}
    for model, database in home.items():
        if database in grouped:
            grouped[database].append(model)
    for alias, found in grouped.items():
        by_app: dict[Any, list[type[models.Model]]] = {}
        for model in found:
            by_app.setdefault(apps.get_app_config(model._meta.app_label), []).append(model)
        ordered = sort_dependencies(list(by_app.items()), allow_cycles=True)
        grouped[alias] = [m for m in ordered if m in found]
    return grouped


def dump(
    path: str,
    config: Config,
    databases: Sequence[str],
    *,
    from_replica: bool = False,
    replica_wait: float = 10.0,
) -> list[DumpedDatabase]:
    """Write the archive of `databases` (primaries, in order) to `path`."""
    import routerkit

    home = homes()
    grouped = by_database(home, databases)
    dumped = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for alias in databases:
            source, position = alias, None
            if from_replica:
                source, position = caught_up_replica(config, alias, replica_wait)
            database = DumpedDatabase(alias, source, position)
            with _snapshot(source):
                state = migration_state(source)
                for model in grouped[alias]:
                    database.models.append(_dump_model(archive, alias, source, model, home))
            manifest = {
                "database": alias,
                "read_from": source,
                "position": position,
                "vendor": connections[source].vendor,
                "migrations": state,
                "models": database.models,
            }
            archive.writestr(f"{alias}/{MANIFEST}", json.dumps(manifest, indent=2))
            dumped.append(database)
        archive.writestr(
            MANIFEST,
            json.dumps(
                {
                    "format": FORMAT,
                    "version": VERSION,
                    "routerkit": routerkit.__version__,
                    "django": django.get_version(),
                    "created": datetime.datetime.now(datetime.UTC).isoformat(),
                    "databases": list(databases),
                },
                indent=2,
            ),
        )
    return dumped


def _dump_model(
    archive: zipfile.ZipFile,
    alias: str,
    source: str,
    model: type[models.Model],
    home: dict[type[models.Model], str],
) -> dict[str, Any]:
    label = model._meta.label_lower
    member = f"{alias}/{label}.jsonl"
    natural = tuple(natural_fields(model, alias, home))
    with archive.open(member, "w", force_zip64=True) as raw:
        stream = Checksummed(raw)
        serialize(model._base_manager.using(source).all(), natural, stream)
    return {
        "model": label,
        "file": member,
        "rows": stream.rows,
        "sha256": stream.digest.hexdigest(),
        "natural": list(natural),
    }


@contextlib.contextmanager
def _snapshot(alias: str) -> Iterator[None]:
    """One transaction for all of a database's reads: its rows are of one moment."""
    with transaction.atomic(using=alias):
        connection = connections[alias]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def caught_up_replica(config: Config, primary: str, wait: float) -> tuple[str, str | None]:
    """Return a replica of `primary` that has replayed its current position, and that position.

    A primary without replicas is read itself. Raises CommandError when no
    replica gets there within `wait` seconds, or positions cannot be read.
    """
    replicas = config.cluster(primary).replicas
    if not replicas:
        return primary, None
    if connections[primary].vendor != "postgresql":
        raise CommandError(
            f"--from-replica needs replication positions; {primary!r} is "
            f"{connections[primary].vendor}, which routerkit cannot read them from.",
            returncode=2,
        )
    timeout = max(config.lag.timeout, 2.0)
    probes = {alias: probe_for(alias, timeout) for alias in (primary, *replicas)}
    try:
        target = probes[primary].primary().lsn
        if target is None:
            raise CommandError(f"{primary!r} is in recovery: it is not a primary.", returncode=1)
        deadline = time.monotonic() + wait
        while True:
            seen: dict[str, int | str | None] = {}
            for replica in replicas:
                try:
                    seen[replica] = probes[replica].replay()
                except Exception as error:  # a replica that cannot answer is not a source
                    seen[replica] = f"unreachable ({type(error).__name__})"
                    continue
                position = seen[replica]
                if isinstance(position, int) and position >= target:
                    return replica, format_lsn(target)
            if time.monotonic() >= deadline:
                where = ", ".join(
                    f"{r} at {format_lsn(p) if isinstance(p, int) else p}" for r, p in seen.items()
                )
                raise CommandError(
                    f"No replica of {primary!r} replayed {format_lsn(target)} within "
                    f"{wait:g} s ({where}). Run without --from-replica to read the primary.",
                    returncode=1,
                )
            time.sleep(_POLL)
    finally:
        for probe in probes.values():
            probe.close()
