"""manage.py routerkit_migrate: Django's migrate on every primary, in a fixed order."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.management.commands import migrate
from django.db.migrations.migration import Migration

from routerkit.management.options import add_database_option, add_format_option
from routerkit.operations.migrate import DatabasePlan, check_app_label, chosen, plan
from routerkit.runtime import get_runtime
from routerkit.state import use_primary


class Command(BaseCommand):
    help = (
        "Run migrations on every primary routerkit manages (never on a replica): the "
        "database of contenttypes and auth first, then DEFAULT, then the others in "
        "DATABASES order."
    )
    # Checks run once, below, for every database instead of once per migrate call.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "app_label", nargs="?", help="Migrate this app only (on every primary)."
        )
        parser.add_argument(
            "migration_name",
            nargs="?",
            help="Bring the app to the state after this migration ('zero' unapplies them all).",
        )
        add_database_option(
            parser, "Migrate only this primary (repeatable); the order stays the fixed one."
        )
        parser.add_argument(
            "--plan",
            action="store_true",
            help="Print, per database, the operations that would run and those "
            "allow_migrate skips there; change nothing.",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            dest="check_unapplied",
            help="Exit with status 1 when any primary has unapplied migrations; change nothing.",
        )
        parser.add_argument(
            "--fake", action="store_true", help="Record migrations as run without running them."
        )
        parser.add_argument(
            "--fake-initial",
            action="store_true",
            help="Record initial migrations as run when all their tables already exist.",
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not prompt the user for input of any kind.",
        )
        add_format_option(parser, "Output of --plan, --check and the final report (default text).")
        parser.add_argument(
            "--skip-checks", action="store_true", help="Skip Django's system checks."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        app_label, migration_name = options["app_label"], options["migration_name"]
        if app_label is not None:
            check_app_label(app_label)
        databases = chosen(get_runtime().config, settings.DATABASES, options["databases"])
        if not options["skip_checks"]:
            self.check(databases=databases)
        as_json = options["format"] == "json"
        if options["plan"] or options["check_unapplied"]:
            plans = [plan(alias, app_label, migration_name) for alias in databases]
            if as_json:
                self.stdout.write(json.dumps({"databases": [p.as_dict() for p in plans]}, indent=2))
            else:
                self.stdout.write(_plan_text(plans, show_steps=options["plan"]))
            pending = [p.database for p in plans if p.migrations]
            if options["check_unapplied"] and pending:
                raise CommandError(f"Unapplied migrations on: {', '.join(pending)}.", returncode=1)
            return
        self._migrate(databases, options, as_json)

    def _migrate(self, databases: list[str], options: dict[str, Any], as_json: bool) -> None:
        verbosity = 0 if as_json else options["verbosity"]
        report: list[dict[str, Any]] = [
            {"database": alias, "status": "not run", "applied": []} for alias in databases
        ]
        for entry in report:
            alias = entry["database"]
            if verbosity:
                self.stdout.write(self.style.MIGRATE_HEADING(f"Database {alias}:"))
            command = _Migrate(stdout=self.stdout, stderr=self.stderr)
            try:
                # Data migrations that read without using() read the primary they change.
                with use_primary():
                    call_command(
                        command,
                        *[a for a in (options["app_label"], options["migration_name"]) if a],
                        database=alias,
                        interactive=options["interactive"],
                        fake=options["fake"],
                        fake_initial=options["fake_initial"],
                        skip_checks=True,
                        verbosity=verbosity,
                    )
            except Exception as error:  # reported below, with where it happened
                entry.update(status="failed", migration=command.current, error=_error(error))
                break
            finally:
                entry["applied"] = command.done
            entry["status"] = "migrated"
        if as_json:
            self.stdout.write(json.dumps({"databases": report}, indent=2))
        else:
            self.stdout.write(_report_text(report))
        failed = [e for e in report if e["status"] == "failed"]
        if failed:
            entry = failed[0]
            where = f" at {entry['migration']}" if entry["migration"] else ""
            raise CommandError(
                f"Migration failed on database {entry['database']}{where}: {entry['error']}",
                returncode=1,
            )


class _Migrate(migrate.Command):
    """Django's migrate, keeping track of the migration under way and those done."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current: str | None = None
        self.done: list[str] = []

    def migration_progress_callback(
        self, action: str, migration: Migration | None = None, fake: bool = False
    ) -> None:
        if migration is not None:
            label = f"{migration.app_label}.{migration.name}"
            if action.endswith("_start"):
                self.current = label
            elif action.endswith("_success"):
                self.current = None
                self.done.append(label)
        super().migration_progress_callback(action, migration, fake)


def _error(error: Exception) -> str:
    # Only the first line: a driver's message can carry a whole query.
    first = str(error).strip().splitlines()[:1]
    return f"{type(error).__name__}: {first[0]}" if first else type(error).__name__


def _plan_text(plans: list[DatabasePlan], *, show_steps: bool) -> str:
    order = ", ".join(p.database for p in plans)
    lines = [f"routerkit_migrate: {len(plans)} primaries, in this order: {order}."]
    for database_plan in plans:
        count = len(database_plan.migrations)
        lines += ["", f"Database {database_plan.database}: {count} unapplied migration(s)"]
        for migration in database_plan.migrations:
            lines.append(f"  {migration.label}{' (backwards)' if migration.backwards else ''}")
            if not show_steps:
                continue
            for step in migration.steps:
                skipped = "" if step.applies else "  [skipped here: allow_migrate]"
                lines.append(f"    {step.description}{skipped}")
    return "\n".join(lines)


def _report_text(report: list[dict[str, Any]]) -> str:
    width = max(len(entry["database"]) for entry in report)
    lines = ["", "routerkit_migrate:"]
    for entry in report:
        detail = f"{len(entry['applied'])} migration(s) applied"
        if entry["status"] == "failed":
            detail = f"{detail}, failed at {entry['migration'] or '-'}: {entry['error']}"
        elif entry["status"] == "not run":
            detail = "left as it was"
        lines.append(f"  {entry['database']:<{width}}  {entry['status']:<8}  {detail}")
    return "\n".join(lines)
