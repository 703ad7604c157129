"""What counts as a write, and that reads alone never pin a cluster."""

from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction

from routerkit import consistency_scope
from routerkit.state import current_scope
from routerkit.writes import may_write
from tests.pgcluster import PgCluster
from tests.testapp.models import Article


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  select * from t where x = %s",
        'SAVEPOINT "s1"',
        'RELEASE SAVEPOINT "s1"',
        "ROLLBACK TO SAVEPOINT s1",
        "SET LOCAL statement_timeout = 100",
        "SHOW server_version",
    ],
)
def test_reads_and_transaction_control_are_not_writes(sql: str) -> None:
    """Statements that cannot change data do not pin the cluster."""
    assert may_write(sql) is False


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (1)",
        "update t set x = 1",
        "DELETE FROM t",
        "WITH moved AS (DELETE FROM t RETURNING *) SELECT * FROM moved",
        "EXPLAIN ANALYZE UPDATE t SET x = 1",
        "SELECT 1; DELETE FROM t",
        "COPY t FROM STDIN",
        "TRUNCATE t",
        "SELECT * INTO archive FROM t",
        "PRAGMA user_version = 3",
        b"SELECT 1",
    ],
)
def test_anything_that_may_change_data_is_a_write(sql: object) -> None:
    """Writes, writable CTEs, EXPLAIN ANALYZE, multi-statements and non-text count."""
    assert may_write(sql) is True


def test_a_read_only_transaction_does_not_pin(replication: PgCluster) -> None:
    """Nested atomic blocks that only read leave the cluster on its replicas afterwards."""
    with transaction.atomic(using="primary"), transaction.atomic(using="primary"):
        list(Article.objects.all()[:1])
    assert current_scope().written == set()
    assert Article.objects.all().db in ("replica1", "replica2")


def test_the_tracker_survives_a_users_execute_wrapper(replication: PgCluster) -> None:
    """A connection first opened inside connection.execute_wrapper() keeps write tracking."""
    written: list[set[str]] = []

    def passthrough(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        return execute(sql, params, many, context)

    def in_new_thread() -> None:
        # A new thread gets a fresh connection wrapper with no execute wrappers yet.
        try:
            with consistency_scope(isolated=True) as scope:
                with connections["primary"].execute_wrapper(passthrough):
                    Article.objects.using("primary").exists()
                Article.objects.create(title="after")
                written.append(set(scope.written))
        finally:
            connections.close_all()

    thread = threading.Thread(target=in_new_thread)
    thread.start()
    thread.join(10)
    assert written == [{"primary"}]


def test_mark_written_pins_a_write_routerkit_cannot_see(replication: PgCluster) -> None:
    """mark_written() after a side-effecting SELECT sends reads to the primary."""
    from routerkit import mark_written

    with connections["primary"].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0)")  # stands for a function that writes
    assert current_scope().written == set()
    mark_written("replica1")  # any alias of the cluster names it
    assert current_scope().written == {"primary"}
    assert Article.objects.all().db == "primary"
