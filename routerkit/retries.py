"""Run a read again elsewhere when its replica fails under it.

A read routed to a replica can fail because the replica cannot be reached
(it crashed, is restarting, refuses connections) or because the replica
cancelled it to go on replaying WAL (a recovery conflict). Until the health
monitor notices, each such read would be a failed request. Instead the read
runs again on another usable replica or on the primary, and a replica that
could not be reached leaves the rotation of the whole process at once.

Only a read that nothing has seen yet is retried: a statement that may write,
a statement inside a transaction, an executemany(), a read that did not come
from routing (explicit ``using()``) and a failure while fetching rows all
raise as they would without routerkit.

Why a database backend and not only an execute wrapper: a connection that
cannot be opened fails in ``cursor()``, before Django runs any execute wrapper,
and only the database wrapper sees that. So routerkit's backends (see
routerkit.backends) hand out a stand-in cursor there, and the execute wrapper
below, which sees the statement, decides whether it may run elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.db import OperationalError, connections

from routerkit import stats
from routerkit.exceptions import PrimaryUnavailable
from routerkit.runtime import Runtime, get_runtime
from routerkit.selection import retry_alias
from routerkit.state import current_scope
from routerkit.statements import may_write
from routerkit.writes import statement_text

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    _Base = BaseDatabaseWrapper
else:
    _Base = object

logger = logging.getLogger("routerkit")

# Why a read was run again (the `reason` label of routerkit_read_retries_total).
CONNECT = "connect"  # the replica could not be connected to
CONNECTION_LOST = "connection_lost"  # its connection broke (crash, restart, network)
RECOVERY_CONFLICT = "recovery_conflict"  # the replica cancelled the read to replay WAL
REASONS = (CONNECT, CONNECTION_LOST, RECOVERY_CONFLICT)

# SQLSTATEs a read on a hot standby gets only from a recovery conflict:
# serialization_failure (there is no SERIALIZABLE on a standby) and
# deadlock_detected (a read takes no locks another read waits for).
_CONFLICT_STATES = frozenset({"40001", "40P01"})

# Replicas a read failed on in this retry chain: the retry of a retry never
# goes back to one of them.
_failed: ContextVar[frozenset[str]] = ContextVar("routerkit_failed", default=frozenset())


class Unreachable:
    """Stands in for the driver cursor of a replica that could not be connected to.

    Any use raises the connection error; `retry_reads` catches it at execute
    time, when the statement is known.
    """

    def __init__(self, error: OperationalError, name: str | None) -> None:
        self.error = error
        self.name = name

    def close(self) -> None:
        pass

    def __getattr__(self, attr: str) -> Any:
        raise OperationalError(*self.error.args)


def retry_reads(
    execute: Callable[..., Any],
    sql: Any,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """Execute wrapper of replica connections: run a read that failed again elsewhere."""
    try:
        return execute(sql, params, many, context)
    except PrimaryUnavailable:
        raise
    except OperationalError as error:
        connection = context["connection"]
        cursor = context["cursor"]
        reason = _reason(error, cursor.cursor, connection)
        if reason is None:
            raise
        runtime = get_runtime()
        replica = connection.alias
        primary = runtime.config.replica_of.get(replica)
        if primary is None:
            raise
        if reason != RECOVERY_CONFLICT:
            runtime.monitor.mark_down(replica)
        if reason == CONNECTION_LOST:
            with contextlib.suppress(Exception):
                connection.close()  # the next use connects again
        if (
            many
            or connection.in_atomic_block
            or not _routed(primary, replica)
            or may_write(statement_text(sql, connection))
        ):
            raise
        return _retry(runtime, primary, replica, reason, cursor, sql, params)


def _retry(
    runtime: Runtime, primary: str, replica: str, reason: str, cursor: Any, sql: Any, params: Any
) -> Any:
    failed = _failed.get() | {replica}
    alias = retry_alias(runtime, primary, failed, down=reason != RECOVERY_CONFLICT)
    stats.incr("read_retry", replica, reason)
    logger.warning("routerkit: a read failed on %s (%s); running it on %s", replica, reason, alias)
    token = _failed.set(failed)
    try:
        target_connection = connections[alias]
        # A server-side cursor (QuerySet.iterator()) stays one on the new database.
        named = getattr(cursor.cursor, "name", None)
        target = target_connection.chunked_cursor() if named else target_connection.cursor()
        try:
            result = target.execute(sql, params)
        except BaseException:
            target.close()
            raise
    finally:
        _failed.reset(token)
    # The caller fetches the rows through the cursor it holds: it now reads
    # the new database's cursor.
    stale, cursor.cursor, cursor.db = cursor.cursor, target.cursor, target.db
    with contextlib.suppress(Exception):
        stale.close()
    return result


def _reason(error: OperationalError, raw_cursor: Any, connection: Any) -> str | None:
    """Tell why a statement failed, if it is a failure a retry can get past."""
    if isinstance(raw_cursor, Unreachable):
        return CONNECT
    cause = error.__cause__
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if state in _CONFLICT_STATES or "conflict with recovery" in str(error):
        return RECOVERY_CONFLICT
    raw = connection.connection
    if raw is None or getattr(raw, "broken", False) or raw.closed:
        return CONNECTION_LOST
    return None


def _routed(primary: str, replica: str) -> bool:
    """Tell whether routing sent this unit of work's reads of `primary` to `replica`.

    A read sent to a replica with explicit ``using()`` is not moved elsewhere.
    """
    scope = current_scope()
    return scope.pinned.get(primary) == replica


class ReadRetryMixin(_Base):
    """Mix into a Django DatabaseWrapper: reads survive a replica failure.

    - A read routed to a replica that cannot be reached, whose connection
      breaks or that cancels it for a recovery conflict runs again on another
      usable replica or the primary (see routerkit.retries).
    - Connecting to a primary that cannot be reached raises
      `routerkit.PrimaryUnavailable` naming the alias, without the driver's
      error (which carries connection details) chained to it.

    routerkit.backends.postgresql is Django's PostgreSQL backend with it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute_wrappers.append(retry_reads)

    def ensure_connection(self) -> None:
        try:
            super().ensure_connection()
        except OperationalError as error:
            if self.connection is not None or not _is_primary(self.alias):
                raise
            lines = str(error).strip().splitlines()
            reason = lines[0] if lines else ""
            # For ConsistencyMiddleware, which may answer 503 (RETRY_AFTER).
            current_scope().unavailable = self.alias
            # Not chained: the driver's error holds the connection's settings.
            raise PrimaryUnavailable(self.alias, reason) from None

    def _cursor(self, name: str | None = None) -> Any:
        try:
            return super()._cursor(name)  # type: ignore[misc]
        except PrimaryUnavailable:
            raise
        except OperationalError as error:
            if self.in_atomic_block or not _is_replica(self.alias):
                raise
            return self._prepare_cursor(Unreachable(error, name))  # type: ignore[attr-defined]


def _is_primary(alias: str) -> bool:
    try:
        config = get_runtime().config
        return alias in config.managed and alias not in config.replica_of
    except Exception:  # settings routerkit cannot read: no opinion
        return False


def _is_replica(alias: str) -> bool:
    try:
        return alias in get_runtime().config.replica_of
    except Exception:
        return False
