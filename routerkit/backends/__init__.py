"""Database backends: Django's own, with reads that survive a replica failure.

Set ``"ENGINE": "routerkit.backends.postgresql"`` (routerkit.env does) on the
primaries and replicas routerkit manages. Another backend gets the same with
`ReadRetryMixin` placed before its DatabaseWrapper.
"""

from __future__ import annotations

from routerkit.retries import ReadRetryMixin

__all__ = ["ReadRetryMixin"]
