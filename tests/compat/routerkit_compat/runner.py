"""Django's test runner, writing test outcomes and routerkit's reads to ``COMPAT_OUTCOMES``."""

from __future__ import annotations

import json
import os
import unittest
from typing import Any

from django.apps import apps
from django.test.runner import DiscoverRunner

# A test error or failure as unittest passes it to the result.
ExcInfo = Any


class RecordingResult(unittest.TextTestResult):
    """A text result that also remembers, per test id, how the test ended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}

    def addSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802 (unittest's name)
        super().addSuccess(test)
        self.outcomes.setdefault(test.id(), "passed")

    def addFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:  # noqa: N802
        super().addFailure(test, err)
        self.outcomes[test.id()] = "failed"

    def addError(self, test: unittest.TestCase, err: ExcInfo) -> None:  # noqa: N802
        super().addError(test, err)
        # Errors in setUpClass and friends come on a holder whose id names the class.
        self.outcomes[test.id()] = "error"

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:  # noqa: N802
        super().addSkip(test, reason)
        self.outcomes[test.id()] = "skipped"

    def addExpectedFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:  # noqa: N802
        super().addExpectedFailure(test, err)
        self.outcomes[test.id()] = "expected failure"

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802
        super().addUnexpectedSuccess(test)
        self.outcomes[test.id()] = "unexpected success"

    def addSubTest(  # noqa: N802
        self, test: unittest.TestCase, subtest: unittest.TestCase, err: ExcInfo | None
    ) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self.outcomes[subtest.id()] = "failed" if failed else "error"
            # The test itself then gets addSuccess; it did not pass.
            self.outcomes[test.id()] = "failed"


class RecordingRunner(DiscoverRunner):
    """Serial, so every outcome lands in one result object."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parallel"] = 1
        super().__init__(*args, **kwargs)

    def get_resultclass(self) -> type[unittest.TextTestResult]:
        return RecordingResult

    def suite_result(self, suite: Any, result: Any, **kwargs: Any) -> int:
        report = {"outcomes": getattr(result, "outcomes", {}), "reads": read_decisions()}
        with open(os.environ["COMPAT_OUTCOMES"], "w") as file:
            json.dump(report, file, indent=1, sort_keys=True)
        return int(super().suite_result(suite, result, **kwargs))


def read_decisions() -> dict[str, float]:
    """routerkit's read decisions in this process, by database (none without routerkit)."""
    if not apps.is_installed("routerkit"):
        return {}
    from prometheus_client import REGISTRY

    from routerkit.metrics import get_metrics
    from routerkit.state import implicit_scope

    # Test code outside requests routes in this context's implicit scope, which
    # never ends on its own: count its decisions too.
    scope = implicit_scope()
    if scope is not None and scope.counted:
        get_metrics().record(*scope.take_counts())
    reads: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "routerkit_route_decisions_total" and (
                sample.labels["operation"] == "read"
            ):
                database = sample.labels["database"]
                reads[database] = reads.get(database, 0) + sample.value
    return reads
