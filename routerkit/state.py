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
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import close_old_connections, connections

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Model

    from routerkit.health import Snapshot
    from routerkit.values import Requirement

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


class Scope:
    """Routing state of one request or task."""

    __slots__ = (
        "_requirements",
        "flushed_at",
        "implicit",
        "issued",
        "pinned",
        "read_from",
        "reads",
        "received",
        "received_seen",
        "routes",
        "snapshot",
        "unavailable",
        "wrappers",
        "writes",
        "written",
    )

    def __init__(self, *, implicit: bool = False) -> None:
        # model -> the read decision this scope repeats while nothing it
        # depends on changes (see Route). What the scope wrote and what its
        # client requires forget them when they grow.
        self.routes: _Routes = _Routes()
        # Created on demand outside any request or task (see current_scope()).
        self.implicit = implicit
        # Primaries written during this scope: their reads stay on the primary.
        self.written: set[str] = _Written(self.routes)
        # Every alias that served a read (for monotonic-read floors).
        self.read_from: set[str] = set()
        # primary -> what the client's earlier writes and reads require of a
        # replica (the two token halves it arrived with, and both merged).
        self.received: dict[str, Requirement] = {}
        self.received_seen: dict[str, Requirement] = {}
        self.requirements = {}
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
    def requirements(self) -> dict[str, Requirement]:
        """primary -> what the client's tokens require of a replica (both halves merged)."""
        return self._requirements

    @requirements.setter
    def requirements(self, requirements: Mapping[str, Requirement]) -> None:
        self._requirements = _Requirements(self.routes, requirements)
        self.routes.clear()

    def forget_routes(self) -> None:
        """Make the next read of every cluster decide afresh."""
        self.routes.clear()

    @property
    def counted(self) -> bool:
        """Tell whether decisions are waiting to be flushed to the metrics."""
        return bool(
            self.reads
            or self.writes
            or self.routes.dropped
            or any(r.count and r.counted for r in self.routes.values())
        )

    def take_counts(self) -> tuple[dict[str, defaultdict[str, int]], dict[str, int]]:
        """Return the decision counts and start counting afresh."""
        for route in [*self.routes.dropped, *self.routes.values()]:
            if route.count and route.counted:
                self.reads[route.reason][route.alias] += route.count
                route.count = 0
        self.routes.dropped.clear()
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


class _Thread(threading.local):
    """An object of the running thread's own, cheaper to reach than the Thread."""

    def __init__(self) -> None:
        self.marker = object()


thread_marker = _Thread()


class Route:
    """A read decision that a scope repeats until something it depends on changes.

    Made for a read without hints (an instance may choose its own replica)
    that went to a replica. Valid for the router that made it, while the
    runtime is the same, on the thread that made it, outside atomic blocks on
    the primary, while the health snapshot it was made with is still the
    holder's and has not expired, and (see Frame) outside use_primary(). The
    scope forgets its routes when it writes, when the client's requirements
    change and when a nested scope ends.
    """

    __slots__ = (
        "alias",
        "count",
        "counted",
        "expires",
        "holder",
        "reason",
        "replica_attrs",
        "router",
        "runtime",
        "snapshot",
        "thread",
        "wrapper",
    )

    def __init__(
        self,
        *,
        alias: str,
        reason: str,
        router: object,
        runtime: object,
        wrapper: BaseDatabaseWrapper,
        replica_attrs: dict[str, Any],
        holder: Any,
        snapshot: Snapshot,
        expires: float,
        counted: bool,
    ) -> None:
        self.alias = alias
        self.reason = reason
        self.router = router  # the router that made it: others keep their own opinion
        self.runtime = runtime
        self.thread = thread_marker.marker
        self.wrapper = wrapper  # the primary's, for in_atomic_block
        # The replica's connection attributes, where a Django test case puts
        # the `connect` that forbids an alias it does not list.
        self.replica_attrs = replica_attrs
        self.holder = holder  # the scope, or the monitor outside any scope
        self.snapshot = snapshot
        self.expires = expires
        self.count = 0  # reads decided by this route since the last flush
        self.counted = counted  # whether those go to the metrics


class _Routes(dict[Any, "Route"]):
    """A scope's routes, by model; the reads of those it drops wait for the metrics."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[Route] = []

    def __setitem__(self, model: Any, route: Route) -> None:
        old = self.get(model)
        if old is not None and old.count and old.counted:
            self.dropped.append(old)
        super().__setitem__(model, route)

    def clear(self) -> None:
        if self:  # most clears find nothing: a request's first read has made no route yet
            self.dropped.extend(r for r in self.values() if r.count and r.counted)
            super().clear()


class _Written(set[str]):
    """The primaries a scope wrote to: adding one forgets the scope's routes.

    Removing one needs not: a route is only made for a cluster not written.
    """

    __slots__ = ("_routes",)

    def __init__(self, routes: _Routes) -> None:
        super().__init__()
        self._routes = routes

    def add(self, primary: str) -> None:
        if primary not in self:
            super().add(primary)
            self._routes.clear()

    def update(self, *others: Iterable[str]) -> None:
        size = len(self)
        super().update(*others)
        if len(self) != size:
            self._routes.clear()

    def __ior__(self, other: AbstractSet[str]) -> Self:  # type: ignore[override,misc]
        self.update(other)
        return self


class _Requirements(dict[str, "Requirement"]):
    """What a scope's client requires of replicas: raising it forgets the scope's routes.

    Lowering it needs not: a replica fit for more is fit for less.
    """

    __slots__ = ("_routes",)

    def __init__(self, routes: _Routes, requirements: Mapping[str, Requirement]) -> None:
        super().__init__(requirements)
        self._routes = routes

    def __setitem__(self, primary: str, requirement: Requirement) -> None:
        super().__setitem__(primary, requirement)
        self._routes.clear()

    def update(self, *args: Any, **kwargs: Requirement) -> None:
        super().update(*args, **kwargs)
        self._routes.clear()

    def setdefault(self, primary: str, requirement: Requirement) -> Requirement:
        self._routes.clear()
        return super().setdefault(primary, requirement)

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        super().__ior__(other)
        self._routes.clear()
        return self


def _reads() -> defaultdict[str, defaultdict[str, int]]:
    return defaultdict(lambda: defaultdict(int))


class Frame:
    """What a routing decision needs of the running context, in one ContextVar.

    The unit of work's scope, whether use_primary() is in force, and the
    routes a read may repeat: the scope's own, none while use_primary() is
    in force. Replaced (never changed) whenever a block is entered or left.
    """

    __slots__ = ("forced", "routes", "scope")

    def __init__(self, scope: Scope | None, *, forced: bool) -> None:
        self.scope = scope
        self.forced = forced
        self.routes: Mapping[type[Model], Route] = (
            scope.routes if scope is not None and not forced else _NO_ROUTES
        )


_NO_ROUTES: Mapping[type[Model], Route] = MappingProxyType({})

# Read directly by the routing decision (routerkit.routers, routerkit.selection),
# which runs on every query; everything else goes through current_scope() and
# the blocks.
# A frame is never changed, only replaced: one default serves every context.
_OUTSIDE = Frame(None, forced=False)
frame_var: ContextVar[Frame] = ContextVar("routerkit_frame", default=_OUTSIDE)
# The blocks entered in this context, outermost first, each with what it must
# undo. In a ContextVar (not on the block object) so that one block instance may
# be used by several threads or tasks at once. Each entry is found by its own
# marker on exit, so blocks may exit in any order (a generator closed inside
# another block): the frame is then recomputed from what is left.
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
        # The frame's scope before this scope was entered; read for the outermost scope.
        self.previous = previous
        self.parent = parent
        self.forced = forced  # set by use_primary


def current_scope() -> Scope:
    """Return the scope of the running request or task, creating one if there is none."""
    frame = frame_var.get()
    scope = frame.scope
    if scope is None:
        # Outside a request or task scope (a script, a shell, a worker without
        # integration) the scope lasts as long as this context: once it writes,
        # it keeps reading its cluster from the primary. That costs replica
        # reads, never a stale read of one's own write.
        scope = Scope(implicit=True)
        frame_var.set(Frame(scope, forced=frame.forced))
    return scope


def implicit_scope() -> Scope | None:
    """Return this context's implicit scope, if code outside any unit of work routed here."""
    scope = frame_var.get().scope
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
    token = frame_var.set(Frame(scope, forced=frame_var.get().forced))
    try:
        yield scope
    finally:
        frame_var.reset(token)
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
        frame = frame_var.get()
        frame_var.set(
            Frame(
                entry.scope if entry.scope is not None else frame.scope,
                forced=entry.forced or frame.forced,
            )
        )
        return entry.scope

    def __exit__(self, *exc_info: object) -> None:
        entries = list(_entered.get())
        # The innermost entry of this block: blocks may exit in any order.
        index = max(i for i, entry in enumerate(entries) if entry.block is self)
        entry = entries.pop(index)
        frame = frame_var.get()
        scope = frame.scope
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
            scope = entries[scopes[-1]].scope if scopes else entry.previous
        _entered.set(tuple(entries))
        forced = any(e.forced for e in entries) if entry.forced else frame.forced
        frame_var.set(Frame(scope, forced=forced))
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
        previous = parent = frame_var.get().scope
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
            # The nested scope may have pinned other replicas (a shared dict).
            parent.forget_routes()
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
