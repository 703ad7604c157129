"""Notice writes on primaries, whatever path they take.

Routers only see what the ORM routes; raw SQL through `connection.cursor()`
bypasses them. So every connection gets an execute wrapper that marks the
current scope as having written to the connection's primary as soon as a
statement that may write runs there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created

from routerkit.conf import get_config
from routerkit.state import current_scope
from routerkit.statements import may_write


def mark_written(using: str) -> None:
    """Record a write to `using` that routerkit cannot see.

    For example a SELECT of your own function that writes (the well-known
    ones, such as ``nextval()``, are recognised), or psycopg's
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
    if alias not in scope.written and may_write(statement_text(sql, context["connection"])):
        primary = get_config().replica_of.get(alias)
        # A write through a replica alias fails on a hot standby; it must not
        # pin the replica's cluster either way.
        if primary is None:
            scope.written.add(alias)
    return execute(sql, params, many, context)


def statement_text(sql: Any, connection: Any) -> Any:
    """Render a psycopg `Composable` (sql.SQL, sql.Identifier...) so it can be judged."""
    if isinstance(sql, (str, bytes)) or not hasattr(sql, "as_string"):
        return sql
    try:
        return sql.as_string(connection.connection)
    except Exception:  # cannot render it here: may_write() takes it for a write
        return sql


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
