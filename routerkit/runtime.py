"""The one object a routing decision reads: settings, health monitor and balancers.

Built on first use for the current settings and replaced in one assignment
when they change (`setting_changed`), so a decision never sees the settings
of one configuration with the balancers or monitor of another.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed

from routerkit import conf
from routerkit.balancers import Balancer
from routerkit.conf import Config
from routerkit.health import Monitor, get_monitor


@dataclass(frozen=True, eq=False)
class Runtime:
    config: Config
    monitor: Monitor
    # primary -> its balancer, for every primary that has replicas
    balancers: Mapping[str, Balancer]


def build(config: Config, monitor: Monitor) -> Runtime:
    """Return the runtime of a configuration."""
    return Runtime(
        config=config,
        monitor=monitor,
        balancers={
            primary: Balancer(cluster.replicas, cluster.weights, config.balancer)
            for primary, cluster in config.clusters.items()
            if cluster.replicas
        },
    )


class Active:
    """Holds the runtime of the current settings; read on every query.

    `runtime` is None until first use and after settings change; `get()`
    then builds it. A router keeps the runtime it last saw and compares it by
    identity: two attribute reads per decision when nothing changed.
    """

    __slots__ = ("_lock", "runtime")

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self._lock = threading.Lock()

    def get(self) -> Runtime:
        runtime = self.runtime
        if runtime is None:
            runtime = self._load()
        return runtime

    def _load(self) -> Runtime:
        with self._lock:
            config = conf.get_config()
            runtime = self.runtime
            if runtime is None or runtime.config is not config:
                runtime = self.runtime = build(config, get_monitor(config))
                # Hooked up on first use, like the settings cache (see routerkit.conf).
                setting_changed.connect(_forget, dispatch_uid="routerkit.runtime")
            return runtime

    def forget(self) -> None:
        with self._lock:
            # The settings cache first: a runtime built from here on parses
            # the new settings, whichever receiver Django calls first.
            conf.clear_cache(setting="ROUTERKIT")
            self.runtime = None


active = Active()


def get_runtime() -> Runtime:
    """Return the runtime for the current settings."""
    return active.get()


def _forget(*, setting: str, **kwargs: Any) -> None:
    if setting in conf.WATCHED_SETTINGS:
        active.forget()
