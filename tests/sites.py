"""Sites of their own: tests.settings_site on fresh databases, driven through manage.py.

The operations commands (routerkit_migrate, routerkit_dump, routerkit_restore)
are tested as a deploy or an operator runs them: in a subprocess, against
empty databases of the real primary (names prefixed per site), which its
replicas replay like any other.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from psycopg import sql

from tests.conftest import PRIMARY_DATABASES
from tests.pgcluster import PgCluster

ROOT = Path(__file__).resolve().parent.parent
_prefixes = itertools.count()


class Site:
    def __init__(self, cluster: PgCluster, **env: str) -> None:
        self.cluster = cluster
        self.prefix = f"rksite{os.getpid()}_{next(_prefixes)}"
        self.env = env

    def create(self) -> Site:
        for name in PRIMARY_DATABASES.values():
            self.cluster.create_database(self.database(name))
        return self

    def drop(self) -> None:
        for name in PRIMARY_DATABASES.values():
            self.cluster.execute(
                self.cluster.primary,
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.database(name))
                ),
            )

    def database(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def command(self, *args: str, **env: str) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of `manage.py *args` for this site."""
        return [sys.executable, "-m", "django", *args], {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings_site",
            "ROUTERKIT_TEST_PG_PORTS": ",".join(str(port) for port in settings.PG_PORTS),
            "ROUTERKIT_TEST_DB_PREFIX": self.prefix,
            "PYTHONPATH": str(ROOT),
            **self.env,
            **env,
        }

    def manage(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        argv, environment = self.command(*args, **env)
        return subprocess.run(
            argv, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=300
        )

    def migrate(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.manage("routerkit_migrate", *args, **env)

    def query(self, alias: str, statement: str) -> list[tuple[Any, ...]]:
        return self.cluster.execute(
            self.cluster.primary, statement, dbname=self.database(PRIMARY_DATABASES[alias])
        )

    def tables(self, alias: str) -> set[str]:
        rows = self.query(alias, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {name for (name,) in rows}

    def recorded(self, alias: str) -> set[str]:
        if "django_migrations" not in self.tables(alias):
            return set()
        return {f"{a}.{n}" for a, n in self.query(alias, "SELECT app, name FROM django_migrations")}


def fresh_site(cluster: PgCluster, **env: str) -> Iterator[Site]:
    """A site on fresh, empty databases, dropped afterwards (for fixtures)."""
    site = Site(cluster, **env).create()
    try:
        yield site
    finally:
        site.drop()
