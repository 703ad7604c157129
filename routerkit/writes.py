"""Notice writes on primaries, whatever path they take.

Routers only see what the ORM routes; raw SQL through `connection.cursor()`
bypasses them. So every connection gets an execute wrapper that marks the
current scope as having written to the connection's primary as soon as a
statement that may write runs there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created

from routerkit.conf import get_config
from routerkit.state import current_scope

# Statements that cannot change data. Anything else counts as a write: being
# wrong that way costs a replica read, the other way a stale one. WITH (writable
# CTEs), EXPLAIN (ANALYZE runs the statement) and COPY are writes on purpose.
_READ_ONLY = re.compile(
    r"\s*(?:SELECT|SHOW|SAVEPOINT|RELEASE|ROLLBACK|BEGIN|START|COMMIT|END|SET|FETCH|CLOSE)\b",
    re.IGNORECASE,
)
# SELECT ... INTO creates a table.
_INTO = re.compile(r"\bINTO\b", re.IGNORECASE)


def may_write(sql: object) -> bool:
    """Tell whether a statement may change data (conservatively).

    A SELECT that calls a function with side effects cannot be told apart
    from a read: call `mark_written()` after it.
    """
    if not isinstance(sql, str):
        return True  # bytes or a composed object: do not guess
    if _READ_ONLY.match(sql) is None:
        return True
    # "SELECT 1; DELETE ..." runs as one call on some drivers.
    return ";" in sql.rstrip().rstrip(";") or _INTO.search(sql) is not None


def mark_written(using: str) -> None:
    """Record a write to `using` that routerkit cannot see.

    For example a SELECT of a function that writes, or psycopg's
    ``cursor.copy()``, which bypasses Django's execute wrappers. Later reads
    of that cluster in this request or task go to its primary.
    """
    primary = get_config().primary_of(using)
    current_scope().written.add(primary)


def track_writes(
    execute: Callable[..., Any],
    sql: Any,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """Execute wrapper: mark the scope as written when a statement may write."""
    alias = context["connection"].alias
    scope = current_scope()
    if alias not in scope.written and may_write(sql):
        primary = get_config().replica_of.get(alias)
        # A write through a replica alias fails on a hot standby; it must not
        # pin the replica's cluster either way.
        if primary is None:
            scope.written.add(alias)
    return execute(sql, params, many, context)


def _add_wrapper(connection: Any, **kwargs: Any) -> None:
    if track_writes not in connection.execute_wrappers:
        # First in the list: Django's `execute_wrapper()` context manager pops
        # the *last* wrapper on exit, which would otherwise remove ours if the
        # connection opened inside such a block.
        connection.execute_wrappers.insert(0, track_writes)


_installed = False


def install() -> None:
    """Add the write tracker to every connection of this process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    connection_created.connect(_add_wrapper, dispatch_uid="routerkit.writes")
    # Connections opened before routerkit was first used in this thread.
    for connection in connections.all(initialized_only=True):
        _add_wrapper(connection)
