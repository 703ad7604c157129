"""Settings of the benchmark site, chosen by the environment.

    OFFLOAD_ROUTER  all-primary | docs | multidb | replicated | routerkit
    OFFLOAD_PORTS   the primary's and the replicas' ports, comma-separated
    OFFLOAD_WAIT    routerkit's STICKY["WAIT"] in seconds (default 0)
    OFFLOAD_STICKY_MODE  routerkit's STICKY["MODE"] (default "lsn")

The same site, database settings and persistent connections for every router;
only the router, its middleware and its settings differ.
"""

from __future__ import annotations

import os

ROUTER = os.environ.get("OFFLOAD_ROUTER", "routerkit")
_ports = [int(p) for p in os.environ.get("OFFLOAD_PORTS", "5432,5433,5434").split(",")]
_engine = (
    "routerkit.backends.postgresql" if ROUTER == "routerkit" else "django.db.backends.postgresql"
)


def _database(port: int) -> dict[str, object]:
    return {
        "ENGINE": _engine,
        "NAME": "offload",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": port,
        "CONN_MAX_AGE": 60,
    }


SECRET_KEY = "routerkit-offload-benchmark"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "offload_app.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["offload_app"]
MIDDLEWARE: list[str] = []
DATABASES = {"default": _database(_ports[0])}
REPLICAS = []
if ROUTER != "all-primary":
    REPLICAS = [f"replica{i}" for i in range(1, len(_ports))]
    for alias, port in zip(REPLICAS, _ports[1:], strict=True):
        DATABASES[alias] = {**_database(port), "TEST": {"MIRROR": "default"}}

if ROUTER == "docs":
    DATABASE_ROUTERS = ["offload_app.routers.PrimaryReplicaRouter"]
elif ROUTER == "multidb":
    DATABASE_ROUTERS = ["multidb.PinningReplicaRouter"]
    MIDDLEWARE = ["multidb.middleware.PinningRouterMiddleware"]
    REPLICA_DATABASES = REPLICAS
elif ROUTER == "replicated":
    from django_replicated.settings import *  # noqa: F403 - its middleware needs its defaults

    DATABASE_ROUTERS = ["django_replicated.router.ReplicationRouter"]
    MIDDLEWARE = ["django_replicated.middleware.ReplicationMiddleware"]
    REPLICATED_DATABASE_SLAVES = REPLICAS
elif ROUTER == "routerkit":
    INSTALLED_APPS = ["routerkit", *INSTALLED_APPS]
    DATABASE_ROUTERS = ["routerkit.routers.PrimaryReplicaRouter"]
    MIDDLEWARE = ["routerkit.middleware.ConsistencyMiddleware"]
    ROUTERKIT = {
        "REPLICAS": {"default": REPLICAS},
        "STICKY": {
            "MODE": os.environ.get("OFFLOAD_STICKY_MODE") or "lsn",
            "WAIT": float(os.environ.get("OFFLOAD_WAIT", "0")),
        },
    }
