"""Replica offload, stale reads, cost and latency of each router, side by side, in one run.

Starts a real PostgreSQL primary with two streaming replicas (tests/pgcluster.py,
with pg_stat_statements), and for each configuration serves the same small site
(benchmarks/offload_app: one write view, one read view, persistent connections)
under gunicorn: everything on the primary, Django's docs router,
django-multidb-router, django_replicated and routerkit (with and without
STICKY["WAIT"]). Browser-like clients carry cookies; 20% of their steps write
and read back, the others read; every read returns the newest item the client
can see, so a stale read of its own write shows. Two kinds of lag:

- stalls: replay paused on both replicas for 2 s in every 4 s;
- steady: both replicas 200 ms behind (recovery_min_apply_delay).

Per configuration: the replica share of the read view's SELECTs, counted on
each node with pg_stat_statements; the *ceiling*, the share of reads sent when
a replica had already replayed the client's last write (each client asks the
servers itself, just before sending the read: no router without stale reads
can send more to replicas); stale own-write reads; CPU per request of gunicorn and of all
PostgreSQL processes (the oracles' own excluded); p50 and p99 latency.

Then routerkit's probes at paced load from 1 request/s to as fast as the
clients go (their count per second must not grow with load), and an HTTP
benchmark of the example project with `wrk` (routerkit beside the docs router).

    .venv/bin/python benchmarks/offload.py --write-readme
    .venv/bin/python benchmarks/offload.py --seconds 2 --only routerkit  # a quick look
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from _readme import write_block  # noqa: E402

from routerkit.values import parse_lsn  # noqa: E402
from tests.pgcluster import PgCluster, _processes_in, free_ports  # noqa: E402

# name -> (OFFLOAD_ROUTER, extra environment)
CONFIGURATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "all on the primary": ("all-primary", {}),
    "Django docs router": ("docs", {}),
    "django-multidb-router": ("multidb", {}),
    "django_replicated": ("replicated", {}),
    "routerkit": ("routerkit", {}),
    "routerkit, STICKY WAIT 50 ms": ("routerkit", {"OFFLOAD_WAIT": "0.05"}),
}
STALLS = "stalls (2 s in 4 s)"
STEADY = "steady 200 ms"
PATTERNS = (STALLS, STEADY)
WRITE_SHARE = 0.2
CLIENTS = 8
DATABASE = "offload"
READ_QUERY = "SELECT MAX(%offload_app_item%"
TICK = os.sysconf("SC_CLK_TCK")
_client_numbers = itertools.count(1)


# -- what the clients saw -----------------------------------------------------


@dataclass
class Read:
    sent: float
    client: int
    written: int  # the client's last write (seq), 0 if none yet
    seen: int  # the newest seq the read returned
    eligible: bool  # a replica had replayed the client's last write when it was sent


@dataclass
class Trace:
    reads: list[Read] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def ceiling(self) -> float:
        """Share of reads sent when some replica had replayed the client's last write."""
        return sum(r.eligible for r in self.reads) / len(self.reads) if self.reads else 0.0

    @property
    def stale(self) -> int:
        return sum(1 for read in self.reads if read.seen < read.written)


class Browser:
    """One client: keep-alive HTTP, cookies kept as a browser keeps them (Max-Age)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, tuple[str, float]] = {}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        now = time.monotonic()
        live = {k: v for k, (v, until) in self.cookies.items() if until > now}
        headers = {"Content-Length": "0"}
        if live:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in live.items())
        try:
            self.connection.request(method, path, headers=headers)
            response = self.connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return 0, b""
        for header in response.headers.get_all("Set-Cookie") or ():
            for name, morsel in SimpleCookie(header).items():
                max_age = morsel["max-age"]
                until = now + float(max_age) if max_age else float("inf")
                self.cookies[name] = (morsel.value, until)
        return response.status, body


def run_clients(
    port: int,
    seconds: float,
    trace: Trace,
    oracles: Sequence[Oracle] = (),
    *,
    clients: int = CLIENTS,
    rate: float | None = None,
) -> None:
    """Drive `clients` browsers for `seconds`; `rate`: requests per second in all (paced).

    With `oracles` (one per client), every read says whether it could have
    gone to a replica.
    """
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    gap = clients / rate if rate else 0.0

    def client(number: int, oracle: Oracle | None) -> None:
        # A client of its own in every run: items of earlier runs stay in the table.
        number = next(_client_numbers)
        rng = random.Random(number)
        browser = Browser(port)
        written = 0
        next_at = time.monotonic() + rng.random() * gap
        while time.monotonic() < deadline:
            if gap:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += gap
            if rng.random() < WRITE_SHARE:
                sent = time.monotonic()
                status, _ = browser.request("POST", f"/write/{number}/{written + 1}/")
                latency = time.monotonic() - sent
                if status == 201:
                    written += 1
                    if oracle is not None:
                        oracle.wrote()
                with lock:
                    trace.latencies.append(latency)
                    trace.errors += status != 201
            eligible = oracle.could_read_a_replica() if oracle is not None else True
            sent = time.monotonic()
            status, body = browser.request("GET", f"/read/{number}/")
            latency = time.monotonic() - sent
            with lock:
                trace.latencies.append(latency)
                if status != 200:
                    trace.errors += 1
                    continue
                trace.reads.append(Read(sent, number, written, json.loads(body)["seq"], eligible))

    threads = [
        threading.Thread(target=client, args=(n, oracles[n - 1] if oracles else None))
        for n in range(1, clients + 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# -- where the nodes were -------------------------------------------------------


class Oracle:
    """What a client's read could have had: asked of the servers as the read is sent.

    After each write the client reads the primary's insert position (past its
    commit, and past at most what others committed in the same instant); before
    each read that follows a write not yet seen replayed, it asks the replicas
    how far they have replayed. Its own connections, whose backends' CPU is left
    out of the figures; the routers under test never see them.
    """

    def __init__(self, cluster: PgCluster) -> None:
        self.primary = psycopg.connect(cluster.primary.dsn(DATABASE), autocommit=True)
        self.replicas = [
            psycopg.connect(node.dsn(DATABASE), autocommit=True) for node in cluster.replicas
        ]
        self.pids = [c.info.backend_pid for c in (self.primary, *self.replicas)]
        self.position = 0  # of the client's last write
        self.replayed = True  # by some replica

    def wrote(self) -> None:
        # Without ::text: not the statement routerkit sends, which is counted.
        (lsn,) = self.primary.execute("SELECT pg_current_wal_insert_lsn()").fetchone()  # type: ignore[misc]
        self.position = parse_lsn(str(lsn))
        self.replayed = False

    def could_read_a_replica(self) -> bool:
        if not self.replayed:
            for connection in self.replicas:
                (replay,) = connection.execute("SELECT pg_last_wal_replay_lsn()").fetchone()  # type: ignore[misc]
                if replay is not None and parse_lsn(str(replay)) >= self.position:
                    self.replayed = True
                    break
        return self.replayed

    def close(self) -> None:
        for connection in (self.primary, *self.replicas):
            connection.close()


# -- CPU ----------------------------------------------------------------------


def _cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of a process (and of its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def app_cpu(master: int) -> float:
    return _cpu(master, children=True) + sum(_cpu(p) for p in _children(master))


def db_cpu(cluster: PgCluster, excluded: Sequence[int]) -> float:
    """CPU of every PostgreSQL process of the cluster, exited backends included."""
    total = 0.0
    for node in cluster.nodes:
        pids = _processes_in(node.data_dir)
        postmaster = min(pids) if pids else None  # it forked the others
        for pid in pids:
            if pid not in excluded:
                total += _cpu(pid, children=pid == postmaster)
    return total


# -- the servers ----------------------------------------------------------------


@contextmanager
def gunicorn(
    module: str, env: dict[str, str], *, chdir: Path, pythonpath: Path
) -> Iterator[tuple[int, int]]:
    """Serve a WSGI module; yield (port, master pid) once it answers."""
    (port,) = free_ports(1)
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--threads",
        "4",
        "--worker-class",
        "gthread",
        "--chdir",
        str(chdir),
        "--pythonpath",
        str(pythonpath),
        "--log-level",
        "warning",
        module,
    ]
    process = subprocess.Popen(command, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/")
                connection.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- one measured run ---------------------------------------------------------


@dataclass
class Result:
    name: str
    pattern: str
    requests: int
    seconds: float
    replica_share: float
    ceiling: float
    stale: int
    errors: int
    app_ms: float
    db_ms: float
    p50_ms: float
    p99_ms: float

    @property
    def of_ceiling(self) -> float:
        return self.replica_share / self.ceiling if self.ceiling else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.app_ms + self.db_ms


def statement_calls(cluster: PgCluster, pattern: str) -> dict[str, int]:
    """node -> calls of statements whose text matches `pattern` (LIKE) since the reset."""
    calls = {}
    for node in cluster.nodes:
        ((count,),) = cluster.execute(
            node,
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE %s",
            (pattern,),
            dbname=DATABASE,
        )
        calls[node.name] = int(count)
    return calls


def reset_statements(cluster: PgCluster) -> None:
    for node in cluster.nodes:
        cluster.execute(node, "SELECT pg_stat_statements_reset()", dbname=DATABASE)


@contextmanager
def lag(cluster: PgCluster, pattern: str) -> Iterator[None]:
    if pattern == STEADY:
        for replica in cluster.replicas:
            cluster.configure(replica, recovery_min_apply_delay="200ms")
        try:
            yield
        finally:
            cluster.restore()
        return
    stop = threading.Event()

    def stall() -> None:
        while not stop.wait(2.0):
            for replica in cluster.replicas:
                cluster.pause_replay(replica)
            if stop.wait(2.0):
                break
            for replica in cluster.replicas:
                cluster.resume_replay(replica)

    thread = threading.Thread(target=stall, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        cluster.restore()


@dataclass
class Run:
    """One configuration under one kind of lag, once."""

    trace: Trace
    seconds: float
    replica_reads: int  # the read view's SELECTs on replicas (pg_stat_statements)
    all_reads: int
    app_seconds: float  # CPU of gunicorn
    db_seconds: float  # CPU of PostgreSQL


def measure(cluster: PgCluster, pattern: str, env: dict[str, str], seconds: float) -> Run:
    with gunicorn("offload_app.wsgi:application", env, chdir=HERE, pythonpath=HERE) as (port, pid):
        run_clients(port, min(2.0, seconds), Trace())  # warm up: connections, imports
        oracles = [Oracle(cluster) for _ in range(CLIENTS)]
        excluded = [pid for oracle in oracles for pid in oracle.pids]
        try:
            with lag(cluster, pattern):
                reset_statements(cluster)
                trace = Trace()
                app_before, db_before = app_cpu(pid), db_cpu(cluster, excluded)
                started = time.monotonic()
                run_clients(port, seconds, trace, oracles)
                elapsed = time.monotonic() - started
                app_used = app_cpu(pid) - app_before
                db_used = db_cpu(cluster, excluded) - db_before
                reads = statement_calls(cluster, READ_QUERY)
        finally:
            for oracle in oracles:
                oracle.close()
        return Run(
            trace=trace,
            seconds=elapsed,
            replica_reads=sum(n for node, n in reads.items() if node != "primary"),
            all_reads=sum(reads.values()),
            app_seconds=app_used,
            db_seconds=db_used,
        )


def summarise(name: str, pattern: str, runs: Sequence[Run]) -> Result:
    """One row from several runs: counts added up, CPU per request their median."""
    requests = sum(len(run.trace.latencies) for run in runs)
    reads = sum(len(run.trace.reads) for run in runs)
    latencies = sorted(latency for run in runs for latency in run.trace.latencies)

    def per_request(run: Run, seconds: float) -> float:
        return 1000 * seconds / max(1, len(run.trace.latencies))

    return Result(
        name=name,
        pattern=pattern,
        requests=requests,
        seconds=sum(run.seconds for run in runs),
        replica_share=sum(r.replica_reads for r in runs) / max(1, sum(r.all_reads for r in runs)),
        ceiling=sum(sum(x.eligible for x in r.trace.reads) for r in runs) / max(1, reads),
        stale=sum(run.trace.stale for run in runs),
        errors=sum(run.trace.errors for run in runs),
        app_ms=statistics.median(per_request(r, r.app_seconds) for r in runs),
        db_ms=statistics.median(per_request(r, r.db_seconds) for r in runs),
        p50_ms=1000 * latencies[len(latencies) // 2] if latencies else 0.0,
        p99_ms=1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
    )


# -- probes at paced load -------------------------------------------------------

PROBE_RATES: tuple[float | None, ...] = (1.0, 10.0, 100.0, None)


def probes(cluster: PgCluster, seconds: float) -> list[tuple[str, float, dict[str, float]]]:
    """(load, requests/s, statements per second by kind) for routerkit at each rate."""
    env = {"OFFLOAD_ROUTER": "routerkit", "OFFLOAD_PORTS": ports(cluster)}
    kinds = {
        "health probes": "SELECT pg_is_in_recovery()%",
        "replica checks": "SELECT pg_last_wal_replay_lsn()::text",
        "write positions": "SELECT pg_current_wal_insert_lsn()::text",
    }
    rows = []
    with gunicorn("offload_app.wsgi:application", env, chdir=HERE, pythonpath=HERE) as (port, _):
        run_clients(port, min(2.0, seconds), Trace())
        for rate in PROBE_RATES:
            reset_statements(cluster)
            trace = Trace()
            started = time.monotonic()
            run_clients(
                port, seconds, trace, clients=min(CLIENTS, int(rate or CLIENTS)) or 1, rate=rate
            )
            elapsed = time.monotonic() - started
            counts = {
                kind: sum(statement_calls(cluster, text).values()) / elapsed
                for kind, text in kinds.items()
            }
            load = f"{rate:g} requests/s" if rate else "as fast as the clients go"
            rows.append((load, len(trace.latencies) / elapsed, counts))
    return rows


def ports(cluster: PgCluster) -> str:
    return ",".join(str(node.port) for node in cluster.nodes)


# -- the example project over HTTP ------------------------------------------------

EXAMPLE_DOCS_SETTINGS = "offload_app.example_docs"


def http_benchmark(cluster: PgCluster, seconds: float) -> list[tuple[str, float, float]]:
    """(router, p50 ms, requests/s) of `wrk` on the example project's GET /notes/<id>/."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (benchmarks/run.sh does)")
    cluster.create_database("example")
    urls = [f"postgres://postgres@127.0.0.1:{node.port}/example" for node in cluster.nodes]
    env = {
        "DATABASE_URL": urls[0],
        "DATABASE_REPLICA_URLS": ",".join(urls[1:]),
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
    }
    python = str(Path(sys.executable))
    subprocess.run(
        [python, "example_project/manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    rows = []
    for router, settings in (
        ("Django docs router", EXAMPLE_DOCS_SETTINGS),
        ("routerkit", "example_project.settings"),
    ):
        run_env = {**env, "DJANGO_SETTINGS_MODULE": settings}
        with gunicorn("example_project.wsgi:application", run_env, chdir=ROOT, pythonpath=HERE) as (
            port,
            _,
        ):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request(
                "POST",
                "/notes/",
                body="text=benchmark",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            response = connection.getresponse()
            note = json.loads(response.read())["id"]
            for replica in cluster.replicas:
                cluster.wait_replayed(replica)
            output = subprocess.run(
                [
                    wrk,
                    "-t2",
                    "-c8",
                    f"-d{max(1, int(seconds))}s",
                    "--latency",
                    f"http://127.0.0.1:{port}/notes/{note}/",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows.append((router, _wrk_p50(output), _wrk_rate(output)))
    return rows


def _wrk_p50(output: str) -> float:
    match = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no p50 in wrk's output:\n{output}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


def _wrk_rate(output: str) -> float:
    match = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no rate in wrk's output:\n{output}")
    return float(match.group(1))


# -- the report -------------------------------------------------------------------


def offload_table(results: list[Result]) -> str:
    lines = [
        "| lag | configuration | reads on replicas | ceiling | of ceiling | stale own-write reads "
        "| CPU per request (app + db) | x docs router | p50 | p99 | requests/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    docs = {r.pattern: r for r in results if r.name == "Django docs router"}
    for r in results:
        base = docs.get(r.pattern)
        ratio = f"{r.cpu_ms / base.cpu_ms:.2f}x" if base and base.cpu_ms else "n/a"
        lines.append(
            f"| {r.pattern} | {r.name} | {r.replica_share:.1%} | {r.ceiling:.1%} "
            f"| {r.of_ceiling:.2f}x | {r.stale} "
            f"| {r.cpu_ms:.2f} ms ({r.app_ms:.2f} + {r.db_ms:.2f}) "
            f"| {ratio} | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms | {r.requests / r.seconds:,.0f} |"
        )
    return "\n".join(lines)


def probes_table(rows: list[tuple[str, float, dict[str, float]]]) -> str:
    lines = [
        "| load | requests/s | health probes/s | replica checks/s | write positions/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for load, rate, counts in rows:
        lines.append(
            f"| {load} | {rate:,.1f} | {counts['health probes']:.1f} "
            f"| {counts['replica checks']:.1f} | {counts['write positions']:.1f} |"
        )
    return "\n".join(lines)


def http_table(rows: list[tuple[str, float, float]]) -> str:
    lines = ["| router | p50 | requests/s |", "|---|---:|---:|"]
    docs = rows[0][2] if rows else 0.0
    for router, p50, rate in rows:
        lines.append(f"| {router} | {p50:.2f} ms | {rate:,.0f} ({rate / docs:.2f}x) |")
    return "\n".join(lines)


def machine() -> str:
    import django

    cpus = os.cpu_count()
    return (
        f"{platform.machine()}, {cpus} CPUs, Python {platform.python_version()}, "
        f"Django {django.__version__}, PostgreSQL {_server_version()}, "
        f"gunicorn 2 workers x 4 threads, "
        f"{CLIENTS} clients"
    )


_version: list[str] = []


def _server_version() -> str:
    return _version[0] if _version else "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved runs of every configuration"
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="configurations whose name contains NAME"
    )
    parser.add_argument(
        "--pattern", action="append", choices=PATTERNS, help="only these kinds of lag"
    )
    parser.add_argument("--skip-probes", action="store_true", help="leave out the probe table")
    parser.add_argument("--skip-http", action="store_true", help="leave out the wrk benchmark")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()

    chosen = {
        name: spec
        for name, spec in CONFIGURATIONS.items()
        if not args.only or any(part in name for part in args.only)
    }
    with PgCluster(settings={"shared_preload_libraries": "pg_stat_statements"}) as cluster:
        cluster.create_database(DATABASE)
        cluster.execute(cluster.primary, "CREATE EXTENSION pg_stat_statements", dbname=DATABASE)
        _version.append(cluster.execute(cluster.primary, "SHOW server_version")[0][0].split()[0])
        migrate = {"OFFLOAD_ROUTER": "all-primary", "OFFLOAD_PORTS": ports(cluster)}
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v0"],
            cwd=HERE,
            env={
                **os.environ,
                **migrate,
                "DJANGO_SETTINGS_MODULE": "offload_app.settings",
                "PYTHONPATH": str(HERE),
            },
            check=True,
        )
        for replica in cluster.replicas:
            cluster.wait_replayed(replica)
        results = []
        for pattern in args.pattern or PATTERNS:
            runs: dict[str, list[Run]] = {name: [] for name in chosen}
            # Interleaved rounds: the machine's drift touches every configuration alike.
            for _ in range(args.rounds):
                for name, (router, extra) in chosen.items():
                    env = {"OFFLOAD_ROUTER": router, "OFFLOAD_PORTS": ports(cluster), **extra}
                    runs[name].append(measure(cluster, pattern, env, args.seconds))
            for name in chosen:
                result = summarise(name, pattern, runs[name])
                print(
                    f"{pattern:>20} | {name:<30} replicas {result.replica_share:6.1%} "
                    f"ceiling {result.ceiling:6.1%} stale {result.stale:4} "
                    f"cpu {result.cpu_ms:.2f} ms p50 {result.p50_ms:.1f} ms errors {result.errors}",
                    file=sys.stderr,
                )
                results.append(result)
        probe_rows = [] if args.skip_probes else probes(cluster, args.seconds)
        http_rows = [] if args.skip_http else http_benchmark(cluster, args.seconds)

    print(offload_table(results))
    if probe_rows:
        print(probes_table(probe_rows))
    if http_rows:
        print(http_table(http_rows))
    if args.write_readme:
        about = (
            f"Measured by `benchmarks/offload.py` ({args.rounds} interleaved runs of "
            f"{args.seconds:g} s per row; CPU is their median) on {machine()}."
        )
        write_block("offload", offload_table(results), about)
        if probe_rows:
            write_block("probes", probes_table(probe_rows), about)
        if http_rows:
            write_block("http", http_table(http_rows), about)


if __name__ == "__main__":
    main()
