"""The validator: cross-database relations, contrib placement, live tables and roles.

One pure function, two front doors: the system checks and
``manage.py routerkit_validate`` both call `validate()`.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.checks import CheckMessage

from routerkit.validation.config import check_settings, check_wiring
from routerkit.validation.live import check_live
from routerkit.validation.static import check_static


def validate(databases: Iterable[str] | None = None) -> list[CheckMessage]:
    """Return every finding not silenced: the static rules, and the live ones for `databases`."""
    messages = [*check_settings(), *check_wiring(), *check_static()]
    if databases:
        messages += check_live(databases)
    return [m for m in messages if not m.is_silenced()]


__all__ = ["validate"]
