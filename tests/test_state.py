"""Per-request state lives in contextvars: concurrent work never shares it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import router

from routerkit import consistency_scope, use_primary
from routerkit.state import current_scope
from tests.testapp.models import Article

pytestmark = pytest.mark.usefixtures("all_replicas_healthy")


def test_a_scope_forgets_its_writes_when_it_ends() -> None:
    """Writes recorded in a scope do not outlive it."""
    with consistency_scope() as scope:
        scope.written.add("primary")
        assert router.db_for_read(Article) == "primary"
    assert router.db_for_read(Article) != "primary"


def test_threads_do_not_share_scopes() -> None:
    """A write in one thread's scope does not pin another thread's reads."""
    wrote, results = threading.Event(), {}

    def writer() -> None:
        with consistency_scope() as scope:
            scope.written.add("primary")
            wrote.set()
            results["writer"] = router.db_for_read(Article)

    def reader() -> None:
        wrote.wait(5)
        with consistency_scope():
            results["reader"] = router.db_for_read(Article)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == {"writer": "primary", "reader": results["reader"]}
    assert results["reader"] in {"replica1", "replica2"}


def test_asyncio_tasks_do_not_share_forced_or_written_state() -> None:
    """Concurrent tasks each see only their own use_primary() and writes."""

    async def forced() -> str | None:
        with use_primary():
            await asyncio.sleep(0.01)
            return router.db_for_read(Article)

    async def wrote() -> str | None:
        with consistency_scope() as scope:
            scope.written.add("primary")
            await asyncio.sleep(0.01)
            return router.db_for_read(Article)

    async def plain() -> str | None:
        await asyncio.sleep(0.005)
        with consistency_scope():
            return router.db_for_read(Article)

    async def main() -> list[str | None]:
        return list(await asyncio.gather(forced(), wrote(), plain()))

    first, second, third = asyncio.run(main())
    assert (first, second) == ("primary", "primary")
    assert third in {"replica1", "replica2"}


def test_tasks_spawned_inside_a_request_share_its_scope() -> None:
    """A task created within a scope sees that scope's writes (same request)."""

    async def main() -> str | None:
        with consistency_scope() as scope:
            scope.written.add("primary")
            return await asyncio.create_task(_read())

    async def _read() -> str | None:
        return router.db_for_read(Article)

    assert asyncio.run(main()) == "primary"


def test_outside_any_scope_a_context_gets_its_own() -> None:
    """Code with no scope (a script) gets one that lasts as long as its context."""

    def script() -> tuple[bool, bool]:
        first = current_scope()
        return first is current_scope(), first.written == set()

    result: list[tuple[bool, bool]] = []
    thread = threading.Thread(target=lambda: result.append(script()))
    thread.start()
    thread.join(5)
    assert result == [(True, True)]
