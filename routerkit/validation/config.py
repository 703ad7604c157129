"""Checks of the settings themselves and of how routerkit is wired in (routers, middleware)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from routerkit.conf import Config, get_config
from routerkit.health.judge import HYSTERESIS

_ROUTERS = "routerkit.routers."
_MIDDLEWARE = "routerkit.middleware.ConsistencyMiddleware"

W005 = "routerkit.W005"
W006 = "routerkit.W006"
W007 = "routerkit.W007"
W010 = "routerkit.W010"
_SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Report every malformed ROUTERKIT value (E003, E1xx)."""
    config = get_config()
    errors: list[CheckMessage] = [
        Error(p.msg, hint=p.hint, obj=p.obj, id=p.id) for p in config.problems
    ]
    installed = {app_config.label for app_config in apps.get_app_configs()}
    for key in sorted([*config.apps, *config.models]):
        app_label = key.partition(".")[0]
        if app_label in installed and ("." not in key or _model_exists(key)):
            continue
        errors.append(
            Error(
                f"ROUTERKIT['APPS'] names {key!r}, which is not installed.",
                hint="Check the spelling, or add the app to INSTALLED_APPS.",
                obj=f"ROUTERKIT['APPS'][{key!r}]",
                id="routerkit.E106",
            )
        )
    errors.extend(_unreachable_limits(config))
    return errors


def _unreachable_limits(config: Config) -> list[CheckMessage]:
    """Warn when a replica out for lag could never come back (W010).

    It returns under HYSTERESIS of MAX_SECONDS, and its lag as measured
    includes the time its probe took, up to TIMEOUT: with the first not above
    the second, a replica of a primary that keeps writing never qualifies.
    """
    lag = config.lag
    back_under = lag.max_seconds * HYSTERESIS
    if not config.replica_of or back_under > lag.timeout:
        return []
    return [
        Warning(
            f"A replica out for lag comes back under {back_under:g} s of lag "
            f"(half of MAX_SECONDS), but a probe may take up to TIMEOUT ({lag.timeout:g} s), "
            "which counts as lag: while the primary writes, it may never come back.",
            hint=f"Raise MAX_SECONDS above {2 * lag.timeout:g} (twice TIMEOUT), or lower TIMEOUT.",
            obj="ROUTERKIT['LAG']",
            id=W010,
        )
    ]


def _model_exists(label: str) -> bool:
    try:
        apps.get_model(label)
    except LookupError:
        return False
    return True


def check_wiring(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Warn when a configured feature has no router or middleware to carry it out."""
    config = get_config()
    routers = [
        r if isinstance(r, str) else f"{type(r).__module__}.{type(r).__qualname__}"
        for r in settings.DATABASE_ROUTERS
    ]
    messages: list[CheckMessage] = []
    for key, router, configured in (
        ("CONTRIB", "ContribRouter", bool(config.contrib)),
        ("APPS", "AppRouter", bool(config.apps or config.models)),
    ):
        if configured and _ROUTERS + router not in routers and _ROUTERS + "Router" not in routers:
            messages.append(
                Warning(
                    f"ROUTERKIT['{key}'] is set but {router} is not in DATABASE_ROUTERS.",
                    hint=(
                        f"Add '{_ROUTERS}{router}' before PrimaryReplicaRouter, or use "
                        f"'{_ROUTERS}Router' alone."
                    ),
                    obj="DATABASE_ROUTERS",
                    id=W005,
                )
            )
    uses_routerkit = any(r.startswith(_ROUTERS) for r in routers)
    if uses_routerkit and config.clusters and _MIDDLEWARE not in settings.MIDDLEWARE:
        messages.append(
            Warning(
                "ConsistencyMiddleware is not installed: a write pins every later read "
                "of its thread to the primary.",
                hint=f"Add '{_MIDDLEWARE}' near the top of MIDDLEWARE.",
                obj="MIDDLEWARE",
                id=W006,
            )
        )
    middleware = list(settings.MIDDLEWARE)
    if (
        config.sticky.store == "session"
        and config.sticky.mode != "off"
        and _MIDDLEWARE in middleware
        and (
            _SESSIONS not in middleware
            or middleware.index(_SESSIONS) > middleware.index(_MIDDLEWARE)
        )
    ):
        messages.append(
            Warning(
                "STICKY['STORE'] is 'session' but SessionMiddleware does not come "
                "before ConsistencyMiddleware.",
                hint="Move ConsistencyMiddleware just after SessionMiddleware, or use "
                "the 'cookie' store.",
                obj="MIDDLEWARE",
                id=W007,
            )
        )
    return messages
