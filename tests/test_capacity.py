"""LAG["MIN_REPLICAS"]: lag never empties a cluster's rotation at once (issue 10 item 4)."""

from __future__ import annotations

import pytest
from django.test import override_settings
from prometheus_client import CollectorRegistry

from routerkit import capture_token, consistency_scope, restore_token
from routerkit.conf import get_config
from routerkit.health import LAGGING, get_monitor
from routerkit.state import current_scope
from tests.pgcluster import PgCluster
from tests.settings import ROUTERKIT
from tests.testapp.models import Article

MAX_BYTES = 64 * 1024
BULK = (
    "INSERT INTO testapp_article (title)"
    " SELECT repeat('x', 150) FROM generate_series(1, 2000)"  # about 400 KB of WAL
)


@pytest.fixture
def both_lagging(replication: PgCluster) -> PgCluster:
    """replica2 paused first, replica1 later: both over MAX_BYTES, replica1 less so."""
    replication.pause_replay("replica2")
    replication.execute("primary", BULK, dbname="routerkit")
    replication.wait_replayed("replica1")
    replication.pause_replay("replica1")
    replication.execute("primary", BULK, dbname="routerkit")
    return replication


def settings(min_replicas: int | None) -> dict[str, object]:
    lag: dict[str, object] = {"MAX_BYTES": MAX_BYTES, "MAX_SECONDS": 3600.0, "INTERVAL": 60.0}
    if min_replicas is not None:
        lag["MIN_REPLICAS"] = min_replicas
    return {**ROUTERKIT, "LAG": lag}


def read_once() -> str:
    with consistency_scope(isolated=True):
        Article.objects.exists()
        return next(iter(current_scope().read_from))


@pytest.mark.parametrize(
    ("min_replicas", "usable", "guarded"),
    [
        (None, ("replica1",), ("replica1",)),  # the default keeps one: the least lagging
        (0, (), ()),  # off: every read on the primary
        (2, ("replica1", "replica2"), ("replica1", "replica2")),
    ],
)
def test_the_least_lagging_replicas_keep_serving(
    both_lagging: PgCluster,
    registry: CollectorRegistry,
    min_replicas: int | None,
    usable: tuple[str, ...],
    guarded: tuple[str, ...],
) -> None:
    with override_settings(ROUTERKIT=settings(min_replicas)):
        snapshot = get_monitor(get_config()).refresh()
        assert {snapshot.replicas[r].state for r in ("replica1", "replica2")} == {LAGGING}
        assert snapshot.usable["primary"] == usable
        assert snapshot.guarded["primary"] == guarded
        gauge = registry.get_sample_value(
            "routerkit_capacity_guard_replicas", {"database": "primary"}
        )
        assert gauge == len(guarded)
        served = {read_once() for _ in range(20)}
        assert served == (set(usable) or {"primary"})
        reason = "capacity" if usable else "lagging"
        for alias in served:
            count = registry.get_sample_value(
                "routerkit_route_decisions_total",
                {"operation": "read", "database": alias, "reason": reason},
            )
            assert count is not None
            assert count > 0


def test_a_token_is_still_honoured_by_a_replica_kept_for_capacity(
    both_lagging: PgCluster,
) -> None:
    with override_settings(ROUTERKIT=settings(None)):
        with consistency_scope(isolated=True):
            Article.objects.create(title="mine")
            token = capture_token()
        get_monitor(get_config()).refresh()
        with restore_token(token):
            assert Article.objects.filter(title="mine").exists()
            assert current_scope().read_from == {"primary"}
        # Another client, with no token, reads the replica kept for capacity.
        assert read_once() == "replica1"
