"""Composable Django database routers for a primary with read replicas."""

from __future__ import annotations

from routerkit.state import consistency_scope, use_primary

__all__ = ["consistency_scope", "use_primary"]
__version__ = "0.1.0"
