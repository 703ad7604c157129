"""routerkit_dump and routerkit_restore on sites of their own, through manage.py.

A source site (auth on its own database, billing on a second primary, the rest
on a primary with two replicas) is migrated, filled through the ORM and dumped
once; restores go into fresh sites, one of which has moved the billing app.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.example import Example, example_env
from tests.pgcluster import PgCluster
from tests.sites import Site, fresh_site

POPULATE = """
from django.contrib.auth.models import Group, Permission, User
from tests.billing.models import Invoice, Tag
from tests.testapp.models import Article, Comment, Label, Labelling

editors = Group.objects.create(name="editors")
editors.permissions.set(Permission.objects.filter(codename__in=["add_article", "change_invoice"]))
User.objects.create_user("ada", password="not-in-the-archive-in-clear").groups.add(editors)
label = Label.objects.create(name="news")
for n in range(40):
    article = Article.objects.create(title=f"article {n} \\u2713")
    Comment.objects.create(article=article, body='line one\\nline "two"')
Labelling.objects.create(label=label, article=article)
tags = [Tag.objects.create(name=name) for name in ("paid", "late")]
Invoice.objects.create(number="INV-1").tags.set(tags)
Invoice.objects.create(number="INV-2")
"""

# Every table the archive covers, by the alias of the source site that holds it.
TABLES = {
    "auth_db": [
        "django_content_type",
        "auth_permission",
        "auth_group",
        "auth_group_permissions",
        "auth_user",
        "auth_user_groups",
    ],
    "primary": [
        "testapp_article",
        "testapp_comment",
        "testapp_label",
        "testapp_labelling",
        "ledger_entry",
    ],
    "billing": ["billing_tag", "billing_invoice", "billing_invoice_tags"],
}


# Django's auto-created many-to-many tables: their rows travel as pairs, without their ids.
PAIRS = {"auth_group_permissions", "auth_user_groups", "billing_invoice_tags"}


def rows(site: Site, alias: str, table: str) -> list[tuple[Any, ...]]:
    found = site.query(alias, f"SELECT * FROM {table}")
    return sorted((row[1:] if table in PAIRS else row for row in found), key=repr)


def contents(site: Site, where: dict[str, str] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every archived table's rows, read where `where` says it lives (by default as in TABLES)."""
    found = {}
    for alias, tables in TABLES.items():
        for table in tables:
            found[table] = rows(site, (where or {}).get(table, alias), table)
    return found


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


@pytest.fixture(scope="module")
def source(pg_cluster: PgCluster, django_db_setup: None) -> Iterator[Site]:
    for site in fresh_site(pg_cluster):
        ok(site.migrate("--noinput"))
        ok(site.manage("shell", "-c", POPULATE))
        yield site


@pytest.fixture(scope="module")
def archive(source: Site, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "site.zip"
    out = ok(source.manage("routerkit_dump", str(path)))
    assert "primary: " in out
    assert "routerkit_dump: " in out
    return path


@pytest.fixture
def target(replication: PgCluster) -> Iterator[Site]:
    yield from fresh_site(replication)


def manifests(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    with zipfile.ZipFile(path) as archive:
        top = json.loads(archive.read("manifest.json"))
        return top, {
            alias: json.loads(archive.read(f"{alias}/manifest.json")) for alias in top["databases"]
        }


def test_dump_reads_each_model_from_its_primary(source: Site, archive: Path) -> None:
    top, databases = manifests(archive)
    assert top["format"] == "routerkit-archive"
    assert top["databases"] == ["auth_db", "primary", "billing"]
    for alias, manifest in databases.items():
        assert manifest["read_from"] == alias  # never a replica unless asked
        assert manifest["migrations"]["billing"] == ["0001_initial", "0002_charge"]
    placed = {
        alias: {m["model"] for m in manifest["models"]} for alias, manifest in databases.items()
    }
    assert {"auth.user", "auth.permission", "contenttypes.contenttype"} <= placed["auth_db"]
    assert {"testapp.article", "testapp.labelling", "ledger.entry"} <= placed["primary"]
    assert placed["billing"] == {"billing.tag", "billing.invoice", "billing.charge"}
    by_label = {m["model"]: m for manifest in databases.values() for m in manifest["models"]}
    assert by_label["testapp.article"]["rows"] == 40
    assert by_label["billing.invoice"]["rows"] == 2
    # Content types come before what refers to them by natural key.
    auth_order = [m["model"] for m in databases["auth_db"]["models"]]
    assert auth_order.index("contenttypes.contenttype") < auth_order.index("auth.permission")
    assert by_label["auth.permission"]["natural"] == ["content_type"]
    with zipfile.ZipFile(archive) as opened:
        for entry in by_label.values():
            data = opened.read(entry["file"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert data.count(b"\n") == entry["rows"]
        invoice = [
            json.loads(line) for line in opened.read("billing/billing.invoice.jsonl").splitlines()
        ]
        permission = json.loads(opened.read("auth_db/auth.permission.jsonl").splitlines()[0])
    assert invoice[0]["fields"]["tags"] == sorted(invoice[0]["fields"]["tags"])
    assert len(invoice[0]["fields"]["tags"]) == 2
    assert isinstance(permission["fields"]["content_type"], list)  # a natural key
    assert "pk" in permission  # primary keys kept: ids referred to from other databases hold


def test_restore_into_a_migrated_site(source: Site, archive: Path, target: Site) -> None:
    ok(target.migrate("--noinput"))
    before = contents(target)

    refused = target.manage("routerkit_restore", str(archive))
    assert refused.returncode == 1
    assert "Tables already hold rows: contenttypes.contenttype on auth_db" in refused.stdout
    assert "use --replace" in refused.stdout

    dry = ok(target.manage("routerkit_restore", str(archive), "--replace", "--dry-run"))
    assert "  testapp.article: 40 rows" in dry
    assert contents(target) == before  # --dry-run changes nothing

    out = ok(target.manage("routerkit_restore", str(archive), "--replace", "--noinput"))
    assert "counts and checksums verified" in out
    assert contents(target) == contents(source)
    # Sequences follow the restored ids: the next row does not collide.
    ok(
        target.manage(
            "shell",
            "-c",
            "from tests.testapp.models import Article; Article.objects.create(title='new')",
        )
    )
    assert len(rows(target, "primary", "testapp_article")) == 41


def test_restore_moves_an_app_to_its_new_primary(
    source: Site, archive: Path, replication: PgCluster
) -> None:
    for moved in fresh_site(replication, ROUTERKIT_TEST_BILLING_ON="primary"):
        ok(moved.migrate("--noinput"))
        assert "billing_invoice" not in moved.tables("billing")
        out = ok(moved.manage("routerkit_restore", str(archive), "--replace", "--noinput"))
        assert "billing.invoice: 2 rows (dumped from billing)" in out
        billing_tables = dict.fromkeys(TABLES["billing"], "primary")
        assert contents(moved, billing_tables) == contents(source)


def test_a_damaged_member_restores_nothing(
    source: Site, archive: Path, target: Site, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive) as good, zipfile.ZipFile(damaged, "w") as bad:
        for info in good.infolist():
            data = good.read(info)
            if info.filename == "primary/testapp.comment.jsonl":
                data = data.replace(b"line one", b"line 1", 1)
            bad.writestr(info, data)
    ok(target.migrate("--noinput"))
    before = contents(target)
    result = target.manage("routerkit_restore", str(damaged), "--replace", "--noinput")
    assert result.returncode == 1
    assert "primary/testapp.comment.jsonl does not match its manifest" in result.stderr
    # Every database rolled back, the ones loaded before the damaged member included.
    assert contents(target) == before


def test_restore_refuses_other_migration_state(source: Site, archive: Path, target: Site) -> None:
    ok(target.migrate("--noinput"))
    ok(target.migrate("--noinput", "ledger", "0001"))
    result = target.manage("routerkit_restore", str(archive), "--replace", "--noinput")
    assert result.returncode == 1
    assert (
        "migration state differs: ledger.0002_opening_entry not applied on primary" in result.stdout
    )
    assert rows(target, "auth_db", "auth_user") == []


def test_dump_from_a_replica_only_once_it_has_caught_up(
    source: Site, replication: PgCluster, tmp_path: Path
) -> None:
    for replica in replication.replicas:
        replication.pause_replay(replica)
    source.query("primary", "INSERT INTO testapp_article (title) VALUES ('after the pause')")
    behind = source.manage(
        "routerkit_dump", str(tmp_path / "behind.zip"), "--from-replica", "--replica-wait", "0.5"
    )
    assert behind.returncode == 1
    assert "No replica of 'primary' replayed" in behind.stderr

    for replica in replication.replicas:
        replication.resume_replay(replica)
    path = tmp_path / "replica.zip"
    ok(source.manage("routerkit_dump", str(path), "--from-replica"))
    _, databases = manifests(path)
    assert databases["primary"]["read_from"] in {"replica1", "replica2"}
    assert databases["primary"]["position"]
    assert databases["billing"]["read_from"] == "billing_replica"
    assert databases["auth_db"]["read_from"] == "auth_db"  # no replicas: the primary itself
    articles = [m for m in databases["primary"]["models"] if m["model"] == "testapp.article"]
    assert articles[0]["rows"] == len(rows(source, "primary", "testapp_article"))
    source.query("primary", "DELETE FROM testapp_article WHERE title = 'after the pause'")


def restore(path: Path) -> str:
    with pytest.raises(CommandError) as raised:
        call_command("routerkit_restore", str(path), "--dry-run", stdout=StringIO())
    assert raised.value.returncode == 2
    return str(raised.value)


def bad_archive(path: Path, members: dict[str, Any]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in members.items():
            archive.writestr(name, value if isinstance(value, str) else json.dumps(value))
    return path


TOP = {"format": "routerkit-archive", "version": 1, "databases": ["primary"]}


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({}, "The archive has no manifest.json."),
        ({"manifest.json": "{not json"}, "manifest.json cannot be read"),
        ({"manifest.json": {"format": "zip"}}, "is not a routerkit archive"),
        ({"manifest.json": {**TOP, "version": 99}}, "format version 99"),
        ({"manifest.json": {**TOP, "databases": "primary"}}, "must be a list of aliases"),
        ({"manifest.json": TOP}, "The archive has no primary/manifest.json."),
        (
            {"manifest.json": TOP, "primary/manifest.json": {"models": 3}},
            "primary/manifest.json is malformed",
        ),
        (
            {
                "manifest.json": TOP,
                "primary/manifest.json": {
                    "read_from": "primary",
                    "migrations": {},
                    "models": [{"model": "nope.thing", "file": "x", "rows": 0, "sha256": ""}],
                },
            },
            "models this project does not install: nope.thing",
        ),
    ],
)
def test_bad_archives_are_refused_with_a_reason(
    tmp_path: Path, members: dict[str, Any], message: str
) -> None:
    assert message in restore(bad_archive(tmp_path / "bad.zip", members))


def test_not_an_archive(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "is not a routerkit archive" in restore(text)
    assert "No archive at" in restore(tmp_path / "missing.zip")


def test_rows_changed_while_loading_restore_nothing(
    source: Site, archive: Path, target: Site
) -> None:
    """Counts and checksums are checked again on the targets before anything commits."""
    ok(target.migrate("--noinput"))
    target.query(
        "primary",
        "CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.title := upper(NEW.title); RETURN NEW; END $$",
    )
    target.query(
        "primary",
        "CREATE TRIGGER shout BEFORE INSERT ON testapp_article "
        "FOR EACH ROW EXECUTE FUNCTION shout()",
    )
    before = contents(target)
    result = target.manage("routerkit_restore", str(archive), "--replace", "--noinput")
    assert result.returncode == 1
    assert "testapp.article on primary does not match the archive after loading" in result.stderr
    assert contents(target) == before


def test_restore_narrowed_to_one_primary_with_a_json_plan(
    source: Site, archive: Path, target: Site
) -> None:
    ok(target.migrate("--noinput"))
    replica = target.manage("routerkit_restore", str(archive), "--database", "replica1")
    assert replica.returncode == 2
    assert "Database 'replica1' is a replica" in replica.stderr

    dry = ok(
        target.manage(
            "routerkit_restore",
            str(archive),
            "--database",
            "billing",
            "--format",
            "json",
            "--dry-run",
        )
    )
    loads = json.loads(dry)["loads"]
    assert {load["model"] for load in loads} == {"billing.tag", "billing.invoice", "billing.charge"}
    assert {load["to"] for load in loads} == {"billing"}

    ok(target.manage("routerkit_restore", str(archive), "--database", "billing", "--noinput"))
    assert contents(target)["billing_invoice"] == contents(source)["billing_invoice"]
    assert rows(target, "primary", "testapp_article") == []  # not asked for


def test_a_truncated_archive_is_refused(archive: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert "is not a routerkit archive" in restore(truncated)


@pytest.mark.parametrize("command", ["routerkit_migrate", "routerkit_dump", "routerkit_restore"])
def test_every_option_has_help(command: str) -> None:
    from django.core.management import load_command_class

    parser = load_command_class("routerkit", command).create_parser("manage.py", command)
    own = [a for a in parser._actions if a.dest not in {"help", "version"}]
    assert own
    assert all(action.help for action in own), [a.dest for a in own if not a.help]
    assert parser.format_help().startswith("usage: manage.py " + command)


# -- the example project, auth on its own database ---------------------------------------

EXAMPLE_POPULATE = """
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.flatpages.models import FlatPage
from django.contrib.redirects.models import Redirect
from django.contrib.sites.models import Site
from example_project.notes.models import Note

staff = Group.objects.create(name="staff")
staff.permissions.set(Permission.objects.filter(codename__endswith="_note"))
ada = User.objects.create_superuser("ada", "ada@example.com", "not-in-clear")
ada.groups.add(staff)
ada.user_permissions.add(Permission.objects.get(codename="view_note"))
notes = [Note.objects.create(text=f"note {n}\\nwith \\u00e9 and \\"quotes\\"") for n in range(25)]
LogEntry.objects.log_actions(ada.pk, [notes[0]], ADDITION, change_message="added")
site = Site.objects.get_current()
FlatPage.objects.create(url="/about/", title="About", content="<p>hi</p>").sites.add(site)
Redirect.objects.create(site=site, old_path="/old/", new_path="/about/")
"""


def example(urls: dict[str, str], *args: str) -> str:
    return ok(Example(example_env(**urls)).manage(*args))


def everything(cluster: PgCluster, database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows but the migration records' (their times differ)."""
    tables = cluster.execute(
        cluster.primary,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        dbname=database,
    )
    found = {}
    for (table,) in tables:
        if table == "django_migrations":
            continue
        rows_ = cluster.execute(cluster.primary, f"SELECT * FROM {table}", dbname=database)
        pairs = table in PAIRS | {"auth_user_user_permissions", "django_flatpage_sites"}
        found[table] = sorted((row[1:] if pairs else row for row in rows_), key=repr)
    return found


def test_example_project_round_trip(replication: PgCluster, tmp_path: Path) -> None:
    """dump -> fresh empty databases -> routerkit_migrate -> restore: row for row the same."""

    def site(name: str) -> dict[str, str]:
        for database in (name, f"{name}_users"):
            replication.create_database(database)
        nodes = [replication.primary, *replication.replicas]
        url = "postgres://postgres@127.0.0.1:{}/{}"
        return {
            "DATABASE_URL": url.format(nodes[0].port, name),
            "DATABASE_REPLICA_URLS": ",".join(url.format(n.port, name) for n in nodes[1:]),
            "AUTH_DATABASE_URL": url.format(nodes[0].port, f"{name}_users"),
        }

    names = [f"rkexample_source_{tmp_path.name[-12:]}", f"rkexample_target_{tmp_path.name[-12:]}"]
    names = [name.replace("-", "_").lower() for name in names]
    source, target = site(names[0]), site(names[1])
    try:
        example(source, "routerkit_migrate", "--noinput")
        example(source, "shell", "-c", EXAMPLE_POPULATE)
        archive_path = tmp_path / "example.zip"
        out = example(source, "routerkit_dump", str(archive_path))
        assert "users: " in out
        example(target, "routerkit_migrate", "--noinput")
        example(target, "routerkit_restore", str(archive_path), "--replace", "--noinput")
        for suffix in ("", "_users"):
            restored = everything(replication, names[1] + suffix)
            original = everything(replication, names[0] + suffix)
            assert restored == original
            assert any(restored.values())
        assert len(everything(replication, names[1])["notes_note"]) == 25
        assert everything(replication, names[1] + "_users")["auth_user"][0][4] == "ada"
    finally:
        for name in names:
            for database in (name, f"{name}_users"):
                replication.execute(
                    replication.primary, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
                )
