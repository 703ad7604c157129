"""A throwaway PostgreSQL primary with streaming replicas, for routerkit's integration tests.

Self-contained on purpose (stdlib + psycopg 3, no Django) so conftest fixtures can start it
before Django settings exist, and it can be driven by hand while debugging::

    with PgCluster() as cluster:
        cluster.execute("primary", "CREATE TABLE t (x int)")
        cluster.wait_replayed("replica1")

Everything listens on 127.0.0.1 only, uses trust authentication (no passwords anywhere) and
lives in a private directory under /tmp that ``stop()`` removes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql as pgsql

__all__ = ["ClusterError", "Node", "PgCluster", "find_bindir"]

PG_USER = "postgres"  # the OS user servers run as when we are root, and the DB superuser
LOG_TAIL_LINES = 40
POLL_INTERVAL = 0.02
CONNECT_TIMEOUT = 3  # libpq rounds anything below 2 s up to 2 s
STOP_MODES = ("smart", "fast", "immediate")
REQUIRED_BINARIES = ("initdb", "pg_ctl", "pg_basebackup", "postgres")


HBA = (
    "# routerkit test cluster: trust, loopback and local socket only\n"
    "local all         all              trust\n"
    "local replication all              trust\n"
    "host  all         all 127.0.0.1/32 trust\n"
    "host  replication all 127.0.0.1/32 trust\n"
)


class ClusterError(RuntimeError):
    """A cluster command failed; the message carries the command and the node's log tail."""


@dataclass
class Node:
    name: str  # "primary", "replica1", "replica2", ...
    port: int
    data_dir: Path
    host: str = "127.0.0.1"

    @property
    def node_dir(self) -> Path:
        # Kept outside data_dir so pg_basebackup never copies the primary's log or socket.
        return self.data_dir.parent

    @property
    def log_file(self) -> Path:
        return self.node_dir / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq conninfo string; trust auth, so there is never a password in it."""
        parts = {"host": self.host, "port": str(self.port), "user": PG_USER, "dbname": dbname}
        return " ".join(f"{key}={_conninfo_quote(value)}" for key, value in parts.items())


def _conninfo_quote(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_.\-/]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conf_value(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_bindir() -> Path:
    """ROUTERKIT_PG_BINDIR, else the newest Debian-layout install, else ``pg_config --bindir``."""
    override = os.environ.get("ROUTERKIT_PG_BINDIR")
    if override:
        path = Path(override)
        if not (path / "initdb").is_file():
            raise ClusterError(f"ROUTERKIT_PG_BINDIR={override!r} does not contain initdb")
        return path
    # Debian/Ubuntu keep the server binaries off PATH, one directory per major version.
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()]
    if candidates:
        return max(candidates, key=_version_key)
    pg_config = shutil.which("pg_config")
    if pg_config:
        proc = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=30
        )
        path = Path(proc.stdout.strip())
        if proc.returncode == 0 and (path / "initdb").is_file():
            return path
    raise ClusterError(
        "no PostgreSQL server binaries found: set ROUTERKIT_PG_BINDIR to the directory holding "
        "initdb/pg_ctl/postgres, or install the server (e.g. apt-get install postgresql)"
    )


def _server_prefix() -> list[str]:
    """initdb/postgres refuse to run as root, so as root every server command goes via runuser."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        raise ClusterError(
            f"running as root, but the OS user {PG_USER!r} does not exist; initdb/postgres refuse "
            f"to run as root. Install the PostgreSQL server package (it creates the user) or run "
            f"`useradd --system --home-dir /var/lib/postgresql {PG_USER}`"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterError("running as root, but `runuser` (util-linux) is not on PATH")
    return [runuser, "-u", PG_USER, "--"]


def _check_traversable(path: Path, uid: int, gid: int) -> None:
    """Fail early and clearly instead of letting initdb report a baffling permission error."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            raise ClusterError(
                f"{directory} is not traversable by the {PG_USER!r} user, so the server cannot "
                f"reach {path}; use a base directory under /tmp with mode 755"
            )


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    # Pick below the ephemeral range: the replicas' own outgoing connections take ephemeral
    # ports and could otherwise grab a port chosen for a node that has not started yet.
    low = 15000
    high = _ephemeral_range()[0] - 1
    rng = random.Random()
    ports: list[int] = []
    for _ in range(2000):
        if len(ports) == count:
            return ports
        port = rng.randint(low, high) if high > low else 0
        if port and port not in ports and _port_is_free(port):
            ports.append(port)
    raise ClusterError(f"could not find {count} free TCP ports on 127.0.0.1")


def _pid_alive(pid: int) -> bool:
    """True for a live process; a zombie counts as gone (it holds no port, memory or files)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return text.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _processes_in(directory: Path) -> list[int]:
    """Live PIDs whose working directory is ``directory`` (postgres processes chdir to PGDATA)."""
    target = str(directory.resolve())
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(entry / "cwd") == target and _pid_alive(int(entry.name)):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class PgCluster:
    """One PostgreSQL primary plus ``replicas`` physical streaming replicas on 127.0.0.1."""

    def __init__(
        self,
        ports: Sequence[int] | None = None,
        replicas: int = 2,
        base_dir: Path | None = None,
        settings: Mapping[str, str | int] | None = None,
    ) -> None:
        """`settings` go into every node's postgresql.conf (replicas copy the primary's)."""
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if ports is None:
            ports = free_ports(replicas + 1)
        if len(ports) != replicas + 1:
            raise ValueError(f"need {replicas + 1} ports (primary first), got {len(ports)}")
        self.bindir = find_bindir()
        missing = [b for b in REQUIRED_BINARIES if not (self.bindir / b).is_file()]
        if missing:
            raise ClusterError(f"{self.bindir} lacks {', '.join(missing)}")
        self._prefix = _server_prefix()
        self._owner: tuple[int, int] | None = None
        if self._prefix:
            entry = pwd.getpwnam(PG_USER)
            self._owner = (entry.pw_uid, entry.pw_gid)
        # Servers inherit this: drop PG* variables so the caller's PGHOST/PGPORT/... cannot leak
        # into pg_basebackup or the generated primary_conninfo, and pin messages to English.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self._env.update(LC_ALL="C", LANG="C")

        if base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="routerkit-pg-", dir="/tmp"))
            self._owns_base_dir = True
        else:
            self.base_dir = Path(base_dir).absolute()
            self._owns_base_dir = not self.base_dir.exists()
            self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._owns_base_dir:
            self.base_dir.chmod(0o755)  # mkdtemp makes it 0700; the server user must traverse it
            if self._owner:
                os.chown(self.base_dir, *self._owner)

        self.primary = Node("primary", ports[0], self.base_dir / "primary" / "data")
        self.replicas = [
            Node(f"replica{i}", port, self.base_dir / f"replica{i}" / "data")
            for i, port in enumerate(ports[1:], start=1)
        ]
        self.startup_seconds: float | None = None
        self._started = False
        self._stopped = False
        self._lock = threading.RLock()
        # node -> settings changed with ALTER SYSTEM, to undo (not RESET ALL:
        # pg_basebackup -R wrote a replica's primary_conninfo there)
        self._configured: dict[str, set[str]] = {}
        self._frozen: set[str] = set()  # nodes whose processes are stopped (SIGSTOP)
        self._settings = dict(settings or {})
        _LIVE.add(self)  # the atexit hook stops us even if the caller never does

    def __repr__(self) -> str:
        ports = ", ".join(f"{n.name}={n.port}" for n in self.nodes)
        return f"<PgCluster {self.base_dir} {ports}>"

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, *self.replicas]

    def node(self, name: str) -> Node:
        for candidate in self.nodes:
            if candidate.name == name:
                return candidate
        raise ClusterError(f"no node named {name!r}; have {[n.name for n in self.nodes]}")

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """initdb the primary, clone each replica with pg_basebackup, wait until all catch up."""
        with self._lock:
            if self._stopped:
                raise ClusterError("this cluster was stopped; create a new PgCluster")
            if self._started:
                raise ClusterError("cluster already started")
            self._started = True
        began = time.monotonic()
        try:
            if self._owner:
                _check_traversable(self.base_dir, *self._owner)
            for node in self.nodes:
                self._make_node_dir(node)
            self._initdb()
            self._start_server(self.primary)
            for replica in self.replicas:
                # Reserve WAL now so a replica that is stopped by a test can always catch up.
                self.execute(
                    self.primary,
                    "SELECT pg_create_physical_replication_slot(%s, true)",
                    [replica.name],
                )
            if self.replicas:
                # Clone and boot replicas concurrently: each one mostly waits on the primary.
                with ThreadPoolExecutor(max_workers=len(self.replicas)) as pool:
                    list(pool.map(self._create_replica, self.replicas))
                self.wait_streaming(timeout=30.0)
                lsn = self.current_lsn()
                for replica in self.replicas:
                    self.wait_replayed(replica, lsn, timeout=30.0)
        except BaseException:
            # Never leave half a cluster running; the error already carries the log tail.
            try:
                self.stop()
            except ClusterError as stop_error:
                print(f"pgcluster: cleanup after failed start: {stop_error}", file=sys.stderr)
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop every server (fast, then immediate, then SIGKILL) and delete the files."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            # Replicas first so the primary's shutdown checkpoint is not waiting on walsenders.
            errors = self._shutdown(self.replicas) + self._shutdown([self.primary])
            if self._owns_base_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            else:
                for node in self.nodes:
                    shutil.rmtree(node.node_dir, ignore_errors=True)
            _LIVE.discard(self)
        if errors:
            raise ClusterError("\n".join(errors))

    # ----------------------------------------------------------------- SQL helpers

    def execute(
        self,
        node: Node | str,
        sql: str | pgsql.SQL | pgsql.Composed,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        dbname: str = "postgres",
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh autocommit connection; [] when it returns no rows."""
        target = self._node(node)
        with psycopg.connect(
            target.dsn(dbname),
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            sslmode="disable",  # the servers have no SSL; skip libpq's SSL probe
        ) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def create_database(self, name: str) -> None:
        """CREATE DATABASE on the primary unless it exists, then let running replicas replay it."""
        exists = self.execute(self.primary, "SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # lost a race: fine
                self.execute(
                    self.primary, pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name))
                )
        # Connecting to a replica right away would otherwise race the replay of CREATE DATABASE.
        for replica in self.replicas:
            if self.is_running(replica) and not self.is_paused(replica):
                self.wait_replayed(replica)

    def current_lsn(self) -> str:
        return str(self.execute(self.primary, "SELECT pg_current_wal_lsn()::text")[0][0])

    def replay_lsn(self, replica: Node | str) -> str | None:
        value = self.execute(replica, "SELECT pg_last_wal_replay_lsn()::text")[0][0]
        return None if value is None else str(value)

    # ----------------------------------------------------------------- replay control

    def pause_replay(self, replica: Node | str, timeout: float = 10.0) -> None:
        """Pause WAL replay and wait until it has really stopped (not just been requested)."""
        node = self._replica(replica)
        self.execute(node, "SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + timeout
        state = None
        while True:
            state = self.execute(node, "SELECT pg_get_wal_replay_pause_state()")[0][0]
            if state == "paused":
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{node.name}: replay pause state still {state!r} after {timeout:.1f}s"
                )
            time.sleep(POLL_INTERVAL)

    def resume_replay(self, replica: Node | str) -> None:
        self.execute(self._replica(replica), "SELECT pg_wal_replay_resume()")

    def is_paused(self, replica: Node | str) -> bool:
        """True once a pause was requested, whether or not replay has already halted."""
        node = self._replica(replica)
        state = self.execute(node, "SELECT pg_get_wal_replay_pause_state()")[0][0]
        return bool(state != "not paused")

    # ----------------------------------------------------------------- node control

    def refuse_connections(self, node: Node | str, dbname: str) -> None:
        """Make a running server refuse connections to `dbname`, and end those it has.

        To its clients the server is down, while it goes on replaying (or
        staying paused); the harness's own connections (to "postgres") still work.
        """
        target = self._node(node)
        (target.data_dir / "pg_hba.conf").write_text(
            f"host  {dbname} all 127.0.0.1/32 reject\n" + HBA
        )
        self._pg_ctl(target, "reload")
        deadline = time.monotonic() + 10
        while True:
            self.execute(
                target,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [dbname],
            )
            try:
                psycopg.connect(target.dsn(dbname), connect_timeout=CONNECT_TIMEOUT).close()
            except psycopg.OperationalError:
                return
            if time.monotonic() >= deadline:
                raise ClusterError(f"{target.name} still accepts connections to {dbname}")
            time.sleep(POLL_INTERVAL)

    def accept_connections(self, node: Node | str) -> None:
        """Undo refuse_connections()."""
        target = self._node(node)
        hba = target.data_dir / "pg_hba.conf"
        if hba.read_text() != HBA:
            hba.write_text(HBA)
            if self.is_running(target):
                self._pg_ctl(target, "reload")

    def configure(self, node: Node | str, **settings: str | int) -> None:
        """Change server settings that a reload applies (ALTER SYSTEM); restore() undoes them."""
        target = self._node(node)
        self._configured.setdefault(target.name, set()).update(settings)
        for name, value in settings.items():
            self.execute(
                target,
                pgsql.SQL("ALTER SYSTEM SET {} = {}").format(
                    pgsql.Identifier(name), pgsql.Literal(str(value))
                ),
            )
        self.execute(target, "SELECT pg_reload_conf()")

    def freeze(self, node: Node | str) -> None:
        """Stop every process of a server (SIGSTOP): it accepts TCP connections, answers nothing."""
        target = self._node(node)
        self._frozen.add(target.name)
        self._signal(target, signal.SIGSTOP)

    def thaw(self, node: Node | str) -> None:
        """Undo freeze()."""
        target = self._node(node)
        self._frozen.discard(target.name)
        self._signal(target, signal.SIGCONT)

    def _signal(self, node: Node, signum: int) -> None:
        for pid in _processes_in(node.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop_node(self, replica: Node | str, mode: str = "immediate") -> None:
        """Stop one server; ``immediate`` simulates a crash (crash recovery on next start)."""
        node = self._node(replica)
        if mode not in STOP_MODES:
            raise ValueError(f"mode must be one of {STOP_MODES}, got {mode!r}")
        pid = self._postmaster_pid(node)
        if pid is None or not _pid_alive(pid):
            return
        self._pg_ctl(node, "stop", "-m", mode, "-w", "-t", "60")
        if not _wait_pid_gone(pid, timeout=10.0):
            raise ClusterError(
                f"{node.name}: postmaster pid {pid} still alive after pg_ctl stop; "
                f"last lines of {node.log_file}:\n{_tail(node.log_file)}"
            )
        if node is not self.primary and self.is_running(self.primary):
            self._wait_walsender_gone(node)

    def start_node(self, replica: Node | str) -> None:
        """Start a stopped server (no-op if running) and wait until replication streams again."""
        node = self._node(replica)
        if not self.is_running(node):
            self._start_server(node)
        if node is self.primary:
            running = [r for r in self.replicas if self.is_running(r)]
            for r in running:
                self.wait_streaming(r)
        else:
            self.wait_streaming(node)

    def is_running(self, node: Node | str) -> bool:
        pid = self._postmaster_pid(self._node(node))
        return pid is not None and _pid_alive(pid)

    # ----------------------------------------------------------------- waiting

    def wait_replayed(
        self, replica: Node | str, lsn: str | None = None, timeout: float = 10.0
    ) -> None:
        """Wait until ``replica`` has replayed ``lsn`` (default: the primary's current LSN)."""
        node = self._replica(replica)
        target = self.current_lsn() if lsn is None else lsn
        deadline = time.monotonic() + timeout
        replayed: Any = None
        pause_state: Any = None
        last_error: Exception | None = None
        while True:
            try:
                replayed, done, pause_state = self.execute(
                    node,
                    "SELECT pg_last_wal_replay_lsn()::text,"
                    " pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0,"
                    " pg_get_wal_replay_pause_state()",
                    [target],
                )[0]
                if done:
                    return
            except psycopg.Error as exc:  # e.g. still in crash recovery after a restart
                last_error = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{node.name} did not replay up to {target} within {timeout:.1f}s "
                    f"(replayed {replayed}, replay pause state {pause_state!r}, "
                    f"last error {last_error!r})"
                )
            time.sleep(POLL_INTERVAL)

    def wait_streaming(self, replica: Node | str | None = None, timeout: float = 15.0) -> None:
        """Wait until the primary streams to ``replica`` (default: to every replica)."""
        targets = self.replicas if replica is None else [self._replica(replica)]
        deadline = time.monotonic() + timeout
        pending = [t.name for t in targets]
        last_error: Exception | None = None
        while True:
            try:
                rows = self.execute(
                    self.primary, "SELECT application_name, state FROM pg_stat_replication"
                )
                streaming = {name for name, state in rows if state == "streaming"}
                # Also ask each replica: after a crash the primary can briefly still list the
                # dead connection's walsender as streaming.
                pending = [
                    t.name
                    for t in targets
                    if t.name not in streaming
                    or self.execute(t, "SELECT status FROM pg_stat_wal_receiver")
                    != [("streaming",)]
                ]
                if not pending:
                    return
            except psycopg.Error as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"replication not streaming within {timeout:.1f}s for {pending} "
                    f"(last error {last_error!r}); see logs under {self.base_dir}"
                )
            time.sleep(POLL_INTERVAL)

    def restore(self, timeout: float = 30.0) -> None:
        """Undo test damage: start stopped nodes, resume paused replay, wait until caught up."""
        for node in self.nodes:
            if node.name in self._frozen:
                self.thaw(node)
            self.accept_connections(node)
        if not self.is_running(self.primary):
            self._start_server(self.primary)
        for replica in self.replicas:
            if not self.is_running(replica):
                self._start_server(replica)  # restarting also clears any replay pause
            elif self.is_paused(replica):
                self.resume_replay(replica)
        if self.replicas:
            self.wait_streaming(timeout=timeout)
            lsn = self.current_lsn()
            for replica in self.replicas:
                self.wait_replayed(replica, lsn, timeout=timeout)
        for name, changed in self._configured.items():
            for setting in changed:
                self.execute(
                    name, pgsql.SQL("ALTER SYSTEM RESET {}").format(pgsql.Identifier(setting))
                )
            self.execute(name, "SELECT pg_reload_conf()")
        self._configured.clear()

    # ----------------------------------------------------------------- internals

    def _node(self, ref: Node | str) -> Node:
        if isinstance(ref, Node):
            if ref not in self.nodes:
                raise ClusterError(f"{ref!r} does not belong to this cluster")
            return ref
        return self.node(ref)

    def _replica(self, ref: Node | str) -> Node:
        node = self._node(ref)
        if node is self.primary:
            raise ClusterError("this operation needs a replica, not the primary")
        return node

    def _make_node_dir(self, node: Node) -> None:
        node.node_dir.mkdir(mode=0o755, exist_ok=True)
        if self._owner:
            os.chown(node.node_dir, *self._owner)

    def _run(
        self,
        args: Sequence[str],
        *,
        node: Node,
        action: str,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [*self._prefix, *args]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.base_dir,  # a cwd of /root would be unreadable for the postgres user
                env=self._env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise self._error(f"{action}: timed out after {timeout:.0f}s", node, cmd) from None
        except OSError as exc:
            raise self._error(f"{action}: {exc}", node, cmd) from exc
        if proc.returncode != 0:
            raise self._error(f"{action}: exit status {proc.returncode}", node, cmd, proc)
        return proc

    def _error(
        self,
        message: str,
        node: Node,
        cmd: Sequence[str],
        proc: subprocess.CompletedProcess[str] | None = None,
    ) -> ClusterError:
        parts = [message, f"command: {shlex.join(cmd)}"]
        if proc is not None:
            output = (proc.stdout + proc.stderr).strip()
            if output:
                parts.append("output:\n" + "\n".join(output.splitlines()[-LOG_TAIL_LINES:]))
        parts.append(f"last {LOG_TAIL_LINES} lines of {node.log_file}:\n{_tail(node.log_file)}")
        return ClusterError("\n".join(parts))

    def _pg_ctl(self, node: Node, *args: str, timeout: float = 120.0) -> None:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(node.data_dir), "-l", str(node.log_file)]
        self._run([*cmd, *args], node=node, action=f"pg_ctl {args[0]} {node.name}", timeout=timeout)

    def _initdb(self) -> None:
        node = self.primary
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(node.data_dir),
                "-A",
                "trust",
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",  # durability is pointless for a throwaway cluster
            ],
            node=node,
            action="initdb primary",
        )
        self._append_conf(
            node,
            {
                "listen_addresses": "127.0.0.1",
                "port": node.port,
                "unix_socket_directories": str(node.node_dir),
                "cluster_name": node.name,
                "wal_level": "replica",
                "max_wal_senders": 10,
                "max_replication_slots": 10,
                "hot_standby": "on",
                "hot_standby_feedback": "on",
                "fsync": "off",
                "full_page_writes": "off",
                "synchronous_commit": "on",
                "wal_receiver_status_interval": "1s",
                # A restarted replica retries a busy slot after this, instead of the 5 s default.
                "wal_retrieve_retry_interval": "100ms",
                "max_connections": 100,
                "shared_buffers": "32MB",
                **self._settings,
            },
        )
        (node.data_dir / "pg_hba.conf").write_text(HBA)

    def _append_conf(self, node: Node, settings: Mapping[str, str | int]) -> None:
        # Appended last, so these win over anything earlier in the file (for replicas: the
        # primary's port/socket/cluster_name that pg_basebackup copied).
        lines = [f"{key} = {_conf_value(value)}" for key, value in settings.items()]
        with (node.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# --- routerkit pgcluster: {node.name} ---\n" + "\n".join(lines) + "\n")

    def _create_replica(self, node: Node) -> None:
        self._run(
            [
                str(self.bindir / "pg_basebackup"),
                "-h",
                self.primary.host,
                "-p",
                str(self.primary.port),
                "-U",
                PG_USER,
                "-D",
                str(node.data_dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-S",
                node.name,
                "--no-sync",
            ],
            node=self.primary,  # failures show up in the primary's log
            action=f"pg_basebackup for {node.name}",
        )
        self._append_conf(
            node,
            {
                "port": node.port,
                "unix_socket_directories": str(node.node_dir),
                # Also the walreceiver's application_name, i.e. its pg_stat_replication row.
                "cluster_name": node.name,
            },
        )
        self._start_server(node)

    def _start_server(self, node: Node) -> None:
        self._clear_stale_locks(node)
        self._pg_ctl(node, "start", "-w", "-t", "60")

    def _postmaster_pid(self, node: Node) -> int | None:
        try:
            first = (node.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def _clear_stale_locks(self, node: Node) -> None:
        """Remove lock files of a dead postmaster before starting a new one.

        After a crash the postmaster can linger as an unreaped zombie (PID 1 here reaps slowly);
        postgres sees its PID as alive and refuses to start. A zombie holds nothing, so its lock
        files are safe to delete once the process is no longer really running.
        """
        pid = self._postmaster_pid(node)
        if pid is None:
            return
        deadline = time.monotonic() + 10.0
        # Deleting postmaster.pid also skips postgres' own check that no old backend still
        # uses the data directory, so wait for those orphans (their cwd is data_dir) too.
        while _pid_alive(pid) or _processes_in(node.data_dir):
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{node.name}: old postmaster (pid {pid}) or its children still running; "
                    f"last lines of {node.log_file}:\n{_tail(node.log_file)}"
                )
            time.sleep(POLL_INTERVAL)
        lock_files = [
            node.data_dir / "postmaster.pid",
            node.node_dir / f".s.PGSQL.{node.port}.lock",
        ]
        for lock in lock_files:
            lock.unlink(missing_ok=True)

    def _wait_walsender_gone(self, node: Node, timeout: float = 10.0) -> None:
        # Best effort: a lingering walsender still holds the slot, which would make the
        # restarted replica's first connection attempt fail and retry.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rows = self.execute(
                    self.primary,
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND active",
                    [node.name],
                )
                if rows[0][0] == 0:
                    return
            except psycopg.Error:
                return
            time.sleep(POLL_INTERVAL)

    def _shutdown(self, nodes: Sequence[Node]) -> list[str]:
        """Stop ``nodes`` for good, all at once; returns error messages instead of raising.

        Signals the postmasters directly (SIGINT = fast, SIGQUIT = immediate shutdown) rather
        than through pg_ctl: it needs no threads or subprocesses, so it also works from the
        atexit hook during interpreter shutdown.
        """
        pids = {n.name: p for n in nodes if (p := self._postmaster_pid(n)) and _pid_alive(p)}
        for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if not pids:
                break
            for pid in pids.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                pids = {name: pid for name, pid in pids.items() if _pid_alive(pid)}
                time.sleep(POLL_INTERVAL)
        return [
            f"could not stop {name} (postmaster pid {pid}); log tail:\n"
            f"{_tail(self.node(name).log_file)}"
            for name, pid in pids.items()
        ]


_LIVE: set[PgCluster] = set()


@atexit.register
def _stop_all() -> None:
    # A crashed or interrupted test run must not leave servers behind.
    for cluster in list(_LIVE):
        try:
            cluster.stop()
        except Exception as exc:  # report and keep stopping the others
            print(f"pgcluster: atexit cleanup of {cluster!r} failed: {exc}", file=sys.stderr)
