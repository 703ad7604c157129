"""The example project, run as a real server over HTTP.

It has its own settings module, so it runs in a subprocess: once on its
embedded SQLite default, once on the real PostgreSQL primary and replicas.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

from tests.example import Example, example_env
from tests.pgcluster import PgCluster


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
