"""manage.py routerkit_validate: the validator's report, for people and for CI."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routerkit.management.options import add_database_option, add_format_option
from routerkit.validation import validate

LEVELS = {
    checks.CRITICAL: "CRITICAL",
    checks.ERROR: "ERROR",
    checks.WARNING: "WARNING",
    checks.INFO: "INFO",
    checks.DEBUG: "DEBUG",
}
# title, lowest level, highest level (exclusive)
_SECTIONS = [
    ("Errors", checks.ERROR, 1000),
    ("Warnings", checks.WARNING, checks.ERROR),
    ("Info", 0, checks.WARNING),
]


class Command(BaseCommand):
    help = (
        "Check database routing: relations across databases, contrib placement, "
        "migrations, and with --database the live tables and replication roles."
    )
    # The report is the point: do not stop at the system checks' own errors.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_option(parser, "Also check this live database (repeatable).")
        add_format_option(parser, "Output of the report (default text).")
        parser.add_argument(
            "--fail-level",
            choices=["ERROR", "WARNING"],
            default="ERROR",
            help="Exit with status 1 when a finding reaches this level (default ERROR).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        unknown = [a for a in options["databases"] if a not in settings.DATABASES]
        if unknown:
            raise CommandError(
                f"Unknown database alias: {', '.join(unknown)}. "
                f"Choose from: {', '.join(settings.DATABASES)}.",
                returncode=2,
            )
        findings = validate(options["databases"])
        findings.sort(key=lambda m: (-m.level, m.id or "", _obj(m)))
        if options["format"] == "json":
            self.stdout.write(json.dumps([_as_dict(m) for m in findings], indent=2))
        else:
            self.stdout.write(_text(findings, options["databases"]))
        threshold = checks.ERROR if options["fail_level"] == "ERROR" else checks.WARNING
        failing = sum(1 for m in findings if m.level >= threshold)
        if failing:
            raise CommandError(
                f"{failing} finding(s) at {options['fail_level']} level or above.", returncode=1
            )


def _obj(message: CheckMessage) -> str:
    obj = message.obj
    if obj is None:
        return ""
    meta = getattr(obj, "_meta", None)
    if meta is not None and isinstance(obj, type):
        return str(meta.label)
    model = getattr(obj, "model", None)
    if model is not None and hasattr(obj, "name"):
        return f"{model._meta.label}.{obj.name}"
    return str(obj)


def _as_dict(message: CheckMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "level": LEVELS.get(message.level, str(message.level)),
        "message": message.msg,
        "hint": message.hint,
        "obj": _obj(message),
    }


def _text(findings: list[CheckMessage], databases: list[str]) -> str:
    counts = {}
    lines: list[str] = []
    for title, low, high in _SECTIONS:
        section = [m for m in findings if low <= m.level < high]
        counts[title] = len(section)
        if not section:
            continue
        lines += ["", f"{title}:"]
        for message in section:
            lines.append(f"  {message.id}  {_obj(message)}")
            lines.append(f"    {message.msg}")
            if message.hint:
                lines.append(f"    hint: {message.hint}")
    checked = f"; live: {', '.join(databases)}" if databases else "; static rules only"
    summary = ", ".join(f"{n} {title.lower()}" for title, n in counts.items())
    head = f"routerkit_validate: {summary}{checked}."
    if not findings:
        return f"{head}\nNo findings."
    return "\n".join([head, *lines])
