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
    # Model rules are tagged "models", as Django's own are, so that
    # `check --tag models` runs them.
    checks.register(check_routing, "routerkit", checks.Tags.models)
    # Only the "database" tag: Django runs those checks when databases are
    # named (`check --database`, and `migrate` for the database it migrates).
    checks.register(check_databases, checks.Tags.database)


def check_routing(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Relations across databases, contrib placement, migrations (E001-E007, W001-W003).

    With `app_configs` (`manage.py check contenttypes`) the model rules judge
    only those apps' models; the rules about the configuration as a whole
    still run, as Django's own checks that are not about models do.
    """
    from routerkit.validation.static import check_static

    if app_configs is None:
        return check_static()
    return check_static([model for config in app_configs for model in config.get_models()])


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
