"""With the primary down, replicas go on serving reads; writes fail fast (issue 10 item 3)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connections
from django.test import Client, override_settings

from routerkit import PrimaryUnavailable, capture_token, consistency_scope, restore_token
from routerkit.conf import get_config
from routerkit.health import HEALTHY, get_monitor
from routerkit.state import current_scope
from tests.pgcluster import PgCluster
from tests.settings import ROUTERKIT
from tests.test_replication import committed_elsewhere, wait_until_usable
from tests.testapp.models import Article

REPLICAS = ("replica1", "replica2")
LAG = {"INTERVAL": 0.1, "TIMEOUT": 0.1}
# Longer than the primary's last position is trusted (ten timeouts, five intervals),
# which is when replicas used to turn unknown and every read failed.
OUTAGE = 2.0


@pytest.fixture
def primary_down(replication: PgCluster) -> Iterator[Article]:
    """Stop the primary; yield an article both replicas have."""
    article = committed_elsewhere("replayed")
    for replica in REPLICAS:
        replication.wait_replayed(replica)
    with override_settings(ROUTERKIT={**ROUTERKIT, "LAG": LAG}):
        wait_until_usable("primary", REPLICAS)
        connections["primary"].close()
        replication.stop_node("primary")
        yield article


def test_reads_go_on_on_the_replicas(replication: PgCluster) -> None:
    article = committed_elsewhere("before the outage")
    replication.wait_replayed("replica1")
    replication.wait_replayed("replica2")
    with override_settings(ROUTERKIT={**ROUTERKIT, "LAG": LAG}):
        wait_until_usable("primary", REPLICAS)
        connections["primary"].close()
        replication.stop_node("primary")
        served: set[str] = set()
        ends = time.monotonic() + OUTAGE
        while time.monotonic() < ends:
            with consistency_scope(isolated=True):
                assert Article.objects.get(pk=article.pk).title == "before the outage"
                served.add(current_scope().pinned["primary"])
            time.sleep(0.02)
        assert served == set(REPLICAS)
        snapshot = get_monitor(get_config()).refresh()
        assert {snapshot.replicas[r].state for r in REPLICAS} == {HEALTHY}


def test_a_client_whose_write_no_replica_has_gets_primary_unavailable(
    replication: PgCluster,
) -> None:
    """Its token still rules: no replica may serve it, and the primary cannot."""
    for replica in REPLICAS:
        replication.pause_replay(replica)
    with consistency_scope(isolated=True):
        Article.objects.create(title="not replayed")
        token = capture_token()
    with override_settings(ROUTERKIT={**ROUTERKIT, "LAG": LAG}):
        wait_until_usable("primary", REPLICAS)
        connections["primary"].close()
        replication.stop_node("primary")
        time.sleep(OUTAGE)
        with restore_token(token), pytest.raises(PrimaryUnavailable):
            Article.objects.filter(title="not replayed").exists()
        # Another client, who wrote nothing, reads from a replica.
        with consistency_scope(isolated=True):
            assert not Article.objects.filter(title="not replayed").exists()
            assert current_scope().pinned["primary"] in REPLICAS


@pytest.mark.parametrize("retry_after", [None, 7])
def test_a_write_gets_503_with_retry_after_when_asked_for(
    primary_down: Article, retry_after: int | None
) -> None:
    settings = {**ROUTERKIT, "LAG": LAG, "RETRY_AFTER": retry_after}
    with override_settings(ROUTERKIT=settings):
        client = Client(raise_request_exception=False)
        started = time.monotonic()
        response = client.post("/articles/", {"title": "during the outage"})
        assert time.monotonic() - started < 5  # the settings' connect_timeout is 2 s
        if retry_after is None:
            assert response.status_code == 500
        else:
            assert response.status_code == 503
            assert response["Retry-After"] == "7"
    with consistency_scope(isolated=True):
        assert not Article.objects.filter(title="during the outage").exists()


def test_reads_over_http_answer_200(primary_down: Article) -> None:
    client = Client(raise_request_exception=False)
    ends = time.monotonic() + OUTAGE
    while time.monotonic() < ends:
        response = client.get(f"/articles/{primary_down.pk}/")
        assert response.status_code == 200
        assert response.json()["db"] in REPLICAS
