"""In-process counts of events off the hot path (rejected tokens, probe failures).

routerkit.metrics exports them as Prometheus counters once installed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

counts: Counter[tuple[str, ...]] = Counter()
# Set by routerkit.metrics.install(): exports the events that have a metric.
listener: Callable[[tuple[str, ...]], None] | None = None


def incr(*key: str) -> None:
    """Count one event, e.g. ``incr("token_rejected", "tampered")``."""
    counts[key] += 1
    if listener is not None:
        listener(key)


def get(*key: str) -> int:
    """Return how many times an event was counted."""
    return counts[key]
