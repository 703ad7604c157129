"""Inject each fault of the fault suite under load and report what clients saw.

Starts a real PostgreSQL primary with two streaming replicas (tests/pgcluster.py),
serves the test project over HTTP from this process with routerkit's settings for
the suite (tests/faults.py: LAG INTERVAL 0.5 s, TIMEOUT 0.2 s, MAX_SECONDS 1 s,
connect_timeout 2 s), and runs four browser-like clients (20% of steps write,
every read reads back the client's own last write) through each fault:
requests, failures, stale reads of own writes, time to leave the rotation and to
rejoin it. tests/test_faults.py asserts the same figures. `--write-readme` puts
the table into README.md.

    .venv/bin/python benchmarks/faults.py --write-readme
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _readme import write_block  # noqa: E402


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    # Every failed write logs a warning: the table says how many there were.
    logging.getLogger("routerkit").setLevel(logging.ERROR)

    from tests.pgcluster import PgCluster, free_ports

    ports = free_ports(3)
    os.environ["ROUTERKIT_TEST_PG_PORTS"] = ",".join(map(str, ports))
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from routerkit import consistency_scope
    from tests import faults
    from tests.conftest import ARCHIVE_DATABASE, PRIMARY_DATABASES

    rows = []
    with PgCluster(ports=ports) as cluster:
        for name in [*PRIMARY_DATABASES.values(), ARCHIVE_DATABASE]:
            cluster.create_database(name)
        with consistency_scope():
            for alias in PRIMARY_DATABASES:
                call_command("migrate", database=alias, run_syncdb=True, verbosity=0)
        connections.close_all()
        for fault in faults.FAULTS:
            figures = faults.run(cluster, fault)
            connections.close_all()
            cluster.restore()
            print(figures, file=sys.stderr)
            rows.append(
                f"| {fault.name} | {figures.reads:,} | {figures.failed_reads} | "
                f"{figures.stale_reads} | {figures.writes:,} | {figures.failed_writes} | "
                f"{_seconds(figures.slowest_failed_write)} | {_seconds(figures.exclusion)} | "
                f"{_seconds(figures.rejoin)} |"
            )
    body = "\n".join(
        [
            "| fault | reads | failed reads | stale own-write reads | writes | failed writes "
            "| slowest failed write | out of rotation after | back in rotation after |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    note = (
        f"Measured by `benchmarks/faults.py` on {platform.machine()}, Python "
        f"{platform.python_version()}: {faults.CLIENTS} clients, {faults.WARMUP:g} s of load, "
        f"then the fault for {faults.DURATION:g} s, then {faults.RECOVERY:g} s after healing; "
        f"`LAG` INTERVAL {faults.INTERVAL:g} s, TIMEOUT {faults.TIMEOUT:g} s, MAX_SECONDS "
        f"{faults.MAX_SECONDS:g} s; connect_timeout {faults.CONNECT_TIMEOUT:g} s. "
        "Exclusion is timed from the fault (for paused replay, from the moment its lag "
        "passed MAX_SECONDS), rejoining from the end of the heal (the server restarted and "
        "streaming, replay resumed, the primary thawed)."
    )
    print(body)
    if args.write_readme and not write_block("faults", body, note):
        sys.exit(1)


if __name__ == "__main__":
    main()
