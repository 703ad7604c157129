"""The example project, run as a real server over HTTP.

It has its own settings module, so it runs in a subprocess: once on its
embedded SQLite default, once on the real PostgreSQL primary and replicas.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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
            with urllib.request.urlopen(req, timeout=10) as response:
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


def test_on_real_replicas_reads_spread_and_writes_land_on_the_primary(
    replication: PgCluster,
) -> None:
    """Against PostgreSQL, notes are written to the primary and read from both replicas."""
    replication.create_database("example")
    urls = [
        f"postgres://postgres@127.0.0.1:{node.port}/example"
        for node in [replication.primary, *replication.replicas]
    ]
    example = Example(example_env(DATABASE_URL=urls[0], DATABASE_REPLICA_URLS=",".join(urls[1:])))
    example.start()
    try:
        status, _, created = example.request("POST", "/notes/", {"text": "on postgres"})
        assert status == 201
        rows = replication.execute(
            "primary",
            "SELECT text FROM notes_note WHERE id = %s",
            [created["id"]],
            dbname="example",
        )
        assert rows == [("on postgres",)]
        for replica in replication.replicas:
            replication.wait_replayed(replica)
            replication.pause_replay(replica)
        served = set()
        for _ in range(30):
            status, headers, note = example.request("GET", f"/notes/{created['id']}/")
            assert (status, note["text"]) == (200, "on postgres")
            served.add(headers["X-Routerkit-Database"])
        assert served == {"replica1", "replica2"}
    finally:
        example.stop()
