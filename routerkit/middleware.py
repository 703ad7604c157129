"""ConsistencyMiddleware: one routing scope per request, and the client's token."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase

from routerkit import consistency
from routerkit.conf import get_config
from routerkit.state import Scope, consistency_scope
from routerkit.stores import store_for

logger = logging.getLogger("routerkit")


class ConsistencyMiddleware:
    """Scope read-your-writes state to each request and carry it to the next.

    At the start of a request it restores the client's token and takes a
    health snapshot; at the end it records what the client wrote and read.
    Put it first in MIDDLEWARE (after SessionMiddleware with STORE "session").
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        with consistency_scope() as scope:
            raw = begin(request, scope)
            response = self.get_response(request)
            end(request, response, scope, raw)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        with consistency_scope() as scope:
            # Both may do I/O (probes, the WAL position, a cache): off the event
            # loop, on the thread the view's ORM calls used.
            raw = await sync_to_async(begin)(request, scope)
            response = await get_response(request)
            await sync_to_async(end)(request, response, scope, raw)
        return response


def begin(request: HttpRequest, scope: Scope) -> str | None:
    """Restore the client's token and take a health snapshot; return the raw token."""
    config = get_config()
    raw = None
    if config.clusters and config.sticky.mode != "off":
        raw = store_for(config.sticky).load(request)
    consistency.start(scope, raw, config)
    return raw


def end(request: HttpRequest, response: HttpResponseBase, scope: Scope, raw: str | None) -> None:
    """Record what the client's next requests require, and store it."""
    config = get_config()
    try:
        token = consistency.finish(scope, config)
        if token != raw:
            store_for(config.sticky).save(request, response, token)
    except Exception:
        # The write is committed: failing the response would lose the client's
        # answer to it. Without a token its next read may be stale, but only
        # if a replica is still behind by then; the error is logged.
        logger.exception("routerkit: could not store the consistency token")
