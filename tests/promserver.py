"""A throwaway Prometheus server that scrapes given targets, for routerkit's metrics tests.

Self-contained (stdlib only, plus ``free_ports``) so it can be driven by hand::

    with PromServer(["127.0.0.1:8000"]) as prom:
        prom.wait_for("up", lambda result: result and result[0]["value"][1] == "1")
        print(prom.query('sum(routerkit_route_decisions_total{operation="read"})'))

It listens on 127.0.0.1 only, scrapes ``/metrics`` every second and keeps its
data in a private temporary directory that ``stop()`` removes. A missing
binary or a server that does not become ready raises ``PromServerError`` (with
the tail of its log): tests that need Prometheus fail, they never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.pgcluster import free_ports

__all__ = ["PromServer", "PromServerError", "find_prometheus", "sample_values"]

LOG_TAIL_LINES = 30
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
POLL_INTERVAL = 0.1

Result = list[dict[str, Any]]


class PromServerError(RuntimeError):
    """Prometheus could not start, or a query failed; the message says why."""


def find_prometheus() -> str:
    """Return the prometheus binary: $PROMETHEUS_BIN, else the one on PATH."""
    binary = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not binary or not os.access(binary, os.X_OK):
        raise PromServerError(
            "the prometheus binary was not found (set PROMETHEUS_BIN or install the Debian "
            "package `prometheus`; tests/run.sh does)"
        )
    return binary


def sample_values(result: Result) -> list[float]:
    """The values of an instant-vector query result, in result order."""
    return [float(sample["value"][1]) for sample in result]


class PromServer:
    """A Prometheus server on 127.0.0.1 scraping `targets` ("host:port") at /metrics."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        scrape_interval: str = "1s",
        metrics_path: str = "/metrics",
        start_timeout: float = 30.0,
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.metrics_path = metrics_path
        self.start_timeout = start_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.directory: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None, "the server has not been started"
        return self.directory / "prometheus.log"

    # -- life cycle -------------------------------------------------------

    def start(self) -> PromServer:
        binary = find_prometheus()
        self.directory = Path(tempfile.mkdtemp(prefix="routerkit-prometheus-"))
        try:
            config = self.directory / "prometheus.yml"
            # JSON is YAML: no YAML library needed.
            config.write_text(json.dumps(self._config(), indent=2))
            for attempt in range(1, START_ATTEMPTS + 1):
                self.port = free_ports(1)[0]
                self._spawn(binary, config)
                if self._wait_ready(last_attempt=attempt == START_ATTEMPTS):
                    return self
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the server by its PID (terminate, then kill) and remove its data."""
        self._stop_process()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PromServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "routerkit",
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }

    def _spawn(self, binary: str, config: Path) -> None:
        assert self.directory is not None
        data = self.directory / "data"
        shutil.rmtree(data, ignore_errors=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )

    def _wait_ready(self, *, last_attempt: bool) -> bool:
        """Wait for /-/ready; False if the port was taken and another try is allowed."""
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                if "address already in use" in self.log_tail() and not last_attempt:
                    return False
                raise PromServerError(
                    f"prometheus exited with status {code} before it was ready; "
                    f"log tail:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response,
            ):
                if response.status == 200:
                    return True
            time.sleep(POLL_INTERVAL)
        self._stop_process()
        raise PromServerError(
            f"prometheus was not ready on {self.url} within {self.start_timeout:g} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP API ---------------------------------------------------------

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>; return the decoded body, error answers included."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as error:  # 400/422/503 carry a JSON error body
            body = error.read()
        decoded: dict[str, Any] = json.loads(body)
        return decoded

    def query(self, expr: str) -> Result:
        """Evaluate `expr` now; return the result list (raise PromServerError on an error)."""
        answer = self.api("query", query=expr)
        if answer.get("status") != "success":
            raise PromServerError(
                f"query {expr!r} failed: {answer.get('errorType')}: {answer.get('error')}"
            )
        data = answer["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: Result = data["result"]
        return result

    def wait_for(
        self, expr: str, predicate: Callable[[Result], bool], timeout: float = 20.0
    ) -> Result:
        """Query `expr` until `predicate(result)` holds; return that result."""
        deadline = time.monotonic() + timeout
        result: Result = []
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise PromServerError(
                    f"after {timeout:g} s, {expr!r} still gives {result!r}; "
                    f"targets: {self.targets_health()}"
                )
            time.sleep(0.25)

    def targets_health(self) -> list[tuple[str, str, str]]:
        """(scrape URL, health, last error) of every active target."""
        active = self.api("targets").get("data", {}).get("activeTargets", [])
        return [(t["scrapeUrl"], t["health"], t["lastError"]) for t in active]
