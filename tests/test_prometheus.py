"""routerkit's metrics as Prometheus sees them: lint, a real scrape, the Grafana dashboard.

promtool and a real Prometheus server (Debian's `prometheus` package) check the
example project's /metrics; the dashboard's queries run on that server. A
missing promtool, Prometheus or PostgreSQL fails these tests, never skips them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from routerkit.metrics import Metrics
from tests.example import ROOT, Example, example_env
from tests.promserver import PromServer, PromServerError, sample_values

DASHBOARD = ROOT / "example_project" / "grafana" / "routerkit.json"
TOKEN = "s3cret"
GETS = 5
# Sample names a metric family of each type exposes (text format 0.0.4).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
# What Grafana puts in place of its variables when it sends a query.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "database": ".*",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
PROMQL_KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def metrics_page(
    example: Example, authorization: str | None = None
) -> tuple[int, dict[str, str], str]:
    """GET /metrics as raw text: (status, headers, body)."""
    request = urllib.request.Request(f"http://127.0.0.1:{example.port}/metrics")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package `prometheus`")
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called `name` in an exposition: sorted labels -> value."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def exported_names() -> set[str]:
    """Every sample name routerkit's metrics can expose."""
    registry = CollectorRegistry()
    Metrics(registry)
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])[A-Za-z_:][\w:]*", expr):
        followed_by = expr[match.end() :].lstrip()[:1]
        if followed_by != "(" and match.group().lower() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panels(panel) if "panels" in panel else ()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query in the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_metrics() -> set[str]:
    """Metric names the dashboard's templating variables query (label_values(metric, ...))."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        match
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
        for match in re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)", variable["definition"])
    }


def as_sent_by_grafana(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        return GRAFANA_VARIABLES.get(match.group(1) or match.group(2), match.group(0))

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def started(env: dict[str, str]) -> Example:
    example = Example(env)
    try:
        example.start()
    except BaseException:
        example.stop()
        raise
    return example


def open_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The embedded example's environment, with /metrics open unless `extra` says otherwise."""
    env = example_env(EXAMPLE_SQLITE_PATH=str(tmp / "db.sqlite3"))
    for key in ("METRICS_ALLOW", "METRICS_TOKEN"):
        env.pop(key, None)
    return {**env, **extra}


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The example project on its embedded SQLite default, with a note to read."""
    example = started(open_env(tmp_path_factory.mktemp("example")))
    try:
        status, _, created = example.request("POST", "/notes/", {"text": "scraped"})
        assert (status, created) == (201, {"id": 1})
        yield example
    finally:
        example.stop()


@pytest.fixture(scope="module")
def prometheus(example: Example) -> Iterator[PromServer]:
    """A real Prometheus server scraping the example project every second."""
    with PromServer([f"127.0.0.1:{example.port}"]) as server:
        yield server


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The example project with /metrics behind a bearer token."""
    example = started(open_env(tmp_path_factory.mktemp("guarded"), METRICS_TOKEN=TOKEN))
    yield example
    example.stop()


def read_notes(example: Example, times: int) -> None:
    for _ in range(times):
        status, headers, _ = example.request("GET", "/notes/1/")
        assert status == 200
        assert headers["X-Routerkit-Database"] == "replica1"


class TestExposition:
    def test_the_embedded_example_metrics_pass_promtool(self, example: Example) -> None:
        """After a write and some reads, `promtool check metrics` finds nothing in /metrics."""
        read_notes(example, GETS)
        status, _, text = metrics_page(example)
        assert status == 200
        checked = promtool_check(text)
        assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")

    def test_the_embedded_example_counts_reads_served_by_replica1(self, example: Example) -> None:
        """/metrics counts the GETs as reads routed to replica1 for reason replica."""
        read_notes(example, GETS)
        _, _, text = metrics_page(example)
        decisions = samples(text, "routerkit_route_decisions_total")
        labels = (("database", "replica1"), ("operation", "read"), ("reason", "replica"))
        assert decisions.get(labels, 0) >= GETS

    def test_on_postgres_metrics_pass_promtool_and_show_both_replicas(
        self,
        on_postgres: Example,
    ) -> None:
        """On real replicas, /metrics passes promtool and has lag and health for both."""
        browser = on_postgres.client()  # carries the token cookie: reads its own write
        status, _, created = browser.request("POST", "/notes/", {"text": "lint me"})
        assert status == 201
        for _ in range(GETS):
            assert browser.request("GET", f"/notes/{created['id']}/")[0] == 200
        wanted = {
            (name, replica)
            for name in ("lag_seconds", "lag_bytes", "healthy")
            for replica in ("replica1", "replica2")
        }
        deadline = time.monotonic() + 10
        while True:
            _, _, text = metrics_page(on_postgres)
            found = {
                (name, labels[0][1])
                for name in ("lag_seconds", "lag_bytes", "healthy")
                for labels in samples(text, f"routerkit_replica_{name}")
            }
            # The monitor refreshes once per interval: under load its first probes
            # (which also connect) may take longer than LAG.TIMEOUT and count as
            # unknown until the next refresh.
            all_healthy = set(samples(text, "routerkit_replica_healthy").values()) == {1.0}
            if (wanted <= found and all_healthy) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        checked = promtool_check(text)
        assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
        assert wanted - found == set()
        healthy = samples(text, "routerkit_replica_healthy")
        assert healthy == {(("database", "replica1"),): 1.0, (("database", "replica2"),): 1.0}


class TestScrape:
    def test_a_real_prometheus_scrapes_the_read_decisions(
        self, example: Example, prometheus: PromServer
    ) -> None:
        """Prometheus scrapes the example (up is 1) and sums at least as many reads as GETs."""
        read_notes(example, GETS)
        prometheus.wait_for('up{job="routerkit"}', lambda r: sample_values(r) == [1.0])
        reads = prometheus.wait_for(
            'sum(routerkit_route_decisions_total{operation="read"})',
            lambda r: bool(r) and sample_values(r)[0] >= GETS,
        )
        assert sample_values(reads)[0] >= GETS


class TestDashboard:
    def test_every_panel_query_is_accepted_by_prometheus(self, prometheus: PromServer) -> None:
        """Each dashboard query, with Grafana's variables filled in, evaluates without error."""
        queries = dashboard_queries()
        assert len(queries) >= 10
        refused = []
        for title, expr in queries:
            sent = as_sent_by_grafana(expr)
            assert "$" not in sent, f"{title}: unknown Grafana variable in {expr!r}"
            try:
                prometheus.query(sent)
            except PromServerError as error:
                refused.append(f"{title}: {error}")
        assert not refused, "\n".join(refused)

    def test_every_metric_the_dashboard_uses_is_one_routerkit_exports(self) -> None:
        """No panel or variable references a metric name missing from routerkit.metrics."""
        used = {name: title for title, expr in dashboard_queries() for name in metric_names(expr)}
        used |= dict.fromkeys(variable_metrics(), "templating")
        assert set(used) >= {"routerkit_route_decisions_total", "routerkit_replica_healthy"}
        unknown = {name: title for name, title in used.items() if name not in exported_names()}
        assert unknown == {}, f"not in routerkit.metrics: {sorted(exported_names())}"

    def test_the_name_check_sees_through_promql(self) -> None:
        """metric_names ignores functions, labels, ranges, strings and grouping clauses."""
        expr = (
            "histogram_quantile(0.95, sum by (database, le) (rate(routerkit_probe_x_bucket"
            '{database=~"$database", reason="a b"}[$__rate_interval] offset 5m))) > bool 1e3'
            " / on (database) group_left routerkit_typo"
        )
        assert metric_names(expr) == {"routerkit_probe_x_bucket", "routerkit_typo"}

    def test_every_panel_uses_the_importable_datasource(self) -> None:
        """Panels and queries use ${DS_PROMETHEUS}, declared as an import input and a variable."""
        dashboard = json.loads(DASHBOARD.read_text())
        assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["DS_PROMETHEUS"]["type"] == "datasource"
        wanted = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        for panel in panels(dashboard):
            if panel["type"] != "row":
                assert panel["datasource"] == wanted, panel["title"]
                assert all(t["datasource"] == wanted for t in panel["targets"]), panel["title"]


class TestAccessControl:
    def test_without_a_token_metrics_answer_401_with_a_challenge(self, guarded: Example) -> None:
        """No Authorization header: 401 with WWW-Authenticate: Bearer, and no token shown."""
        status, headers, body = metrics_page(guarded)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in body

    def test_a_wrong_token_is_refused(self, guarded: Example) -> None:
        """Other tokens, a prefix of the token and the token under another scheme get 401."""
        for authorization in ("Bearer wrong", "Bearer s3cre", f"Bearer {TOKEN}x", f"Basic {TOKEN}"):
            status, _, body = metrics_page(guarded, authorization)
            assert status == 401, authorization
            assert TOKEN not in body

    def test_the_right_token_gets_the_metrics(self, guarded: Example) -> None:
        """Authorization: Bearer <token> gets 200 and the exposition, without the token in it."""
        status, _, body = metrics_page(guarded, f"Bearer {TOKEN}")
        assert status == 200
        assert "# TYPE routerkit_route_decisions_total counter" in body
        assert TOKEN not in body

    def test_an_address_outside_the_allowlist_is_forbidden(self, tmp_path: Path) -> None:
        """With METRICS_ALLOW=10.0.0.0/8, 127.0.0.1 gets 403, even with the right token."""
        env = open_env(tmp_path, METRICS_ALLOW="10.0.0.0/8", METRICS_TOKEN=TOKEN)
        example = started(env)
        try:
            status, _, body = metrics_page(example, f"Bearer {TOKEN}")
        finally:
            example.stop()
        assert status == 403
        assert TOKEN not in body
