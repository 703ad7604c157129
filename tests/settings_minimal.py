"""A project without any of Django's contrib apps: they stay optional."""

from __future__ import annotations

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    "replica1": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "TEST": {"MIRROR": "default"},
    },
}
ROUTERKIT = {"REPLICAS": {"default": ["replica1"]}}
DATABASE_ROUTERS = ["routerkit.routers.PrimaryReplicaRouter"]
INSTALLED_APPS = ["routerkit", "tests.billing"]
MIDDLEWARE = ["routerkit.middleware.ConsistencyMiddleware"]
SECRET_KEY = "routerkit-tests-only"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
