"""ConsistencyMiddleware: one routing scope per request, and the client's token."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from routerkit import consistency
from routerkit.conf import get_config
from routerkit.exceptions import PrimaryUnavailable
from routerkit.state import Scope, consistency_scope, current_scope, entered, implicit_scope
from routerkit.stores import store_for

logger = logging.getLogger("routerkit")


class ConsistencyMiddleware:
    """Scope read-your-writes state to each request and carry it to the next.

    At the start of a request it restores the client's token and takes a
    health snapshot; at the end it records what the client wrote and read.
    Put it first in MIDDLEWARE (after SessionMiddleware with STORE "session").

    With ROUTERKIT["RETRY_AFTER"] set, a request that failed because a primary
    could not be reached (routerkit.PrimaryUnavailable, in the view or in
    any middleware after this one) gets 503 Service Unavailable with that
    Retry-After instead of a 500.
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
        outer = implicit_scope()
        with consistency_scope(isolated=True) as scope:
            begin(request, scope, outer)
            response = _unavailable(self.get_response(request), scope)
            end(request, response, scope)
        _hand_back(scope)
        if response.streaming:
            _stream_in(scope, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        outer = implicit_scope()
        with consistency_scope(isolated=True) as scope:
            # Both may do I/O (probes, the WAL position, a cache): off the event
            # loop, on the thread the view's ORM calls used.
            await sync_to_async(begin)(request, scope, outer)
            response = _unavailable(await get_response(request), scope)
            await sync_to_async(end)(request, response, scope)
        _hand_back(scope)
        if response.streaming:
            _stream_in(scope, response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        # A view's error: answered here, before Django logs a 500 for it.
        if isinstance(exception, PrimaryUnavailable):
            return _service_unavailable(exception.alias)
        return None


def _unavailable(response: HttpResponseBase, scope: Scope) -> HttpResponseBase:
    """Turn the 500 of a request that could not reach a primary into a 503, if asked to."""
    if response.status_code == 500 and scope.unavailable is not None:
        return _service_unavailable(scope.unavailable) or response
    return response


def _service_unavailable(alias: str) -> HttpResponse | None:
    retry_after = get_config().retry_after
    if retry_after is None:
        return None
    logger.warning("routerkit: the primary %r cannot be reached; answering 503", alias)
    response = HttpResponse(
        "Service Unavailable: a database is unreachable, try again shortly.\n",
        status=503,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(retry_after)
    return response


def begin(request: HttpRequest, scope: Scope, outer: Scope | None = None) -> None:
    """Restore the client's token and take a health snapshot for the request.

    `outer` is the implicit scope of the code that called the handler in this
    context (a test using the test client): the request sees what it wrote.
    """
    config = get_config()
    tokens = consistency.Tokens()
    if config.clusters and config.sticky.mode != "off":
        try:
            tokens = store_for(config.sticky).load(request)
        except Exception:
            # A store that fails (a cache outage) costs this request its
            # client's token, which may send its reads to the primary, not a 500.
            logger.exception("routerkit: could not load the consistency token")
    consistency.start(scope, tokens, config, outer)


def end(request: HttpRequest, response: HttpResponseBase, scope: Scope) -> None:
    """Record what the client's next requests require, and store it."""
    config = get_config()
    try:
        tokens = consistency.finish(scope, config)
        if tokens.written is not None or tokens.seen is not None:
            store_for(config.sticky).save(request, response, tokens)
    except Exception:
        # The write is committed: failing the response would lose the client's
        # answer to it. Without a token its next read may be stale, but only
        # if a replica is still behind by then; the error is logged.
        logger.exception("routerkit: could not store the consistency token")


def _hand_back(scope: Scope) -> None:
    # The code around the request in this context (a test that posts through
    # the test client, then reads the ORM) must see what the request wrote.
    # Only a writing request pays for it, and only with a few dict merges.
    if scope.issued:
        consistency.hand_back(scope, current_scope())


def _stream_in(scope: Scope, response: Any) -> None:
    """Run a streaming body in the request's scope, though it is read after the request.

    Its reads then see the request's writes. The token went out with the
    headers, so writes made while streaming are not carried to the client's
    next request: write before returning a streaming response.
    """
    content = response.streaming_content
    if getattr(response, "is_async", False):

        async def achunks() -> AsyncIterator[Any]:
            iterator = aiter(content)
            while True:
                with entered(scope):
                    try:
                        chunk = await anext(iterator)
                    except StopAsyncIteration:
                        return
                yield chunk

        response.streaming_content = achunks()
    else:

        def chunks() -> Iterator[Any]:
            iterator = iter(content)
            while True:
                with entered(scope):
                    try:
                        chunk = next(iterator)
                    except StopIteration:
                        return
                yield chunk

        response.streaming_content = chunks()
