"""Settings of the routerkit example project, read from the environment.

    DATABASE_URL           primary (default: an embedded SQLite file)
    DATABASE_REPLICA_URLS  comma-separated replicas of it
    AUTH_DATABASE_URL      optional: put auth, contenttypes and admin there
    EXAMPLE_SQLITE_PATH    where the embedded SQLite file lives

With no DATABASE_URL, the embedded default still has a primary (`default`)
and a read-only replica alias (`replica1`) on the same SQLite file, so every
read and write shows where it was routed.
"""

from __future__ import annotations

from pathlib import Path

import environ

from routerkit import env as routerkit_env

BASE_DIR = Path(__file__).resolve().parent
env = environ.Env()

SECRET_KEY = env.str("SECRET_KEY", default="routerkit-example-not-for-production")
# Off unless asked for: Django's debug page shows settings and frame variables,
# database passwords included.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

_sqlite = Path(env.str("EXAMPLE_SQLITE_PATH", default=str(BASE_DIR / "db.sqlite3"))).resolve()
_embedded = not env.str("DATABASE_URL", default="")
DATABASES = routerkit_env.databases(
    env=env,
    default_url=f"sqlite:///{_sqlite}",
    default_replica_urls=f"sqlite:///{_sqlite}" if _embedded else "",
)
if _embedded:
    # A test database in a file, not SQLite's shared in-memory one: Django's
    # TestCase checks constraints on the replica alias (a TEST["MIRROR"]) too,
    # and in shared memory that read waits on the test's uncommitted writes.
    DATABASES["default"]["TEST"] = {"NAME": str(_sqlite.with_name(f"test_{_sqlite.name}"))}
_contrib_home = "default"
if env.str("AUTH_DATABASE_URL", default=""):
    DATABASES["users"] = routerkit_env.parse_url(env.str("AUTH_DATABASE_URL"), "AUTH_DATABASE_URL")
    _contrib_home = "users"

_postgres = "postgresql" in DATABASES["default"]["ENGINE"]
ROUTERKIT = {
    "DEFAULT": "default",
    "CONTRIB": {"auth": _contrib_home, "sites": "default", "sessions": "default"},
    "REPLICAS": routerkit_env.replicas(DATABASES),
    "STICKY": {"MODE": "lsn" if _postgres else "time"},
}

# The three placements (CONTRIB, APPS, then primary + replicas) in one router.
DATABASE_ROUTERS = ["routerkit.routers.Router"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.flatpages",
    "django.contrib.redirects",
    "routerkit",
    "example_project.notes",
]

MIDDLEWARE = [
    # First, so that writes made by the middleware below belong to the request.
    "routerkit.middleware.ConsistencyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.contrib.redirects.middleware.RedirectFallbackMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"
SITE_ID = 1
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
