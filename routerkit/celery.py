"""Celery integration: each task is one unit of work that reads what its publisher wrote.

In the module that creates the Celery app of a Django project::

    import routerkit.celery

    routerkit.celery.install()  # idempotent

Then, in every process that publishes or runs tasks:

* publishing a task (``delay``, ``apply_async``, canvas, ``send_task``) puts the
  publishing unit of work's ``routerkit.capture_token()`` in a ``routerkit_token``
  message header, so a task enqueued after a write reads that write even while
  the replicas lag;
* the worker runs each task inside ``routerkit.restore_token(<header>)``: a fresh
  routing scope per task (also without a header), so the writes of one task do
  not keep the next tasks of the same worker thread on the primary.

Enqueue after the commit (``transaction.on_commit(lambda: task.delay(...))`` or
Celery's ``delay_on_commit``): inside a transaction the position of the write is
not known yet, and the token falls back to STICKY["WINDOW"] on the primary.

A header already present is left alone. To capture the token at another moment
than publishing (for example in the request, to publish later from a thread of
one's own, which has its own scope), pass it yourself::

    headers = routerkit.celery.routerkit_token_headers()
    ...
    send_report.apply_async((report_id,), headers=headers)

Tasks run eagerly (``apply()``, ``task_always_eager``) are left in their caller's
scope: they run synchronously as part of the caller's unit of work.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any

try:
    from celery import signals  # type: ignore[import-untyped]
except ImportError as exc:
    raise ImportError(
        "routerkit.celery needs Celery: install it with `pip install 'celery>=5.3'`"
    ) from exc

from routerkit import stats
from routerkit.state import Scope
from routerkit.tasks import capture_token, restore_token

__all__ = ["HEADER", "install", "routerkit_token_headers", "uninstall"]

HEADER = "routerkit_token"
_DISPATCH_UID = "routerkit.celery"

# The scopes of the tasks running in this process, keyed by task id and thread.
# The scope is entered in task_prerun and left in task_postrun, two separate
# calls, so the context manager has to be kept somewhere in between. The thread
# is part of the key because the same task id can run twice at once (a message
# redelivered after a visibility timeout), and because a scope is a ContextVar
# that can only be reset from the thread (context) that set it. Not stored on
# task.request: Celery copies a request's attributes into other requests.
_active: dict[tuple[str, int], AbstractContextManager[Scope]] = {}
_lock = threading.Lock()


def install() -> None:
    """Connect the Celery signal receivers (calling it again changes nothing)."""
    for signal, receiver in _receivers():
        # weak=False: the signal holds the receivers itself rather than relying
        # on something else keeping them alive; the dispatch_uid is what makes
        # a second install() a no-op.
        signal.connect(receiver, weak=False, dispatch_uid=_DISPATCH_UID)


def uninstall() -> None:
    """Disconnect the receivers (for tests; do it while no task is running)."""
    for signal, receiver in _receivers():
        signal.disconnect(receiver, dispatch_uid=_DISPATCH_UID)


def routerkit_token_headers() -> dict[str, str]:
    """Return message headers that carry the current unit of work's token, if it needs one."""
    token = capture_token()
    return {HEADER: token} if token is not None else {}


def _receivers() -> list[tuple[Any, Any]]:
    return [
        (signals.before_task_publish, _on_before_task_publish),
        (signals.task_prerun, _on_task_prerun),
        (signals.task_postrun, _on_task_postrun),
        (signals.task_revoked, _on_task_revoked),
    ]


def _on_before_task_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    # `in`, not a truthy test: an explicit header wins, including one set to
    # None to send a task without a token. Retries copy their request's
    # headers, so a retried task keeps the token it first arrived with.
    if headers is None or HEADER in headers:
        return
    token = capture_token()
    if token is not None:
        headers[HEADER] = token


def _on_task_prerun(task_id: str, task: Any, **kwargs: Any) -> None:
    request = task.request
    if request.is_eager:
        return
    manager = restore_token(_incoming_token(request))
    manager.__enter__()
    with _lock:
        _active[(task_id, threading.get_ident())] = manager


def _on_task_postrun(task_id: str, **kwargs: Any) -> None:
    # Celery sends task_postrun from a `finally` around the task, in the thread
    # that sent task_prerun, whatever the outcome: success, failure, retry,
    # Reject, Ignore, soft time limit. That is what leaves every scope.
    _leave(task_id)


def _on_task_revoked(request: Any = None, **kwargs: Any) -> None:
    # A task revoked before it started never entered a scope, and one
    # terminated by a hard time limit or revoke(terminate=True) dies with its
    # pool process, registry included. Should a pool ever report a revocation
    # from the thread that ran the task without task_postrun, leave its scope
    # here. Only this thread's entry is touched: a ContextVar cannot be reset
    # from another thread, and the same id may still be running in another.
    task_id = getattr(request, "id", None)
    if task_id:
        _leave(task_id)


def _leave(task_id: str) -> None:
    with _lock:
        manager = _active.pop((task_id, threading.get_ident()), None)
    if manager is not None:
        manager.__exit__(None, None, None)


def _incoming_token(request: Any) -> str | None:
    # With message protocol 2 (Celery's default) every message header becomes an
    # attribute of task.request; Celery >= 5.3 also gathers the non-Celery ones
    # in task.request.headers. Look in both, for older and future versions.
    token = request.get(HEADER)
    if token is None:
        token = (request.headers or {}).get(HEADER)
    if token is None or isinstance(token, str):
        return token
    # Not something capture_token() wrote: ignore it the way restore_token
    # ignores a bad token (counted, then a fresh scope without requirements).
    stats.incr("token_rejected", "malformed")
    return None
