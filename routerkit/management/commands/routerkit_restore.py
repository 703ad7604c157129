"""manage.py routerkit_restore: load an archive into the databases the routers write to."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routerkit.management.options import add_database_option, add_format_option
from routerkit.operations.archive import Archive
from routerkit.operations.migrate import chosen
from routerkit.operations.restore import Plan, plan, restore
from routerkit.runtime import get_runtime
from routerkit.state import use_primary


class Command(BaseCommand):
    help = (
        "Restore a routerkit_dump archive: each model into the database its router "
        "writes to now, one transaction per database, counts and checksums verified "
        "before anything commits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("archive", help="Path of the archive to read.")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print what would load where, and what stops it; change nothing.",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Empty the tables of the archive's models on their targets first.",
        )
        add_database_option(
            parser, "Restore only the models written to this primary now (repeatable)."
        )
        add_format_option(parser, "Output of the plan (default text).")
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not ask before --replace empties tables.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        archive = Archive(options["archive"])
        try:
            with use_primary():
                self._restore(archive, options)
        finally:
            archive.close()

    def _restore(self, archive: Archive, options: dict[str, Any]) -> None:
        replace = options["replace"]
        config = get_runtime().config
        only = (
            chosen(config, settings.DATABASES, options["databases"])
            if options["databases"]
            else None
        )
        restore_plan = plan(archive, config, replace=replace, only=only)
        if options["format"] == "json":
            self.stdout.write(json.dumps(restore_plan.as_dict(), indent=2))
        else:
            self.stdout.write(_plan_text(restore_plan, replace=replace))
        if restore_plan.migrations or restore_plan.problems:
            raise CommandError(
                "Nothing was restored: the targets do not match the archive (see above).",
                returncode=1,
            )
        if options["dry_run"]:
            return
        if replace and options["interactive"]:
            targets = ", ".join(restore_plan.targets)
            answer = input(f"This empties the archive's tables on {targets}. Type 'yes': ")
            if answer != "yes":
                raise CommandError("Restore cancelled.", returncode=1)
        restore(archive, restore_plan, replace=replace)
        rows = sum(load.entry.rows for load in restore_plan.loads)
        if options["format"] == "json":
            return
        self.stdout.write(
            f"routerkit_restore: {rows} rows restored into "
            f"{', '.join(restore_plan.targets)}; counts and checksums verified."
        )


def _plan_text(restore_plan: Plan, *, replace: bool) -> str:
    lines = []
    for target in restore_plan.targets:
        lines.append(f"{target}:")
        for load in restore_plan.loads:
            if load.target != target:
                continue
            moved = f" (dumped from {load.source})" if load.source != target else ""
            now = f", replacing {load.existing}" if replace and load.existing else ""
            lines.append(f"  {load.entry.label}: {load.entry.rows} rows{moved}{now}")
        for difference in restore_plan.migrations.get(target, []):
            lines.append(f"  migration state differs: {difference}")
    lines += [f"refused: {problem}" for problem in restore_plan.problems]
    return "\n".join(lines)
