"""manage.py routerkit_status: each cluster's replicas, their lag, and where reads went."""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routerkit.conf import get_config
from routerkit.health import command_monitor
from routerkit.status import build_report, now, read_decisions

# Cursor home, then erase the screen: each --watch frame replaces the last.
CLEAR = "\x1b[H\x1b[2J"
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
                self.stdout.write(json.dumps({"time": now(time.time()), "clusters": []}))
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
                report = build_report(config, monitor.refresh(), read_decisions(url, token))
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


# -- options ------------------------------------------------------------------------------


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


# -- rendering ----------------------------------------------------------------------------


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
