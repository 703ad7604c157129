"""The backup archive of a routed site: its layout, manifests and checksums.

One zip file. `manifest.json` names the format and the databases; each
database has `<alias>/manifest.json` (apps, migration state, where it was read
from) and one JSON Lines member per model, `<alias>/<app_label>.<model>.jsonl`,
in Django's serialization with primary keys kept. The SHA-256 and row count of
every member are in its database's manifest: restore checks both while it
reads and again, re-serialized from the target, before it commits.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from django.apps import apps
from django.core.management.base import CommandError
from django.core.serializers import jsonl
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, models
from django.db.migrations.recorder import MigrationRecorder
from django.db.models.fields import Field

FORMAT = "routerkit-archive"
VERSION = 1
MANIFEST = "manifest.json"
# Rows per query page when reading and per INSERT when loading.
BATCH = 2000


class ArchiveError(CommandError):
    """An archive that cannot be read: not a zip, a missing or malformed manifest."""

    def __init__(self, message: str) -> None:
        super().__init__(message, returncode=2)


@dataclass(frozen=True)
class ModelEntry:
    label: str  # "app_label.modelname", lower case as Django's serialization writes it
    member: str
    rows: int
    sha256: str
    # FKs and many-to-manys written as natural keys (the related model lives
    # on the same database and has natural_key()).
    natural: tuple[str, ...]

    @property
    def model(self) -> type[models.Model]:
        return apps.get_model(self.label)


@dataclass(frozen=True)
class DatabaseEntry:
    alias: str
    read_from: str
    position: str | None
    migrations: dict[str, list[str]]
    models: tuple[ModelEntry, ...]


def natural_fields(model: type[models.Model], database: str, home: dict[Any, str]) -> list[str]:
    """Relations of `model` worth writing as natural keys: to a model on the same database."""
    found = []
    for field in model._meta.get_fields():
        if not field.concrete or not field.is_relation or field.auto_created:
            continue
        related = field.related_model
        if not isinstance(related, type) or not hasattr(related, "natural_key"):
            continue
        if home.get(related) != database:
            continue
        through = getattr(field.remote_field, "through", None)
        if field.many_to_many and not (through is not None and through._meta.auto_created):
            continue
        found.append(field.name)
    return found


class Serializer(jsonl.Serializer):
    """Django's JSON Lines serializer with natural keys for the named relations only.

    Many-to-many values are sorted, so that the same rows always give the same
    bytes (and checksum) whatever order a database returns them in.
    """

    _current: dict[str, Any]

    def __init__(self, natural: tuple[str, ...]) -> None:
        super().__init__()
        self.natural = frozenset(natural)

    def end_object(self, obj: models.Model) -> None:
        # One write per row (json.dump would write each token separately).
        data = self.get_dump_object(obj)
        self.stream.write(json.dumps(data, cls=Encoder, ensure_ascii=False) + "\n")
        self._current = {}

    def handle_fk_field(self, obj: models.Model, field: Field[Any, Any]) -> None:
        self.use_natural_foreign_keys = field.name in self.natural
        super().handle_fk_field(obj, field)

    def handle_m2m_field(self, obj: models.Model, field: Field[Any, Any]) -> None:
        self.use_natural_foreign_keys = field.name in self.natural
        super().handle_m2m_field(obj, field)
        if field.name in self._current:
            self._current[field.name].sort(key=_sort_key)


def _sort_key(value: Any) -> str:
    return json.dumps(value, cls=Encoder)


class Encoder(DjangoJSONEncoder):
    """DjangoJSONEncoder without its loss: times keep their microseconds.

    Django's fixtures cut them to milliseconds; a backup must give back what
    the database held.
    """

    def default(self, o: Any) -> Any:
        if isinstance(o, datetime.datetime | datetime.time) and o.microsecond:
            return o.isoformat()
        return super().default(o)


class Checksummed:
    """A text stream counting lines and hashing the bytes, into a zip member if given.

    Without a member it checks rows already loaded: re-serialized, they must
    give the archive's count and checksum.
    """

    def __init__(self, member: IO[bytes] | None = None) -> None:
        self.member = member
        self.digest = hashlib.sha256()
        self.rows = 0

    def write(self, text: str) -> int:
        data = text.encode()
        self.digest.update(data)
        if self.member is not None:
            self.member.write(data)
        self.rows += text.count("\n")  # json.dumps escapes newlines inside values
        return len(text)

    def flush(self) -> None:
        pass


def auto_m2m(model: type[models.Model]) -> list[tuple[Any, Any]]:
    """The many-to-many fields whose table Django creates, each with that table's model.

    Their rows travel inside the rows of `model`, as Django serializes them.
    """
    found = []
    for m2m in model._meta.many_to_many:
        through: Any = m2m.remote_field.through
        if through._meta.auto_created:
            found.append((m2m, through))
    return found


def serialize(queryset: models.QuerySet[Any], natural: tuple[str, ...], stream: Any) -> None:
    """Write the rows of `queryset` as JSON Lines, in primary key order, in pages."""
    model = queryset.model
    related = [
        name
        for name in natural
        if not model._meta.get_field(name).many_to_many  # FKs: fetched in the same query
    ]
    m2m = [m2m.name for m2m, _ in auto_m2m(model)]
    rows = queryset.order_by("pk").select_related(*related).prefetch_related(*m2m)
    Serializer(natural).serialize(rows.iterator(chunk_size=BATCH), stream=stream)


def migration_state(alias: str) -> dict[str, list[str]]:
    """The migrations recorded on a database, by app label."""
    recorder = MigrationRecorder(connections[alias])
    if not recorder.has_table():
        return {}
    state: dict[str, list[str]] = {}
    for app_label, name in sorted(recorder.applied_migrations()):
        state.setdefault(app_label, []).append(name)
    return state


# -- reading ------------------------------------------------------------------


class Archive:
    """An archive opened for reading, its manifests checked for shape."""

    def __init__(self, path: str) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise ArchiveError(f"No archive at {path}.") from None
        except (zipfile.BadZipFile, OSError) as error:
            raise ArchiveError(f"{path} is not a routerkit archive: {error}.") from None
        top = self._json(MANIFEST)
        if top.get("format") != FORMAT:
            raise ArchiveError(f"{path} is not a routerkit archive (no {FORMAT!r} manifest).")
        if top.get("version") != VERSION:
            raise ArchiveError(
                f"{path} is archive format version {top.get('version')!r}; "
                f"this routerkit reads version {VERSION}."
            )
        self.info: dict[str, Any] = top
        aliases = top.get("databases")
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ArchiveError(f"{MANIFEST}: 'databases' must be a list of aliases.")
        self.databases = tuple(self._database(alias) for alias in aliases)

    def close(self) -> None:
        self.zip.close()

    def _json(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads(self.zip.read(name))
        except KeyError:
            raise ArchiveError(f"The archive has no {name}.") from None
        except (ValueError, zipfile.BadZipFile, OSError) as error:
            raise ArchiveError(f"{name} cannot be read: {error}.") from None
        if not isinstance(data, dict):
            raise ArchiveError(f"{name} is not a JSON object.")
        return data

    def _database(self, alias: str) -> DatabaseEntry:
        name = f"{alias}/{MANIFEST}"
        data = self._json(name)
        try:
            entries = tuple(
                ModelEntry(
                    label=str(m["model"]),
                    member=str(m["file"]),
                    rows=int(m["rows"]),
                    sha256=str(m["sha256"]),
                    natural=tuple(str(n) for n in m.get("natural", [])),
                )
                for m in data["models"]
            )
            migrations = {str(k): [str(n) for n in v] for k, v in data["migrations"].items()}
            return DatabaseEntry(
                alias=alias,
                read_from=str(data["read_from"]),
                position=data.get("position"),
                migrations=migrations,
                models=entries,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ArchiveError(f"{name} is malformed: {type(error).__name__}: {error}.") from None

    def lines(self, entry: ModelEntry) -> Iterator[str]:
        """Yield the member's lines; raise CommandError at its end if its checksum is wrong."""
        digest = hashlib.sha256()
        rows = 0
        try:
            with self.zip.open(entry.member) as member:
                for raw in member:
                    digest.update(raw)
                    rows += 1
                    yield raw.decode()
        except KeyError:
            raise ArchiveError(f"The archive has no {entry.member}.") from None
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as error:
            raise CommandError(f"{entry.member} cannot be read: {error}.") from None
        if digest.hexdigest() != entry.sha256 or rows != entry.rows:
            raise CommandError(
                f"{entry.member} does not match its manifest ({rows} rows, checksum "
                f"{digest.hexdigest()[:12]}; the manifest says {entry.rows} rows, "
                f"{entry.sha256[:12]}): the archive is damaged."
            )
