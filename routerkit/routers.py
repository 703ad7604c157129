"""Database routers for DATABASE_ROUTERS.

Each router answers "which primary owns this model?" for the models it is
responsible for, and `None` (no opinion) for the rest, so they compose with
each other and with a project's own routers. Reads are handed to
`routerkit.selection`, which picks a replica or the primary.

Every routerkit router refuses migrations on replica aliases, whatever the
model: a replica is never a migration target. CONTRIB and APPS placements are
exclusive (those tables migrate on their primary only); what only the catch-all
places also migrates, as without routerkit, on aliases routerkit does not manage.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db.models import Model

from routerkit import writes
from routerkit.conf import Config
from routerkit.runtime import Runtime, active, get_runtime
from routerkit.selection import count_write, read_alias
from routerkit.state import frame_var, thread_marker

_UNKNOWN = object()
_monotonic = time.monotonic


class _BaseRouter:
    def __init__(self) -> None:
        # Django builds the routers on the first routing decision: write
        # tracking is then in place even when "routerkit" is not installed.
        writes.install()
        self._runtime: Runtime | None = None
        self._placed: dict[type[Model], str | None] = {}

    def _place(self, config: Config, model: type[Model]) -> str | None:
        """Return the primary owning `model`, or None if this router has no opinion."""
        raise NotImplementedError

    def _place_app(self, config: Config, app_label: str, model_name: str | None) -> str | None:
        """Like `_place`, by labels, for migrations (models may not be loaded)."""
        raise NotImplementedError

    def _primary(self, model: type[Model]) -> str | None:
        # The hot path of every query: two attribute reads, an identity check
        # and a dict lookup when nothing changed.
        runtime = active.runtime
        if runtime is not self._runtime or runtime is None:
            # First use, or settings changed (override_settings): forget placements.
            runtime = active.get()
            self._runtime, self._placed = runtime, {}
        primary = self._placed.get(model, _UNKNOWN)
        if primary is _UNKNOWN:
            primary = self._placed[model] = self._place(runtime.config, _owner(model))
        return primary  # type: ignore[return-value]

    @property
    def _config(self) -> Config:
        assert self._runtime is not None  # set by _primary()
        return self._runtime.config

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        if not hints:
            # The hot path of every read, inlined (a function call costs more
            # than a check): the read this unit of work made last, if nothing
            # it depends on has changed since (see routerkit.state.Route).
            route = frame_var.get().routes.get(model)
            if route is not None and route.runtime is active.runtime:
                if route.router is self:
                    if (
                        route.thread is thread_marker.marker
                        and not route.wrapper.in_atomic_block
                        # routerkit.selection._UNLISTED: a test case forbids the replica.
                        and "connect" not in route.replica_attrs
                        and route.snapshot is route.holder.snapshot
                        and route.expires >= _monotonic()
                    ):
                        route.count += 1
                        return route.alias
                elif route.runtime is self._runtime and self._placed.get(model, _UNKNOWN) is None:
                    # A router after this one routes the model: this one has no opinion.
                    return None
        primary = self._primary(model)
        if primary is None:
            return None
        instance = hints.get("instance")
        if instance is not None:
            primary = self._instance_home(primary, instance)
            if primary not in self._config.managed:
                return primary  # an alias routerkit does not manage: stay there
        return read_alias(self._runtime, primary, hints, self, model)  # type: ignore[arg-type]

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:
        primary = self._primary(model)
        if primary is None:
            return None
        instance = hints.get("instance")
        if instance is not None:
            primary = self._instance_home(primary, instance)
        count_write(self._runtime, primary)  # type: ignore[arg-type]
        return primary

    def _instance_home(self, primary: str, instance: Any) -> str:
        """Return where a query about `instance` belongs: where the object lives.

        Django routes a save, a delete, a related manager and a relation's
        read with the instance as a hint. An object loaded with ``using()``
        lives where it was loaded from: writing it anywhere else would
        overwrite or delete an unrelated row with the same primary key. So its
        cluster wins over its model's placement (a replica stands for its
        primary), and an alias routerkit does not manage is kept as it is.
        Only a relation that crosses databases by configuration (the
        instance's model placed on another primary than `model`, which
        routerkit.E001 reports) follows the placement of `model`.
        """
        # `_state` and `_meta` through the instance, not type(instance): Django
        # hands out lazy wrappers (request.user is a SimpleLazyObject).
        db = getattr(getattr(instance, "_state", None), "db", None)
        config = self._config
        if db is None or db == primary:
            return primary
        if db not in config.managed:
            return str(db)
        home = config.primary_of(db)
        if home == primary:
            return primary
        meta = getattr(instance, "_meta", None)
        if meta is not None and config.home_of(meta.app_label, meta.model_name) == home:
            # The instance is where its model belongs: the relation itself
            # crosses databases, and `model` lives on its own primary.
            return primary
        return home

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        # obj._meta.model, not type(obj): request.user is a SimpleLazyObject.
        primary1 = self._primary(obj1._meta.model)
        primary2 = self._primary(obj2._meta.model)
        if primary1 is None and primary2 is None:
            return None
        config = self._config
        # Where an object actually lives wins over where its model belongs.
        home1 = config.primary_of(obj1._state.db) if obj1._state.db else primary1
        home2 = config.primary_of(obj2._state.db) if obj2._state.db else primary2
        if home1 is None or home2 is None:
            return None
        return home1 == home2

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        config = get_runtime().config
        if db in config.replica_of:
            return False
        model = hints.get("model")
        if model is not None:
            primary = self._place(config, _owner(model))
        else:
            primary = self._place_app(config, app_label, model_name)
        if primary is None:
            return None
        return db == primary


def _owner(model: type[Model]) -> type[Model]:
    """Return the model whose placement `model` follows.

    A proxy lives where its concrete model does (a proxy of auth.User in a
    project app is still auth_user), and an auto-created many-to-many table
    where the model that declares the field does.
    """
    declaring = model._meta.auto_created  # the declaring model, or False
    if isinstance(declaring, type):
        model = declaring
    return model._meta.concrete_model or model


class ContribRouter(_BaseRouter):
    """Place Django's contrib apps by group, as ROUTERKIT["CONTRIB"] says.

    Groups: "auth" (auth, contenttypes, admin), "sites" (sites, flatpages,
    redirects) and "sessions". A group's tables migrate only on its database.
    """

    def _place(self, config: Config, model: type[Model]) -> str | None:
        return config.contrib.get(model._meta.app_label)

    def _place_app(self, config: Config, app_label: str, model_name: str | None) -> str | None:
        return config.contrib.get(app_label)


class AppRouter(_BaseRouter):
    """Pin apps or single models to a primary, as ROUTERKIT["APPS"] says.

    Keys are app labels ("billing") or models ("analytics.Event"); a model
    entry wins over its app's entry.
    """

    def _place(self, config: Config, model: type[Model]) -> str | None:
        return config.app_home(model._meta.app_label, model._meta.model_name)

    def _place_app(self, config: Config, app_label: str, model_name: str | None) -> str | None:
        return config.app_home(app_label, model_name)


class PrimaryReplicaRouter(_BaseRouter):
    """Send every model to ROUTERKIT["DEFAULT"]: writes to it, reads to its replicas.

    A catch-all: put it after the routers it should not shadow.
    """

    def _place(self, config: Config, model: type[Model]) -> str | None:
        return config.default

    def _place_app(self, config: Config, app_label: str, model_name: str | None) -> str | None:
        return config.default

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if db not in get_runtime().config.managed:
            # An alias outside routerkit's clusters is reached with explicit
            # using() (several databases with the same tables): leave it to
            # Django, as before routerkit was installed. A test mirror is a
            # replica in production, never a migration target.
            mirror = settings.DATABASES.get(db, {}).get("TEST", {}).get("MIRROR")
            return False if mirror else None
        return super().allow_migrate(db, app_label, model_name, **hints)


class Router(PrimaryReplicaRouter):
    """ContribRouter, AppRouter and PrimaryReplicaRouter in one: the fast choice.

    Places every model as those three would, in that order (CONTRIB, then
    APPS, then DEFAULT), in one consult. Django's ConnectionRouter asks each
    router in turn, and asking one costs about as much as routerkit's whole
    decision: one router instead of three halves the cost of a read.
    """

    def _place(self, config: Config, model: type[Model]) -> str | None:
        return config.home_of(model._meta.app_label, model._meta.model_name)

    def _place_app(self, config: Config, app_label: str, model_name: str | None) -> str | None:
        return config.home_of(app_label, model_name)

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        config = get_runtime().config
        model = hints.get("model")
        if model is not None:
            meta = _owner(model)._meta
            app_label, model_name = meta.app_label, meta.model_name
        primary = config.pinned(app_label, model_name)
        if primary is not None:
            # As ContribRouter and AppRouter: those tables live on their database only.
            return db == primary
        return super().allow_migrate(db, app_label, model_name, **hints)
