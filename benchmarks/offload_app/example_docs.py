"""The example project with the router of Django's guide in place of routerkit's (for wrk)."""

from __future__ import annotations

from example_project.settings import *  # noqa: F403
from example_project.settings import DATABASES, MIDDLEWARE

DATABASE_ROUTERS = ["offload_app.routers.PrimaryReplicaRouter"]
MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("routerkit.")]
for _database in DATABASES.values():
    _database["ENGINE"] = "django.db.backends.postgresql"
