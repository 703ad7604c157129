# mypy: disallow-untyped-decorators=False
# (Celery has no type hints, so @app.task is an untyped decorator.)
"""routerkit.celery with a real Celery worker against real PostgreSQL replication.

Tasks go through Celery's whole publishing path (in-memory broker) to a worker
running in a thread of this process, and read through the routers there. As in
test_replication.py, replay is paused on both replicas, so a task that finds a
row committed just before it was enqueued read it from the primary.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import celery.worker.state  # type: ignore[import-untyped]
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker  # type: ignore[import-untyped]
from celery.result import AsyncResult  # type: ignore[import-untyped]
from celery.signals import after_task_publish  # type: ignore[import-untyped]
from django.db import connections

import routerkit
import routerkit.celery
from routerkit import consistency, stats
from routerkit.celery import HEADER
from routerkit.conf import get_config
from routerkit.health import get_monitor
from tests.pgcluster import PgCluster
from tests.testapp.models import Article

REPLICAS = ("replica1", "replica2")
TIMEOUT = 10  # seconds; a task normally completes in milliseconds
POLL = 0.01  # how often a result is looked for (Celery's default, 0.5 s, would dominate)

app = Celery("routerkit_tests", broker="memory://", backend="cache+memory://")
# The in-memory transport polls its queues; the default second would dominate.
app.conf.broker_transport_options = {"polling_interval": 0.01}

_gate = threading.Event()


@app.task
def read_article(pk: int) -> tuple[bool, str | None]:
    """Read an article by pk in the worker; say whether it was found, and where."""
    try:
        article = Article.objects.filter(pk=pk).first()
        return article is not None, article._state.db if article is not None else None
    finally:
        connections.close_all()  # this worker thread's connections


@app.task
def hold_the_worker() -> None:
    """Keep the worker's only thread busy until the test opens the gate."""
    _gate.wait(TIMEOUT)


@app.task
def write_then_fail(title: str) -> None:
    """Write, then raise, as a task that fails halfway does."""
    try:
        Article.objects.create(title=title)
        raise RuntimeError("task failed on purpose")
    finally:
        connections.close_all()


@app.task
def nothing() -> None:
    """Do nothing (a message to wake the worker up with)."""


@app.task(bind=True)
def scopes_left_open(self: Any) -> list[str]:
    """Return the ids of the tasks whose scopes are open, this one excluded."""
    return [task_id for task_id, _ in list(routerkit.celery._active) if task_id != self.request.id]


@pytest.fixture(scope="module")
def worker() -> Iterator[None]:
    """Run one worker for the whole module (it takes a moment to start and stop).

    One thread: tasks run one after the other, in the same thread, as they do
    in each thread of a production worker.
    """
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False):
        yield
        # Stopping waits for the worker's blocking reads of the broker (2 s
        # each, twice: the read under way, then one last read after it has
        # seen the request to stop). Ask it to stop now, and give each of those
        # reads a message so that it returns at once.
        celery.worker.state.should_terminate = 0
        nothing.delay()
        nothing.delay()


@pytest.fixture
def installed(worker: None) -> Iterator[None]:
    """Connect routerkit's receivers for one test."""
    routerkit.celery.install()
    try:
        yield
    finally:
        routerkit.celery.uninstall()


@pytest.fixture
def paused(replication: PgCluster) -> PgCluster:
    """Pause replay on both replicas (restored by the replication fixture)."""
    for replica in REPLICAS:
        replication.pause_replay(replica)
    return replication


@pytest.fixture
def sent_tokens() -> Iterator[dict[str, str | None]]:
    """Record the token header of every message published, by task id."""
    sent: dict[str, str | None] = {}

    def record(headers: dict[str, Any], **kwargs: Any) -> None:
        sent[headers["id"]] = headers.get(HEADER)

    after_task_publish.connect(record, weak=False, dispatch_uid="tests.sent_tokens")
    try:
        yield sent
    finally:
        after_task_publish.disconnect(record, dispatch_uid="tests.sent_tokens")


def outcome(result: AsyncResult) -> tuple[Any, ...]:
    # The result went through JSON, which turned the task's tuple into a list.
    return tuple(result.get(timeout=TIMEOUT, interval=POLL))


def test_a_task_enqueued_after_a_write_reads_it_from_the_primary(
    paused: PgCluster, installed: None
) -> None:
    """With both replicas paused, the task reads the row its publisher wrote, from the primary."""
    with routerkit.consistency_scope():
        article = Article.objects.create(title="queued")
        result = read_article.delay(article.pk)
    assert outcome(result) == (True, "primary")


def test_a_task_reads_a_replica_once_it_has_replayed_the_write(
    paused: PgCluster, installed: None, sent_tokens: dict[str, str | None]
) -> None:
    """The token keeps a task on the primary only until a replica has replayed the write."""
    monitor = get_monitor(get_config())
    # Until the monitor has probed once, nothing says the primary has WAL
    # positions, and tokens hold reads on the primary for STICKY["WINDOW"].
    monitor.refresh()
    _gate.clear()
    hold_the_worker.delay()  # the read below starts only after the replicas caught up
    try:
        with routerkit.consistency_scope():
            article = Article.objects.create(title="queued")
            result = read_article.delay(article.pk)
        for replica in REPLICAS:
            paused.resume_replay(replica)
            paused.wait_replayed(replica)
        monitor.refresh()
    finally:
        _gate.set()
    token = sent_tokens[result.id]
    assert token is not None
    assert consistency.decode(token, get_config())["primary"].lsn is not None
    found, alias = outcome(result)
    assert found
    assert alias in REPLICAS


def test_without_install_the_task_reads_a_stale_replica(
    paused: PgCluster, worker: None, sent_tokens: dict[str, str | None]
) -> None:
    """Without the integration no token travels and the task misses the row on a replica."""
    routerkit.celery.uninstall()  # in case something else installed it
    with routerkit.consistency_scope():
        article = Article.objects.create(title="queued")
        result = read_article.delay(article.pk)
    assert sent_tokens[result.id] is None
    assert outcome(result) == (False, None)


def test_a_tampered_token_is_ignored_and_the_task_still_runs(
    paused: PgCluster, installed: None
) -> None:
    """A task with a forged token runs in a fresh scope (a replica read), and it is counted."""
    rejected = stats.get("token_rejected", "tampered")
    with routerkit.consistency_scope():
        article = Article.objects.create(title="queued")
        token = routerkit.capture_token()
        assert token is not None
        forged = ("A" if token[0] != "A" else "B") + token[1:]
        result = read_article.apply_async((article.pk,), headers={HEADER: forged})
    assert outcome(result) == (False, None)
    assert stats.get("token_rejected", "tampered") == rejected + 1


def test_a_token_captured_earlier_can_be_passed_as_headers(
    paused: PgCluster, installed: None
) -> None:
    """routerkit_token_headers() carries a write to a task published from another scope."""
    with routerkit.consistency_scope():
        article = Article.objects.create(title="queued")
        headers = routerkit.celery.routerkit_token_headers()
    with routerkit.consistency_scope():  # say, a thread of the request's own
        result = read_article.apply_async((article.pk,), headers=headers)
    assert outcome(result) == (True, "primary")


def test_a_failing_task_closes_its_scope(replication: PgCluster, installed: None) -> None:
    """A task that raises leaves no scope open behind it in the worker."""
    with pytest.raises(RuntimeError, match="on purpose"):
        write_then_fail.delay("doomed").get(timeout=TIMEOUT, interval=POLL)
    # The next task in the same thread runs after the failed one's task_postrun.
    assert scopes_left_open.delay().get(timeout=TIMEOUT, interval=POLL) == []


def test_an_eager_task_runs_in_its_callers_scope(paused: PgCluster, installed: None) -> None:
    """apply() runs the task within its caller's unit of work, which has just written."""
    with routerkit.consistency_scope():
        article = Article.objects.create(title="eager")
        result = read_article.apply((article.pk,))
    assert tuple(result.get()) == (True, "primary")
