"""A deliberately broken variant of the example project, to show routerkit_validate.

    DJANGO_SETTINGS_MODULE=example_project.settings_broken \
        python example_project/manage.py routerkit_validate

reports exactly: E001 twice (admin's LogEntry points at User and ContentType on
another database), E002 (admin split from auth) and W003 (a replica without a
test mirror).
"""

from __future__ import annotations

from typing import Any

from example_project.settings import *  # noqa: F403
from example_project.settings import _sqlite

# A second database, and a project router that puts the admin log there.
DATABASES = {
    **DATABASES,  # noqa: F405
    "users": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_sqlite.with_name("users.sqlite3")),
    },
}
DATABASES["replica1"] = {**DATABASES["replica1"], "TEST": {}}


class AdminLogRouter:
    """Splits the auth group: django.contrib.admin on `users`."""

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "users" if model._meta.app_label == "admin" else None

    db_for_read = db_for_write

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return db == "users" if app_label == "admin" else None


DATABASE_ROUTERS = ["example_project.settings_broken.AdminLogRouter", *DATABASE_ROUTERS]  # noqa: F405
