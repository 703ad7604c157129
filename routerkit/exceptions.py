"""The exceptions routerkit raises."""

from __future__ import annotations

from django.db import OperationalError


class PrimaryUnavailable(OperationalError):  # noqa: N818 (the name is public contract)
    """A primary database cannot be reached, so a write (or a read that needs it) fails.

    Raised at once by routerkit's database backends when connecting fails,
    instead of the driver's error, which may carry connection details.
    `alias` is the database alias; the message names it and the server's
    reason, never credentials. ConsistencyMiddleware can answer such a request
    with 503 Service Unavailable and Retry-After (ROUTERKIT["RETRY_AFTER"]).
    """

    def __init__(self, alias: str, reason: str = "") -> None:
        self.alias = alias
        detail = f": {reason}" if reason else ""
        super().__init__(f"The primary database {alias!r} cannot be reached{detail}")
