"""The third-party apps whose own test suites the compatibility run executes.

Each is an exact source distribution, checked against its SHA-256, and run the way its
own CI runs it (Django's test runner from the directory its tox.ini uses), with our
settings wrapper around its test settings. Nothing here imports Django: the nox
session reads `requirements()` before anything is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class App:
    name: str  # the distribution name on PyPI
    version: str
    sha256: str
    settings: str  # the app's own test settings module
    command: tuple[str, ...]  # run from `cwd`, after `python`
    cwd: str = "."  # inside the unpacked sdist
    path: tuple[str, ...] = (".",)  # put on PYTHONPATH, relative to the sdist
    requirements: tuple[str, ...] = ()  # what its test suite needs besides Django
    environ: dict[str, str] = field(default_factory=dict)
    exercises: str = ""  # what of Django it brings to routerkit, for the README

    @property
    def sdist(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}.tar.gz"


APPS = (
    App(
        name="django-guardian",
        version="3.5.2",
        sha256="ca14b7c9cc37bc852f3749f8a998a76cfd0ebbd66ac85726ef331289a712d389",
        settings="guardian.testapp.testsettings",
        command=("manage.py", "test", "guardian"),
        requirements=("django-environ",),
        exercises="object permissions, auth backends, admin, a custom user model, signals",
    ),
    App(
        name="django-import-export",
        version="4.4.3",
        sha256="2024e6e64ecb2cbd9835bbbfbfe08bc31e9c7f6cc8923f3b9ab0ffdad0308c22",
        settings="settings",
        command=("manage.py", "test", "core"),
        cwd="tests",
        path=("tests", "."),
        requirements=(
            "diff-match-patch==20241021",
            "tablib[html,ods,xls,xlsx,yaml]>=3.7.0",
            "chardet==5.2.0",
            "pytz",
        ),
        # As its PostgreSQL CI job: imports run in transactions.
        environ={"IMPORT_EXPORT_TEST_TYPE": "postgres"},
        exercises="admin import/export views, transactions and savepoints, bulk writes",
    ),
    App(
        name="django-reversion",
        version="6.4.0",
        sha256="fce089d8bab8d64b4ec41e9db758ce552ba06a008e42a1c9e4eb2f5faaa01cbc",
        settings="test_project.settings",
        command=("manage.py", "test", "test_app"),
        cwd="tests",
        path=("tests", "."),
        exercises="three databases with explicit using(), middleware, signals, admin",
    ),
    App(
        name="django-filter",
        version="26.2",
        sha256="fd5cc83995fbe9f5f07fb5dcda16fde0f04de1ecf8ef82628b6c0ec921b751af",
        settings="tests.settings",
        command=("runtests.py",),
        requirements=("djangorestframework", "django-crispy-forms", "markdown", "pytz"),
        exercises="filtered querysets in views and Django REST framework",
    ),
)


def requirements() -> list[str]:
    """Everything the apps' test suites need, for one virtual environment."""
    return sorted({req for app in APPS for req in app.requirements})
