"""Per-request state lives in contextvars: concurrent work never shares it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.db import router

from routerkit import consistency_scope, use_primary
from routerkit.conf import get_config
from routerkit.state import current_scope
from tests.conftest import positioned_snapshot
from tests.testapp.models import Article

pytestmark = pytest.mark.usefixtures("all_replicas_healthy")


def test_a_scope_forgets_its_writes_when_it_ends() -> None:
    """Writes recorded in a scope do not outlive it."""
    with consistency_scope(isolated=True) as scope:
        scope.written.add("primary")
        assert router.db_for_read(Article) == "primary"
    assert router.db_for_read(Article) != "primary"


def test_threads_do_not_share_scopes() -> None:
    """A write in one thread's scope does not pin another thread's reads."""
    wrote, done, results = threading.Event(), threading.Event(), {}

    def writer() -> None:
        with consistency_scope(isolated=True) as scope:
            scope.written.add("primary")
            wrote.set()
            done.wait(5)  # keep the scope open while the reader reads

    def reader() -> None:
        wrote.wait(5)
        results["reader"] = router.db_for_read(Article)  # no scope of its own
        done.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results["reader"] in {"replica1", "replica2"}


def test_asyncio_tasks_do_not_share_forced_or_written_state() -> None:
    """Concurrent tasks each see only their own use_primary() and writes."""

    async def forced() -> str | None:
        with use_primary():
            await asyncio.sleep(0.01)
            return router.db_for_read(Article)

    async def wrote() -> str | None:
        with consistency_scope(isolated=True) as scope:
            scope.written.add("primary")
            await asyncio.sleep(0.01)
            return router.db_for_read(Article)

    async def plain() -> str | None:
        await asyncio.sleep(0.005)
        with consistency_scope(isolated=True):
            return router.db_for_read(Article)

    async def main() -> list[str | None]:
        return list(await asyncio.gather(forced(), wrote(), plain()))

    first, second, third = asyncio.run(main())
    assert (first, second) == ("primary", "primary")
    assert third in {"replica1", "replica2"}


def test_tasks_spawned_inside_a_request_share_its_scope() -> None:
    """A task created within a scope sees that scope's writes (same request)."""

    async def main() -> str | None:
        with consistency_scope(isolated=True) as scope:
            scope.written.add("primary")
            return await asyncio.create_task(_read())

    async def _read() -> str | None:
        return router.db_for_read(Article)

    assert asyncio.run(main()) == "primary"


def test_outside_any_scope_a_thread_keeps_its_writes_to_itself() -> None:
    """Without a scope, a thread's write pins its own later reads, not another thread's."""
    results: list[str | None] = []

    def script(write: bool) -> None:
        if write:
            current_scope().written.add("primary")
        results.append(router.db_for_read(Article))

    for write in (True, False):
        thread = threading.Thread(target=script, args=(write,))
        thread.start()
        thread.join(5)
    assert results[0] == "primary"
    assert results[1] in {"replica1", "replica2"}


def test_a_nested_scope_starts_from_and_returns_to_its_parent() -> None:
    """An eager task or a command run inside a request shares the request's writes."""
    with consistency_scope(isolated=True) as request:
        request.written.add("billing")
        with consistency_scope() as task:
            assert task.written == {"billing"}
            task.written.add("primary")
        assert request.written == {"billing", "primary"}
        assert router.db_for_read(Article) == "primary"


def test_an_isolated_scope_shares_nothing_with_its_parent() -> None:
    """isolated=True behaves as another client: nothing in, nothing out."""
    with consistency_scope(isolated=True) as request:
        request.written.add("primary")
        with consistency_scope(isolated=True) as other:
            assert other.written == set()
            assert router.db_for_read(Article) != "primary"
            other.written.add("billing")
        assert request.written == {"primary"}


def test_a_scope_does_not_inherit_from_an_implicit_one() -> None:
    """A worker's task scope starts fresh even if the worker thread wrote before."""

    def worker() -> None:
        current_scope().written.add("primary")  # e.g. marking a job as taken
        with consistency_scope() as task:
            results.append(set(task.written))

    results: list[set[str]] = []
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    assert results == [set()]


def test_one_use_primary_instance_shared_by_concurrent_tasks() -> None:
    """The same use_primary() object may be entered by several tasks at once."""
    shared = use_primary()

    async def read() -> str | None:
        with shared:
            await asyncio.sleep(0.01)
            return router.db_for_read(Article)

    async def main() -> list[str | None]:
        return list(await asyncio.gather(read(), read(), read()))

    assert asyncio.run(main()) == ["primary"] * 3


def test_decorators_recognise_marked_coroutine_functions() -> None:
    """Async class-based views (marked coroutine functions) are decorated as async."""
    from asgiref.sync import markcoroutinefunction

    async def view() -> str | None:
        await asyncio.sleep(0)
        return router.db_for_read(Article)

    def as_view() -> object:  # what View.as_view() returns for an async view
        def handler() -> object:
            return view()

        return markcoroutinefunction(handler)

    decorated = use_primary()(as_view())
    assert asyncio.run(decorated()) == "primary"  # type: ignore[operator]


def test_consistency_scope_decorates_coroutines() -> None:
    """@consistency_scope() gives each call of an async function its own scope."""

    @consistency_scope(isolated=True)
    async def task() -> set[str]:
        current_scope().written.add("primary")
        await asyncio.sleep(0)
        return set(current_scope().written)

    async def main() -> list[set[str]]:
        return [await task(), await task()]

    assert asyncio.run(main()) == [{"primary"}, {"primary"}]
    assert current_scope().written == set()


def test_a_generator_closed_inside_another_block_leaves_it_intact() -> None:
    """Blocks exit in any order: closing a generator does not undo the block around it."""

    def rows():  # type: ignore[no-untyped-def]
        with use_primary():
            yield router.db_for_read(Article)
            yield router.db_for_read(Article)

    stream = rows()
    assert next(stream) == "primary"  # use_primary() entered, still open
    with consistency_scope(isolated=True) as scope:
        stream.close()  # use_primary() exits here, inside the scope
        from routerkit.state import current_scope as now

        assert now() is scope  # the scope is still current
        assert router.db_for_read(Article) != "primary"  # and nothing is forced
        scope.written.add("primary")
        assert router.db_for_read(Article) == "primary"
    assert current_scope() is not scope
    assert router.db_for_read(Article) != "primary"


def test_an_outer_block_left_first_keeps_the_inner_one() -> None:
    """Two use_primary() blocks left out of order: reads stay forced until both end."""
    outer, inner = use_primary(), use_primary()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert router.db_for_read(Article) == "primary"  # inner is still open
    inner.__exit__(None, None, None)
    assert router.db_for_read(Article) != "primary"


def test_scopes_left_out_of_order_restore_what_was_before() -> None:
    """The outer scope left first: the inner stays current, then the context is as before."""
    before = current_scope()
    outer, inner = consistency_scope(isolated=True), consistency_scope(isolated=True)
    outer_scope = outer.__enter__()
    inner_scope = inner.__enter__()
    outer.__exit__(None, None, None)
    assert current_scope() is inner_scope
    inner.__exit__(None, None, None)
    assert current_scope() is before
    assert outer_scope is not inner_scope


def test_an_exception_between_blocks_unwinds_them() -> None:
    """An exception raised inside nested blocks leaves no block entered."""
    before = current_scope()
    with pytest.raises(ZeroDivisionError), use_primary(), consistency_scope(isolated=True):
        1 / 0  # noqa: B018
    assert current_scope() is before
    assert router.db_for_read(Article) != "primary"


@pytest.mark.parametrize("block", [use_primary, consistency_scope])
def test_a_block_refuses_to_decorate_a_generator(block) -> None:  # type: ignore[no-untyped-def]
    """A generator function gets a clear TypeError at decoration time."""

    def rows():  # type: ignore[no-untyped-def]
        yield 1

    async def async_rows():  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(TypeError, match="cannot decorate the generator function"):
        block()(rows)
    with pytest.raises(TypeError, match="cannot decorate the generator function"):
        block()(async_rows)


def test_restore_token_decorates_sync_and_async_functions() -> None:
    """restore_token(token) works as a decorator: each call is its own unit of work."""
    from routerkit import restore_token

    seen: list[object] = []

    @restore_token(None)
    def sync_task() -> str:
        seen.append(current_scope())
        return "sync"

    @restore_token(None)
    async def async_task() -> str:
        seen.append(current_scope())
        return "async"

    before = current_scope()
    assert sync_task() == "sync"
    assert asyncio.iscoroutinefunction(async_task)
    assert asyncio.run(async_task()) == "async"
    assert len({id(scope) for scope in seen}) == 2
    assert before not in seen
    with pytest.raises(TypeError):
        restore_token(None)(lambda: (yield))


def test_a_pinned_replica_below_the_requirement_is_left() -> None:
    """The requirement is checked before the pinned replica (nesting never weakens it)."""
    from routerkit.values import Requirement

    snapshot = positioned_snapshot(get_config(), {"replica1": 100, "replica2": 300})
    with consistency_scope(isolated=True) as scope:
        scope.snapshot = snapshot
        scope.pinned["primary"] = "replica1"  # as after an earlier read of this request
        assert router.db_for_read(Article) == "replica1"
        scope.requirements["primary"] = Requirement(lsn=200)  # raised by a nested block
        assert router.db_for_read(Article) == "replica2"


@pytest.mark.parametrize("nested", ["consistency_scope", "restore_token"])
def test_a_nested_block_keeps_its_parents_requirements(nested: str) -> None:
    """Inside and after a nested block, no read goes below the parent's requirement.

    The nested restore_token() carries a lower requirement of its own: it is
    added to the parent's, never put in its place.
    """
    from routerkit import restore_token
    from routerkit.consistency import encode
    from routerkit.values import Requirement

    snapshot = positioned_snapshot(get_config(), {"replica1": 100, "replica2": 300})
    block: Any = (
        consistency_scope()
        if nested == "consistency_scope"
        else restore_token(encode({"primary": Requirement(lsn=50)}))
    )
    with consistency_scope(isolated=True) as parent:
        parent.snapshot = snapshot
        parent.requirements["primary"] = Requirement(lsn=200)  # from the client's token
        with block as scope:
            scope.snapshot = snapshot
            assert {router.db_for_read(Article) for _ in range(20)} == {"replica2"}
            scope.pinned.clear()
            assert {router.db_for_read(Article) for _ in range(20)} == {"replica2"}
        parent.pinned.clear()
        assert {router.db_for_read(Article) for _ in range(20)} == {"replica2"}
