"""Shared fixtures: one real PostgreSQL primary + two streaming replicas per run.

Tests that need PostgreSQL fail (never skip) when it cannot start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from prometheus_client import CollectorRegistry

from routerkit import consistency_scope, metrics, selection
from routerkit.conf import Config
from routerkit.health import HEALTHY, ReplicaHealth, Snapshot
from routerkit.runtime import Runtime
from tests.example import Example, example_env
from tests.pgcluster import PgCluster

# Every database the settings name, on the primary server.
PRIMARY_DATABASES = {
    "primary": "routerkit",
    "auth_db": "routerkit_auth",
    "billing": "routerkit_billing",
}
# The database of the "archive" alias: routerkit does not manage it, and nothing migrates it.
ARCHIVE_DATABASE = "routerkit_archive"


@pytest.fixture(autouse=True)
def _fresh_scope() -> Iterator[None]:
    """Give each test its own routing scope, as a request would have."""
    with consistency_scope():
        yield


def healthy_snapshot(config: Config) -> Snapshot:
    """A snapshot in which every configured replica is healthy (no positions)."""
    return Snapshot(
        taken_at=0.0,
        expires=float("inf"),
        replicas={
            replica: ReplicaHealth(replica, primary, HEALTHY, 0, 0.0)
            for replica, primary in config.replica_of.items()
        },
        primary_lsn={},
        usable={primary: cluster.replicas for primary, cluster in config.clusters.items()},
    )


def positioned_snapshot(config: Config, positions: dict[str, int]) -> Snapshot:
    """A snapshot in which every replica is healthy, at the given replay positions."""
    snapshot = healthy_snapshot(config)
    return replace(
        snapshot,
        replicas={
            alias: replace(health, replay_lsn=positions.get(alias))
            for alias, health in snapshot.replicas.items()
        },
    )


@pytest.fixture
def all_replicas_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pure routing tests: every replica is usable, and nothing probes a database."""
    snapshots: dict[int, tuple[Config, Snapshot]] = {}

    def snapshot_for(runtime: Runtime) -> Snapshot:
        config = runtime.config
        if id(config) not in snapshots:
            snapshots[id(config)] = (config, healthy_snapshot(config))
        return snapshots[id(config)][1]

    monkeypatch.setattr(selection, "_unscoped_snapshot", snapshot_for)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """A fresh Prometheus registry for routerkit's metrics, so every value is exact."""
    fresh = CollectorRegistry()
    metrics.install(fresh)
    yield fresh
    metrics.install(CollectorRegistry())


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """Start the PostgreSQL primary and replicas once for the whole run."""
    cluster = PgCluster(ports=settings.PG_PORTS)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def django_db_setup(pg_cluster: PgCluster, django_db_blocker: pytest.FixtureRequest) -> None:
    """Create and migrate the test databases on the real primary (replicas follow by WAL).

    Overrides pytest-django's fixture: Django's test database creation would
    point the replica aliases at the primary (TEST MIRROR), which is exactly
    what these tests must not do.
    """
    for name in [*PRIMARY_DATABASES.values(), ARCHIVE_DATABASE]:
        pg_cluster.create_database(name)
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        with consistency_scope():
            for alias in PRIMARY_DATABASES:
                call_command("migrate", database=alias, run_syncdb=True, verbosity=0)
        connections.close_all()
    for replica in pg_cluster.replicas:
        pg_cluster.wait_replayed(replica)


@pytest.fixture
def replication(
    pg_cluster: PgCluster, django_db_setup: None, django_db_blocker: pytest.FixtureRequest
) -> Iterator[PgCluster]:
    """Allow database access to the real cluster; put every replica back afterwards."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        try:
            yield pg_cluster
        finally:
            connections.close_all()
            # And those of async views run with asyncio.run(): asgiref's one
            # thread for sync code keeps them, and a test that restarted a
            # server would leave them broken for the next test.
            asyncio.run(sync_to_async(connections.close_all)())
            pg_cluster.restore()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Example]:
    example = Example(example_env(EXAMPLE_SQLITE_PATH=str(tmp_path / "db.sqlite3")))
    example.start()
    yield example
    example.stop()


@pytest.fixture
def on_postgres(replication: PgCluster) -> Iterator[Example]:
    """The example project on the real primary and its two replicas."""
    replication.create_database("example")
    urls = [
        f"postgres://postgres@127.0.0.1:{node.port}/example"
        for node in [replication.primary, *replication.replicas]
    ]
    example = Example(example_env(DATABASE_URL=urls[0], DATABASE_REPLICA_URLS=",".join(urls[1:])))
    example.start()
    yield example
    example.stop()
