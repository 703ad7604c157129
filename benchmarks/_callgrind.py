"""Count the instructions a command runs, with valgrind's callgrind."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping


def require_valgrind() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install -y valgrind")


def count_instructions(command: list[str], env: Mapping[str, str] | None = None) -> float:
    """Instructions the command ran (all of them, start-up included)."""
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{result.stderr[-2000:]}")
    return float(match.group(1))
