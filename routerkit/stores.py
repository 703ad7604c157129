"""Where a client's consistency token travels between requests (STICKY["STORE"]).

A token has two halves (see `consistency.Tokens`): what the client wrote and
what it has seen. A store keeps them apart and only ever replaces a half it
is given; it never deletes one.
"""

from __future__ import annotations

import functools
import secrets
from typing import Protocol

from django.core import signing
from django.core.cache import caches
from django.http import HttpRequest, HttpResponseBase

from routerkit import stats
from routerkit.conf import Sticky
from routerkit.consistency import MAX_TOKEN_LENGTH, TOKEN_MAX_AGE, Tokens
from routerkit.state import use_primary

SESSION_KEY = "_routerkit_token"
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
    """The Django session (needs SessionMiddleware before ConsistencyMiddleware).

    Only the written half lives in the session: it changes when the client
    writes, and the session row is written then anyway. The seen half
    (monotonic-read floors) changes on reads, so it travels in a signed cookie
    as with the cookie store: a read-only GET never rewrites the session row.
    """

    def __init__(self, sticky: Sticky) -> None:
        self.cookies = CookieStore(sticky)

    def load(self, request: HttpRequest) -> Tokens:
        seen = self.cookies.load(request).seen
        session = getattr(request, "session", None)
        if session is None:
            return Tokens(seen=seen)
        # The token lives in the session row, so that row cannot be read from a
        # replica that may not have it yet. Django keeps the loaded session on
        # the request: this is one primary read per request.
        with use_primary():
            written = session.get(SESSION_KEY)
        return Tokens(written if isinstance(written, str) else None, seen)

    def save(self, request: HttpRequest, response: HttpResponseBase, tokens: Tokens) -> None:
        self.cookies.save(request, response, Tokens(seen=tokens.seen))
        session = getattr(request, "session", None)
        # Assigning marks the session modified, and Django then saves the row.
        written = tokens.written
        if session is not None and written is not None and session.get(SESSION_KEY) != written:
            session[SESSION_KEY] = written


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
        # Sent again with every save, so that the cookie outlives the cache
        # entries it keys (both last TOKEN_MAX_AGE from now): an active client
        # never loses its token to a cookie issued ten minutes ago.
        _set_cookie(request, response, self.name, signing.dumps(client, salt=_CLIENT_SALT))
        values = zip(_keys(client), (tokens.written, tokens.seen), strict=True)
        caches[self.cache_alias].set_many(
            {key: value for key, value in values if value is not None}, TOKEN_MAX_AGE
        )


def _keys(client: str) -> tuple[str, str]:
    return (f"routerkit:token:{client}", f"routerkit:seen:{client}")


@functools.lru_cache(maxsize=16)
def store_for(sticky: Sticky) -> Store:
    """Return the store STICKY["STORE"] names (stores keep no state: one per setting)."""
    if sticky.store == "session":
        return SessionStore(sticky)
    if sticky.store == "cache":
        return CacheStore(sticky)
    return CookieStore(sticky)
