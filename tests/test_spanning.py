"""Deletes that span databases (tests/spanning.py) with every replica replaying nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db.models.signals import post_delete
from django.test import Client

from tests import spanning
from tests.billing.models import Charge
from tests.pgcluster import PgCluster
from tests.testapp.models import Article


@pytest.fixture
def handler() -> Iterator[None]:
    spanning.reads.clear()
    post_delete.connect(spanning.delete_charges, sender=Article)
    yield
    post_delete.disconnect(spanning.delete_charges, sender=Article)


@pytest.mark.usefixtures("handler")
def test_a_post_delete_handler_deletes_rows_on_another_cluster(replication: PgCluster) -> None:
    client = Client()
    created = client.post("/spanning/", {"title": "spanning", "amount": "1"})
    assert created.status_code == 201
    pk = created.json()["id"]
    for replica in replication.replicas:
        replication.wait_replayed(replica)
        replication.pause_replay(replica)  # from here on the replicas hold article and charge 1
    # A charge that no replica has, from someone else (the client's token does not
    # cover it): a handler that read a replica would leave it behind.
    assert Client().post(f"/spanning/{pk}/charges/", {"amount": "2"}).status_code == 201

    assert client.post(f"/spanning/{pk}/delete/").json() == {"deleted": pk}
    assert spanning.reads == ["billing", "billing"]  # both charges, read on billing's primary
    assert not Article.objects.using("primary").filter(pk=pk).exists()
    assert not Charge.objects.using("billing").filter(article_id=pk).exists()
    # The replicas still show both rows: only the primaries know of the delete.
    assert Article.objects.using("replica1").filter(pk=pk).exists()
    assert Charge.objects.using("billing_replica").filter(article_id=pk).count() == 1

    # The same client's next request no longer sees them, on either cluster.
    shown = client.get(f"/spanning/{pk}/").json()
    assert shown == {"article": False, "charges": [], "read_from": ["primary"]}
    # Another client reads the replicas, which have not replayed the delete yet.
    other = Client().get(f"/spanning/{pk}/").json()
    assert other["article"] is True
