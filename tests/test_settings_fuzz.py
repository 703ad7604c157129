"""Fuzzed ROUTERKIT settings: whatever they hold, no write lands on a replica and nothing raises.

Hypothesis builds ROUTERKIT dicts from the test project's aliases, misspelt
keys, wrong types and extreme numbers. For each: the parser and the checks
do not raise, routing does not raise, and every write goes to an alias that
is not a replica (listed in REPLICAS or known by TEST["MIRROR"]); and a whole
request through ConsistencyMiddleware, with a fuzzed token cookie, answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.cache import SessionStore
from django.contrib.sessions.models import Session
from django.db import router
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from routerkit import consistency_scope
from routerkit.conf import get_config
from routerkit.health import Monitor
from routerkit.health.monitor import unknown_snapshot
from routerkit.middleware import ConsistencyMiddleware
from routerkit.state import current_scope
from routerkit.stores import store_for
from routerkit.validation.config import check_settings
from tests.billing.models import Invoice
from tests.conftest import healthy_snapshot
from tests.testapp.models import Article

ALIASES = sorted(settings.DATABASES)
MIRRORS = {
    alias for alias, options in settings.DATABASES.items() if options.get("TEST", {}).get("MIRROR")
}
MODELS = [Article, Invoice, User, Session]

aliases = st.sampled_from([*ALIASES, "nope", ""])
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**1100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(aliases, max_size=3),
)
numbers = st.one_of(
    st.integers(min_value=-5, max_value=2**1100),
    st.floats(allow_nan=True, allow_infinity=True),
    junk,
)
replica_lists = st.one_of(
    st.lists(aliases, max_size=3),
    st.dictionaries(aliases, numbers, max_size=3),
    junk,
)
routerkit_settings = st.fixed_dictionaries(
    {},
    optional={
        "DEFAULT": st.one_of(aliases, junk),
        "CONTRIB": st.one_of(
            st.dictionaries(st.sampled_from(["auth", "sites", "sessions", "admin"]), aliases),
            junk,
        ),
        "APPS": st.one_of(
            st.dictionaries(st.sampled_from(["billing", "testapp", "testapp.Article"]), aliases),
            junk,
        ),
        "REPLICAS": st.one_of(st.dictionaries(aliases, replica_lists, max_size=3), junk),
        "BALANCER": st.one_of(st.sampled_from(["random", "round_robin", "weighted"]), junk),
        "STICKY": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "MODE": st.one_of(st.sampled_from(["lsn", "time", "off"]), junk),
                    "WINDOW": numbers,
                    "STORE": st.one_of(st.sampled_from(["cookie", "session", "cache"]), junk),
                    "COOKIE_NAME": st.one_of(st.text(max_size=20), junk),
                    "WAIT": numbers,
                },
            ),
            junk,
        ),
        "LAG": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "MAX_SECONDS": numbers,
                    "MAX_BYTES": numbers,
                    "INTERVAL": numbers,
                    "TIMEOUT": numbers,
                    "MIN_REPLICAS": st.one_of(st.integers(), junk),
                },
            ),
            junk,
        ),
        "METRICS": st.one_of(st.booleans(), junk),
        "RETRY_AFTER": st.one_of(st.none(), numbers, junk),
        "REPLICA": junk,  # a misspelt key
    },
)


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=routerkit_settings)
# The cases that reached users before (issue 10), tried on every run.
@example(raw={"STICKY": {"COOKIE_NAME": "my cookie"}})
@example(raw={"LAG": {"TIMEOUT": 1e10, "MAX_BYTES": 2**1030}})
@example(raw={"REPLICAS": {"replica1": ["primary"]}})
@example(raw={"CONTRIB": {"auth": "replica1"}})
def test_no_setting_sends_a_write_to_a_replica(raw: dict[str, Any]) -> None:
    with override_settings(ROUTERKIT=raw):
        config = get_config()
        check_settings()  # reports, never raises
        replicas = MIRRORS | set(config.replica_of)
        with consistency_scope(isolated=True) as scope:
            scope.snapshot = healthy_snapshot(config)
            for model in MODELS:
                written = router.db_for_write(model)
                assert written not in replicas, (model, written, config)
                assert router.db_for_read(model) in settings.DATABASES
        # The cookie names it configures can be set on a response.
        request = HttpRequest()
        store_for(config.sticky).save(request, HttpResponse(), _tokens())


def _tokens() -> Any:
    from routerkit.consistency import Tokens

    return Tokens(written="w", seen="s")


cookie_values = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="abcdefABCDEF0123456789:._-", max_size=2000),
    st.just("x" * 5000),
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=routerkit_settings, cookie=cookie_values, writes=st.booleans())
@example(raw={"STICKY": {"COOKIE_NAME": "my cookie"}}, cookie="junk", writes=True)
@example(raw={"STICKY": {"STORE": "session"}}, cookie="", writes=True)
def test_no_setting_makes_a_request_raise(raw: dict[str, Any], cookie: str, writes: bool) -> None:
    """A whole request through ConsistencyMiddleware, with a fuzzed cookie, answers.

    The view routes every model (asserting writes stay off replicas) and may
    write; the middleware restores and stores tokens under the fuzzed settings.
    Health comes from a fixed snapshot: no database is probed.
    """
    with override_settings(ROUTERKIT=raw), _no_probes():
        config = get_config()
        replicas = MIRRORS | set(config.replica_of)

        def view(request: HttpRequest) -> HttpResponse:
            scope = current_scope()
            scope.snapshot = healthy_snapshot(config)
            for model in MODELS:
                written = router.db_for_write(model)
                assert written not in replicas, (model, written, config)
                router.db_for_read(model)
                if writes:
                    scope.written.add(written)
            return HttpResponse("ok")

        request = RequestFactory().get("/", HTTP_COOKIE=f"{config.sticky.cookie_name}={cookie}")
        request.session = SessionStore()
        response = ConsistencyMiddleware(view)(request)
        assert response.status_code == 200


@contextlib.contextmanager
def _no_probes() -> Iterator[None]:
    def unknown(self: Monitor) -> Any:
        return unknown_snapshot(self.config)

    with (
        mock.patch.object(Monitor, "refresh_if_due", unknown),
        mock.patch.object(Monitor, "current", unknown),
    ):
        yield
