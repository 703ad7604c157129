"""The compatibility suite: its comparison, and one third-party app's own suite for real.

`nox -s compat` runs every app in tests/compat/apps.py (minutes); this runs the one
that needs nothing besides Django (django-reversion: three databases reached with
explicit using(), middleware, signals, admin) on the session's cluster, so that the
default suite keeps the harness and that behaviour honest.
"""

from __future__ import annotations

from pathlib import Path

from tests.compat.apps import APPS
from tests.compat.run import Run, check, compare
from tests.pgcluster import PgCluster


def run(outcomes: dict[str, str], exit_status: int = 0, leftover: list[str] | None = None) -> Run:
    return Run(outcomes, exit_status, 1.0, leftover or [], Path("log"))


BASELINE = run({"a": "passed", "b": "passed", "c": "failed", "d": "skipped"}, exit_status=1)


class TestCompare:
    def test_the_same_outcomes_are_no_regression(self) -> None:
        """Identical runs, failures included, compare clean."""
        assert compare(BASELINE, run(dict(BASELINE.outcomes), exit_status=1)) == []

    def test_a_test_that_no_longer_passes(self) -> None:
        """A pass lost to a failure, an error or a skip is a regression."""
        for outcome in ("failed", "error", "skipped"):
            routerkit = run({**BASELINE.outcomes, "b": outcome}, exit_status=1)
            assert compare(BASELINE, routerkit) == [f"b: {outcome}"]

    def test_a_new_error_where_the_baseline_failed(self) -> None:
        """An error in a test that already failed is still reported."""
        routerkit = run({**BASELINE.outcomes, "c": "error"}, exit_status=1)
        assert compare(BASELINE, routerkit) == ["c: new error"]

    def test_missing_tests_exit_status_and_leftover_databases(self) -> None:
        """Fewer tests, another exit status and test databases left behind all count."""
        outcomes = {k: v for k, v in BASELINE.outcomes.items() if k != "d"}
        problems = compare(BASELINE, run(outcomes, exit_status=0, leftover=["test_x"]))
        assert problems == [
            "3 tests ran, 4 without",
            "exit status 0, 1 without",
            "routerkit left test databases: test_x",
        ]

    def test_an_empty_baseline_is_an_error(self) -> None:
        """A suite that did not run at all must not compare clean."""
        assert compare(run({}), run({})) == ["the baseline recorded no tests (see log)"]


def test_django_reversion_suite_with_routerkit(replication: PgCluster) -> None:
    """django-reversion's own suite passes with routerkit wired in as it does without."""
    (app,) = (app for app in APPS if app.name == "django-reversion")
    baseline, routerkit, problems = check(app, replication)
    assert problems == [], routerkit.log.read_text()[-5000:]
    assert routerkit.count()["passed"] == baseline.count()["passed"] > 100
    # routerkit really routed that run (and the baseline had none of it).
    assert sum(routerkit.reads.values()) > 100
    assert baseline.reads == {}
