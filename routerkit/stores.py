"""Where a client's consistency token travels between requests (STICKY["STORE"])."""

from __future__ import annotations

import secrets
from typing import Protocol

from django.core import signing
from django.core.cache import caches
from django.http import HttpRequest, HttpResponseBase

from routerkit import stats
from routerkit.conf import Sticky
from routerkit.consistency import MAX_TOKEN_LENGTH, TOKEN_MAX_AGE
from routerkit.state import use_primary

SESSION_KEY = "_routerkit_token"
_CLIENT_SALT = "routerkit.client"


class Store(Protocol):
    def load(self, request: HttpRequest) -> str | None:
        """Return the raw token the client carries, if any."""

    def save(self, request: HttpRequest, response: HttpResponseBase, token: str | None) -> None:
        """Store `token` for the client's next request; None removes it."""


class CookieStore:
    """A signed cookie: HttpOnly, SameSite=Lax, Secure on secure requests."""

    def __init__(self, sticky: Sticky) -> None:
        self.name = sticky.cookie_name

    def load(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(self.name)

    def save(self, request: HttpRequest, response: HttpResponseBase, token: str | None) -> None:
        if token is not None:
            response.set_cookie(
                self.name,
                token,
                max_age=TOKEN_MAX_AGE,
                httponly=True,
                samesite="Lax",
                secure=request.is_secure(),
            )
        elif self.name in request.COOKIES:
            response.delete_cookie(self.name, samesite="Lax")


class SessionStore:
    """The Django session (needs SessionMiddleware before ConsistencyMiddleware)."""

    def load(self, request: HttpRequest) -> str | None:
        session = getattr(request, "session", None)
        if session is None:
            return None
        # The token lives in the session row, so that row cannot be read from a
        # replica that may not have it yet. Django keeps the loaded session on
        # the request: this is one primary read per request.
        with use_primary():
            value = session.get(SESSION_KEY)
        return value if isinstance(value, str) else None

    def save(self, request: HttpRequest, response: HttpResponseBase, token: str | None) -> None:
        session = getattr(request, "session", None)
        if session is None:
            return
        if token is not None:
            session[SESSION_KEY] = token
        else:
            session.pop(SESSION_KEY, None)


class CacheStore:
    """A Django cache shared by every server, keyed by a signed client-id cookie."""

    def __init__(self, sticky: Sticky, cache_alias: str = "default") -> None:
        self.name = f"{sticky.cookie_name}_client"
        self.cache_alias = cache_alias

    def _client(self, request: HttpRequest) -> str | None:
        raw = request.COOKIES.get(self.name)
        if raw is None:
            return None
        if len(raw) > MAX_TOKEN_LENGTH:
            stats.incr("token_rejected", "oversized")
            return None
        try:
            return str(signing.loads(raw, salt=_CLIENT_SALT))
        except signing.BadSignature:
            stats.incr("token_rejected", "tampered")
            return None

    def load(self, request: HttpRequest) -> str | None:
        client = self._client(request)
        if client is None:
            return None
        value = caches[self.cache_alias].get(f"routerkit:token:{client}")
        return value if isinstance(value, str) else None

    def save(self, request: HttpRequest, response: HttpResponseBase, token: str | None) -> None:
        client = self._client(request)
        cache = caches[self.cache_alias]
        if token is None:
            if client is not None:
                cache.delete(f"routerkit:token:{client}")
            return
        if client is None:
            client = secrets.token_urlsafe(16)
            response.set_cookie(
                self.name,
                signing.dumps(client, salt=_CLIENT_SALT),
                max_age=TOKEN_MAX_AGE,
                httponly=True,
                samesite="Lax",
                secure=request.is_secure(),
            )
        cache.set(f"routerkit:token:{client}", token, TOKEN_MAX_AGE)


def store_for(sticky: Sticky) -> Store:
    """Return the store STICKY["STORE"] names."""
    if sticky.store == "session":
        return SessionStore()
    if sticky.store == "cache":
        return CacheStore(sticky)
    return CookieStore(sticky)
