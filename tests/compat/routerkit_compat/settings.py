"""A third-party app's test settings, on the real cluster, with or without routerkit.

`tests/compat/run.py` sets the environment:

- ``COMPAT_BASE_SETTINGS``: the app's own settings module, imported first;
- ``COMPAT_PRIMARY_PORT`` and ``COMPAT_REPLICA_PORT``: the cluster's servers;
- ``COMPAT_DATABASE``: prefix of the databases the aliases use on the primary;
- ``COMPAT_ROUTERKIT``: ``1`` to wire routerkit in as the README's quickstart says;
- ``COMPAT_OUTCOMES``: where the runner writes every test's outcome.

Every alias the app's settings name becomes a database on the primary (an app that
names a MySQL alias for its multi-database tests gets PostgreSQL there too). With
routerkit, ``default`` is a routerkit primary with ``replica1`` on a real streaming
replica (``TEST["MIRROR"]``), the three routers are installed, and
``ConsistencyMiddleware`` comes first. Other aliases stay outside routerkit's
clusters: the app reaches them with explicit ``using()``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import import_module
from typing import Any

from routerkit.env import read_only

_base = import_module(os.environ["COMPAT_BASE_SETTINGS"])
globals().update({name: getattr(_base, name) for name in dir(_base) if name.isupper()})


def _postgres(port: str, name: str) -> dict[str, Any]:
    # As tests/settings.py writes it; not imported from there: in these runs
    # `tests` is the app's own package.
    return {
        "ENGINE": "routerkit.backends.postgresql",
        "NAME": name,
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": port,
        "OPTIONS": {"connect_timeout": 5},
    }


def _extended(name: str, before: Sequence[str] = (), after: Sequence[str] = ()) -> Any:
    """The app's setting `name` with entries added, as a tuple if the app wrote a tuple.

    Tests do ``settings.INSTALLED_APPS + ("crispy_forms",)``: the type must not change.
    """
    value = getattr(_base, name, [])
    return type(value)([*before, *value, *after])


_primary_port = os.environ["COMPAT_PRIMARY_PORT"]
_prefix = os.environ["COMPAT_DATABASE"]
DATABASES = {
    alias: _postgres(_primary_port, f"{_prefix}_{alias}")
    for alias in getattr(_base, "DATABASES", {"default": {}})
}
TEST_RUNNER = "routerkit_compat.runner.RecordingRunner"

if os.environ.get("COMPAT_ROUTERKIT") == "1":
    DATABASES["replica1"] = read_only(
        {
            **_postgres(os.environ["COMPAT_REPLICA_PORT"], f"{_prefix}_default"),
            "TEST": {"MIRROR": "default"},
        }
    )
    INSTALLED_APPS = _extended("INSTALLED_APPS", after=["routerkit"])
    MIDDLEWARE = _extended("MIDDLEWARE", before=["routerkit.middleware.ConsistencyMiddleware"])
    DATABASE_ROUTERS = _extended(
        "DATABASE_ROUTERS",
        after=[
            "routerkit.routers.ContribRouter",
            "routerkit.routers.AppRouter",
            "routerkit.routers.PrimaryReplicaRouter",
        ],
    )
    ROUTERKIT = {"DEFAULT": "default", "REPLICAS": {"default": ["replica1"]}}
    # The apps' extra aliases are reached only with explicit using(), on purpose.
    SILENCED_SYSTEM_CHECKS = _extended("SILENCED_SYSTEM_CHECKS", after=["routerkit.W009"])
