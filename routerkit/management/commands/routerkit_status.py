"""manage.py routerkit_status: each cluster's replicas, their lag, and where reads went."""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http.client import HTTPException
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from routerkit.conf import Config, get_config
from routerkit.health import (
    COMMAND_TIMEOUT,
    UNKNOWN,
    ReplicaHealth,
    Snapshot,
    command_monitor,
)
from routerkit.metrics import get_metrics
from routerkit.values import format_lsn

# Cursor home, then erase the screen: each --watch frame replaces the last.
CLEAR = "\x1b[H\x1b[2J"
DECISIONS_SAMPLE = "routerkit_route_decisions_total"
THIS_PROCESS = "(this process only)"
NO_REPLICAS = "No cluster has replicas: list them in ROUTERKIT['REPLICAS'] to see their status."
# Column title, and whether its cells are right-aligned (numbers).
_COLUMNS = [
    ("DATABASE", False),
    ("STATE", False),
    ("HEALTHY", False),
    ("LAG S", True),
    ("LAG BYTES", True),
    ("POSITION", False),
    ("PROBE MS", True),
    ("DECISIONS", True),
]
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True)
class Decisions:
    """Routing decisions counted so far, and where they were read."""

    # How the header names the source; never carries credentials.
    source: str
    # (operation, database, reason) -> decisions
    counts: Mapping[tuple[str, str, str], int]
    error: str | None = None

    def of(self, alias: str, operation: str) -> dict[str, int] | None:
        """Return the decisions of one operation that went to `alias`, by reason."""
        if self.error is not None:
            return None
        found: dict[str, int] = {}
        for (op, database, reason), number in sorted(self.counts.items()):
            if op == operation and database == alias:
                found[reason] = found.get(reason, 0) + number
        return found


class Command(BaseCommand):
    help = (
        "Show each cluster's replicas: health, lag in seconds and bytes, replayed position, "
        "and how many reads were routed to each so far."
    )
    # A status report must work on a project whose checks fail.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument(
            "--watch", action="store_true", help="Redraw every --interval seconds until Ctrl-C."
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=2.0,
            metavar="SECONDS",
            help="Seconds between --watch frames (default 2.0).",
        )
        parser.add_argument(
            "--count", type=int, metavar="N", help="With --watch: stop after N frames."
        )
        parser.add_argument(
            "--metrics-url",
            metavar="URL",
            help="Read decisions from a running server's /metrics instead of this process.",
        )
        parser.add_argument(
            "--metrics-token",
            metavar="TOKEN",
            help="Bearer token for --metrics-url (default: $ROUTERKIT_METRICS_TOKEN).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        interval: float = options["interval"]
        count: int | None = options["count"]
        url: str | None = options["metrics_url"]
        token: str | None = options["metrics_token"]
        if not math.isfinite(interval) or interval <= 0:
            raise CommandError("--interval must be a number of seconds above 0.", returncode=2)
        if count is not None and count < 1:
            raise CommandError("--count must be 1 or more.", returncode=2)
        if token is not None and url is None:
            raise CommandError("--metrics-token needs --metrics-url.", returncode=2)
        if url is not None and token is None:
            # A command line is visible to every user of the machine (ps): the
            # environment is the better place for a token.
            token = os.environ.get("ROUTERKIT_METRICS_TOKEN")
        if url is not None:
            _check_url(url)
        as_json = options["format"] == "json"
        watch: bool = options["watch"]

        config = get_config()
        if not any(cluster.replicas for cluster in config.clusters.values()):
            if as_json:
                self.stdout.write(json.dumps({"time": _now(time.time()), "clusters": []}))
            else:
                self.stdout.write(NO_REPLICAS)
            return

        # A command may wait longer than a request for a slow server. Its probes
        # are not the application's: keep them out of the metrics, where in
        # multiprocess mode they would land in the server's shared files.
        monitor = command_monitor(config)
        frames = 0
        try:
            while True:
                started = time.monotonic()
                report = _report(config, monitor.refresh(), _read_decisions(url, token))
                if as_json:
                    # One object per line when watching, for tools that read a stream.
                    self.stdout.write(json.dumps(report, indent=None if watch else 2))
                else:
                    self.stdout.write((CLEAR if watch else "") + _text(report))
                self.stdout.flush()
                frames += 1
                if not watch or (count is not None and frames >= count):
                    break
                time.sleep(max(0.0, started + interval - time.monotonic()))
        except KeyboardInterrupt:
            # Ctrl-C is how --watch ends, not a failure.
            if not watch:
                raise
        finally:
            monitor.close()


# -- decisions ----------------------------------------------------------------------------


def _read_decisions(url: str | None, token: str | None) -> Decisions:
    if url is not None:
        return _from_url(url, token)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # As the /metrics view does: every worker writes its own files, and a
        # registry built per read sums them.
        source = "from PROMETHEUS_MULTIPROC_DIR"
        registry = CollectorRegistry()
        try:
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return Decisions(source, _count(registry.collect()))
        except (OSError, ValueError) as error:
            return Decisions(source, {}, f"cannot read PROMETHEUS_MULTIPROC_DIR: {_reason(error)}")
    return Decisions(THIS_PROCESS, _count(get_metrics().registry.collect()))


def _count(families: Iterable[Metric]) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for family in families:
        for sample in family.samples:
            if sample.name != DECISIONS_SAMPLE:
                continue
            labels = sample.labels
            key = (
                labels.get("operation", ""),
                labels.get("database", ""),
                labels.get("reason", ""),
            )
            counts[key] = counts.get(key, 0) + int(sample.value)
    return counts


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError("--metrics-url must be an http:// or https:// URL.", returncode=2)
    if "@" in parts.netloc:
        # The message must not repeat the URL: it holds a password.
        raise CommandError(
            "--metrics-url must not hold credentials: pass a token with --metrics-token.",
            returncode=2,
        )


def _from_url(url: str, token: str | None) -> Decisions:
    parts = urllib.parse.urlsplit(url)
    # Shown in the header and in errors: without the query, which may hold a key.
    shown = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    source = f"from {shown}"
    request = urllib.request.Request(url, headers={"Accept": "text/plain; version=0.0.4"})
    if token:
        # Unredirected: a redirect to another host must not carry the token there.
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT) as response:
            text = response.read().decode("utf-8")
        return Decisions(source, _count(text_string_to_metric_families(text)))
    except (OSError, HTTPException, ValueError) as error:
        reason = _reason(error)
        if token:
            reason = reason.replace(token, "***")
        return Decisions(source, {}, f"cannot read decisions from {shown}: {reason}")


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        reason = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        reason = str(error.reason)
    else:
        reason = str(error) or type(error).__name__
    return " ".join(reason.split())[:200]


# -- the report ---------------------------------------------------------------------------


def _now(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="seconds")


def _report(config: Config, snapshot: Snapshot, decisions: Decisions) -> dict[str, Any]:
    clusters = []
    for primary, cluster in config.clusters.items():
        if not cluster.replicas:
            continue
        lsn = snapshot.primary_lsn.get(primary)
        reads, writes = decisions.of(primary, "read"), decisions.of(primary, "write")
        clusters.append(
            {
                "primary": primary,
                "primary_lsn": format_lsn(lsn) if lsn is not None else None,
                "decisions": None
                if reads is None or writes is None
                else {"read": reads, "write": writes},
                "replicas": [
                    _replica(
                        snapshot.replicas.get(r, ReplicaHealth(r, primary, UNKNOWN)),
                        decisions.of(r, "read"),
                    )
                    for r in cluster.replicas
                ],
            }
        )
    return {
        "time": _now(snapshot.taken_at or time.time()),
        "decisions_from": decisions.source,
        "error": decisions.error,
        "clusters": clusters,
    }


def _replica(health: ReplicaHealth, reads: dict[str, int] | None) -> dict[str, Any]:
    return {
        "alias": health.alias,
        "state": health.state,
        "healthy": health.healthy,
        "lag_seconds": health.lag_seconds,
        "lag_bytes": health.lag_bytes,
        "replay_lsn": format_lsn(health.replay_lsn) if health.replay_lsn is not None else None,
        "probe_ms": round(health.probe_seconds * 1000, 3)
        if health.probe_seconds is not None
        else None,
        "decisions": reads,
    }


def _text(report: dict[str, Any]) -> str:
    lines = [f"routerkit_status at {report['time']}; decisions so far {report['decisions_from']}"]
    if report["error"]:
        lines.append(f"error: {report['error']}")
    sections: list[tuple[str, list[list[str]]]] = []
    for cluster in report["clusters"]:
        position = cluster["primary_lsn"]
        where = f"WAL at {position}" if position else "WAL position unknown"
        title = f"Cluster {cluster['primary']!r}: primary {where}"
        decisions = cluster["decisions"]
        total = None if decisions is None else sum(sum(d.values()) for d in decisions.values())
        rows = [[cluster["primary"], "primary", "-", "-", "-", position or "-", "-", _n(total)]]
        for replica in cluster["replicas"]:
            reads = replica["decisions"]
            rows.append(
                [
                    replica["alias"],
                    replica["state"],
                    "yes" if replica["healthy"] else "no",
                    _fixed(replica["lag_seconds"], 3),
                    _bytes(replica["lag_bytes"]),
                    replica["replay_lsn"] or "-",
                    _fixed(replica["probe_ms"], 1),
                    _n(None if reads is None else sum(reads.values())),
                ]
            )
        sections.append((title, rows))
    # One set of widths for every cluster, so the tables line up with each other.
    widths = [len(title) for title, _ in _COLUMNS]
    for _, rows in sections:
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    header = [title for title, _ in _COLUMNS]
    for title, rows in sections:
        lines += ["", title]
        for row in [header, *rows]:
            cells = [
                cell.rjust(width) if right else cell.ljust(width)
                for cell, width, (_, right) in zip(row, widths, _COLUMNS, strict=True)
            ]
            lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def _n(number: int | None) -> str:
    return "?" if number is None else str(number)


def _fixed(value: float | None, places: int) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 1024:
        return str(value)
    size = float(value)
    unit = 0
    while size >= 1024 and unit < len(_UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{value} ({size:.1f} {_UNITS[unit]})"
