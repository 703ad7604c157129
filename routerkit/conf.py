"""Parse the ROUTERKIT setting into frozen, typed objects.

The parser never raises: every malformed value becomes a `Problem` (reported by
the system checks with its ID and a hint) and is replaced by a safe default, so
a typo cannot crash start-up and routing keeps writes on primaries.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

# Contrib apps that must share a database (Django's multi-db guide): auth's
# Permission points at contenttypes, admin's LogEntry at both, flatpages and
# redirects at sites.
CONTRIB_GROUPS: Mapping[str, frozenset[str]] = {
    "auth": frozenset({"auth", "contenttypes", "admin"}),
    "sites": frozenset({"sites", "flatpages", "redirects"}),
    "sessions": frozenset({"sessions"}),
}
CONTRIB_APPS: Mapping[str, str] = {
    app: group for group, apps in CONTRIB_GROUPS.items() for app in apps
}

BALANCERS = ("random", "round_robin", "weighted")
STICKY_MODES = ("lsn", "time", "off")
STICKY_STORES = ("cookie", "session", "cache")

_TOP_KEYS = (
    "DEFAULT",
    "CONTRIB",
    "APPS",
    "REPLICAS",
    "BALANCER",
    "STICKY",
    "LAG",
    "METRICS",
    "RETRY_AFTER",
)
# Upper bounds of numeric settings: past them a value is a mistake, and some
# (a TIMEOUT past threading's wait limit, bytes past a WAL position) would
# raise OverflowError inside requests.
MAX_SECONDS_SETTING = 86_400.0  # WINDOW, MAX_SECONDS, INTERVAL: one day
MAX_TIMEOUT_SETTING = 60.0
# A request that waits longer for a replica than for the primary gains nothing.
MAX_WAIT_SETTING = 5.0
MAX_BYTES_SETTING = 2**62
MAX_WEIGHT = 1e6
# RFC 6265 cookie names are tokens; kept to a safe subset, with room for the
# "_seen" and "_client" suffixes.
_COOKIE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_APP_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$")


@dataclass(frozen=True)
class Problem:
    """A malformed ROUTERKIT value, reported as a system check error."""

    id: str
    msg: str
    hint: str
    obj: str


@dataclass(frozen=True)
class Sticky:
    mode: str = "lsn"
    window: float = 2.0
    store: str = "cookie"
    cookie_name: str = "routerkit"
    # Seconds a request may wait at its start for a replica to reach the
    # client's position before reading the primary instead (0: never wait).
    wait: float = 0.0


@dataclass(frozen=True)
class Lag:
    max_seconds: float = 5.0
    max_bytes: int = 16 * 1024 * 1024
    interval: float = 1.0
    timeout: float = 0.2
    # Fewest replicas a cluster keeps serving when lag would exclude more:
    # the least lagging ones stay for readers whose tokens they meet.
    min_replicas: int = 1


@dataclass(frozen=True)
class Cluster:
    """A primary and the replicas that serve its reads."""

    primary: str
    replicas: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Config:
    default: str = "default"
    # app label -> primary, expanded from the contrib groups
    contrib: Mapping[str, str] = field(default_factory=dict)
    # app label -> primary, and lower-case "app.model" -> primary
    apps: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)
    clusters: Mapping[str, Cluster] = field(default_factory=dict)
    replica_of: Mapping[str, str] = field(default_factory=dict)
    balancer: str = "random"
    sticky: Sticky = field(default_factory=Sticky)
    lag: Lag = field(default_factory=Lag)
    metrics: bool = True
    # Seconds for Retry-After on the 503 a request gets when a primary cannot
    # be reached; None leaves such a request's error as it is (a 500).
    retry_after: int | None = None
    problems: tuple[Problem, ...] = ()

    def cluster(self, primary: str) -> Cluster:
        """Return the cluster of a primary; one without replicas if none are configured."""
        try:
            return self.clusters[primary]
        except KeyError:
            return Cluster(primary, (), ())

    def primary_of(self, alias: str) -> str:
        """Return the primary whose data `alias` serves (itself unless it is a replica)."""
        return self.replica_of.get(alias, alias)

    @cached_property
    def managed(self) -> frozenset[str]:
        """Every alias routerkit places data on or reads from: primaries and replicas."""
        placed = {self.default, *self.contrib.values(), *self.apps.values(), *self.models.values()}
        return frozenset(placed | set(self.clusters) | set(self.replica_of))

    def app_home(self, app_label: str, model_name: str | None) -> str | None:
        """Return where APPS puts a model (AppRouter): its own entry, else its app's."""
        if model_name is not None:
            primary = self.models.get(f"{app_label}.{model_name.lower()}")
            if primary is not None:
                return primary
        return self.apps.get(app_label)

    def pinned(self, app_label: str, model_name: str | None) -> str | None:
        """Return where CONTRIB, then APPS, put a model (ContribRouter, then AppRouter)."""
        return self.contrib.get(app_label) or self.app_home(app_label, model_name)

    def home_of(self, app_label: str, model_name: str | None) -> str:
        """Return the primary a model belongs to by these settings, across all three routers."""
        return self.pinned(app_label, model_name) or self.default


_config: Config | None = None
# The settings the parsed configuration depends on.
WATCHED_SETTINGS = ("ROUTERKIT", "DATABASES")


def get_config() -> Config:
    """Return the parsed ROUTERKIT setting, parsing it on first use."""
    config = _config
    if config is None:
        config = _load()
    return config


def _load() -> Config:
    global _config
    config = parse(getattr(settings, "ROUTERKIT", {}), settings.DATABASES)
    _config = config
    # Hooked up on first use rather than in ready(), so that routing stays
    # correct even when "routerkit" is missing from INSTALLED_APPS.
    setting_changed.connect(clear_cache, dispatch_uid="routerkit.conf")
    return config


def clear_cache(*, setting: str, **kwargs: Any) -> None:
    """Drop the parsed settings when a test overrides them (setting_changed receiver)."""
    global _config
    if setting in WATCHED_SETTINGS:
        _config = None


def _aliases(listed: object) -> list[str]:
    """The replica aliases of a REPLICAS entry, whatever its shape (for dropped entries)."""
    if isinstance(listed, (Mapping, list, tuple)):
        return [alias for alias in listed if isinstance(alias, str)]
    return []


def parse(raw: object, databases: Mapping[str, Any]) -> Config:
    """Parse a ROUTERKIT value against DATABASES; collect problems instead of raising."""
    return _Parser(databases).parse(raw)


class _Parser:
    def __init__(self, databases: Mapping[str, Any]) -> None:
        self.databases = databases
        self.problems: list[Problem] = []
        # Every alias listed as a replica, even in a cluster dropped as invalid:
        # none of them may ever take writes.
        self.listed_replicas: set[str] = set()
        # alias -> its TEST["MIRROR"]: a replica in production, whether or not
        # REPLICAS lists it (the validator takes it for one too).
        self.mirrors: dict[str, str] = {}
        for alias, settings_dict in databases.items():
            test = settings_dict.get("TEST") if isinstance(settings_dict, Mapping) else None
            mirror = test.get("MIRROR") if isinstance(test, Mapping) else None
            if isinstance(mirror, str) and mirror:
                self.mirrors[str(alias)] = mirror

    def problem(self, id: str, obj: str, msg: str, hint: str) -> None:
        self.problems.append(Problem(f"routerkit.{id}", msg, hint, obj))

    def parse(self, raw: object) -> Config:
        obj = "ROUTERKIT"
        if not isinstance(raw, Mapping):
            self.problem(
                "E101", obj, "ROUTERKIT must be a dict.", "Set ROUTERKIT = {...} or remove it."
            )
            raw = {}
        self.unknown_keys(raw, _TOP_KEYS, obj)

        default = self.alias(raw.get("DEFAULT", "default"), f"{obj}['DEFAULT']", None) or "default"
        clusters, replica_of = self.replicas(raw.get("REPLICAS", {}), f"{obj}['REPLICAS']")
        contrib = self.contrib(raw.get("CONTRIB", {}), f"{obj}['CONTRIB']")
        apps, models = self.apps(raw.get("APPS", {}), f"{obj}['APPS']")

        # A replica never owns writes: catch it named as a primary anywhere.
        targets = {f"{obj}['DEFAULT']": default}
        targets.update({f"{obj}['CONTRIB'][{app!r}]": a for app, a in contrib.items()})
        targets.update({f"{obj}['APPS'][{k!r}]": a for k, a in {**apps, **models}.items()})
        reported: set[str] = set()  # once per alias: a CONTRIB group names three apps
        for where, alias in targets.items():
            if alias in reported:
                continue
            if alias in self.listed_replicas or alias in self.mirrors:
                reported.add(alias)
                primary = replica_of.get(alias) or self.mirrors.get(alias)
                self.problem(
                    "E105",
                    where,
                    f"{alias!r} is a replica and cannot take writes.",
                    f"Name its primary {primary!r} here instead."
                    if primary
                    else "Name a primary here.",
                )

        def writable(alias: str) -> str | None:
            if alias not in self.listed_replicas and alias not in self.mirrors:
                return alias
            primary = replica_of.get(alias) or self.mirrors.get(alias)
            # A mirror of a mirror, or of a listed replica, has no writable primary.
            if primary in self.listed_replicas or primary in self.mirrors:
                return None
            return primary

        default = writable(default) or "default"
        contrib = {app: p for app, a in contrib.items() if (p := writable(a))}
        apps = {app: p for app, a in apps.items() if (p := writable(a))}
        models = {label: p for label, a in models.items() if (p := writable(a))}

        has_weights = any(len(set(c.weights)) > 1 for c in clusters.values())
        balancer = self.choice(
            raw.get("BALANCER", "weighted" if has_weights else "random"),
            BALANCERS,
            f"{obj}['BALANCER']",
            "random",
        )
        if has_weights and balancer != "weighted":
            self.problem(
                "E103",
                f"{obj}['BALANCER']",
                f"Replica weights are set but BALANCER is {balancer!r}.",
                "Set BALANCER to 'weighted' or list the replicas without weights.",
            )

        return Config(
            default=default,
            contrib=contrib,
            apps=apps,
            models=models,
            clusters=clusters,
            replica_of=replica_of,
            balancer=balancer,
            sticky=self.sticky(raw.get("STICKY", {}), f"{obj}['STICKY']"),
            lag=self.lag(raw.get("LAG", {}), f"{obj}['LAG']"),
            metrics=self.boolean(raw.get("METRICS", True), f"{obj}['METRICS']", True),
            retry_after=self.retry_after(raw.get("RETRY_AFTER"), f"{obj}['RETRY_AFTER']"),
            problems=tuple(self.problems),
        )

    # -- generic values ---------------------------------------------------

    def unknown_keys(self, raw: Mapping[Any, Any], known: tuple[str, ...], obj: str) -> None:
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = (
                    f"Did you mean {close[0]!r}?" if close else f"Known keys: {', '.join(known)}."
                )
                self.problem("E102", obj, f"Unknown key {key!r}.", hint)

    def mapping(self, raw: object, obj: str) -> Mapping[Any, Any]:
        if isinstance(raw, Mapping):
            return raw
        self.problem("E101", obj, f"Expected a dict, got {type(raw).__name__}.", "Use a dict.")
        return {}

    def alias(self, raw: object, obj: str, fallback: str | None) -> str | None:
        if not isinstance(raw, str):
            self.problem(
                "E101",
                obj,
                f"Expected a database alias, got {type(raw).__name__}.",
                "Use a key of DATABASES.",
            )
            return fallback
        if raw not in self.databases:
            close = difflib.get_close_matches(raw, list(self.databases), n=1)
            hint = f"Did you mean {close[0]!r}?" if close else "Add it to DATABASES."
            self.problem("E003", obj, f"{raw!r} is not in DATABASES.", hint)
            return fallback
        return raw

    def choice(self, raw: object, choices: tuple[str, ...], obj: str, fallback: str) -> str:
        if raw in choices:
            return str(raw)
        if not isinstance(raw, str):
            self.problem(
                "E101",
                obj,
                f"Expected a string, got {type(raw).__name__}.",
                f"Use one of: {', '.join(choices)}.",
            )
            return fallback
        self.problem(
            "E103", obj, f"{raw!r} is not a valid choice.", f"Use one of: {', '.join(choices)}."
        )
        return fallback

    def number(
        self,
        raw: object,
        obj: str,
        fallback: float,
        *,
        allow_zero: bool = False,
        maximum: float = MAX_SECONDS_SETTING,
    ) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            self.problem(
                "E101", obj, f"Expected a number, got {type(raw).__name__}.", "Use a number."
            )
            return fallback
        try:
            value = float(raw)
        except OverflowError:
            value = math.inf
        if (
            not math.isfinite(value)
            or value < 0
            or (value == 0 and not allow_zero)
            or value > maximum
        ):
            bound = "from 0" if allow_zero else "above 0"
            self.problem(
                "E104", obj, f"{raw!r} is out of range.", f"Use a number {bound} up to {maximum:g}."
            )
            return fallback
        return value

    def boolean(self, raw: object, obj: str, fallback: bool) -> bool:
        if isinstance(raw, bool):
            return raw
        self.problem(
            "E101", obj, f"Expected True or False, got {type(raw).__name__}.", "Use a bool."
        )
        return fallback

    # -- sections ---------------------------------------------------------

    def retry_after(self, raw: object, obj: str) -> int | None:
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.problem(
                "E101",
                obj,
                f"Expected whole seconds or None, got {type(raw).__name__}.",
                "Use a number of seconds such as 5, or None to answer with a 500.",
            )
            return None
        value = self.number(raw, obj, -1.0, maximum=MAX_SECONDS_SETTING)
        return None if value < 0 else int(value)  # out of range: reported, and off

    def replicas(self, raw: object, obj: str) -> tuple[dict[str, Cluster], dict[str, str]]:
        clusters: dict[str, Cluster] = {}
        replica_of: dict[str, str] = {}
        for primary, listed in self.mapping(raw, obj).items():
            where = f"{obj}[{primary!r}]"
            if self.alias(primary, where, None) is None:
                continue
            if primary in self.mirrors:
                self.problem(
                    "E105",
                    where,
                    f"{primary!r} is a replica (its TEST['MIRROR'] is "
                    f"{self.mirrors[primary]!r}) and cannot be a primary.",
                    f"List its replicas under {self.mirrors[primary]!r}, or remove its "
                    "TEST['MIRROR'] if it is a primary.",
                )
                self.listed_replicas.update(r for r in _aliases(listed) if r in self.databases)
                continue
            if isinstance(listed, Mapping):
                # A weight of 0 drains a replica without removing it.
                weighted = [
                    (r, self.number(w, f"{where}[{r!r}]", 1.0, allow_zero=True, maximum=MAX_WEIGHT))
                    for r, w in listed.items()
                ]
            elif isinstance(listed, (list, tuple)):
                weighted = [(r, 1.0) for r in listed]
            else:
                self.problem(
                    "E101",
                    where,
                    f"Expected a list of replica aliases, got {type(listed).__name__}.",
                    'Use ["replica1", ...] or {"replica1": weight, ...}.',
                )
                continue
            names: list[str] = []
            weights: list[float] = []
            for replica, weight in weighted:
                alias = self.alias(replica, where, None)
                if alias is None:
                    continue
                if alias == primary or alias in replica_of or alias in clusters:
                    self.problem(
                        "E105",
                        where,
                        f"{alias!r} cannot be a replica here: it is already "
                        + ("this primary." if alias == primary else "a primary or a replica."),
                        "Give each replica alias exactly one primary.",
                    )
                    continue
                self.listed_replicas.add(alias)
                names.append(alias)
                weights.append(weight)
                replica_of[alias] = primary
            if names and not any(weights):
                self.problem(
                    "E104",
                    where,
                    "Every replica has weight 0.",
                    "Give at least one replica a weight above 0.",
                )
                weights = [1.0] * len(names)
            clusters[primary] = Cluster(primary, tuple(names), tuple(weights))
        # A primary listed after it was claimed as another primary's replica.
        for primary in list(clusters):
            if primary in replica_of:
                self.problem(
                    "E105",
                    f"{obj}[{primary!r}]",
                    f"{primary!r} is both a primary and a replica of {replica_of[primary]!r}.",
                    "Give each replica alias exactly one primary.",
                )
                # Drop the whole chain: its replicas would otherwise resolve to
                # a replica as their primary.
                for replica in clusters.pop(primary).replicas:
                    del replica_of[replica]
        return clusters, replica_of

    def contrib(self, raw: object, obj: str) -> dict[str, str]:
        placed: dict[str, str] = {}
        for group, target in self.mapping(raw, obj).items():
            where = f"{obj}[{group!r}]"
            if group not in CONTRIB_GROUPS:
                self.problem(
                    "E103",
                    where,
                    f"{group!r} is not a contrib group.",
                    f"Use one of: {', '.join(CONTRIB_GROUPS)}.",
                )
                continue
            alias = self.alias(target, where, None)
            if alias is not None:
                placed.update(dict.fromkeys(CONTRIB_GROUPS[group], alias))
        return placed

    def apps(self, raw: object, obj: str) -> tuple[dict[str, str], dict[str, str]]:
        apps: dict[str, str] = {}
        models: dict[str, str] = {}
        for key, target in self.mapping(raw, obj).items():
            where = f"{obj}[{key!r}]"
            if not isinstance(key, str) or not _APP_KEY.match(key):
                self.problem(
                    "E106",
                    where,
                    f"{key!r} is not an app label or 'app_label.Model'.",
                    "Use an app label such as 'billing' or a model such as 'billing.Invoice'.",
                )
                continue
            app_label = key.partition(".")[0]
            if app_label in CONTRIB_APPS:
                group = CONTRIB_APPS[app_label]
                self.problem(
                    "E107",
                    where,
                    f"{key!r} belongs to the contrib group {group!r}; it cannot be split.",
                    f"Place the whole group with ROUTERKIT['CONTRIB'][{group!r}].",
                )
                continue
            alias = self.alias(target, where, None)
            if alias is None:
                continue
            if "." in key:
                models[key.lower()] = alias
            else:
                apps[key] = alias
        return apps, models

    def sticky(self, raw: object, obj: str) -> Sticky:
        section = self.mapping(raw, obj)
        self.unknown_keys(section, ("MODE", "WINDOW", "STORE", "COOKIE_NAME", "WAIT"), obj)
        base = Sticky()
        cookie_name = section.get("COOKIE_NAME", base.cookie_name)
        if not isinstance(cookie_name, str) or not cookie_name:
            self.problem(
                "E101",
                f"{obj}['COOKIE_NAME']",
                "COOKIE_NAME must be a non-empty string.",
                "Use a name such as 'routerkit'.",
            )
            cookie_name = base.cookie_name
        elif not _COOKIE_NAME.fullmatch(cookie_name):
            # Django would raise CookieError on every response that sets it,
            # and read-your-writes would silently stop.
            self.problem(
                "E104",
                f"{obj}['COOKIE_NAME']",
                f"{cookie_name!r} is not a valid cookie name.",
                "Use letters, digits and - _ . only (no spaces, =, ; or quotes), "
                "at most 64 characters.",
            )
            cookie_name = base.cookie_name
        return Sticky(
            mode=self.choice(
                section.get("MODE", base.mode), STICKY_MODES, f"{obj}['MODE']", base.mode
            ),
            window=self.number(
                section.get("WINDOW", base.window), f"{obj}['WINDOW']", base.window, allow_zero=True
            ),
            store=self.choice(
                section.get("STORE", base.store), STICKY_STORES, f"{obj}['STORE']", base.store
            ),
            cookie_name=cookie_name,
            wait=self.number(
                section.get("WAIT", base.wait),
                f"{obj}['WAIT']",
                base.wait,
                allow_zero=True,
                maximum=MAX_WAIT_SETTING,
            ),
        )

    def lag(self, raw: object, obj: str) -> Lag:
        section = self.mapping(raw, obj)
        self.unknown_keys(
            section, ("MAX_SECONDS", "MAX_BYTES", "INTERVAL", "TIMEOUT", "MIN_REPLICAS"), obj
        )
        base = Lag()
        max_bytes = section.get("MAX_BYTES", base.max_bytes)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            self.problem(
                "E101",
                f"{obj}['MAX_BYTES']",
                f"Expected a whole number of bytes, got {type(max_bytes).__name__}.",
                "Use an int such as 16 * 1024 * 1024.",
            )
            max_bytes = base.max_bytes
        elif not 0 < max_bytes <= MAX_BYTES_SETTING:
            self.problem(
                "E104",
                f"{obj}['MAX_BYTES']",
                f"{max_bytes!r} is out of range.",
                "Use a number of bytes above 0 up to 2**62.",
            )
            max_bytes = base.max_bytes

        def seconds(key: str, fallback: float, maximum: float = MAX_SECONDS_SETTING) -> float:
            return self.number(
                section.get(key, fallback), f"{obj}[{key!r}]", fallback, maximum=maximum
            )

        return Lag(
            max_seconds=seconds("MAX_SECONDS", base.max_seconds),
            max_bytes=max_bytes,
            interval=seconds("INTERVAL", base.interval),
            timeout=seconds("TIMEOUT", base.timeout, MAX_TIMEOUT_SETTING),
            min_replicas=self.count(
                section.get("MIN_REPLICAS", base.min_replicas),
                f"{obj}['MIN_REPLICAS']",
                base.min_replicas,
            ),
        )

    def count(self, raw: object, obj: str, fallback: int, maximum: int = 1_000) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.problem(
                "E101",
                obj,
                f"Expected a whole number, got {type(raw).__name__}.",
                f"Use an int from 0 up to {maximum}.",
            )
            return fallback
        if not 0 <= raw <= maximum:
            self.problem(
                "E104", obj, f"{raw!r} is out of range.", f"Use an int from 0 up to {maximum}."
            )
            return fallback
        return raw
