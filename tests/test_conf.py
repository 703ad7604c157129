"""ROUTERKIT parsing and the settings system checks (E003, E1xx, W005, W006)."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from routerkit.conf import Cluster, Lag, Sticky, get_config, parse
from routerkit.validation.config import check_settings
from tests.settings import DATABASES, MIDDLEWARE, ROUTERKIT


def ids(raw: Any) -> list[str]:
    return [p.id for p in parse(raw, DATABASES).problems]


def check_ids() -> list[str]:
    return [m.id for m in checks.run_checks(tags=["routerkit"]) if m.id and not m.is_silenced()]


class TestParse:
    def test_no_setting_gives_documented_defaults(self) -> None:
        """An empty ROUTERKIT means: everything on 'default', LSN stickiness, metrics on."""
        config = parse({}, DATABASES)
        assert config.default == "default"
        assert config.clusters == {}
        assert config.balancer == "random"
        assert config.sticky == Sticky(
            mode="lsn", window=2.0, store="cookie", cookie_name="routerkit"
        )
        assert config.lag == Lag(
            max_seconds=5.0, max_bytes=16 * 1024 * 1024, interval=1.0, timeout=0.2
        )
        assert config.metrics is True
        assert config.problems == ()

    def test_the_test_topology_parses_clean(self) -> None:
        """The settings used by these tests have no problems."""
        config = parse(ROUTERKIT, DATABASES)
        assert config.problems == ()
        assert config.clusters["primary"] == Cluster(
            "primary", ("replica1", "replica2"), (1.0, 1.0)
        )
        assert config.replica_of == {
            "replica1": "primary",
            "replica2": "primary",
            "billing_replica": "billing",
        }
        assert config.contrib == {"auth": "auth_db", "contenttypes": "auth_db", "admin": "auth_db"}

    def test_the_users_dict_is_never_modified(self) -> None:
        """Parsing leaves the setting exactly as written, even when it is wrong."""
        raw = {"DEFAULT": "replica1", "REPLICAS": {"primary": ["replica1", "nope"]}, "X": 1}
        before = copy.deepcopy(raw)
        parse(raw, DATABASES)
        assert raw == before

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (["not", "a", "dict"], ["routerkit.E101"]),
            ({"DEFAULT": 3}, ["routerkit.E101"]),
            ({"REPLICAS": {"primary": "replica1"}}, ["routerkit.E101"]),
            ({"METRICS": "yes"}, ["routerkit.E101"]),
            ({"RETRY_AFTER": 2.5}, ["routerkit.E101"]),
            ({"LAG": {"MIN_REPLICAS": "1"}}, ["routerkit.E101"]),
            ({"LAG": {"MIN_REPLICAS": -1}}, ["routerkit.E104"]),
            ({"RETRY_AFTER": 0}, ["routerkit.E104"]),
            ({"RETRY_AFTER": 10**6}, ["routerkit.E104"]),
            ({"LAG": {"MAX_BYTES": 1.5}}, ["routerkit.E101"]),
            ({"STICKY": {"COOKIE_NAME": ""}}, ["routerkit.E101"]),
            ({"REPLICA": {}}, ["routerkit.E102"]),
            ({"STICKY": {"MDOE": "lsn"}}, ["routerkit.E102"]),
            ({"LAG": {"MAX_SECOND": 1}}, ["routerkit.E102"]),
            ({"STICKY": {"MODE": "eventual"}}, ["routerkit.E103"]),
            ({"STICKY": {"STORE": "redis"}}, ["routerkit.E103"]),
            ({"BALANCER": "least_conn"}, ["routerkit.E103"]),
            ({"CONTRIB": {"admin": "auth_db"}}, ["routerkit.E103"]),
            (
                {"REPLICAS": {"primary": {"replica1": 2, "replica2": 1}}, "BALANCER": "random"},
                ["routerkit.E103"],
            ),
            ({"STICKY": {"WINDOW": -1}}, ["routerkit.E104"]),
            ({"STICKY": {"WAIT": 6}}, ["routerkit.E104"]),
            ({"STICKY": {"WAIT": "0.1"}}, ["routerkit.E101"]),
            ({"LAG": {"TIMEOUT": 0}}, ["routerkit.E104"]),
            ({"LAG": {"MAX_BYTES": 0}}, ["routerkit.E104"]),
            ({"REPLICAS": {"primary": {"replica1": -1}}}, ["routerkit.E104"]),
            # Numbers that used to raise OverflowError inside requests.
            ({"LAG": {"TIMEOUT": 1e10}}, ["routerkit.E104"]),
            ({"LAG": {"MAX_BYTES": 2**1030}}, ["routerkit.E104"]),
            ({"LAG": {"INTERVAL": 1e12}}, ["routerkit.E104"]),
            ({"STICKY": {"WINDOW": 10**400}}, ["routerkit.E104"]),
            ({"REPLICAS": {"primary": {"replica1": 1e300, "replica2": 1}}}, ["routerkit.E104"]),
            # Django would raise CookieError on every response setting it.
            ({"STICKY": {"COOKIE_NAME": "my cookie"}}, ["routerkit.E104"]),
            ({"STICKY": {"COOKIE_NAME": "a;b=c"}}, ["routerkit.E104"]),
            # replica1 is a replica by TEST["MIRROR"], listed or not.
            ({"REPLICAS": {"replica1": ["replica2"]}}, ["routerkit.E105"]),
            ({"CONTRIB": {"auth": "replica1"}}, ["routerkit.E105"]),
            ({"APPS": {"billing": "billing_replica"}}, ["routerkit.E105"]),
            ({"DEFAULT": "primray"}, ["routerkit.E003"]),
            ({"REPLICAS": {"primary": ["replica3"]}}, ["routerkit.E003"]),
            ({"REPLICAS": {"nowhere": ["replica1"]}}, ["routerkit.E003"]),
            ({"CONTRIB": {"auth": "users"}}, ["routerkit.E003"]),
            ({"APPS": {"billing": "billingdb"}}, ["routerkit.E003"]),
            ({"DEFAULT": "replica1", "REPLICAS": {"primary": ["replica1"]}}, ["routerkit.E105"]),
            ({"REPLICAS": {"primary": ["primary"]}}, ["routerkit.E105"]),
            ({"REPLICAS": {"primary": ["replica1"], "billing": ["replica1"]}}, ["routerkit.E105"]),
            (
                {"REPLICAS": {"primary": ["billing"], "billing": ["billing_replica"]}},
                ["routerkit.E105"],
            ),
            (
                {"REPLICAS": {"primary": ["replica1"]}, "APPS": {"billing": "replica1"}},
                ["routerkit.E105"],
            ),
            ({"APPS": {"billing.models.Invoice": "billing"}}, ["routerkit.E106"]),
            ({"APPS": {"contenttypes": "billing"}}, ["routerkit.E107"]),
            ({"APPS": {"flatpages.FlatPage": "billing"}}, ["routerkit.E107"]),
        ],
    )
    def test_malformed_values_are_reported_by_id(self, raw: Any, expected: list[str]) -> None:
        """Each malformed value yields exactly its documented check ID."""
        assert ids(raw) == expected

    def test_unknown_key_hint_suggests_the_closest_key(self) -> None:
        """A misspelt key's hint names the key that was probably meant."""
        (problem,) = parse({"STICKY": {"WINDOWS": 2}}, DATABASES).problems
        assert problem.hint == "Did you mean 'WINDOW'?"
        assert problem.obj == "ROUTERKIT['STICKY']"

    @pytest.mark.parametrize(
        "raw",
        [
            {"REPLICAS": {"replica1": ["replica2"]}, "DEFAULT": "replica1"},
            {"CONTRIB": {"auth": "replica1"}, "APPS": {"billing": "billing_replica"}},
        ],
    )
    def test_a_mirror_never_takes_writes(self, raw: Any) -> None:
        """An alias with TEST["MIRROR"] named as a primary falls back to what it mirrors."""
        config = parse(raw, DATABASES)
        targets = {config.default, *config.contrib.values(), *config.apps.values()}
        assert not targets & {"replica1", "replica2", "billing_replica"}
        assert "replica1" not in config.clusters

    def test_bad_values_fall_back_to_safe_ones(self) -> None:
        """A replica named as DEFAULT is replaced by its primary; unknown replicas are dropped."""
        config = parse(
            {"DEFAULT": "replica1", "REPLICAS": {"primary": ["replica1", "replica9"]}}, DATABASES
        )
        assert config.default == "primary"
        assert config.clusters["primary"].replicas == ("replica1",)


class TestChecks:
    def test_the_test_settings_pass_every_check(self) -> None:
        """The test project has no routerkit findings."""
        assert check_ids() == []

    @override_settings(ROUTERKIT={"DEFAULT": "nope", "STICKY": {"MODE": "x"}, "FOO": 1})
    def test_settings_errors_become_check_errors(self) -> None:
        """Every problem reaches `manage.py check` with its ID, hint and object."""
        messages = check_settings()
        assert sorted(m.id or "" for m in messages) == [
            "routerkit.E003",
            "routerkit.E102",
            "routerkit.E103",
        ]
        assert all(m.level == checks.ERROR and m.hint for m in messages)

    @override_settings(
        ROUTERKIT={**ROUTERKIT, "APPS": {"payments": "billing", "testapp.Ghost": "primary"}}
    )
    def test_apps_naming_something_not_installed(self) -> None:
        """APPS entries for apps or models that do not exist are errors."""
        assert check_ids() == ["routerkit.E106", "routerkit.E106"]

    @override_settings(DATABASE_ROUTERS=["routerkit.routers.PrimaryReplicaRouter"])
    def test_configured_placement_without_its_router_warns(self) -> None:
        """CONTRIB and APPS without ContribRouter and AppRouter are flagged."""
        assert check_ids() == ["routerkit.W005", "routerkit.W005"]

    @pytest.mark.parametrize(
        ("lag", "expected"),
        [
            ({"MAX_SECONDS": 0.4, "TIMEOUT": 0.2}, ["routerkit.W010"]),
            ({"MAX_SECONDS": 1.0, "TIMEOUT": 0.5}, ["routerkit.W010"]),
            ({"MAX_SECONDS": 1.0, "TIMEOUT": 0.49}, []),
            ({"MAX_SECONDS": 0.05, "INTERVAL": 10}, ["routerkit.W010"]),
            ({"MAX_SECONDS": 5, "INTERVAL": 60}, []),  # INTERVAL no longer matters
        ],
    )
    def test_a_lag_limit_no_replica_could_come_back_under_warns(
        self, lag: dict[str, float], expected: list[str]
    ) -> None:
        with override_settings(ROUTERKIT={**ROUTERKIT, "LAG": lag}):
            assert check_ids() == expected
            if expected:
                (warning,) = check_settings()
                assert warning.level == checks.WARNING
                assert "MAX_SECONDS" in (warning.hint or "")

    @override_settings(MIDDLEWARE=[])
    def test_missing_middleware_warns(self) -> None:
        """Replicas configured without ConsistencyMiddleware are flagged."""
        assert check_ids() == ["routerkit.W006"]

    @override_settings(ROUTERKIT={**ROUTERKIT, "STICKY": {"STORE": "session"}})
    def test_session_store_needs_the_session_middleware_first(self) -> None:
        """STORE "session" with ConsistencyMiddleware before SessionMiddleware is flagged."""
        assert check_ids() == ["routerkit.W007"]
        reordered = [MIDDLEWARE[1], MIDDLEWARE[0], *MIDDLEWARE[2:]]
        with override_settings(MIDDLEWARE=reordered):
            assert check_ids() == []

    def test_override_settings_is_seen_at_once(self) -> None:
        """The parsed settings are rebuilt when ROUTERKIT changes."""
        before = get_config()
        with override_settings(ROUTERKIT={"DEFAULT": "billing"}):
            assert get_config().default == "billing"
        assert get_config() is not before
        assert get_config().default == "primary"


def test_importing_routerkit_touches_no_settings() -> None:
    """Every module of the package imports with no settings configured at all."""
    code = (
        "import importlib, pkgutil, routerkit;"
        "[importlib.import_module(m.name)"
        " for m in pkgutil.walk_packages(routerkit.__path__, 'routerkit.')];"
        "from django.conf import settings; assert not settings.configured; print('clean')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": ""}, check=False
    )
    assert result.stdout.strip() == "clean", result.stderr
