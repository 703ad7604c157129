"""System checks for the ROUTERKIT setting and the router chain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core import checks
from django.core.checks import CheckMessage

from routerkit.validation.config import check_settings, check_wiring


def register() -> None:
    checks.register(check_settings, "routerkit")
    checks.register(check_wiring, "routerkit")
    checks.register(check_routing, "routerkit")
    # Only the "database" tag: Django runs those checks when databases are
    # named (`check --database`, and `migrate` for the database it migrates).
    checks.register(check_databases, checks.Tags.database)


def check_routing(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Relations across databases, contrib placement, migrations (E001-E007, W001-W003)."""
    from routerkit.validation.static import check_static

    return check_static()


def check_databases(
    app_configs: Sequence[Any] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Live rules (E006, W004, W008, I001), only for `manage.py check --database ...`."""
    if not databases:
        return []
    from routerkit.validation.live import check_live

    return check_live(databases)
