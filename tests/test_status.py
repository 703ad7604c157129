"""manage.py routerkit_status against the real primary and replicas."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from prometheus_client import CollectorRegistry, Counter, generate_latest

from routerkit import consistency_scope
from tests.pgcluster import PgCluster, free_ports
from tests.settings import ROUTERKIT
from tests.testapp.models import Article

ROOT = Path(__file__).resolve().parent.parent
CLEAR = "\x1b[H\x1b[2J"
LSN = re.compile(r"^[0-9A-F]+/[0-9A-F]+$")
TOKEN = "s3cret-token-for-tests"


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("routerkit_status", *args, stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


def status(*args: str) -> dict[str, Any]:
    code, out = run("--format", "json", *args)
    assert code == 0, out
    report: dict[str, Any] = json.loads(out)
    return report


def replicas(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alias"]: r for cluster in report["clusters"] for r in cluster["replicas"]}


def rows(text: str) -> dict[str, list[str]]:
    """Table rows of the text report, by database alias."""
    found = {}
    for line in text.splitlines():
        if line.startswith("  ") and not line.lstrip().startswith("DATABASE"):
            cells = line.split()
            found[cells[0]] = cells
    return found


class _Exposition(BaseHTTPRequestHandler):
    body = b""
    code = 200
    authorization: list[str | None] = []

    def do_GET(self) -> None:
        self.authorization.append(self.headers.get("Authorization"))
        self.send_response(self.code)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


def serve(body: bytes, code: int = 200) -> Iterator[tuple[str, list[str | None]]]:
    authorization: list[str | None] = []
    handler = type(
        "Handler", (_Exposition,), {"body": body, "code": code, "authorization": authorization}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", authorization
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, list[str | None]]]:
    """A /metrics that reports 7 reads on replica1, 5 on replica2 and 3 writes on primary."""
    exposed = CollectorRegistry()
    counter = Counter(
        "routerkit_route_decisions",
        "Routing decisions.",
        ["operation", "database", "reason"],
        registry=exposed,
    )
    counter.labels("read", "replica1", "replica").inc(7)
    counter.labels("read", "replica2", "replica").inc(5)
    counter.labels("read", "primary", "written").inc(2)
    counter.labels("write", "primary", "primary").inc(3)
    yield from serve(generate_latest(exposed))


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, list[str | None]]]:
    """A /metrics that answers 401 to every request."""
    yield from serve(b"Unauthorized\n", code=401)


def test_text_lists_every_cluster_and_healthy_replica(replication: PgCluster) -> None:
    """The text report has a section per cluster and a healthy row with a position per replica."""
    code, out = run()
    assert code == 0
    assert out.startswith("routerkit_status at ")
    assert "Cluster 'primary': primary WAL at " in out
    assert "Cluster 'billing': primary WAL at " in out
    table = rows(out)
    for alias in ("replica1", "replica2", "billing_replica"):
        _, state, healthy, _, _, position, *_ = table[alias]
        assert (state, healthy) == ("healthy", "yes")
        assert LSN.match(position)
    assert table["primary"][1] == "primary"


def test_a_paused_replica_shows_its_lag_in_bytes(replication: PgCluster) -> None:
    """Writes behind a paused replica are lag in bytes; the replica that replayed them has none."""
    replication.pause_replay("replica1")
    replication.execute(
        "primary",
        "INSERT INTO testapp_counter (name) SELECT 'x' FROM generate_series(1, 500)",
        dbname="routerkit",
    )
    replication.wait_replayed("replica2")
    found = replicas(status())
    assert found["replica1"]["lag_bytes"] > 0
    assert found["replica2"]["lag_bytes"] == 0


def test_a_stopped_replica_is_down(replication: PgCluster) -> None:
    """A replica that cannot be reached is down and not healthy."""
    replication.stop_node("replica2")
    found = replicas(status())["replica2"]
    assert (found["state"], found["healthy"]) == ("down", False)


def test_decisions_so_far_in_this_process(
    replication: PgCluster, registry: CollectorRegistry, all_replicas_healthy: None
) -> None:
    """Without a metrics source, the reads routed in this process are counted per replica."""
    for _ in range(3):
        with consistency_scope(isolated=True):
            list(Article.objects.all()[:1])
    report = status()
    assert report["decisions_from"] == "(this process only)"
    found = replicas(report)
    reads = {alias: sum(found[alias]["decisions"].values()) for alias in ("replica1", "replica2")}
    assert sum(reads.values()) == 3
    assert found["billing_replica"]["decisions"] == {}


def test_metrics_url_supplies_the_decisions(
    replication: PgCluster, metrics_server: tuple[str, list[str | None]]
) -> None:
    """--metrics-url reads a server's counts, sending --metrics-token as a bearer token."""
    url, authorization = metrics_server
    report = status("--metrics-url", url, "--metrics-token", TOKEN)
    assert authorization == [f"Bearer {TOKEN}"]
    (cluster,) = [c for c in report["clusters"] if c["primary"] == "primary"]
    assert cluster["decisions"] == {"read": {"written": 2}, "write": {"primary": 3}}
    found = replicas(report)
    assert (found["replica1"]["decisions"], found["replica2"]["decisions"]) == (
        {"replica": 7},
        {"replica": 5},
    )
    assert rows(run("--metrics-url", url)[1])["primary"][-1] == "5"


def test_an_unreachable_metrics_url_is_a_one_line_error(replication: PgCluster) -> None:
    """A metrics URL nobody answers is one error line in the report, and still exit 0."""
    url = f"http://127.0.0.1:{free_ports(1)[0]}/metrics"
    code, out = run("--metrics-url", url)
    assert code == 0
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert url in errors[0]
    assert "Traceback" not in out
    assert rows(out)["replica1"][-1] == "?"


def test_the_metrics_token_is_never_printed(
    replication: PgCluster, refusing_server: tuple[str, list[str | None]]
) -> None:
    """A refused scrape reports the HTTP status, never the token."""
    url, _ = refusing_server
    code, out = run("--metrics-url", url, "--metrics-token", TOKEN)
    assert code == 0
    assert "HTTP 401" in out
    assert TOKEN not in out


def test_credentials_in_the_metrics_url_are_a_usage_error() -> None:
    """A metrics URL with a user and password in it exits 2 without repeating them."""
    with pytest.raises(CommandError) as raised:
        call_command(
            "routerkit_status", "--metrics-url", "http://scraper:hunter2@127.0.0.1/metrics"
        )
    assert raised.value.returncode == 2
    assert "hunter2" not in str(raised.value)


def test_decisions_from_the_multiprocess_directory(replication: PgCluster, tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, the decisions are the sum of every process's files."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "ROUTERKIT_TEST_PG_PORTS": ",".join(str(port) for port in settings.PG_PORTS),
        "PYTHONPATH": str(ROOT),
    }
    # Two "workers", each counting four reads on replica1 into its own file.
    worker = (
        "from prometheus_client import CollectorRegistry, Counter\n"
        "Counter('routerkit_route_decisions', 'd', ['operation', 'database', 'reason'],"
        " registry=CollectorRegistry()).labels('read', 'replica1', 'replica').inc(4)"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, cwd=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "django", "routerkit_status", "--format", "json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["decisions_from"] == "from PROMETHEUS_MULTIPROC_DIR"
    assert replicas(report)["replica1"]["decisions"] == {"replica": 8}


def test_watch_redraws_each_frame(replication: PgCluster) -> None:
    """--watch --count 2 prints two frames, each starting with clear-screen-and-home."""
    code, out = run("--watch", "--count", "2", "--interval", "0.05")
    assert code == 0
    assert out.startswith(CLEAR)
    frames = out.split(CLEAR)[1:]
    assert len(frames) == 2
    assert all(frame.startswith("routerkit_status at ") for frame in frames)


def test_watch_with_json_prints_one_object_per_line(replication: PgCluster) -> None:
    """--watch --format json prints one JSON object per frame and line, with no ANSI codes."""
    code, out = run("--watch", "--count", "2", "--interval", "0.05", "--format", "json")
    assert code == 0
    assert "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == 2
    assert all(set(json.loads(line)) >= {"time", "clusters"} for line in lines)


def test_a_negative_interval_is_a_usage_error() -> None:
    """--interval below zero exits 2."""
    assert run("--watch", "--interval", "-1")[0] == 2


@override_settings(ROUTERKIT={**ROUTERKIT, "REPLICAS": {}})
def test_no_replicas_is_one_line() -> None:
    """Without any replica there is nothing to show: one line saying so, and exit 0."""
    code, out = run()
    assert code == 0
    assert out.count("\n") == 1
    assert out.startswith("No cluster has replicas")
