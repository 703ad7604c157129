"""Back up and restore a million rows on two databases: routerkit beside dumpdata/loaddata.

Starts a real PostgreSQL primary with two streaming replicas (tests/pgcluster.py)
and, on it, sites of their own (tests/sites.py): the test project's topology,
auth on its own database, `testapp` on the primary, `billing` on a second
primary. The source site holds --rows rows, half `testapp.Article` on the
primary and half `billing.Invoice` on billing (every other invoice with a tag:
many-to-many pairs on top). Then, each in its own process, timed with its
peak resident memory (wait4's ru_maxrss):

- routerkit_dump of the whole site, and routerkit_restore --replace into a
  freshly migrated site (which includes reading every row back to verify it);
- Django's dumpdata --format jsonl, one call per database and app, and
  loaddata of those files into another freshly migrated site.

routerkit runs at a tenth of --rows too: its peak memory must not grow with
the rows. `--write-readme` puts the table into README.md.

    .venv/bin/python benchmarks/archive.py --write-readme
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _readme import write_block  # noqa: E402


@dataclass
class Run:
    seconds: float
    peak_mb: float


def measured(site: object, *args: str) -> Run:
    """Run manage.py for a site; its wall time and peak memory."""
    argv, env = site.command(*args)  # type: ignore[attr-defined]
    started = time.perf_counter()
    child = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    out, err = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out}\n{err}")
    return Run(seconds, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def fill(site: object, rows: int) -> None:
    half = rows // 2
    query = site.query  # type: ignore[attr-defined]
    query(
        "primary",
        "INSERT INTO testapp_article (title) "
        f"SELECT 'article ' || g || ' \u2713' FROM generate_series(1, {half}) g",
    )
    query(
        "billing",
        "INSERT INTO billing_invoice (number) "
        f"SELECT 'INV-' || g FROM generate_series(1, {half}) g",
    )
    query(
        "billing", "INSERT INTO billing_tag (name) SELECT 'tag ' || g FROM generate_series(1, 10) g"
    )
    query(
        "billing",
        "INSERT INTO billing_invoice_tags (invoice_id, tag_id) "
        "SELECT i.id, (SELECT min(id) FROM billing_tag) FROM billing_invoice i WHERE i.id % 2 = 0",
    )


def total(*runs: Run) -> Run:
    return Run(sum(r.seconds for r in runs), max(r.peak_mb for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--skip-django", action="store_true", help="routerkit's commands only")
    args = parser.parse_args()

    from tests.pgcluster import PgCluster, free_ports

    ports = free_ports(3)
    os.environ["ROUTERKIT_TEST_PG_PORTS"] = ",".join(map(str, ports))
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from tests.sites import Site

    results: list[tuple[str, int, Run, Run, float]] = []
    with PgCluster(ports=ports) as cluster, tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        sizes = [args.rows // 10, args.rows]
        for rows in sizes:
            source = Site(cluster).create()
            target = Site(cluster).create()
            sites = [source, target]
            try:
                for site in sites:
                    site.manage("routerkit_migrate", "--noinput").check_returncode()
                fill(source, rows)
                archive = work / f"site-{rows}.zip"
                dumped = measured(source, "routerkit_dump", str(archive))
                restored = measured(
                    target, "routerkit_restore", str(archive), "--replace", "--noinput"
                )
                size = archive.stat().st_size / 2**20
                results.append(("routerkit_dump / routerkit_restore", rows, dumped, restored, size))
                print(results[-1], file=sys.stderr)
                if rows != args.rows or args.skip_django:
                    continue
                django_target = Site(cluster).create()
                sites.append(django_target)
                django_target.manage("routerkit_migrate", "--noinput").check_returncode()
                parts = [("primary", "testapp.article"), ("billing", "billing")]
                files = [work / f"{alias}-{rows}.jsonl" for alias, _ in parts]
                dumps = [
                    measured(
                        source,
                        "dumpdata",
                        label,
                        "--database",
                        alias,
                        "--format",
                        "jsonl",
                        "-o",
                        str(path),
                    )
                    for (alias, label), path in zip(parts, files, strict=True)
                ]
                loads = [
                    measured(django_target, "loaddata", str(path), "--database", alias)
                    for (alias, _), path in zip(parts, files, strict=True)
                ]
                size = sum(path.stat().st_size for path in files) / 2**20
                results.append(
                    ("Django dumpdata / loaddata", rows, total(*dumps), total(*loads), size)
                )
                print(results[-1], file=sys.stderr)
            finally:
                for site in sites:
                    site.drop()

    lines = [
        "| tool | rows | dump | dump rows/s | dump peak memory | restore | restore rows/s "
        "| restore peak memory | archive |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows, dumped, restored, size in results:
        lines.append(
            f"| {name} | {rows:,} | {dumped.seconds:.1f} s | {rows / dumped.seconds:,.0f} | "
            f"{dumped.peak_mb:.0f} MB | {restored.seconds:.1f} s | {rows / restored.seconds:,.0f} "
            f"| {restored.peak_mb:.0f} MB | {size:.0f} MB |"
        )
    note = (
        f"Rows: half `testapp.Article` on `primary`, half `billing.Invoice` on `billing`, "
        f"every other invoice with a tag (many-to-many pairs on top); each command in its own "
        f"process, peak resident memory from wait4(); restore is into a freshly migrated site, "
        f"routerkit's including the read-back that verifies counts and checksums; Django's "
        f"dumpdata and loaddata once per database; Python {platform.python_version()}, Django "
        f"{django.get_version()}, {platform.machine()}."
    )
    table = "\n".join(lines)
    print(table)
    if args.write_readme:
        write_block("archive", table, note)


if __name__ == "__main__":
    main()
