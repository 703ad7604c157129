"""Settings for routerkit's own tests.

The topology is the one in Django's multiple-database guide, written in
ROUTERKIT alone: `default` left empty, auth (with contenttypes and admin) on
its own database, everything else on a primary with two streaming replicas.
A `billing` app is pinned to a second primary that has a replica of its own.
All of it runs on one real PostgreSQL cluster (tests/pgcluster.py) started by
conftest.py on the ports chosen here.
"""

from __future__ import annotations

import os
from typing import Any

from routerkit.env import read_only
from tests.pgcluster import free_ports

# Fixed ports can be asked for, e.g. to attach psql to a paused test run.
_ports = os.environ.get("ROUTERKIT_TEST_PG_PORTS")
PG_PORTS = [int(p) for p in _ports.split(",")] if _ports else free_ports(3)


def _pg(port: int, name: str) -> dict[str, Any]:
    return {
        "ENGINE": "routerkit.backends.postgresql",
        "NAME": name,
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": port,
        "OPTIONS": {"connect_timeout": 2},
    }


def _replica(port: int, name: str, primary: str) -> dict[str, Any]:
    return read_only({**_pg(port, name), "TEST": {"MIRROR": primary}})


primary_port, replica1_port, replica2_port = PG_PORTS
DATABASES: dict[str, dict[str, Any]] = {
    "default": {"ENGINE": "django.db.backends.dummy"},
    "primary": _pg(primary_port, "routerkit"),
    "replica1": _replica(replica1_port, "routerkit", "primary"),
    "replica2": _replica(replica2_port, "routerkit", "primary"),
    "auth_db": _pg(primary_port, "routerkit_auth"),
    "billing": _pg(primary_port, "routerkit_billing"),
    "billing_replica": _replica(replica1_port, "routerkit_billing", "billing"),
    # Not a replica, and no test mirror: validator tests name it as one by mistake.
    "reporting": _pg(primary_port, "routerkit"),
    # A database routerkit does not manage, reached only with explicit using().
    "archive": _pg(primary_port, "routerkit_archive"),
}

ROUTERKIT = {
    "DEFAULT": "primary",
    "CONTRIB": {"auth": "auth_db"},
    "APPS": {"billing": "billing"},
    "REPLICAS": {"primary": ["replica1", "replica2"], "billing": ["billing_replica"]},
}

DATABASE_ROUTERS = [
    "routerkit.routers.ContribRouter",
    "routerkit.routers.AppRouter",
    "routerkit.routers.PrimaryReplicaRouter",
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.sites",
    "django.contrib.flatpages",
    "django.contrib.redirects",
    "routerkit",
    "tests.testapp",
    "tests.billing",
]

MIDDLEWARE = [
    "routerkit.middleware.ConsistencyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

# "reporting" and "archive" are reached only with explicit using(), as the
# warning's hint says to do for such aliases.
SILENCED_SYSTEM_CHECKS = ["routerkit.W009"]

ROOT_URLCONF = "tests.urls"
SECRET_KEY = "routerkit-tests-only"
SITE_ID = 1
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.request",
            ]
        },
    }
]
