"""Cost of one read-routing decision, routerkit beside its peers, in one process.

Each case calls `ConnectionRouter.db_for_read(User)` the way a QuerySet does, in
the state a GET request would be in (no write yet, not pinned), and routerkit once
outside any scope too (a shell, a script, a worker). Run with `bash benchmarks/run.sh`;
`--write-readme` puts the table into README.md.
"""

from __future__ import annotations

import argparse
import contextvars
import platform
import random
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

import django
from _callgrind import count_instructions, require_valgrind
from _readme import write_block
from django.conf import settings

REPLICAS = ["replica1", "replica2"]
METRICS_OFF = ", metrics off"
# Outside ConsistencyMiddleware and every block: a shell, a script, a worker.
OUTSIDE = ", outside any scope"


def configure() -> None:
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    settings.configure(
        DATABASES={alias: dict(sqlite) for alias in ["default", *REPLICAS]},
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "routerkit"],
        ROUTERKIT={"REPLICAS": {"default": REPLICAS}},
        # Peers' settings.
        REPLICA_DATABASES=REPLICAS,
        REPLICATED_DATABASE_SLAVES=REPLICAS,
        REPLICATED_DATABASE_DOWNTIME=60,
        REPLICATED_CHECK_STATE_ON_WRITE=True,
        REPLICATED_CACHE_BACKEND=None,
        USE_TZ=True,
    )
    django.setup()


class DocsPrimaryReplicaRouter:
    """The primary/replica router of Django's multiple-database guide."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return random.choice(REPLICAS)

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"


def cases() -> dict[str, tuple[list[Any], Callable[[], Any]]]:
    """name -> (routers, a per-run set-up that puts the router in its GET state).

    A name ending in METRICS_OFF runs with ROUTERKIT["METRICS"] = False.
    """
    from routerkit.routers import AppRouter, ContribRouter, PrimaryReplicaRouter, Router

    found: dict[str, tuple[list[Any], Callable[[], Any]]] = {
        "no routers (Django's default)": ([], lambda: None),
        "Django docs PrimaryReplicaRouter": ([DocsPrimaryReplicaRouter()], lambda: None),
    }
    try:  # the peers are installed by benchmarks/run.sh, not by the test suite
        from django_replicated.router import ReplicationRouter
        from multidb import PinningReplicaRouter
    except ImportError:
        print("peer packages not installed: measuring routerkit alone", file=sys.stderr)
    else:
        replicated = ReplicationRouter()
        found["django-multidb-router PinningReplicaRouter"] = ([PinningReplicaRouter()], _idle)
        found["django_replicated ReplicationRouter"] = (
            [replicated],
            lambda: replicated.init("slave"),
        )
    return {
        **found,
        "routerkit PrimaryReplicaRouter": ([PrimaryReplicaRouter()], lambda: None),
        f"routerkit PrimaryReplicaRouter{METRICS_OFF}": ([PrimaryReplicaRouter()], lambda: None),
        f"routerkit PrimaryReplicaRouter{OUTSIDE}": ([PrimaryReplicaRouter()], lambda: None),
        "routerkit Contrib + App + PrimaryReplica": (
            [ContribRouter(), AppRouter(), PrimaryReplicaRouter()],
            lambda: None,
        ),
        "routerkit Router (the three in one)": ([Router()], lambda: None),
    }


def _idle() -> None:
    pass


def measure_once(name: str, routers: list[Any], setup: Callable[[], Any], number: int) -> float:
    """Nanoseconds per read decision over one run of `number` calls."""
    return run_case(name, routers, setup, number) / number * 1e9


def run_case(name: str, routers: list[Any], setup: Callable[[], Any], number: int) -> float:
    """Make `number` read decisions in the case's state; return the seconds they took."""
    from django.contrib.auth.models import User
    from django.db.utils import ConnectionRouter
    from django.test import override_settings

    from routerkit import consistency, consistency_scope
    from routerkit.conf import get_config
    from routerkit.health import get_monitor

    router = ConnectionRouter(routers)
    decide = router.db_for_read
    metrics_on = not name.endswith(METRICS_OFF)
    overridden = override_settings(
        ROUTERKIT={"REPLICAS": {"default": REPLICAS}, "METRICS": metrics_on}
    )
    overridden.enable()

    def timed() -> float:
        setup()
        assert decide(User) in [*REPLICAS, "default"]
        decide(User)  # warm caches (placement, connection wrapper)
        return timeit.timeit(lambda: decide(User), number=number)

    try:
        if name.endswith(OUTSIDE):
            # A context of its own, with no scope yet: the first read makes the
            # implicit one that unscoped code uses; its snapshot is the monitor's.
            get_monitor(get_config()).refresh()
            seconds = contextvars.Context().run(timed)
        else:
            # As ConsistencyMiddleware does for a request: a scope and a health snapshot.
            with consistency_scope(isolated=True) as scope:
                consistency.start(scope, consistency.Tokens(), get_config())
                seconds = timed()
    finally:
        overridden.disable()
    return seconds


def measure(number: int, repeat: int) -> dict[str, float]:
    """Median nanoseconds per read decision of every case.

    The cases take turns, one run each per round: on a machine whose speed
    drifts (a shared VM), every case sees the same slow and fast moments.
    """
    found = cases()
    runs: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(repeat):
        for name, (routers, setup) in found.items():
            runs[name].append(measure_once(name, routers, setup, number))
    return {name: statistics.median(values) for name, values in runs.items()}


def instructions(extra: int, repeat: int = 3) -> dict[str, float]:
    """Instructions per read decision of every case, counted by callgrind.

    Each case runs in a child process with 1,000 and with 1,000 + `extra`
    decisions; the difference per extra decision leaves start-up out. Unlike
    wall-clock time, the count does not drift with the machine's load, but a
    run under callgrind is slow enough for a health snapshot to expire now and
    then, so the figure is the median of `repeat` such pairs.
    """
    found: dict[str, float] = {}
    for name in cases():
        pairs = [(_count(name, 1_000 + extra) - _count(name, 1_000)) / extra for _ in range(repeat)]
        found[name] = statistics.median(pairs)
    return found


def _count(name: str, number: int) -> float:
    return count_instructions([sys.executable, __file__, "--child", name, str(number)])


def table(results: dict[str, float], counted: dict[str, float] | None = None) -> str:
    docs = results["Django docs PrimaryReplicaRouter"]
    header = "| router | ns per read decision | vs Django docs router |"
    rule = "|---|---:|---:|"
    if counted:
        header += " instructions per decision | vs Django docs router |"
        rule += "---:|---:|"
    lines = [header, rule]
    for name, ns in results.items():
        line = f"| {name} | {ns:,.0f} | {ns / docs:.2f}x |"
        if counted:
            per, docs_per = counted[name], counted["Django docs PrimaryReplicaRouter"]
            line += f" {per:,.0f} | {per / docs_per:.2f}x |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument(
        "--instructions",
        type=int,
        default=20_000,
        metavar="N",
        help="count instructions of N decisions per case with callgrind (0: do not)",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    configure()
    if args.child:
        name, number = args.child
        run_case(name, *cases()[name], int(number))
        return
    counted = None
    if args.instructions:
        require_valgrind()
        counted = instructions(args.instructions)
    results = measure(args.number, args.repeat)
    body = table(results, counted)
    on = results["routerkit PrimaryReplicaRouter"]
    off = results[f"routerkit PrimaryReplicaRouter{METRICS_OFF}"]
    body += (
        f"\n\nCounting decisions for Prometheus adds {(on / off - 1) * 100:.0f}% "
        "to a read decision (target: at most 15%)."
    )
    counting = (
        f"; instructions: callgrind, median of 3 counts of {args.instructions:,} decisions per case"
        if counted
        else ""
    )
    note = (
        f"Time: median of {args.repeat} rounds of {args.number:,} calls per case, the cases "
        f"taking turns, one process{counting}; "
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"{platform.machine()}."
    )
    print(body, note, sep="\n\n")
    if args.write_readme:
        write_block("routing", body, note)


if __name__ == "__main__":
    main()
