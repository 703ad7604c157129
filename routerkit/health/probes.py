"""Probes: ask one database for its replication position, with short timeouts.

A probe opens its own connection (never Django's, which belongs to a request
thread and may be inside a transaction) and keeps it for the next probe.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Mapping
from typing import Any, NoReturn, Protocol

from django.db import connections

from routerkit.values import PrimaryStatus, ProbeError, ReplicaStatus, parse_lsn

# Keys Django adds to the driver's connect() for its own cursors and adapters.
_DJANGO_ONLY = ("cursor_factory", "context", "prepare_threshold")


class Probe(Protocol):
    def primary(self) -> PrimaryStatus: ...

    def replica(self) -> ReplicaStatus: ...

    def replay(self) -> int | None: ...

    def close(self) -> None: ...


class PostgresProbe:
    """Read positions from PostgreSQL with bounded connect and statement time."""

    def __init__(self, alias: str, timeout: float) -> None:
        self.alias = alias
        self.timeout = timeout
        self._connection: Any = None
        self._target: tuple[Any, ...] = ()
        # The monitor's probe threads and requests checking a replica's
        # position (Monitor.replay_position) share the connection.
        self._lock = threading.Lock()

    def _connected(self) -> Any:
        wrapper = connections[self.alias]
        # Django's test runner renames databases in place (test_<name>, and
        # TEST["MIRROR"]): follow the alias to where it points now.
        target = database_of(wrapper.settings_dict)
        if self._connection is not None and target != self._target:
            self.close()
        if self._connection is None or self._connection.closed:
            params = wrapper.get_connection_params()
            for key in _DJANGO_ONLY:
                params.pop(key, None)
            # libpq takes whole seconds and treats anything under 2 as 2; the
            # monitor enforces the real bound by not waiting longer than timeout.
            params["connect_timeout"] = max(2, math.ceil(self.timeout))
            # Notice a dead server or a broken network within seconds instead of
            # the kernel's minutes, so that a stuck probe thread ends.
            params.setdefault("keepalives", 1)
            params.setdefault("keepalives_idle", 5)
            params.setdefault("keepalives_interval", 2)
            params.setdefault("keepalives_count", 3)
            params.setdefault("tcp_user_timeout", 10_000)
            driver: Any = wrapper.Database  # type: ignore[attr-defined]
            try:
                connection = driver.connect(**params)
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute(f"SET statement_timeout = {max(1, int(self.timeout * 1000))}")
            except driver.Error:
                # The driver's message may include the connection string.
                raise ProbeError(f"cannot connect to {self.alias!r}") from None
            self._connection = connection
            self._target = target
        return self._connection

    def _fetch(self, sql: str) -> tuple[Any, ...]:
        try:
            with self._lock, self._connected().cursor() as cursor:
                cursor.execute(sql)
                row = cursor.fetchone()
        except ProbeError:
            raise
        except Exception as exc:
            self._failed(exc)
        if row is None:
            raise ProbeError(f"probe of {self.alias!r} returned no row")
        return tuple(row)

    def _failed(self, exc: Exception) -> NoReturn:
        self.close()
        raise ProbeError(f"probe of {self.alias!r} failed: {type(exc).__name__}") from None

    def primary(self) -> PrimaryStatus:
        in_recovery, lsn = self._fetch(
            "SELECT pg_is_in_recovery(),"
            " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END"
        )
        return PrimaryStatus(lsn=parse_lsn(lsn) if lsn else None, in_recovery=bool(in_recovery))

    def replica(self) -> ReplicaStatus:
        in_recovery, replay, receive, age, streaming = self._fetch(
            "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
            " pg_last_wal_receive_lsn()::text,"
            " EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8,"
            " (SELECT status = 'streaming' FROM pg_stat_wal_receiver LIMIT 1)"
        )
        return ReplicaStatus(
            in_recovery=bool(in_recovery),
            replay_lsn=parse_lsn(replay) if replay else None,
            receive_lsn=parse_lsn(receive) if receive else None,
            replay_age=float(age) if age is not None else None,
            streaming=streaming,
        )

    def replay(self) -> int | None:
        # Asked by requests, many times a second under load: at the least cost.
        try:
            with self._lock:
                replay = select_text(self._connected(), "SELECT pg_last_wal_replay_lsn()::text")
        except ProbeError:
            raise
        except Exception as exc:
            self._failed(exc)
        return parse_lsn(replay) if replay else None

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                connection.close()


class PositionlessProbe:
    """For backends without replication positions (SQLite, or a stand-in replica).

    The replica is reported up and caught up: there is nothing to measure.
    """

    def __init__(self, alias: str, timeout: float) -> None:
        self.alias = alias

    def primary(self) -> PrimaryStatus:
        return PrimaryStatus(lsn=None)

    def replica(self) -> ReplicaStatus:
        return ReplicaStatus(
            in_recovery=True, replay_lsn=None, receive_lsn=None, replay_age=0.0, streaming=True
        )

    def replay(self) -> int | None:
        return None

    def close(self) -> None:
        pass


def select_text(connection: Any, sql: str) -> str | None:
    """Return the one text value `sql` selects, on a driver connection in autocommit.

    With psycopg 3 the statement goes straight through libpq: a cursor's
    Python machinery costs several times the round trip to a nearby server,
    and these statements run once per request that writes or waits on
    replication. Other drivers (psycopg2) use a cursor.
    """
    pgconn = getattr(connection, "pgconn", None)
    if pgconn is None:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            row = cursor.fetchone()
        return None if row is None or row[0] is None else str(row[0])
    result = pgconn.exec_(sql.encode())
    if result.status != _TUPLES_OK:
        raise RuntimeError(f"{sql!r} failed")
    if not result.ntuples:
        return None
    value = result.get_value(0, 0)
    return None if value is None else bytes(value).decode()


# libpq's PGRES_TUPLES_OK (psycopg.pq.ExecStatus.TUPLES_OK), without importing psycopg.
_TUPLES_OK = 2


def database_of(settings_dict: Mapping[str, Any]) -> tuple[Any, ...]:
    """Return what identifies the database an alias's settings point at."""
    return tuple(settings_dict.get(key) for key in ("ENGINE", "HOST", "PORT", "NAME"))


def is_mirror(replica: str, primary: str) -> bool:
    """Tell whether a replica alias points at its primary's own database.

    So it is under Django's test runner when replicas are TEST["MIRROR"]s on
    the primary's server, and in the embedded SQLite demo: nothing to replay.
    """
    return database_of(connections[replica].settings_dict) == database_of(
        connections[primary].settings_dict
    )


def as_mirror(status: PrimaryStatus) -> ReplicaStatus:
    """Read a mirror's status from its database's own position: it is always caught up."""
    return ReplicaStatus(
        in_recovery=True,
        replay_lsn=status.lsn,
        receive_lsn=status.lsn,
        replay_age=0.0,
        streaming=True,
    )


def probe_for(alias: str, timeout: float) -> Probe:
    """Return the probe for an alias's backend."""
    if connections[alias].vendor == "postgresql":
        return PostgresProbe(alias, timeout)
    return PositionlessProbe(alias, timeout)
