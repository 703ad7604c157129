"""manage.py routerkit_dump: back up every routed database into one archive."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from routerkit.management.options import add_database_option
from routerkit.operations.dump import dump
from routerkit.operations.migrate import chosen
from routerkit.runtime import get_runtime
from routerkit.state import use_primary


class Command(BaseCommand):
    help = (
        "Back up the whole routed site into one archive (a zip of JSON Lines and "
        "manifests): each model read from the primary it is written to."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("archive", help="Path of the archive to write (a .zip file).")
        add_database_option(parser, "Back up only the models written to this primary (repeatable).")
        parser.add_argument(
            "--from-replica",
            action="store_true",
            help="Read each primary's models from one of its replicas, once it has "
            "replayed the primary's current position (a primary without replicas is "
            "read itself).",
        )
        parser.add_argument(
            "--replica-wait",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="How long --from-replica waits for a replica to catch up (default 10).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = get_runtime().config
        databases = chosen(config, settings.DATABASES, options["databases"])
        # Related rows that serialization follows are read where the rows are.
        with use_primary():
            dumped = dump(
                options["archive"],
                config,
                databases,
                from_replica=options["from_replica"],
                replica_wait=options["replica_wait"],
            )
        for database in dumped:
            source = "" if database.read_from == database.alias else f" from {database.read_from}"
            at = f" at {database.position}" if database.position else ""
            self.stdout.write(
                f"{database.alias}: {len(database.models)} models, {database.rows} rows{source}{at}"
            )
        total = sum(database.rows for database in dumped)
        self.stdout.write(f"routerkit_dump: {total} rows written to {options['archive']}.")
