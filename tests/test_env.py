"""routerkit.env: DATABASES from DATABASE_URL and DATABASE_REPLICA_URLS."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import environ
import pytest
from django.core.exceptions import ImproperlyConfigured

from routerkit import env as routerkit_env


@pytest.fixture
def environ_vars(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_REPLICA_URLS", raising=False)
    return monkeypatch


def test_primary_and_replicas_from_the_environment(environ_vars: pytest.MonkeyPatch) -> None:
    """Each replica URL becomes replicaN, a read-only test mirror of the primary."""
    environ_vars.setenv("DATABASE_URL", "postgres://app:pw@db1:5432/app")
    environ_vars.setenv(
        "DATABASE_REPLICA_URLS", "postgres://ro:pw@db2/app, postgres://ro:pw@db3:6432/app,"
    )
    databases = routerkit_env.databases()
    assert list(databases) == ["default", "replica1", "replica2"]
    assert databases["default"]["HOST"] == "db1"
    assert databases["default"]["OPTIONS"] == {
        "connect_timeout": routerkit_env.CONNECT_TIMEOUT,
        **routerkit_env.KEEPALIVES,
    }
    assert databases["replica2"]["PORT"] == 6432
    for alias in ("replica1", "replica2"):
        assert databases[alias]["TEST"] == {"MIRROR": "default"}
        assert databases[alias]["OPTIONS"]["options"] == "-c default_transaction_read_only=on"
        assert databases[alias]["OPTIONS"]["connect_timeout"] == routerkit_env.CONNECT_TIMEOUT
    assert routerkit_env.replicas(databases) == {"default": ["replica1", "replica2"]}


def test_defaults_apply_when_the_environment_is_empty(environ_vars: pytest.MonkeyPatch) -> None:
    """With nothing set, the given default URLs are used."""
    databases = routerkit_env.databases(
        default_url="sqlite:////tmp/rk.sqlite3",
        default_replica_urls="sqlite:////tmp/rk.sqlite3",
        primary="main",
        replica_prefix="ro",
    )
    assert list(databases) == ["main", "ro1"]
    assert databases["ro1"]["NAME"] == "file:///tmp/rk.sqlite3?mode=ro"
    assert routerkit_env.replicas(databases) == {"main": ["ro1"]}


def test_missing_primary_url_is_a_clear_error(environ_vars: pytest.MonkeyPatch) -> None:
    """No DATABASE_URL and no default: say which variable to set."""
    with pytest.raises(ImproperlyConfigured, match="Set DATABASE_URL"):
        routerkit_env.databases()


def replica_urls_error(
    environ_vars: pytest.MonkeyPatch, urls: str
) -> pytest.ExceptionInfo[ImproperlyConfigured]:
    """Return the error DATABASE_REPLICA_URLS=`urls` raises (with a valid primary)."""
    environ_vars.setenv("DATABASE_URL", "sqlite:////tmp/ok.sqlite3")
    environ_vars.setenv("DATABASE_REPLICA_URLS", urls)
    with pytest.raises(ImproperlyConfigured) as raised:
        routerkit_env.databases()
    return raised


@pytest.mark.parametrize(
    "url",
    [
        "bogus://admin:hunter2@db/app",
        "postgres://admin:hunter2@db:notaport/app",
        "postgres://admin:hun/ter2@db:notaport/app",
        "bogus://admin:hun/ter2@db/app",
        "postgres://admin:hun@ter2@db:notaport/app",
        "postgres://admin:hun?ter2@db/app",
        "postgres://admin:hun\uff1ater2@db:notaport/app",
    ],
)
def test_bad_urls_never_show_the_password(environ_vars: pytest.MonkeyPatch, url: str) -> None:
    """The error names the variable and the URL, with the password masked."""
    raised = replica_urls_error(environ_vars, url)
    message = str(raised.value)
    assert "ter2" not in message
    assert "admin:***@" in message
    assert "DATABASE_REPLICA_URLS (item 1)" in message
    # No chained exception that a traceback would print with the raw URL.
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__
    # Nor a frame local that an error reporter would record.
    traceback = raised.value.__traceback__
    while traceback is not None:
        frame_locals = traceback.tb_frame.f_locals
        if traceback.tb_frame.f_code.co_filename.endswith("routerkit/env.py"):
            assert "ter2" not in repr(frame_locals)
        traceback = traceback.tb_next


def test_mysql_replicas_get_a_read_only_init_command() -> None:
    """MySQL sessions are made read-only by an init command, after any existing one."""
    settings_dict = routerkit_env.read_only(
        {"ENGINE": "django.db.backends.mysql", "OPTIONS": {"init_command": "SET x=1"}}
    )
    assert settings_dict["OPTIONS"]["init_command"] == "SET x=1; SET SESSION TRANSACTION READ ONLY"


def test_sqlite_replica_refuses_writes(tmp_path: Path) -> None:
    """The read-only SQLite URI really refuses writes, while reads work."""
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    replica = routerkit_env.read_only({"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)})
    connection = sqlite3.connect(replica["NAME"], uri=True)
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        connection.execute("INSERT INTO t VALUES (1)")


def test_an_explicit_env_object_is_used(environ_vars: pytest.MonkeyPatch) -> None:
    """A project's own environ.Env (with its own file or scheme) is honoured."""
    environ_vars.setenv("DATABASE_URL", "postgres://u@h/d")
    databases = routerkit_env.databases(env=environ.Env())
    assert databases["default"]["ENGINE"] == "routerkit.backends.postgresql"


def test_postgresql_gets_routerkits_backend_unless_asked_not_to(
    environ_vars: pytest.MonkeyPatch,
) -> None:
    environ_vars.setenv("DATABASE_URL", "postgres://u@h/d")
    environ_vars.setenv("DATABASE_REPLICA_URLS", "postgres://u@r/d,sqlite:////tmp/x.db")
    engines = {a: d["ENGINE"] for a, d in routerkit_env.databases().items()}
    assert engines == {
        "default": "routerkit.backends.postgresql",
        "replica1": "routerkit.backends.postgresql",
        "replica2": "django.db.backends.sqlite3",
    }
    plain = routerkit_env.databases(retry_reads=False)
    assert plain["replica1"]["ENGINE"] == "django.db.backends.postgresql"
    # The replica stays read-only and a test mirror whichever the engine.
    assert "default_transaction_read_only=on" in plain["replica1"]["OPTIONS"]["options"]
    assert plain["replica1"]["TEST"]["MIRROR"] == "default"


@pytest.mark.parametrize(
    ("urls", "shown"),
    [
        # No "@": "app:SECRET" could be host:port or user:password.
        ("postgres://app:SECRET/db", "postgres://***/db"),
        # A comma inside a password splits the list: neither piece is shown.
        ("postgres://app:SEC,RET@db/app", "postgres://***"),
        ("postgres://ok:pw@db/app,SECRET@db/app", "is not a database URL"),
        # A password in the query string.
        ("postgres://db:notaport/app?password=SECRET", "postgres://***/app?***"),
        ("postgres://app:SE%2FCRET@db:notaport/app", "postgres://app:***@db:notaport/app"),
        ("postgres://app:SECRET@[::1:notaport/app", "postgres://app:***@[::1:notaport/app"),
        ("bogus://app:SECRET/db", "bogus://***/db"),
    ],
)
def test_no_url_shape_shows_the_password(
    environ_vars: pytest.MonkeyPatch, urls: str, shown: str
) -> None:
    raised = replica_urls_error(environ_vars, urls)
    message = str(raised.value)
    assert "SECRET" not in message
    assert "CRET" not in message
    assert "SEC" not in message
    assert shown in message
    assert raised.value.__cause__ is None


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgres://app:pw@db:5432/app", "postgres://app:***@db:5432/app"),
        ("postgres://app@db/app", "postgres://app@db/app"),
        ("postgres://db:5432/app", "postgres://***/app"),
        ("postgres://db/app?sslmode=require", "postgres://db/app?***"),
        ("pw-piece@db/app", "***"),
        ("", "***"),
    ],
)
def test_redact(url: str, redacted: str) -> None:
    assert routerkit_env.redact(url) == redacted


def test_the_urls_own_options_win(environ_vars: pytest.MonkeyPatch) -> None:
    environ_vars.setenv("DATABASE_URL", "postgres://app@db1/app?connect_timeout=2&keepalives=0")
    options = routerkit_env.databases()["default"]["OPTIONS"]
    assert (options["connect_timeout"], options["keepalives"]) == (2, 0)
    assert options["keepalives_idle"] == routerkit_env.KEEPALIVES["keepalives_idle"]


def test_a_server_that_never_answers_fails_the_connection_in_time(
    environ_vars: pytest.MonkeyPatch,
) -> None:
    """A listening socket that never speaks (a frozen server): the connect gives up."""
    import socket
    import time

    import psycopg

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # the kernel completes the handshake; nobody ever answers
    port = silent.getsockname()[1]
    try:
        environ_vars.setenv("DATABASE_URL", f"postgres://app@127.0.0.1:{port}/app")
        settings_dict = routerkit_env.databases(connect_timeout=1)["default"]
        options = settings_dict["OPTIONS"]
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                host="127.0.0.1", port=port, dbname="app", user="app", sslmode="disable", **options
            )
        # Without connect_timeout, libpq would wait for the server forever.
        assert time.monotonic() - started < 10
    finally:
        silent.close()
