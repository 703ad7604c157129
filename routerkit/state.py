"""Per-request routing state, kept in contextvars.

A `Scope` is one unit of work: a request (ConsistencyMiddleware), a task, or
anything wrapped in `consistency_scope()`. It remembers which primaries were
written during it, so later reads of those clusters see the writes. Scopes live
in a ContextVar, so concurrent requests on threads or asyncio tasks never share
one, while asyncio tasks and `sync_to_async` calls made inside a request do.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import close_old_connections, connections

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from routerkit.health import Snapshot
    from routerkit.values import Requirement

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


class Scope:
    """Routing state of one request or task."""

    __slots__ = (
        "flushed_at",
        "implicit",
        "issued",
        "pinned",
        "read_from",
        "reads",
        "received",
        "received_seen",
        "requirements",
        "snapshot",
        "unavailable",
        "wrappers",
        "writes",
        "written",
    )

    def __init__(self, *, implicit: bool = False) -> None:
        # Created on demand outside any request or task (see current_scope()).
        self.implicit = implicit
        # Primaries written during this scope: their reads stay on the primary.
        self.written: set[str] = set()
        # Every alias that served a read (for monotonic-read floors).
        self.read_from: set[str] = set()
        # primary -> what the client's earlier writes and reads require of a
        # replica (the two token halves it arrived with, and both merged).
        self.received: dict[str, Requirement] = {}
        self.received_seen: dict[str, Requirement] = {}
        self.requirements: dict[str, Requirement] = {}
        # primary -> what this scope's writes require of the client's next
        # reads, once it has finished.
        self.issued: dict[str, Requirement] = {}
        # primary -> the replica this scope reads it from: one replica per
        # request, so that its reads never go back in time.
        self.pinned: dict[str, str] = {}
        # Replica health as of the start of this scope; None: ask the monitor.
        self.snapshot: Snapshot | None = None
        # A primary this scope could not reach (routerkit.PrimaryUnavailable).
        self.unavailable: str | None = None
        # Decisions until flushed to the metrics: reason -> database -> count
        # for reads, database -> count for writes.
        self.reads: defaultdict[str, defaultdict[str, int]] = _reads()
        self.writes: defaultdict[str, int] = defaultdict(int)
        # When an implicit scope, which never ends, last flushed its counts.
        self.flushed_at = 0.0
        # alias -> (thread, connection wrapper); the routing decision reads it
        # inline. Looking a wrapper up through django.db.connections costs
        # more than the rest of a routing decision (asgiref's Local takes a
        # lock), so it is done once per scope and thread. Django keeps one
        # wrapper per alias and thread; the thread object (not its id, which a
        # new thread may reuse) is what we check.
        self.wrappers: dict[str, tuple[threading.Thread, BaseDatabaseWrapper]] = {}

    @property
    def counted(self) -> bool:
        """Tell whether decisions are waiting to be flushed to the metrics."""
        return bool(self.reads or self.writes)

    def take_counts(self) -> tuple[dict[str, defaultdict[str, int]], dict[str, int]]:
        """Return the decision counts and start counting afresh."""
        reads, writes = self.reads, self.writes
        self.reads, self.writes = _reads(), defaultdict(int)
        return reads, writes

    def connection(self, alias: str) -> BaseDatabaseWrapper:
        """Return this thread's connection wrapper for `alias` (it may be unconnected)."""
        thread = threading.current_thread()
        cached = self.wrappers.get(alias)
        if cached is not None and cached[0] is thread:
            return cached[1]
        wrapper = connections[alias]
        self.wrappers[alias] = (thread, wrapper)
        return wrapper


def _reads() -> defaultdict[str, defaultdict[str, int]]:
    return defaultdict(lambda: defaultdict(int))


# The scope of the running unit of work, and whether use_primary() is in force.
# Read directly by the routing decision (routerkit.selection), which runs on
# every query; everything else goes through current_scope() and the blocks.
scope_var: ContextVar[Scope | None] = ContextVar("routerkit_scope", default=None)
forced_var: ContextVar[bool] = ContextVar("routerkit_forced", default=False)
# The blocks entered in this context, outermost first, each with what it must
# undo. In a ContextVar (not on the block object) so that one block instance may
# be used by several threads or tasks at once. Each entry is found by its own
# marker on exit, so blocks may exit in any order (a generator closed inside
# another block): `scope_var` and `forced_var` are then recomputed from what is left.
_entered: ContextVar[tuple[_Entry, ...]] = ContextVar("routerkit_entered", default=())


class _Entry:
    """One entered block: what it set, and what was there before the first block."""

    __slots__ = ("block", "forced", "parent", "previous", "scope")

    def __init__(
        self,
        block: _Block,
        *,
        previous: Scope | None = None,
        scope: Scope | None = None,
        parent: Scope | None = None,
        forced: bool = False,
    ) -> None:
        self.block = block
        self.scope = scope  # set by consistency_scope
        # scope_var before this scope was entered; read for the outermost scope.
        self.previous = previous
        self.parent = parent
        self.forced = forced  # set by use_primary


def current_scope() -> Scope:
    """Return the scope of the running request or task, creating one if there is none."""
    scope = scope_var.get()
    if scope is None:
        # Outside a request or task scope (a script, a shell, a worker without
        # integration) the scope lasts as long as this context: once it writes,
        # it keeps reading its cluster from the primary. That costs replica
        # reads, never a stale read of one's own write.
        scope = Scope(implicit=True)
        scope_var.set(scope)
    return scope


def implicit_scope() -> Scope | None:
    """Return this context's implicit scope, if code outside any unit of work routed here."""
    scope = scope_var.get()
    return scope if scope is not None and scope.implicit else None


def scoped(func: Callable[P, R]) -> Callable[P, R]:
    """Return `func` wrapped to run in the current routing scope, on any thread.

    A new thread starts with an empty context: without this, its reads know
    nothing of the writes its parent made, and the parent nothing of its
    writes. Wrapped, the thread shares the parent's scope both ways::

        pool.submit(routerkit.scoped(send_receipt), order.pk)

    Writes the thread makes after its parent's request or task has ended are
    not in that request's token: wait for the thread before responding. On
    another thread, each call ends as a request does: its database
    connections are closed unless CONN_MAX_AGE keeps them.
    """
    current_scope()  # so that the caller and the thread share one scope
    context = contextvars.copy_context()
    parent = threading.current_thread()

    @functools.wraps(func)
    def inner(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            # A context can be entered by one thread at a time: run in a copy.
            return context.copy().run(func, *args, **kwargs)
        finally:
            if threading.current_thread() is not parent:
                # As at the end of a request (CONN_MAX_AGE decides). Nobody
                # else closes a worker thread's connections: they linger
                # until garbage collection, and an open one keeps Django's
                # test runner from dropping the test database.
                close_old_connections()

    return inner


@contextmanager
def entered(scope: Scope) -> Iterator[Scope]:
    """Make an existing scope current again (for work that outlives its block)."""
    token = scope_var.set(scope)
    try:
        yield scope
    finally:
        scope_var.reset(token)
        if scope.counted:
            from routerkit.metrics import get_metrics

            get_metrics().record(*scope.take_counts())


class _Block:
    """A context manager that also decorates sync and async functions."""

    def _enter(self) -> _Entry:
        raise NotImplementedError

    def _exit(self, entry: _Entry) -> None:
        pass

    def _fresh(self) -> _Block:
        raise NotImplementedError

    def __enter__(self) -> Any:
        entry = self._enter()
        _entered.set((*_entered.get(), entry))
        if entry.scope is not None:
            scope_var.set(entry.scope)
        if entry.forced:
            forced_var.set(True)
        return entry.scope

    def __exit__(self, *exc_info: object) -> None:
        entries = list(_entered.get())
        # The innermost entry of this block: blocks may exit in any order.
        index = max(i for i, entry in enumerate(entries) if entry.block is self)
        entry = entries.pop(index)
        if entry.scope is not None:
            scopes = [i for i, e in enumerate(entries) if e.scope is not None]
            if scopes and scopes[0] >= index:
                # The outermost scope left first: the next one now restores
                # what was there before it. A new entry, not a changed one:
                # a copied context (an asyncio task) may share the old.
                first = entries[scopes[0]]
                entries[scopes[0]] = _Entry(
                    first.block, previous=entry.previous, scope=first.scope, parent=first.parent
                )
            scope_var.set(entries[scopes[-1]].scope if scopes else entry.previous)
        _entered.set(tuple(entries))
        if entry.forced:
            forced_var.set(any(e.forced for e in entries))
        self._exit(entry)

    def __call__(self, func: F) -> F:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # A generator runs between its caller's statements: a block around
            # it would be entered and left at every step, in whatever context
            # the caller is in. Use the block inside the generator instead.
            raise TypeError(
                f"{type(self).__name__}() cannot decorate the generator function "
                f"{func.__qualname__}(); use it as a `with` block inside the generator"
            )
        # Each call enters a block of its own, so one decorated function may
        # run concurrently in several threads or tasks.
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_inner(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await func(*args, **kwargs)

            return cast(F, markcoroutinefunction(async_inner))

        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return func(*args, **kwargs)

        return cast(F, inner)


class consistency_scope(_Block):  # noqa: N801 - used like contextlib's lower-case helpers
    """Run a block as one unit of work with its own read-your-writes state.

    Reads of a cluster go to its primary after the block writes to it.
    ConsistencyMiddleware opens one per request; open one per task in workers
    and long-running commands (``with consistency_scope():`` or as a
    decorator). Nested in another request or task scope (an eager task, a
    command called from a view), it starts from that scope's state and hands
    its writes back when it ends; ``isolated=True`` starts fresh and hands
    nothing back, as another client would.
    """

    def __init__(self, *, isolated: bool = False) -> None:
        self.isolated = isolated

    def _fresh(self) -> consistency_scope:
        return consistency_scope(isolated=self.isolated)

    def _enter(self) -> _Entry:
        previous = parent = scope_var.get()
        if self.isolated or (parent is not None and parent.implicit):
            parent = None
        scope = Scope()
        if parent is not None:
            scope.written |= parent.written
            scope.received = parent.received
            scope.received_seen = parent.received_seen
            scope.requirements = dict(parent.requirements)
            scope.pinned = parent.pinned
            scope.snapshot = parent.snapshot
        self._start(scope)
        return _Entry(self, previous=previous, scope=scope, parent=parent)

    def _start(self, scope: Scope) -> None:
        """Prepare a new scope before it becomes current (restore_token reads its token)."""

    def _exit(self, entry: _Entry) -> None:
        scope, parent = entry.scope, entry.parent
        assert scope is not None
        if parent is not None:
            parent.written |= scope.written
            parent.read_from |= scope.read_from
            parent.unavailable = parent.unavailable or scope.unavailable
        if scope.counted:
            from routerkit.metrics import get_metrics

            get_metrics().record(*scope.take_counts())


class use_primary(_Block):  # noqa: N801 - used like contextlib's lower-case helpers
    """Send every read inside to the primary of its cluster.

    Works as a context manager (``with use_primary():``) and as a decorator on
    sync and async functions. Nesting is allowed.
    """

    def _fresh(self) -> use_primary:
        return use_primary()

    def _enter(self) -> _Entry:
        return _Entry(self, forced=True)
