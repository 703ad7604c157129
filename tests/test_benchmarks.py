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
    result = run("benchmarks/routing.py", "--number", "200", "--repeat", "1", "--instructions", "0")
    assert result.returncode == 0, result.stderr
    assert "| routerkit PrimaryReplicaRouter |" in result.stdout
    assert "| routerkit Router (the three in one) |" in result.stdout
    assert "Counting decisions for Prometheus adds" in result.stdout


def test_the_routing_benchmark_child_runs() -> None:
    """The child that callgrind counts runs one case's decisions and exits cleanly."""
    for name in (
        "routerkit PrimaryReplicaRouter",
        "routerkit PrimaryReplicaRouter, outside any scope",
    ):
        result = run("benchmarks/routing.py", "--child", name, "50")
        assert result.returncode == 0, result.stderr


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


def test_the_offload_benchmark_runs() -> None:
    """benchmarks/offload.py measures routers on a real cluster under gunicorn, and wrk.

    Tiny runs of the two configurations whose packages the suite installs: the
    table has its rows, routerkit read no own write stale, and the probe and
    HTTP tables are there.
    """
    result = run(
        "benchmarks/offload.py",
        "--seconds",
        "0.5",
        "--rounds",
        "1",
        "--only",
        "docs",
        "--only",
        "routerkit",
        "--pattern",
        "steady 200 ms",
    )
    assert result.returncode == 0, result.stderr
    rows = {
        line.split("|")[2].strip(): line
        for line in result.stdout.splitlines()
        if line.startswith("| steady")
    }
    assert set(rows) == {"Django docs router", "routerkit", "routerkit, STICKY WAIT 50 ms"}
    stale = rows["routerkit"].split("|")[6].strip()
    assert stale == "0"
    assert "| as fast as the clients go |" in result.stdout
    assert "| routerkit |" in result.stdout.split("| router | p50 | requests/s |")[1]


def test_the_instruction_benchmark_runs() -> None:
    """benchmarks/instructions.py drives every configuration (without valgrind here)."""
    result = run("benchmarks/instructions.py", "--no-valgrind", "--steps", "20")
    assert result.returncode == 0, result.stderr
    assert "routerkit: 0 per step" in result.stderr
