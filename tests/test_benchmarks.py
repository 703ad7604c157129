"""The benchmark scripts still run (tiny sizes; no duration is asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.example import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_routing_benchmark_runs() -> None:
    """benchmarks/routing.py prints its table, with the cost of counting decisions."""
    result = run("benchmarks/routing.py", "--number", "200", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    assert "| routerkit PrimaryReplicaRouter |" in result.stdout
    assert "Counting decisions for Prometheus adds" in result.stdout


def test_the_validation_benchmark_runs() -> None:
    """benchmarks/validate.py validates a small generated project with no findings."""
    result = run("benchmarks/validate.py", "--sizes", "50")
    assert result.returncode == 0, result.stderr
    assert "| models |" in result.stdout


def test_the_statement_benchmark_runs() -> None:
    """benchmarks/statements.py judges its statements as the classifier does."""
    result = run("benchmarks/statements.py", "--number", "200", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    assert "| ORM SELECT (quoted names, %s) | no |" in result.stdout
    assert "| ORM INSERT ... RETURNING | yes |" in result.stdout
