"""Run third-party apps' own test suites without and with routerkit, and compare.

    python -m tests.compat.run [--app NAME ...] [--write-readme] [--keep]

One PostgreSQL primary with a streaming replica (tests/pgcluster.py) serves every run.
For each app in `tests/compat/apps.py`: download its pinned sdist (checked against its
SHA-256), unpack it, run its suite on the primary as its own CI does (the baseline),
then again with routerkit wired in and a replica alias on the real replica. The run
fails when, for any app, the routerkit run has a test that passed in the baseline and
did not pass with routerkit, a different exit status, a different number of tests, or
test databases left behind on the server. `nox -s compat` runs this in a virtual
environment with every app's test requirements.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.compat.apps import APPS, App
from tests.pgcluster import PgCluster

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".compat"
WRAPPER = Path(__file__).resolve().parent  # holds the routerkit_compat package
README = ROOT / "README.md"
README_START = "<!-- compat:start -->"
README_END = "<!-- compat:end -->"
PASSED = "passed"
REPLICA = "replica1"  # the alias routerkit_compat.settings adds


@dataclass
class Run:
    outcomes: dict[str, str]
    exit_status: int
    seconds: float
    leftover: list[str]
    log: Path
    reads: dict[str, float] = field(default_factory=dict)  # routerkit's, by database

    def count(self) -> Counter[str]:
        return Counter(self.outcomes.values())


def fetch(app: App) -> Path:
    """The app's unpacked source distribution, downloaded once and verified."""
    downloads = WORK / "sdists"
    archive = downloads / app.sdist
    if not archive.exists():
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--no-deps", "--no-binary", ":all:", "--dest", str(downloads),
                f"{app.name}=={app.version}",
            ],
            check=True,
        )  # fmt: skip
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != app.sha256:
        raise SystemExit(f"{archive}: SHA-256 {digest}, expected {app.sha256}")
    source = WORK / "src" / archive.name.removesuffix(".tar.gz")
    if not source.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(source.parent, filter="data")
    return source


def database_prefix(app: App) -> str:
    """The names of the app's databases on the server start with this."""
    return app.name.replace("-", "_")


def leftover_databases(cluster: PgCluster, app: App) -> list[str]:
    """The app's test databases that exist on the primary."""
    rows = cluster.execute(
        "primary",
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
        [f"test_{database_prefix(app)}"],
    )
    return [row[0] for row in rows]


def run_suite(app: App, source: Path, cluster: PgCluster, *, routerkit: bool) -> Run:
    label = "routerkit" if routerkit else "baseline"
    outcomes_file = WORK / "results" / f"{app.name}.{label}.json"
    log = WORK / "results" / f"{app.name}.{label}.log"
    outcomes_file.parent.mkdir(parents=True, exist_ok=True)
    outcomes_file.unlink(missing_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTHON", "COMPAT_", "DATABASE"))
    }
    env.update(app.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="routerkit_compat.settings",
        PYTHONPATH=os.pathsep.join([str(WRAPPER), *(str(source / p) for p in app.path)]),
        COMPAT_BASE_SETTINGS=app.settings,
        COMPAT_PRIMARY_PORT=str(cluster.primary.port),
        COMPAT_REPLICA_PORT=str(cluster.replicas[0].port),
        COMPAT_DATABASE=database_prefix(app),
        COMPAT_ROUTERKIT="1" if routerkit else "0",
        COMPAT_OUTCOMES=str(outcomes_file),
    )
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.run(
            [sys.executable, *app.command, "--noinput", "-v", "2"],
            cwd=source / app.cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    seconds = time.monotonic() - started
    report = json.loads(outcomes_file.read_text()) if outcomes_file.exists() else {}
    return Run(
        report.get("outcomes", {}),
        process.returncode,
        seconds,
        leftover_databases(cluster, app),
        log,
        report.get("reads", {}),
    )


def compare(baseline: Run, routerkit: Run) -> list[str]:
    """What the routerkit run did worse than the baseline, one line per finding."""
    problems = []
    if not baseline.outcomes:
        problems.append(f"the baseline recorded no tests (see {baseline.log})")
    lost = sorted(
        test
        for test, outcome in baseline.outcomes.items()
        if outcome == PASSED and routerkit.outcomes.get(test) != PASSED
    )
    problems += [f"{test}: {routerkit.outcomes.get(test, 'not run')}" for test in lost]
    new_errors = sorted(
        test
        for test, outcome in routerkit.outcomes.items()
        if outcome == "error" and baseline.outcomes.get(test) != "error"
    )
    problems += [f"{test}: new error" for test in new_errors if test not in lost]
    if len(routerkit.outcomes) != len(baseline.outcomes):
        problems.append(f"{len(routerkit.outcomes)} tests ran, {len(baseline.outcomes)} without")
    if routerkit.exit_status != baseline.exit_status:
        problems.append(f"exit status {routerkit.exit_status}, {baseline.exit_status} without")
    for run, label in ((baseline, "baseline"), (routerkit, "routerkit")):
        if run.leftover:
            problems.append(f"{label} left test databases: {', '.join(run.leftover)}")
    return problems


def summary(run: Run) -> str:
    counts = run.count()
    others = ", ".join(
        f"{counts[name]} {name}" for name in sorted(counts) if name != PASSED and counts[name]
    )
    return f"{counts[PASSED]} passed" + (f", {others}" if others else "")


def readme_table(results: list[tuple[App, Run, Run]]) -> str:
    lines = [
        "| app (sdist) | its suite exercises | without routerkit | with routerkit "
        "| reads on the replica |",
        "|---|---|---|---|---:|",
    ]
    for app, baseline, routerkit in results:
        replica = routerkit.reads.get(REPLICA, 0)
        lines.append(
            f"| {app.name} {app.version} | {app.exercises} | {summary(baseline)}, "
            f"exit {baseline.exit_status} | {summary(routerkit)}, exit {routerkit.exit_status} "
            f"| {replica:,.0f} of {sum(routerkit.reads.values()):,.0f} |"
        )
    return "\n".join(lines)


def write_readme(table: str) -> None:
    text = README.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    README.write_text(f"{text[:start]}\n{table}\n{text[end:]}")


def check(app: App, cluster: PgCluster) -> tuple[Run, Run, list[str]]:
    """Run `app`'s suite without and with routerkit; return both runs and the regressions."""
    source = fetch(app)
    baseline = run_suite(app, source, cluster, routerkit=False)
    routerkit = run_suite(app, source, cluster, routerkit=True)
    return baseline, routerkit, compare(baseline, routerkit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", action="append", help="run only this app (repeatable)")
    parser.add_argument("--write-readme", action="store_true", help="update README's table")
    args = parser.parse_args(argv)
    apps = [app for app in APPS if not args.app or app.name in args.app]
    if not apps:
        parser.error(f"no such app; known: {', '.join(app.name for app in APPS)}")

    results = []
    failed = False
    with PgCluster(replicas=1) as cluster:
        for app in apps:
            baseline, routerkit, problems = check(app, cluster)
            failed = failed or bool(problems)
            print(
                f"{app.name} {app.version}: without routerkit {summary(baseline)}, "
                f"exit {baseline.exit_status} ({baseline.seconds:.0f} s); "
                f"with routerkit {summary(routerkit)}, exit {routerkit.exit_status} "
                f"({routerkit.seconds:.0f} s)",
                flush=True,
            )
            for problem in problems:
                print(f"  REGRESSION {problem}", flush=True)
            results.append((app, baseline, routerkit))
    table = readme_table(results)
    print(table)
    if args.write_readme and len(apps) == len(APPS):
        write_readme(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
