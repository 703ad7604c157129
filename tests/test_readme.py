"""README's two set-up commands are the ones CI and users run."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_opens_with_the_two_commands() -> None:
    """The first code block runs the example project, then the test suite."""
    block = (ROOT / "README.md").read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ["bash example_project/run.sh", "bash tests/run.sh"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file()


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run executes the README's test command."""
    assert "exec bash tests/run.sh" in (ROOT / ".ci" / "run").read_text()
