"""The example project, run as a real server over HTTP.

It has its own settings module, so it runs in a subprocess: once on its
embedded SQLite default, once on the real PostgreSQL primary and replicas.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgcluster import PgCluster, free_ports

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "example_project" / "manage.py"


class Example:
    """A running example project and a tiny HTTP client for it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_ports(1)[0]
        self.process: subprocess.Popen[bytes] | None = None
        self.opener = urllib.request.build_opener()

    def client(self) -> Example:
        """Return a client of the same server with its own cookie jar (a browser)."""
        other = Example.__new__(Example)
        other.env, other.port, other.process = self.env, self.port, None
        other.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        return other

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self) -> None:
        migrated = self.manage("migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stderr
        self.process = subprocess.Popen(
            [sys.executable, str(MANAGE), "runserver", f"127.0.0.1:{self.port}", "--noreload"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(self.process.stderr.read().decode())  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the example project did not start listening")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    def request(
        self, method: str, path: str, data: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], dict[str, object]]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", body, method=method)
        try:
            with self.opener.open(req, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())


def example_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
    env.update(extra)
    return env


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Example]:
    example = Example(example_env(EXAMPLE_SQLITE_PATH=str(tmp_path / "db.sqlite3")))
    example.start()
    yield example
    example.stop()


def test_embedded_default_writes_to_the_primary_and_reads_from_the_replica(
    embedded: Example,
) -> None:
    """With no environment, POST /notes/ creates a note and GET reads it via replica1."""
    status, _, created = embedded.request("POST", "/notes/", {"text": "hello"})
    assert (status, created) == (201, {"id": 1})
    status, headers, note = embedded.request("GET", "/notes/1/")
    assert (status, note) == (200, {"id": 1, "text": "hello"})
    assert headers["X-Routerkit-Database"] == "replica1"


def test_embedded_default_answers_bad_requests_clearly(embedded: Example) -> None:
    """A missing note is a 404 and a missing text a 400, both with a JSON error."""
    status, _, body = embedded.request("GET", "/notes/999/")
    assert (status, body) == (404, {"error": "not found"})
    status, _, body = embedded.request("POST", "/notes/", {"text": "  "})
    assert status == 400
    assert "text" in str(body["error"])


def test_embedded_default_passes_every_check(tmp_path: Path) -> None:
    """`manage.py check` reports nothing for the example project."""
    result = Example(example_env(EXAMPLE_SQLITE_PATH=str(tmp_path / "db.sqlite3"))).manage("check")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.fixture
def on_postgres(replication: PgCluster) -> Iterator[Example]:
    """The example project on the real primary and its two replicas."""
    replication.create_database("example")
    urls = [
        f"postgres://postgres@127.0.0.1:{node.port}/example"
        for node in [replication.primary, *replication.replicas]
    ]
    example = Example(example_env(DATABASE_URL=urls[0], DATABASE_REPLICA_URLS=",".join(urls[1:])))
    example.start()
    yield example
    example.stop()


def test_the_example_project_validates_clean(tmp_path: Path) -> None:
    """`manage.py routerkit_validate` finds nothing in the example project."""
    example = Example(example_env(EXAMPLE_SQLITE_PATH=str(tmp_path / "db.sqlite3")))
    result = example.manage("routerkit_validate", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("No findings.")


def test_the_broken_variant_reports_exactly_its_faults(tmp_path: Path) -> None:
    """example_project.settings_broken: E001 twice, E002 and W003, and exit status 1."""
    env = example_env(
        EXAMPLE_SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        DJANGO_SETTINGS_MODULE="example_project.settings_broken",
    )
    result = Example(env).manage("routerkit_validate", "--format", "json")
    assert result.returncode == 1, result.stderr
    found = sorted((f["id"], f["obj"]) for f in json.loads(result.stdout))
    assert found == [
        ("routerkit.E001", "admin.LogEntry.content_type"),
        ("routerkit.E001", "admin.LogEntry.user"),
        ("routerkit.E002", "django.contrib.admin"),
        ("routerkit.W003", "replica1"),
    ]


def test_on_real_replicas_reads_spread_and_writes_land_on_the_primary(
    replication: PgCluster, on_postgres: Example
) -> None:
    """Against PostgreSQL, notes are written to the primary and read from both replicas."""
    status, _, created = on_postgres.request("POST", "/notes/", {"text": "on postgres"})
    assert status == 201
    rows = replication.execute(
        "primary", "SELECT text FROM notes_note WHERE id = %s", [created["id"]], dbname="example"
    )
    assert rows == [("on postgres",)]
    for replica in replication.replicas:
        replication.wait_replayed(replica)
        replication.pause_replay(replica)
    served = set()
    for _ in range(30):
        status, headers, note = on_postgres.request("GET", f"/notes/{created['id']}/")
        assert (status, note["text"]) == (200, "on postgres")
        served.add(headers["X-Routerkit-Database"])
    assert served == {"replica1", "replica2"}


def test_no_client_ever_reads_stale_own_writes_while_replicas_pause_and_resume(
    replication: PgCluster, on_postgres: Example
) -> None:
    """Over HTTP, with replay paused and resumed at random, own writes are always found.

    Reads of other clients' older notes keep going to replicas meanwhile.
    """
    seed = [on_postgres.request("POST", "/notes/", {"text": "seed"})[2]["id"] for _ in range(5)]
    for replica in replication.replicas:
        replication.wait_replayed(replica)
    stop = threading.Event()
    stale: list[object] = []
    own: dict[str, int] = {}
    others: dict[str, int] = {}

    def chaos() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            for replica in ("replica1", "replica2"):
                if rng.random() < 0.5:
                    replication.pause_replay(replica)
                else:
                    replication.resume_replay(replica)
            stop.wait(0.15)

    def browse(client: Example) -> None:
        for number in range(25):
            status, _, created = client.request("POST", "/notes/", {"text": f"note {number}"})
            assert status == 201
            status, headers, _ = client.request("GET", f"/notes/{created['id']}/")
            if status != 200:
                stale.append(created["id"])
            own[headers["X-Routerkit-Database"]] = own.get(headers["X-Routerkit-Database"], 0) + 1
            status, headers, _ = client.request("GET", f"/notes/{random.choice(seed)}/")
            assert status == 200
            database = headers["X-Routerkit-Database"]
            others[database] = others.get(database, 0) + 1

    threads = [threading.Thread(target=chaos)] + [
        threading.Thread(target=browse, args=(on_postgres.client(),)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join(120)
    stop.set()
    threads[0].join(10)
    assert stale == []
    assert sum(own.values()) == 100
    assert others.get("replica1", 0) + others.get("replica2", 0) > 0
