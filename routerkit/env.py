"""Build DATABASES from the environment with django-environ.

    DATABASE_URL           the primary, e.g. postgres://app:secret@db1/app
    DATABASE_REPLICA_URLS  its replicas, comma-separated

In settings.py::

    from routerkit import env as routerkit_env

    DATABASES = routerkit_env.databases()
    ROUTERKIT = {"REPLICAS": routerkit_env.replicas(DATABASES)}
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

# Seconds a connection attempt may take: a server that does not answer (down
# behind a firewall, or frozen) then fails the request after this long instead
# of the kernel's minutes.
CONNECT_TIMEOUT = 5
# TCP keepalives (libpq names): a connection to a dead server is noticed within
# about idle + interval * count seconds instead of hours.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


# Django's backends and routerkit's, which add read retries (routerkit.retries).
BACKENDS = {"django.db.backends.postgresql": "routerkit.backends.postgresql"}

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def redact(url: str) -> str:
    """Return `url` safe to show: anything that may be a password becomes ``***``.

    Passwords may hold "/", "@", "?", ":" or "," unescaped, so this does not
    parse the URL as a URL:

    - up to the last "@" is the user and password: the user is kept;
    - without an "@", a ":" before the first "/" may be ``user:password`` as
      well as ``host:port``: that part is masked whole;
    - a query string may carry ``password=``: masked;
    - text without a ``scheme://`` (a piece of a password split at a comma)
      is not shown at all.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return "***"
    userinfo, at, rest = rest.rpartition("@")
    head = ""
    if at:
        user, colon, _ = userinfo.partition(":")
        head = f"{user}:***@" if colon else f"{user}@"
    rest, question, _ = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if not at and ":" in netloc:
        netloc = "***"
    return f"{scheme}://{head}{netloc}{slash}{path}{'?***' if question else ''}"


def databases(
    *,
    env: environ.Env | None = None,
    default_url: str | None = None,
    default_replica_urls: str = "",
    primary: str = "default",
    replica_prefix: str = "replica",
    read_only_replicas: bool = True,
    connect_timeout: int = CONNECT_TIMEOUT,
    retry_reads: bool = True,
) -> dict[str, dict[str, Any]]:
    """Return DATABASES for DATABASE_URL and DATABASE_REPLICA_URLS.

    Replicas are named ``replica1``, ``replica2``... (`replica_prefix`), are
    test mirrors of the primary, and open read-only sessions where the backend
    allows it (PostgreSQL, MySQL, SQLite files). Every server connection gets
    bounded waits (`bounded()`) unless the URL sets its own, and PostgreSQL
    uses routerkit's backend (`retrying()`) unless `retry_reads` is False.
    Error messages never show a password.
    """
    env = env or environ.Env()
    primary_url = env.str("DATABASE_URL", default=default_url)
    if not primary_url:
        raise ImproperlyConfigured("Set DATABASE_URL to the primary database's URL.")
    replica_urls = env.str("DATABASE_REPLICA_URLS", default=default_replica_urls)
    urls = [url.strip() for url in replica_urls.split(",") if url.strip()]
    try:
        result = {primary: bounded(parse_url(primary_url, "DATABASE_URL"), connect_timeout)}
        for number, url in enumerate(urls, start=1):
            replica = parse_url(url, f"DATABASE_REPLICA_URLS (item {number})")
            result[f"{replica_prefix}{number}"] = bounded(replica, connect_timeout)
        if retry_reads:
            result = {alias: retrying(settings_dict) for alias, settings_dict in result.items()}
        for number in range(1, len(urls) + 1):
            replica = result[f"{replica_prefix}{number}"]
            replica.setdefault("TEST", {})["MIRROR"] = primary
            if read_only_replicas:
                replica = read_only(replica)
            result[f"{replica_prefix}{number}"] = replica
    except ImproperlyConfigured as exc:
        # Error reporters record the local variables of every frame in a
        # traceback: leave none holding a URL.
        primary_url = replica_urls = url = ""
        urls = []
        raise ImproperlyConfigured(str(exc)) from None
    return result


def replicas(databases: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Return ROUTERKIT["REPLICAS"] for DATABASES, from each alias's TEST["MIRROR"]."""
    result: dict[str, list[str]] = {}
    for alias, settings_dict in databases.items():
        mirror = settings_dict.get("TEST", {}).get("MIRROR")
        if mirror:
            result.setdefault(mirror, []).append(alias)
    return result


def parse_url(url: str, name: str) -> dict[str, Any]:
    """Parse one database URL; a bad one raises ImproperlyConfigured without its password."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if not _SCHEME.fullmatch(scheme):
        url = ""  # see databases(): no frame keeps the password
        raise ImproperlyConfigured(
            f"{name} is not a database URL (scheme://...). A comma, '@' or '/' inside a "
            "password must be percent-encoded (',' is %2C)."
        )
    if scheme not in environ.Env.DB_SCHEMES:
        url = redact(url)
        raise ImproperlyConfigured(f"{name} has an unknown database scheme {scheme!r}: {url}")
    try:
        return dict(environ.Env.db_url_config(url))
    except Exception:
        # The parser's message may quote parts of the password: not shown, and
        # the original exception is dropped so no traceback prints it.
        url = redact(url)
        raise ImproperlyConfigured(
            f"{name} is not a valid database URL: {url} (a comma, '@' or '/' inside a "
            "password must be percent-encoded)"
        ) from None


def bounded(
    settings_dict: Mapping[str, Any], connect_timeout: int = CONNECT_TIMEOUT
) -> dict[str, Any]:
    """Return a copy of a database's settings with a connect timeout and TCP keepalives.

    Options already set (in the URL's query string, or by you) are kept.
    """
    result = copy.deepcopy(dict(settings_dict))
    engine = result.get("ENGINE", "")
    options = result.setdefault("OPTIONS", {})
    if "postgresql" in engine or "postgis" in engine:
        options.setdefault("connect_timeout", connect_timeout)
        for key, value in KEEPALIVES.items():
            options.setdefault(key, value)
    elif "mysql" in engine:
        options.setdefault("connect_timeout", connect_timeout)
    if not options:
        del result["OPTIONS"]
    return result


def retrying(settings_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a database's settings on routerkit's backend for its engine.

    routerkit's backends are Django's with reads that survive a replica
    failure and a clear error when a primary cannot be reached (see
    routerkit.retries); an engine without one is kept.
    """
    result = copy.deepcopy(dict(settings_dict))
    engine = result.get("ENGINE", "")
    result["ENGINE"] = BACKENDS.get(engine, engine)
    return result


def read_only(settings_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a database's settings whose sessions cannot write."""
    result = copy.deepcopy(dict(settings_dict))
    engine = result.get("ENGINE", "")
    options = result.setdefault("OPTIONS", {})
    if "postgresql" in engine or "postgis" in engine:
        flag = "-c default_transaction_read_only=on"
        options["options"] = f"{options.get('options', '')} {flag}".strip()
    elif "mysql" in engine:
        command = "SET SESSION TRANSACTION READ ONLY"
        options["init_command"] = "; ".join(filter(None, [options.get("init_command"), command]))
    elif "sqlite3" in engine:
        name = str(result.get("NAME", ""))
        if name and name != ":memory:" and not name.startswith("file:"):
            # Django opens SQLite with uri=True, so a file: URI can ask for mode=ro.
            result["NAME"] = f"{Path(name).resolve().as_uri()}?mode=ro"
    return result
