"""Carry read-your-writes into background tasks.

# where the task is enqueued, after the write has committed
token = routerkit.capture_token()
send_welcome_email.delay(user_id, routerkit_token=token)

# in the task
with routerkit.restore_token(token):
    user = User.objects.get(pk=user_id)   # never older than the request's write
"""

from __future__ import annotations

from routerkit import consistency
from routerkit.conf import get_config
from routerkit.state import Scope, consistency_scope, current_scope


def capture_token() -> str | None:
    """Return a signed token of what the current unit of work wrote and read.

    Call it after the writes committed (for example in transaction.on_commit);
    inside a transaction the position cannot be known yet, and the token falls
    back to STICKY["WINDOW"] seconds on the primary.
    """
    requirements = consistency.capture(current_scope(), get_config())
    return consistency.encode(requirements) if requirements else None


class restore_token(consistency_scope):  # noqa: N801 - used like contextlib's lower-case helpers
    """Run a block as one unit of work that honours a token from `capture_token()`.

    A context manager (``with restore_token(token) as scope:``) and a decorator
    for sync and async functions. A missing, expired or tampered token gives a
    fresh scope (it is counted, never raised).
    """

    def __init__(self, token: str | None) -> None:
        super().__init__()
        self.token = token

    def _fresh(self) -> restore_token:
        return restore_token(self.token)

    def _start(self, scope: Scope) -> None:
        consistency.start(scope, consistency.Tokens(written=self.token), get_config())
