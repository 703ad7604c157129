"""Compatibility matrix: `nox` runs the suite on each supported Python and Django."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import nox

# pyenv's shims only answer for the versions it is told to use; list them all.
_pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
if _pyenv.is_dir() and "PYENV_VERSION" not in os.environ:
    os.environ["PYENV_VERSION"] = ":".join(sorted((p.name for p in _pyenv.iterdir()), reverse=True))

# Django 4.2 supports Python up to 3.12; Django 6.x needs 3.12 or later.
MATRIX = [
    (python, django)
    for python in ("3.10", "3.11", "3.12", "3.13")
    for django in ("4.2", "5.2", "6.1")
    if not (django == "4.2" and python == "3.13")
    and not (django == "6.1" and python in ("3.10", "3.11"))
]

nox.options.default_venv_backend = "venv"
# `nox` alone runs the matrix; `nox -s compat` runs the third-party suites (minutes).
nox.options.sessions = ["tests"]
COMPAT_APPS = "tests/compat/apps.py"


@nox.session
@nox.parametrize(("python", "django"), MATRIX)
def tests(session: nox.Session, django: str) -> None:
    session.install(f"django~={django}.0", "-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def compat(session: nox.Session) -> None:
    """Third-party apps' own test suites, without and with routerkit (tests/compat/)."""
    # Run from its file: nox does not put the project on sys.path.
    requirements = runpy.run_path(COMPAT_APPS)["requirements"]()
    # Django 5.2 LTS: the release every app in tests/compat/apps.py supports.
    session.install("django~=5.2.0", "-e", ".[test]", *requirements)
    session.run("python", "-m", "tests.compat.run", *session.posargs)
