"""Fault injection under load: a real HTTP server, browser-like clients, a real cluster.

Shared by the fault-injection tests (tests/test_faults.py) and the script that
writes their figures into the README (benchmarks/faults.py). The server is
Django's threaded WSGI server (the one LiveServerTestCase uses) in this
process, so each request goes through Django's whole request cycle (a new
database connection per request, as with the default CONN_MAX_AGE), and the
health monitor the requests use can be watched directly.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.test import override_settings

from routerkit.conf import get_config
from routerkit.health import get_monitor
from tests.pgcluster import PgCluster
from tests.settings import ROUTERKIT

REPLICAS = ("replica1", "replica2")
INTERVAL = 1.0
TIMEOUT = 0.2
MAX_SECONDS = 1.0
# What the fault suite runs routerkit with: a fast interval keeps it short.
SETTINGS = {
    **ROUTERKIT,
    "LAG": {"INTERVAL": INTERVAL, "TIMEOUT": TIMEOUT, "MAX_SECONDS": MAX_SECONDS},
    "RETRY_AFTER": 1,
}
# tests/settings.py gives every connection connect_timeout=2.
CONNECT_TIMEOUT = 2.0
CLIENTS = 6
WRITE_SHARE = 0.2
REQUEST_TIMEOUT = 15.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Server:
    """The test project's URLs served over HTTP on 127.0.0.1 from this process."""

    def __init__(self) -> None:
        self.httpd = ThreadedWSGIServer(("127.0.0.1", 0), _QuietHandler, allow_reuse_address=False)
        self.httpd.set_app(get_wsgi_application())
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@dataclass(frozen=True)
class Outcome:
    at: float  # time.monotonic() when the request was sent
    kind: str  # "read" or "write"
    status: int  # 0: no HTTP answer (connection error or timeout)
    seconds: float
    db: str | None  # the database that served it
    stale: bool = False  # a read of the client's own write that did not find it


class Load:
    """Browser-like clients: each writes now and then, and reads back what it wrote."""

    def __init__(self, port: int, clients: int = CLIENTS, write_share: float = WRITE_SHARE) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.clients = clients
        self.write_share = write_share
        self.outcomes: list[Outcome] = []
        self.writing = threading.Event()
        self.writing.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT + 5)

    def _client(self, number: int) -> None:
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        rng = random.Random(number)
        mine: int | None = None
        while not self._stop.is_set():
            if mine is None or (self.writing.is_set() and rng.random() < self.write_share):
                if not self.writing.is_set():
                    time.sleep(0.01)
                    continue
                outcome, body = self._send(opener, "write", "/articles/", {"title": "load"})
                if outcome.status == 200 and body is not None:
                    mine = int(body["id"])
            else:
                outcome, body = self._send(opener, "read", f"/articles/{mine}/")
                if outcome.status == 404:
                    outcome = Outcome(**{**outcome.__dict__, "stale": True})
            with self._lock:
                self.outcomes.append(outcome)

    def _send(
        self,
        opener: urllib.request.OpenerDirector,
        kind: str,
        path: str,
        data: dict[str, str] | None = None,
    ) -> tuple[Outcome, dict[str, object] | None]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, body)
        started = time.monotonic()
        status, payload = 0, None
        try:
            with opener.open(request, timeout=REQUEST_TIMEOUT) as response:
                status, payload = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status = error.code
            with contextlib.suppress(Exception):
                payload = json.loads(error.read())
        except OSError:
            pass
        db = payload.get("db") if isinstance(payload, dict) else None
        outcome = Outcome(started, kind, status, time.monotonic() - started, db)
        return outcome, payload


class Watcher:
    """Record when each replica enters and leaves the read rotation (every 5 ms)."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        last: frozenset[str] | None = None
        monitor = get_monitor(get_config())
        while not self._stop.is_set():
            # A site's steady traffic starts units of work all the time, and
            # each refreshes a snapshot that is due. Six clients can all be
            # held at once by a slow replica (a new connection through the
            # throttle takes seconds), and then none would start: the watcher
            # stands for the rest of the traffic.
            monitor.refresh_if_due()
            usable = frozenset(monitor.snapshot.usable.get("primary", ()))
            if usable != last:
                self.changes.append((time.monotonic(), usable))
                last = usable
            time.sleep(0.005)

    def first(self, after: float, test: Callable[[frozenset[str]], bool]) -> float | None:
        """Seconds from `after` until the rotation first passed `test`, if it did."""
        if self.usable_at(after) is not None and test(self.usable_at(after)):  # type: ignore[arg-type]
            return 0.0
        for when, usable in self.changes:
            if when >= after and test(usable):
                return when - after
        return None

    def usable_at(self, moment: float) -> frozenset[str] | None:
        current = None
        for when, usable in self.changes:
            if when > moment:
                break
            current = usable
        return current


class Throttle:
    """A TCP proxy in front of one server that can delay everything it forwards.

    Loopback has no netem here: this stands for a slow network between the
    application and one replica.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.listener.close()


@contextlib.contextmanager
def _no_setup(cluster: PgCluster) -> Iterator[None]:
    yield


@dataclass
class Fault:
    """One fault: how to cause it and heal it, and what it takes out of the rotation."""

    name: str
    inject: Callable[[PgCluster], None]
    heal: Callable[[PgCluster], None]
    excludes: tuple[str, ...] = ()  # replicas it takes out of the rotation
    stops_writes: bool = False  # writes cannot succeed while it lasts
    # The limit crossed some time after injecting (lag): exclusion is timed from it.
    exclusion_delay: float = 0.0
    # Around the whole run, before the load starts.
    setup: Callable[[PgCluster], contextlib.AbstractContextManager[None]] = _no_setup


@dataclass
class Figures:
    name: str
    reads: int = 0
    writes: int = 0
    failed_reads: int = 0
    failed_writes: int = 0
    stale_reads: int = 0
    slowest_failed_write: float | None = None
    exclusion: float | None = None  # seconds from fault (or limit) to out of rotation
    rejoin: float | None = None  # seconds from healed to back in rotation
    outcomes: list[Outcome] = field(default_factory=list, repr=False)


WARMUP = 1.0
# Long enough for every process's snapshot to hold replica positions past the
# last write: one refresh (INTERVAL with jitter, then TIMEOUT).
PAUSE_BEFORE = INTERVAL * 1.2 + TIMEOUT + 0.1
DURATION = 2.5
# After healing: long enough to see a replica rejoin within two intervals.
RECOVERY = 4 * INTERVAL + 1.0


def run(cluster: PgCluster, fault: Fault) -> Figures:
    """Put the cluster under load, inject the fault, heal it, and measure."""
    with (
        override_settings(ROUTERKIT=SETTINGS),
        fault.setup(cluster),
        Server() as server,
        Watcher() as watcher,
    ):
        _wait_all_usable()
        with Load(server.port) as load:
            time.sleep(WARMUP)
            if fault.stops_writes:
                # A client whose last write is newer than the replicas' positions
                # as last probed reads the primary, which cannot answer: a 503 by
                # design (see the README). Writers pause for a refresh first.
                load.writing.clear()
                time.sleep(PAUSE_BEFORE)
            injected = time.monotonic()
            fault.inject(cluster)
            if fault.stops_writes:
                load.writing.set()  # writes meet the fault: they must fail fast
            time.sleep(DURATION)
            if fault.stops_writes:
                load.writing.clear()
            fault.heal(cluster)
            healed = time.monotonic()
            load.writing.set()
            time.sleep(RECOVERY)
        return _figures(fault, load.outcomes, watcher, injected, healed)


def _wait_all_usable(timeout: float = 30.0) -> None:
    monitor = get_monitor(get_config())
    deadline = time.monotonic() + timeout
    while set(monitor.refresh().usable.get("primary", ())) != set(REPLICAS):
        assert time.monotonic() < deadline, "the replicas never came into rotation"
        time.sleep(0.05)


def _figures(
    fault: Fault, outcomes: list[Outcome], watcher: Watcher, injected: float, healed: float
) -> Figures:
    figures = Figures(fault.name, outcomes=outcomes)
    failed_writes = []
    for outcome in outcomes:
        if outcome.kind == "read":
            figures.reads += 1
            figures.stale_reads += outcome.stale
            figures.failed_reads += outcome.status != 200 and not outcome.stale
        else:
            figures.writes += 1
            if outcome.status != 200:
                failed_writes.append(outcome)
    figures.failed_writes = len(failed_writes)
    if failed_writes:
        figures.slowest_failed_write = max(o.seconds for o in failed_writes)
    if fault.excludes:
        gone = set(fault.excludes)
        limit = injected + fault.exclusion_delay
        figures.exclusion = watcher.first(limit, lambda usable: not usable & gone)
        figures.rejoin = watcher.first(healed, lambda usable: gone <= usable)
    return figures


def _stop(*nodes: str, mode: str = "immediate") -> Callable[[PgCluster], None]:
    def stop(cluster: PgCluster) -> None:
        for node in nodes:
            cluster.stop_node(node, mode=mode)

    return stop


def _start(*nodes: str) -> Callable[[PgCluster], None]:
    def start(cluster: PgCluster) -> None:
        for node in nodes:
            cluster.start_node(node)

    return start


class _SlowNetwork:
    """replica1 reached through a Throttle; the fault delays it past the probe timeout."""

    DELAY = 0.3  # per chunk each way: a query's round trip takes 0.6 s

    def __init__(self) -> None:
        self.throttle: Throttle | None = None

    @contextlib.contextmanager
    def setup(self, cluster: PgCluster) -> Iterator[None]:
        # Every connection and probe reads this dict (Django shares one per alias).
        settings_dict = settings.DATABASES["replica1"]
        port = settings_dict["PORT"]
        self.throttle = Throttle(cluster.node("replica1").port)
        settings_dict["PORT"] = self.throttle.port
        try:
            yield
        finally:
            settings_dict["PORT"] = port
            self.throttle.close()

    def inject(self, cluster: PgCluster) -> None:
        assert self.throttle is not None
        self.throttle.delay = self.DELAY

    def heal(self, cluster: PgCluster) -> None:
        assert self.throttle is not None
        self.throttle.delay = 0.0


_slow = _SlowNetwork()

FAULTS = [
    Fault("replica crash", _stop("replica1"), _start("replica1"), excludes=("replica1",)),
    Fault(
        "replica restart",
        _stop("replica1", mode="fast"),
        _start("replica1"),
        excludes=("replica1",),
    ),
    Fault("both replicas down", _stop(*REPLICAS), _start(*REPLICAS), excludes=REPLICAS),
    Fault("primary down", _stop("primary"), _start("primary"), stops_writes=True),
    Fault(
        "primary frozen",
        lambda cluster: cluster.freeze("primary"),
        lambda cluster: cluster.thaw("primary"),
        stops_writes=True,
    ),
    Fault(
        "replay paused",
        lambda cluster: cluster.pause_replay("replica1"),
        lambda cluster: cluster.resume_replay("replica1"),
        excludes=("replica1",),
        exclusion_delay=MAX_SECONDS,
    ),
    Fault(
        "network-slow replica",
        _slow.inject,
        _slow.heal,
        excludes=("replica1",),
        setup=_slow.setup,
    ),
]
