"""The validator: one configuration that triggers each rule, and the test settings that pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.core.checks import CheckMessage, run_checks
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import models
from django.test import override_settings
from django.test.utils import isolate_apps

from routerkit.validation import validate
from routerkit.validation.live import check_live
from routerkit.validation.static import check_static
from tests.pgcluster import PgCluster
from tests.settings import DATABASE_ROUTERS, ROUTERKIT

ROUTERKIT_ROUTERS = DATABASE_ROUTERS


def ids(messages: list[CheckMessage]) -> list[str]:
    return sorted(m.id or "" for m in messages)


def findings(messages: list[CheckMessage]) -> list[CheckMessage]:
    """Leave out the lag report (I001)."""
    return [m for m in messages if m.id != "routerkit.I001"]


def with_routers(*first: str) -> list[str]:
    return [f"tests.test_validation.{name}" for name in first] + ROUTERKIT_ROUTERS


# Routers a project might write, each with one mistake.


class AdminElsewhereRouter:
    """Splits the auth group: admin on billing."""

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "billing" if model._meta.app_label == "admin" else None

    db_for_read = db_for_write

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return db == "billing" if app_label == "admin" else None


class MigrateOnReplicaRouter:
    """Says yes to every migration on replica1 (and a MIRROR-only replica2)."""

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return True if db in ("replica1", "replica2") else None


class CounterOnBillingRouter:
    """Writes Counter to billing but never lets it migrate there."""

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "billing" if model._meta.model_name == "counter" else None


class TestappOnPrimaryRouter:
    """Django's AuthRouter pattern for testapp: writes by app_label, so the proxy Staff too."""

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "primary" if model._meta.app_label == "testapp" else None


class ContentTypesTwiceRouter:
    """Migrates contenttypes on two primaries."""

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        if app_label == "contenttypes":
            return db in ("auth_db", "primary")
        return None


def test_the_test_settings_validate_clean() -> None:
    """The guide topology with a pinned app has no finding at all."""
    assert validate() == []


class TestE001Relations:
    @override_settings(ROUTERKIT={**ROUTERKIT, "APPS": {"testapp.Comment": "billing"}})
    def test_a_foreign_key_across_databases(self) -> None:
        """Comment on billing pointing at Article on primary is E001 on the field."""
        (message,) = validate()
        assert message.id == "routerkit.E001"
        assert message.obj.name == "article"  # type: ignore[union-attr]
        assert "'billing'" in message.msg
        assert "'primary'" in message.msg
        # on_delete=CASCADE: deleting an Article would have to reach another database.
        assert "Deleting a testapp.Article would have to CASCADE the testapp.Comment" in message.msg
        assert "post_delete handler" in (message.hint or "")

    @override_settings(ROUTERKIT={**ROUTERKIT, "APPS": {"testapp.Labelling": "billing"}})
    def test_an_explicit_through_model_across_databases(self) -> None:
        """A through model elsewhere breaks both its foreign keys and the M2M field."""
        messages = validate()
        assert ids(messages) == ["routerkit.E001"] * 3
        assert any("through model" in m.msg for m in messages)

    @override_settings(
        ROUTERKIT={**ROUTERKIT, "APPS": {"billing": "billing", "billing.Tag": "primary"}}
    )
    def test_an_auto_created_many_to_many_across_databases(self) -> None:
        """Invoice.tags with Tag moved to primary is E001."""
        (message,) = validate()
        assert message.id == "routerkit.E001"
        assert message.obj.name == "tags"  # type: ignore[union-attr]

    @isolate_apps("tests.testapp")
    def test_generic_relations_need_contenttypes_on_their_database(self) -> None:
        """GenericForeignKey and GenericRelation fail when contenttypes is elsewhere."""

        class Attachment(models.Model):  # noqa: DJ008
            content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
            object_id = models.PositiveIntegerField()
            target = GenericForeignKey()

            class Meta:
                app_label = "testapp"

        class Page(models.Model):  # noqa: DJ008
            attachments = GenericRelation(Attachment)

            class Meta:
                app_label = "testapp"

        assert ids(check_static([Attachment, Page])) == ["routerkit.E001"] * 2
        apart = {"CONTRIB": {"auth": "primary"}, "APPS": {"testapp.page": "billing"}}
        with override_settings(ROUTERKIT={**ROUTERKIT, **apart}):
            messages = check_static([Attachment, Page])
        (generic,) = [m for m in messages if m.msg.startswith("GenericRelation testapp")]
        # Deleting a Page deletes its attachments: on another database.
        assert "Deleting a testapp.Page deletes its testapp.Attachment rows" in generic.msg
        assert "post_delete handler" in (generic.hint or "")
        with override_settings(ROUTERKIT={**ROUTERKIT, "CONTRIB": {"auth": "primary"}}):
            assert check_static([Attachment, Page]) == []

    @isolate_apps("tests.testapp")
    def test_a_multi_table_parent_link_across_databases(self) -> None:
        """A child of multi-table inheritance on another database than its parent is E001."""

        class Place(models.Model):  # noqa: DJ008
            class Meta:
                app_label = "testapp"

        class Restaurant(Place):  # noqa: DJ008
            class Meta:
                app_label = "testapp"

        assert check_static([Place, Restaurant]) == []
        apart = {**ROUTERKIT, "APPS": {"testapp.Restaurant": "billing"}}
        with override_settings(ROUTERKIT=apart):
            (message,) = check_static([Place, Restaurant])
        assert message.id == "routerkit.E001"
        assert message.obj.name == "place_ptr"  # type: ignore[union-attr]
        assert "parent link" in message.msg


class TestE002Contrib:
    @override_settings(DATABASE_ROUTERS=with_routers("AdminElsewhereRouter"))
    def test_admin_apart_from_auth(self) -> None:
        """A project router that moves admin away from auth is E002 (and E001 on LogEntry)."""
        messages = validate()
        assert ids(messages) == ["routerkit.E001", "routerkit.E001", "routerkit.E002"]
        assert {m.obj for m in messages if m.id == "routerkit.E002"} == {"django.contrib.admin"}


class TestE004ReplicasMigrate:
    @override_settings(DATABASE_ROUTERS=with_routers("MigrateOnReplicaRouter"))
    def test_a_replica_allowed_to_migrate(self) -> None:
        """Replicas named in ROUTERKIT or only by TEST MIRROR must never migrate."""
        with override_settings(
            ROUTERKIT={
                **ROUTERKIT,
                "REPLICAS": {"primary": ["replica1"], "billing": ["billing_replica"]},
            }
        ):
            messages = validate()
        assert ids(messages) == ["routerkit.E004", "routerkit.E004"]
        assert {m.obj for m in messages} == {"replica1", "replica2"}


class TestE005MissingTable:
    @override_settings(DATABASE_ROUTERS=with_routers("CounterOnBillingRouter"))
    def test_written_where_it_may_not_migrate(self) -> None:
        """Counter written to billing, migrated only on primary: its table is missing."""
        (message,) = validate()
        assert message.id == "routerkit.E005"
        assert message.obj._meta.label == "testapp.Counter"  # type: ignore[union-attr]

    @override_settings(DATABASE_ROUTERS=with_routers("TestappOnPrimaryRouter"))
    def test_a_proxy_written_away_from_its_concrete_table(self) -> None:
        """Staff (a proxy of auth.User) written to primary, auth_user only on auth_db."""
        (message,) = validate()
        assert message.id == "routerkit.E005"
        assert message.obj._meta.label == "testapp.Staff"
        assert "'auth_user'" in message.msg


class TestE007EmptyDefault:
    @override_settings(DATABASE_ROUTERS=[])
    def test_models_routed_to_an_empty_default(self) -> None:
        """With no routers, every app lands on the empty default."""
        messages = [m for m in validate() if m.id == "routerkit.E007"]
        assert {m.obj for m in messages} >= {"auth", "testapp", "billing", "sessions"}


class TestW001Contenttypes:
    @override_settings(DATABASE_ROUTERS=with_routers("ContentTypesTwiceRouter"))
    def test_contenttypes_on_two_primaries(self) -> None:
        """contenttypes migrated on auth_db and primary is W001."""
        (message,) = validate()
        assert message.id == "routerkit.W001"
        assert "auth_db" in message.msg
        assert "primary" in message.msg


class TestW002RouterOrder:
    @override_settings(
        DATABASE_ROUTERS=[
            "routerkit.routers.PrimaryReplicaRouter",
            "routerkit.routers.ContribRouter",
            "routerkit.routers.AppRouter",
        ]
    )
    def test_a_catch_all_first_shadows_the_rest(self) -> None:
        """PrimaryReplicaRouter first: ContribRouter and AppRouter are never asked."""
        messages = validate()
        assert ids(messages) == ["routerkit.W002", "routerkit.W002"]
        assert "ContribRouter" in messages[0].msg + messages[1].msg


class TestW003Mirror:
    @override_settings(
        ROUTERKIT={**ROUTERKIT, "REPLICAS": {"primary": ["replica1", "replica2", "reporting"]}}
    )
    def test_a_replica_without_test_mirror(self) -> None:
        """A replica alias with no TEST MIRROR is W003."""
        (message,) = validate()
        assert (message.id, message.obj) == ("routerkit.W003", "reporting")


class TestW009UnusedDatabase:
    @override_settings(SILENCED_SYSTEM_CHECKS=[])
    def test_a_database_nothing_is_routed_to(self) -> None:
        """Aliases no router writes, reads or migrates on are W009; replicas and dummies are not."""
        unused = [m for m in validate() if m.id == "routerkit.W009"]
        assert sorted(str(m.obj) for m in unused) == ["archive", "reporting"]
        assert all(m.hint and "silence" in m.hint for m in unused)

    @override_settings(
        SILENCED_SYSTEM_CHECKS=[],
        ROUTERKIT={**ROUTERKIT, "APPS": {"billing": "billing", "testapp.Counter": "archive"}},
    )
    def test_a_database_a_model_is_placed_on_is_used(self) -> None:
        """Placing a model on an alias makes it used."""
        assert [m.obj for m in validate() if m.id == "routerkit.W009"] == ["reporting"]


def test_checks_run_without_any_contrib_app() -> None:
    """`check` and `routerkit_validate` work in a project that installs no contrib app."""
    root = Path(__file__).resolve().parent.parent
    for command in (["check"], ["routerkit_validate"]):
        result = subprocess.run(
            [sys.executable, "-m", "django", *command, "--settings", "tests.settings_minimal"],
            capture_output=True,
            text=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr


class TestSystemChecks:
    @override_settings(ROUTERKIT={**ROUTERKIT, "APPS": {"testapp.Comment": "billing"}})
    def test_static_rules_run_under_manage_py_check(self) -> None:
        """`manage.py check` reports E001 (and fails on it)."""
        with pytest.raises(SystemCheckError, match=r"routerkit\.E001"):
            call_command("check")

    @override_settings(ROUTERKIT={**ROUTERKIT, "APPS": {"testapp.Comment": "billing"}})
    def test_model_rules_judge_only_the_apps_named(self) -> None:
        """`check contenttypes` does not judge testapp's models; `check testapp` does."""
        call_command("check", "contenttypes", stdout=StringIO())
        with pytest.raises(SystemCheckError, match=r"routerkit\.E001"):
            call_command("check", "testapp", stdout=StringIO())

    @override_settings(ROUTERKIT={**ROUTERKIT, "APPS": {"testapp.Comment": "billing"}})
    def test_model_rules_are_tagged_models_and_routerkit(self) -> None:
        """As Django tags its model checks: `check --tag models` runs E001."""
        for tag in ("models", "routerkit"):
            assert "routerkit.E001" in ids(run_checks(tags=[tag]))
        assert "routerkit.E001" not in ids(run_checks(tags=["urls"]))


# -- live rules, on the real cluster ---------------------------------------------------


@pytest.fixture
def renamed_table(replication: PgCluster) -> Iterator[PgCluster]:
    """billing_tag renamed away on billing (a table dropped outside migrations)."""
    replication.execute(
        "primary", "ALTER TABLE billing_tag RENAME TO billing_tag_away", dbname="routerkit_billing"
    )
    try:
        yield replication
    finally:
        replication.execute(
            "primary",
            "ALTER TABLE billing_tag_away RENAME TO billing_tag",
            dbname="routerkit_billing",
        )


# The migration that creates Counter, Label and Labelling, and their tables.
TESTAPP_0002 = ("testapp", "0002_counter_label_labelling_label_articles")
TESTAPP_0002_TABLES = ["testapp_counter", "testapp_label", "testapp_labelling"]


@pytest.fixture
def unapplied_migration(replication: PgCluster) -> Iterator[PgCluster]:
    """testapp's 0002 not applied on primary yet: a new model, just before `migrate`."""
    (row,) = replication.execute(
        "primary",
        "DELETE FROM django_migrations WHERE app = %s AND name = %s "
        "RETURNING id, app, name, applied",
        TESTAPP_0002,
        dbname="routerkit",
    )
    for table in TESTAPP_0002_TABLES:
        replication.execute(
            "primary", f"ALTER TABLE {table} RENAME TO {table}_away", dbname="routerkit"
        )
    try:
        yield replication
    finally:
        for table in TESTAPP_0002_TABLES:
            replication.execute(
                "primary", f"ALTER TABLE {table}_away RENAME TO {table}", dbname="routerkit"
            )
        replication.execute(
            "primary",
            "INSERT INTO django_migrations (id, app, name, applied) VALUES (%s, %s, %s, %s)",
            row,
            dbname="routerkit",
        )


class TestLive:
    def test_the_live_databases_validate_clean(self, replication: PgCluster) -> None:
        """Every table is where it belongs; replicas only add their lag report."""
        messages = validate(["primary", "auth_db", "billing", "replica1"])
        assert [(m.id, m.obj) for m in sorted(messages, key=lambda m: str(m.obj))] == [
            ("routerkit.I001", "billing_replica"),
            ("routerkit.I001", "replica1"),
            ("routerkit.I001", "replica2"),
        ]

    def test_e006_a_missing_table(self, renamed_table: PgCluster) -> None:
        """A table gone from the database its model is written to is E006."""
        (message,) = findings(check_live(["billing"]))
        assert message.id == "routerkit.E006"
        assert message.obj._meta.label == "billing.Tag"  # type: ignore[union-attr]
        assert "applied" in (message.hint or "")
        # `migrate billing zero --fake` would unapply every billing migration, not one table.
        assert "--fake" not in (message.hint or "")
        assert "sqlmigrate billing" in (message.hint or "")

    def test_e006_runs_under_check_with_a_database(self, renamed_table: PgCluster) -> None:
        """`manage.py check --database billing` reports E006; plain check does not."""
        call_command("check")
        with pytest.raises(SystemCheckError, match=r"routerkit\.E006"):
            call_command("check", databases=["billing"])

    def test_no_e006_for_a_model_whose_migration_is_not_applied(
        self, unapplied_migration: PgCluster
    ) -> None:
        """Tables that an unapplied migration will create are pending, not missing."""
        assert findings(check_live(["primary"])) == []

    def test_migrate_is_not_blocked_by_its_own_new_tables(
        self, unapplied_migration: PgCluster
    ) -> None:
        """The checks `migrate --database primary` runs first find no routerkit error."""
        messages = run_checks(databases=["primary"])
        visible = [m for m in messages if not m.is_silenced()]
        assert ids([m for m in visible if (m.id or "").startswith("routerkit.")]) == [
            "routerkit.I001",
            "routerkit.I001",
        ]

    def test_e006_only_for_tables_the_applied_migrations_created(
        self, unapplied_migration: PgCluster
    ) -> None:
        """With 0002 unapplied, Comment's missing table (from 0001) is E006, 0002's are not."""
        unapplied_migration.execute(
            "primary",
            "ALTER TABLE testapp_comment RENAME TO testapp_comment_away",
            dbname="routerkit",
        )
        try:
            messages = findings(check_live(["primary"]))
        finally:
            unapplied_migration.execute(
                "primary",
                "ALTER TABLE testapp_comment_away RENAME TO testapp_comment",
                dbname="routerkit",
            )
        assert [(m.id, m.obj._meta.label) for m in messages] == [
            ("routerkit.E006", "testapp.Comment")
        ]

    @override_settings(MIGRATION_MODULES={"billing": None})
    def test_no_e006_for_an_app_without_migrations(self, renamed_table: PgCluster) -> None:
        """Nothing records whether syncdb created a table, so it is never called missing."""
        assert findings(check_live(["billing"])) == []

    def test_w008_a_table_where_migration_is_forbidden(self, replication: PgCluster) -> None:
        """A stray copy of a table on a database that may not migrate it is W008."""
        replication.execute(
            "primary", "CREATE TABLE testapp_counter (id int)", dbname="routerkit_billing"
        )
        try:
            (message,) = findings(check_live(["billing"]))
        finally:
            replication.execute("primary", "DROP TABLE testapp_counter", dbname="routerkit_billing")
        assert message.id == "routerkit.W008"
        assert message.obj._meta.label == "testapp.Counter"  # type: ignore[union-attr]
        # Django's migrate records every migration on every database it runs on.
        assert "django_migrations on 'billing' records testapp's migrations up to" in message.msg
        assert "sent testapp.Counter to 'primary'" in message.msg

    def test_w004_a_replica_alias_pointed_at_a_primary(self, replication: PgCluster) -> None:
        """Replica aliases on a primary server or on the primary's own database are W004."""
        replicas = {"primary": ["replica1", "replica2", "reporting", "archive"]}
        with override_settings(ROUTERKIT={**ROUTERKIT, "REPLICAS": replicas}):
            messages = [m for m in check_live(["primary"]) if m.id == "routerkit.W004"]
        assert [(m.obj, "not in recovery" in m.msg, "own database" in m.msg) for m in messages] == [
            ("archive", True, False),
            ("reporting", False, True),
        ]

    def test_w004_a_stopped_replica(self, replication: PgCluster) -> None:
        """A replica that cannot be reached is W004."""
        replication.stop_node("replica2")
        messages = [m for m in check_live(["replica2"]) if m.id == "routerkit.W004"]
        assert [(m.obj, "cannot be reached" in m.msg) for m in messages] == [("replica2", True)]

    def test_w004_a_primary_that_is_a_standby(
        self, replication: PgCluster, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An alias used as a primary that is in recovery is W004."""
        # Without its TEST["MIRROR"], nothing in the settings says it is a replica.
        monkeypatch.setitem(django_settings.DATABASES["billing_replica"], "TEST", {})
        clusters = {"primary": ["replica1", "replica2"], "billing_replica": []}
        with override_settings(ROUTERKIT={**ROUTERKIT, "REPLICAS": clusters}):
            messages = [m for m in check_live(["billing_replica"]) if m.id == "routerkit.W004"]
        assert [(m.obj, "in recovery" in m.msg) for m in messages] == [("billing_replica", True)]

    def test_the_report_gives_each_replicas_lag(self, replication: PgCluster) -> None:
        """I001 reports the replay lag of a paused replica in bytes."""
        replication.pause_replay("replica1")
        replication.execute(
            "primary",
            "INSERT INTO testapp_counter (name) SELECT 'x' FROM generate_series(1, 500)",
            dbname="routerkit",
        )
        lag = {m.obj: m.msg for m in check_live(["primary"]) if m.id == "routerkit.I001"}
        assert set(lag) == {"replica1", "replica2"}
        assert "lag 0 bytes" not in lag["replica1"]
        assert "lag 0 bytes" in lag["replica2"] or "healthy" in lag["replica2"]


# -- the command ----------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("routerkit_validate", *args, stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


class TestCommand:
    def test_clean_project_exits_zero(self) -> None:
        """No findings: exit 0 and say so."""
        assert run() == (
            0,
            "routerkit_validate: 0 errors, 0 warnings, 0 info; static rules only.\nNo findings.\n",
        )

    @override_settings(ROUTERKIT={**ROUTERKIT, "APPS": {"testapp.Comment": "billing"}})
    def test_text_report_groups_findings_with_their_hint(self) -> None:
        """Errors are listed under a heading with object, message and hint; exit 1."""
        status, out = run()
        assert status == 1
        lines = out.splitlines()
        assert lines[0].startswith("routerkit_validate: 1 errors, 0 warnings")
        assert lines[2] == "Errors:"
        assert lines[3] == "  routerkit.E001  testapp.Comment.article"
        assert lines[5].startswith("    hint: ")

    @override_settings(ROUTERKIT={**ROUTERKIT, "APPS": {"testapp.Comment": "billing"}})
    def test_json_report(self) -> None:
        """--format json is a list of objects with id, level, message, hint and obj."""
        status, out = run("--format", "json")
        assert status == 1
        (finding,) = json.loads(out)
        assert set(finding) == {"id", "level", "message", "hint", "obj"}
        assert (finding["id"], finding["level"], finding["obj"]) == (
            "routerkit.E001",
            "ERROR",
            "testapp.Comment.article",
        )

    @override_settings(
        ROUTERKIT={**ROUTERKIT, "REPLICAS": {"primary": ["replica1", "replica2", "reporting"]}}
    )
    def test_fail_level_decides_the_exit_status(self) -> None:
        """A warning fails only with --fail-level WARNING."""
        assert run()[0] == 0
        assert run("--fail-level", "WARNING")[0] == 1

    def test_unknown_database_is_a_usage_error(self) -> None:
        """An alias not in DATABASES exits 2."""
        assert run("--database", "nope")[0] == 2

    def test_bad_arguments_exit_two(self) -> None:
        """Argument errors on the command line exit 2."""
        result = subprocess.run(
            [sys.executable, "-m", "django", "routerkit_validate", "--format", "xml"],
            capture_output=True,
            text=True,
            check=False,
            env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "", "PYTHONPATH": "."},
        )
        assert result.returncode == 2, result.stderr

    def test_live_report_through_the_command(self, replication: PgCluster) -> None:
        """--database adds the live rules: the lag of both replicas."""
        status, out = run("--database", "primary", "--format", "json")
        assert status == 0
        assert [f["id"] for f in json.loads(out)] == ["routerkit.I001", "routerkit.I001"]


def test_live_checks_record_no_metrics(replication: PgCluster, registry: Any) -> None:
    """The validator's probes stay out of the server's metrics (and its multiprocess files)."""
    assert [m for m in check_live(["primary"]) if m.id == "routerkit.I001"]
    assert registry.get_sample_value("routerkit_replica_healthy", {"database": "replica1"}) is None
