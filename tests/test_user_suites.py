"""Users' own test runs: Django's runner and pytest-django over the example project's tests.

routerkit's own suite builds its test databases itself; a user's project lets
Django do it, and Django must be able to drop them at the end while
routerkit's health probes are connected.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.example import MANAGE, ROOT, example_env
from tests.pgcluster import PgCluster

RUNNERS = {
    "manage.py test": [sys.executable, str(MANAGE), "test", "example_project", "--noinput"],
    "pytest-django": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
}
TESTS_IN_THE_EXAMPLE = 10


def run(runner: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        RUNNERS[runner],
        cwd=ROOT / "example_project",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def ran(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


@pytest.mark.parametrize("runner", RUNNERS)
def test_on_postgres_with_real_replicas(runner: str, replication: PgCluster) -> None:
    """Both runners pass on a primary with two streaming replicas and drop their databases."""
    replication.create_database("example")
    urls = [
        f"postgres://postgres@127.0.0.1:{node.port}/example"
        for node in [replication.primary, *replication.replicas]
    ]
    env = example_env(DATABASE_URL=urls[0], DATABASE_REPLICA_URLS=",".join(urls[1:]))
    result = run(runner, env)
    assert result.returncode == 0, ran(result)
    assert f"{TESTS_IN_THE_EXAMPLE} passed" in ran(result) or (
        f"Ran {TESTS_IN_THE_EXAMPLE} tests" in ran(result)
    )
    leftovers = replication.execute(
        "primary", "SELECT datname FROM pg_database WHERE datname LIKE 'test%%example%%'"
    )
    assert leftovers == []


@pytest.mark.parametrize("runner", RUNNERS)
def test_on_the_embedded_sqlite_default(runner: str, tmp_path: Path) -> None:
    """Both runners pass on the embedded SQLite default and its mirror replica."""
    result = run(runner, example_env(EXAMPLE_SQLITE_PATH=str(tmp_path / "db.sqlite3")))
    assert result.returncode == 0, ran(result)
    assert not list(tmp_path.glob("test_*"))
