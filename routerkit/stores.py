"""Where a client's consistency token travels between requests (STICKY["STORE"]).

A token has two halves (see `consistency.Tokens`): what the client wrote and
what it has seen. A store keeps them apart and only ever replaces a half it
is given; it never deletes one.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from django.core import signing
from django.core.cache import caches
from django.http import HttpRequest, HttpResponseBase

from routerkit import stats
from routerkit.conf import Sticky
from routerkit.consistency import MAX_TOKEN_LENGTH, TOKEN_MAX_AGE, Tokens
from routerkit.state import use_primary

SESSION_KEYS = ("_routerkit_token", "_routerkit_seen")
_CLIENT_SALT = "routerkit.client"


class Store(Protocol):
    def load(self, request: HttpRequest) -> Tokens:
        """Return the token halves the client carries."""

    def save(self, request: HttpRequest, response: HttpResponseBase, tokens: Tokens) -> None:
        """Store the halves that are not None for the client's next request."""


def _set_cookie(request: HttpRequest, response: HttpResponseBase, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        max_age=TOKEN_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure(),
    )


class CookieStore:
    """Signed cookies: HttpOnly, SameSite=Lax, Secure on secure requests."""

    def __init__(self, sticky: Sticky) -> None:
        self.names = (sticky.cookie_name, f"{sticky.cookie_name}_seen")

    def load(self, request: HttpRequest) -> Tokens:
        written, seen = (request.COOKIES.get(name) for name in self.names)
        return Tokens(written, seen)

    def save(self, request: HttpRequest, response: HttpResponseBase, tokens: Tokens) -> None:
        for name, value in zip(self.names, (tokens.written, tokens.seen), strict=True):
            if value is not None:
                _set_cookie(request, response, name, value)


class SessionStore:
    """The Django session (needs SessionMiddleware before ConsistencyMiddleware)."""

    def load(self, request: HttpRequest) -> Tokens:
        session = getattr(request, "session", None)
        if session is None:
            return Tokens()
        # The token lives in the session row, so that row cannot be read from a
        # replica that may not have it yet. Django keeps the loaded session on
        # the request: this is one primary read per request.
        with use_primary():
            values = [session.get(key) for key in SESSION_KEYS]
        written, seen = (v if isinstance(v, str) else None for v in values)
        return Tokens(written, seen)

    def save(self, request: HttpRequest, response: HttpResponseBase, tokens: Tokens) -> None:
        session = getattr(request, "session", None)
        if session is None:
            return
        for key, value in zip(SESSION_KEYS, (tokens.written, tokens.seen), strict=True):
            if value is not None:
                session[key] = value


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

    def load(self, request: HttpRequest) -> Tokens:
        client = self._client(request)
        if client is None:
            return Tokens()
        values = caches[self.cache_alias].get_many(_keys(client))
        written, seen = (values.get(key) for key in _keys(client))
        return Tokens(
            written if isinstance(written, str) else None, seen if isinstance(seen, str) else None
        )

    def save(self, request: HttpRequest, response: HttpResponseBase, tokens: Tokens) -> None:
        if tokens.written is None and tokens.seen is None:
            return
        client = self._client(request)
        if client is None:
            client = secrets.token_urlsafe(16)
            _set_cookie(request, response, self.name, signing.dumps(client, salt=_CLIENT_SALT))
        values = zip(_keys(client), (tokens.written, tokens.seen), strict=True)
        caches[self.cache_alias].set_many(
            {key: value for key, value in values if value is not None}, TOKEN_MAX_AGE
        )


def _keys(client: str) -> tuple[str, str]:
    return (f"routerkit:token:{client}", f"routerkit:seen:{client}")


def store_for(sticky: Sticky) -> Store:
    """Return the store STICKY["STORE"] names."""
    if sticky.store == "session":
        return SessionStore()
    if sticky.store == "cache":
        return CacheStore(sticky)
    return CookieStore(sticky)
