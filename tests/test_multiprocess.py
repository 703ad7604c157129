"""Multiprocess mode: two gunicorn workers, one scrape sees both workers' decisions."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.example import MANAGE, ROOT, example_env
from tests.pgcluster import free_ports

READS = re.compile(
    r'^routerkit_route_decisions_total\{database="replica1",operation="read",reason="replica"\}'
    r" (\S+)$",
    re.MULTILINE,
)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[str]:
    """The example project under gunicorn with two sync workers and a multiprocess dir."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = example_env(
        EXAMPLE_SQLITE_PATH=str(tmp_path / "db.sqlite3"), PROMETHEUS_MULTIPROC_DIR=str(multiproc)
    )
    # Without the metrics directory: migrate's own decisions (counted outside any
    # scope) would add a third process's file.
    subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "--noinput"],
        env={k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        check=True,
        capture_output=True,
    )
    port = free_ports(1)[0]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "example_project.wsgi:application",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_a_scrape_counts_the_decisions_of_every_worker(gunicorn: str, tmp_path: Path) -> None:
    """200 reads served by two workers appear as 200 in whichever worker answers the scrape."""
    request = urllib.request.Request(f"{gunicorn}/notes/", data=b"text=hello", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: get(f"{gunicorn}/notes/1/"), range(200)))
    pids = {
        match.group(1)
        for path in (tmp_path / "prometheus").glob("counter_*.db")
        if (match := re.match(r"counter_(\d+)\.db", path.name))
    }
    assert len(pids) == 2, "both workers served reads"
    for _ in range(3):  # any worker may answer; each must see the total
        (value,) = READS.findall(get(f"{gunicorn}/metrics"))
        assert float(value) == 200
