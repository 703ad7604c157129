"""Instructions per request on the app side, routerkit beside the docs router: a steady figure.

Wall-clock CPU on a shared two-core machine drifts by 10-30% between runs;
instruction counts (valgrind's callgrind) do not. This starts a real primary with
two streaming replicas (live replication, no lag), and for each configuration of
benchmarks/offload_app runs one process that calls the WSGI handler directly, one
client, with the offload benchmark's steps (a read, and one time in five a write
before it, cookies kept). It counts the instructions of N and of N + 500 steps
and reports the difference per step, so start-up and warm-up cancel out. The
databases' own work is not counted (see benchmarks/offload.py for whole-system
CPU).

    .venv/bin/python benchmarks/instructions.py --write-readme
    .venv/bin/python benchmarks/instructions.py --no-valgrind --steps 20  # a smoke run
"""

from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
from pathlib import Path

from _callgrind import count_instructions, require_valgrind

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name -> (OFFLOAD_ROUTER, STICKY MODE or "" for the default)
CONFIGURATIONS = {
    "Django docs router": ("docs", ""),
    "routerkit, STICKY MODE off (middleware and routing only)": ("routerkit", "off"),
    "routerkit": ("routerkit", ""),
}
WRITE_SHARE = 0.2


def steps(count: int) -> None:
    """Run in a child process: `count` measured steps after a warm-up."""
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    cookies: dict[str, str] = {}

    def call(method: str, path: str) -> None:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "HTTP_HOST": "127.0.0.1",
            "CONTENT_LENGTH": "0",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.url_scheme": "http",
        }
        if cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        headers: list[tuple[str, str]] = []
        b"".join(handler(environ, lambda status, got: headers.extend(got)))
        for name, value in headers:
            if name == "Set-Cookie":
                key, _, rest = value.partition("=")
                cookies[key] = rest.split(";", 1)[0]

    client = random.randrange(10**9)
    rng = random.Random(1)
    written = 0
    for _ in range(100 + count):
        if rng.random() < WRITE_SHARE:
            written += 1
            call("POST", f"/write/{client}/{written}/")
        call("GET", f"/read/{client}/")


def count(env: dict[str, str], number: int, valgrind: bool) -> float:
    """Instructions of a child running `number` steps (0 without valgrind: it only runs)."""
    command = [sys.executable, __file__, "--child", str(number)]
    if not valgrind:
        subprocess.run(command, env=env, check=True)
        return 0.0
    return count_instructions(command, env)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=500, help="measured steps per count")
    parser.add_argument(
        "--no-valgrind", action="store_true", help="only check that every configuration runs"
    )
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        import django

        django.setup()
        steps(args.child)
        return

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    from _readme import write_block
    from offload import DATABASE, ports

    from tests.pgcluster import PgCluster

    valgrind = not args.no_valgrind
    if valgrind:
        require_valgrind()
    rows = []
    with PgCluster() as cluster:
        cluster.create_database(DATABASE)
        base = {
            **os.environ,
            "OFFLOAD_PORTS": ports(cluster),
            "DJANGO_SETTINGS_MODULE": "offload_app.settings",
            "PYTHONPATH": str(HERE),
        }
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v0"],
            cwd=HERE,
            env={**base, "OFFLOAD_ROUTER": "all-primary"},
            check=True,
        )
        for name, (router, mode) in CONFIGURATIONS.items():
            env = {**base, "OFFLOAD_ROUTER": router, "OFFLOAD_STICKY_MODE": mode}
            few = count(env, 1, valgrind)
            many = count(env, 1 + args.steps, valgrind)
            rows.append((name, (many - few) / args.steps))
            print(f"{name}: {rows[-1][1]:,.0f} per step", file=sys.stderr)
    if not valgrind:
        return
    docs = rows[0][1]
    lines = ["| configuration | instructions per step | x docs router |", "|---|---:|---:|"]
    lines += [f"| {name} | {per:,.0f} | {per / docs:.2f}x |" for name, per in rows]
    table = "\n".join(lines)
    print(table)
    if args.write_readme:
        import django

        note = (
            f"Measured by `benchmarks/instructions.py` (callgrind, {args.steps} steps, one "
            f"client, live replication), Python {sys.version.split()[0]}, "
            f"Django {django.__version__}."
        )
        write_block("instructions", table, note)


if __name__ == "__main__":
    main()
