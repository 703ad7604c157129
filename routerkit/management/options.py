"""Options the routerkit commands share."""

from __future__ import annotations

from django.core.management.base import CommandParser


def add_database_option(parser: CommandParser, help: str) -> None:
    """--database ALIAS, repeatable, into options["databases"]."""
    parser.add_argument(
        "--database",
        action="append",
        dest="databases",
        default=[],
        metavar="ALIAS",
        help=help,
    )


def add_format_option(parser: CommandParser, help: str) -> None:
    """--format text|json, into options["format"]."""
    parser.add_argument("--format", choices=["text", "json"], default="text", help=help)
