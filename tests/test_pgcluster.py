"""The test harness itself: its controls really change replication."""

from __future__ import annotations

import psycopg
import pytest

from tests.pgcluster import PgCluster


def lsn_diff(cluster: PgCluster, a: str, b: str) -> int:
    ((diff,),) = cluster.execute("primary", "SELECT pg_wal_lsn_diff(%s, %s)::bigint", [a, b])
    return int(diff)


def test_paused_replay_falls_behind_and_catches_up(replication: PgCluster) -> None:
    """A paused replica stops replaying new WAL; resuming lets it reach the primary."""
    replication.pause_replay("replica1")
    assert replication.is_paused("replica1")
    replication.execute("primary", "CREATE TEMP TABLE t AS SELECT generate_series(1, 1000) AS x")
    replication.execute("primary", "SELECT pg_switch_wal()")
    target = replication.current_lsn()
    assert lsn_diff(replication, target, replication.replay_lsn("replica1") or "0/0") > 0
    with pytest.raises(TimeoutError):
        replication.wait_replayed("replica1", target, timeout=0.3)
    replication.resume_replay("replica1")
    replication.wait_replayed("replica1", target)
    assert lsn_diff(replication, replication.replay_lsn("replica1") or "0/0", target) >= 0


def test_a_stopped_replica_refuses_connections_and_rejoins(replication: PgCluster) -> None:
    """stop_node() takes a replica down; start_node() brings it back streaming."""
    replication.stop_node("replica2")
    assert not replication.is_running("replica2")
    with pytest.raises(psycopg.OperationalError):
        replication.execute("replica2", "SELECT 1")
    replication.start_node("replica2")
    replication.wait_replayed("replica2")
    assert replication.execute("replica2", "SELECT pg_is_in_recovery()") == [(True,)]


def test_restore_repairs_paused_and_stopped_replicas(replication: PgCluster) -> None:
    """restore() (run after every replication test) leaves all replicas streaming."""
    replication.pause_replay("replica1")
    replication.stop_node("replica2")
    replication.restore()
    assert not replication.is_paused("replica1")
    assert replication.is_running("replica2")
    rows = replication.execute(
        "primary", "SELECT application_name, state FROM pg_stat_replication ORDER BY 1"
    )
    assert rows == [("replica1", "streaming"), ("replica2", "streaming")]
