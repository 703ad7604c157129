"""Composable Django database routers for a primary with read replicas."""

from __future__ import annotations

from routerkit.exceptions import PrimaryUnavailable
from routerkit.state import consistency_scope, scoped, use_primary
from routerkit.tasks import capture_token, restore_token
from routerkit.writes import mark_written

__all__ = [
    "PrimaryUnavailable",
    "capture_token",
    "consistency_scope",
    "mark_written",
    "restore_token",
    "scoped",
    "use_primary",
]
__version__ = "0.1.0"
