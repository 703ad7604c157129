"""manage.py routerkit_migrate on fresh databases of the real primary, run as a deploy would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.pgcluster import PgCluster
from tests.sites import Site, fresh_site


@pytest.fixture
def site(replication: PgCluster) -> Iterator[Site]:
    yield from fresh_site(replication)


def test_plan_lists_every_primary_in_order_with_skipped_operations(site: Site) -> None:
    """contenttypes' and auth's database first; replicas never; skips marked per database."""
    result = site.migrate("--plan", "--format", "json")
    assert result.returncode == 0, result.stderr
    plans = {p["database"]: p for p in json.loads(result.stdout)["databases"]}
    assert list(plans) == ["auth_db", "primary", "billing"]

    def applies(database: str, migration: str) -> list[bool]:
        found = [m for m in plans[database]["migrations"] if m["migration"] == migration]
        assert len(found) == 1, (database, migration)
        return [step["applies"] for step in found[0]["operations"]]

    assert all(applies("auth_db", "auth.0001_initial"))
    assert not any(applies("primary", "auth.0001_initial"))
    assert all(applies("billing", "billing.0001_initial"))
    assert not any(applies("auth_db", "billing.0001_initial"))
    # The data migration runs only where its app lives.
    assert applies("primary", "ledger.0002_opening_entry") == [True]
    assert applies("billing", "ledger.0002_opening_entry") == [False]
    # --plan changes nothing.
    assert site.tables("auth_db") == set()

    text = site.migrate("--plan", "--database", "billing")
    assert text.returncode == 0, text.stderr
    assert "Database billing:" in text.stdout
    assert "Database auth_db:" not in text.stdout
    assert "Create model Invoice" in text.stdout
    assert "Create model Permission  [skipped here: allow_migrate]" in text.stdout


def test_check_migrate_failure_and_resume(site: Site) -> None:
    """--check fails while anything is unapplied; a failure stops the run and says where."""
    check = site.migrate("--check")
    assert check.returncode == 1
    assert "Unapplied migrations on: auth_db, primary, billing." in check.stderr

    failed = site.migrate("--noinput", ROUTERKIT_TEST_LEDGER_FAIL="1")
    assert failed.returncode == 1
    assert (
        "Migration failed on database primary at ledger.0002_opening_entry: "
        "RuntimeError: opening entry refused"
    ) in failed.stderr
    report = failed.stdout.split("routerkit_migrate:")[-1]
    assert "auth_db  migrated" in report
    assert "primary  failed" in report
    assert "billing  not run   left as it was" in report
    # The database that failed keeps what it finished; the one after was not touched.
    assert "ledger.0001_initial" in site.recorded("primary")
    assert "ledger.0002_opening_entry" not in site.recorded("primary")
    assert site.recorded("billing") == set()

    done = site.migrate("--noinput")
    assert done.returncode == 0, done.stderr
    # Each table on the primary its model is written to, and nowhere else.
    assert {"auth_user", "django_content_type", "django_admin_log"} <= site.tables("auth_db")
    assert "auth_user" not in site.tables("primary") | site.tables("billing")
    assert {"billing_invoice", "billing_tag"} <= site.tables("billing")
    assert "billing_invoice" not in site.tables("auth_db") | site.tables("primary")
    assert {"testapp_article", "ledger_entry"} <= site.tables("primary")
    # post_migrate created every app's content types and permissions where auth lives.
    types = site.query("auth_db", "SELECT app_label, model FROM django_content_type")
    assert {("billing", "invoice"), ("ledger", "entry"), ("testapp", "article")} <= set(types)
    permissions = site.query("auth_db", "SELECT codename FROM auth_permission")
    assert ("add_invoice",) in permissions
    # The data migration's read without using() went to the primary it was changing.
    assert site.query("primary", "SELECT amount, read_from FROM ledger_entry") == [(0, "primary")]
    # Every migration is recorded on every primary, as Django's migrate records it.
    assert site.recorded("auth_db") == site.recorded("primary") == site.recorded("billing")

    assert site.migrate("--check").returncode == 0


def test_narrowed_faked_and_targeted_runs(site: Site) -> None:
    """--database narrows the set; an app and migration name, and --fake, work on each primary."""
    billing = site.migrate("--noinput", "--database", "billing", "--format", "json")
    assert billing.returncode == 0, billing.stderr
    (entry,) = json.loads(billing.stdout)["databases"]
    assert entry["database"] == "billing"
    assert entry["status"] == "migrated"
    assert "billing.0001_initial" in entry["applied"]
    assert site.recorded("auth_db") == site.recorded("primary") == set()

    ledger = site.migrate("--noinput", "ledger", "0001")
    assert ledger.returncode == 0, ledger.stderr
    assert site.recorded("primary") == {"ledger.0001_initial"}
    assert "ledger_entry" in site.tables("primary")
    assert "ledger_entry" not in site.tables("auth_db")

    faked = site.migrate("--noinput", "--fake")
    assert faked.returncode == 0, faked.stderr
    assert "auth.0001_initial" in site.recorded("auth_db")
    assert "auth_user" not in site.tables("auth_db")  # recorded, not run
    assert "billing_invoice" in site.tables("billing")  # migrated for real before


def run(*args: str) -> tuple[int, str]:
    """routerkit_migrate in this process, on the test databases; for refusals only."""
    err = StringIO()
    try:
        call_command("routerkit_migrate", *args, stdout=StringIO(), stderr=err)
    except CommandError as error:
        return error.returncode, str(error)
    return 0, err.getvalue()


@pytest.mark.parametrize(
    ("alias", "why"),
    [
        ("replica1", "'replica1' is a replica"),
        ("billing_replica", "'billing_replica' is a replica"),
        ("archive", "'archive' is not a primary routerkit manages"),
        ("nope", "'nope' is not in DATABASES"),
    ],
)
def test_refuses_what_is_not_a_primary(alias: str, why: str) -> None:
    code, message = run("--database", alias, "--plan")
    assert code == 2
    assert why in message
    assert "Primaries: auth_db, primary, billing." in message


def test_refuses_an_unknown_app() -> None:
    code, message = run("nope", "--plan")
    assert code == 2
    assert "No installed app with label 'nope'" in message
