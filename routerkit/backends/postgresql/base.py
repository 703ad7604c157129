"""Django's PostgreSQL backend, with routerkit's read retries (see routerkit.retries)."""

from __future__ import annotations

from django.db.backends.postgresql import base

from routerkit.retries import ReadRetryMixin


class DatabaseWrapper(ReadRetryMixin, base.DatabaseWrapper):
    pass
