"""Per-request routing state, kept in contextvars.

A `Scope` is one unit of work: a request (ConsistencyMiddleware), a task, or
anything wrapped in `consistency_scope()`. It remembers which primaries were
written during it, so later reads of those clusters see the writes. Scopes live
in a ContextVar, so concurrent requests on threads or asyncio tasks never share
one, while asyncio tasks and `sync_to_async` calls made inside a request do.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.db import connections

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from routerkit.consistency import Requirement
    from routerkit.health import Snapshot

F = TypeVar("F", bound=Callable[..., Any])


class Scope:
    """Routing state of one request or task."""

    __slots__ = ("_connections", "read_from", "requirements", "snapshot", "written")

    def __init__(self) -> None:
        # Primaries written during this scope: their reads stay on the primary.
        self.written: set[str] = set()
        # Every alias that served a read (for monotonic-read floors).
        self.read_from: set[str] = set()
        # primary -> what the client's earlier writes and reads require of a replica.
        self.requirements: dict[str, Requirement] = {}
        # Replica health as of the start of this scope; None: ask the monitor.
        self.snapshot: Snapshot | None = None
        # alias -> (thread id, connection wrapper). Looking a wrapper up through
        # django.db.connections costs more than the rest of a routing decision
        # (asgiref's Local takes a lock), so it is done once per scope and
        # thread. Django keeps one wrapper per alias and thread, which is what
        # the thread id check mirrors.
        self._connections: dict[str, tuple[int, BaseDatabaseWrapper]] = {}

    def connection(self, alias: str) -> BaseDatabaseWrapper:
        """Return this thread's connection wrapper for `alias` (it may be unconnected)."""
        ident = threading.get_ident()
        cached = self._connections.get(alias)
        if cached is not None and cached[0] == ident:
            return cached[1]
        wrapper = connections[alias]
        self._connections[alias] = (ident, wrapper)
        return wrapper


_scope: ContextVar[Scope | None] = ContextVar("routerkit_scope", default=None)
_forced: ContextVar[bool] = ContextVar("routerkit_forced", default=False)


def current_scope() -> Scope:
    """Return the scope of the running request or task, creating one if there is none."""
    scope = _scope.get()
    if scope is None:
        # Outside a request or task scope (a script, a shell, a worker without
        # integration) the scope lasts as long as this context: once it writes,
        # it keeps reading its cluster from the primary. That costs replica
        # reads, never a stale read of one's own write.
        scope = Scope()
        _scope.set(scope)
    return scope


def is_forced() -> bool:
    """Tell whether reads are forced to primaries by `use_primary()`."""
    return _forced.get()


@contextmanager
def consistency_scope() -> Iterator[Scope]:
    """Run a block as one unit of work with fresh read-your-writes state.

    Reads of a cluster go to its primary after the block writes to it, and
    stop doing so when the block ends. ConsistencyMiddleware opens one per
    request; open one per task in workers and long-running commands.
    """
    scope = Scope()
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


class use_primary:  # noqa: N801 - used like contextlib's lower-case helpers
    """Send every read inside to the primary of its cluster.

    Works as a context manager (``with use_primary():``) and as a decorator on
    sync and async functions. Nesting is allowed.
    """

    def __init__(self) -> None:
        self._tokens: list[Token[bool]] = []

    def __enter__(self) -> None:
        self._tokens.append(_forced.set(True))

    def __exit__(self, *exc_info: object) -> None:
        _forced.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        # Each call gets its own token, so one decorated function may run
        # concurrently in several threads or tasks.
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_inner(*args: Any, **kwargs: Any) -> Any:
                token = _forced.set(True)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _forced.reset(token)

            return cast(F, async_inner)

        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            token = _forced.set(True)
            try:
                return func(*args, **kwargs)
            finally:
                _forced.reset(token)

        return cast(F, inner)
