"""In-process counters for events off the hot path (rejected tokens, probe failures).

Plain dict increments: the Prometheus layer reads them at scrape time.
"""

from __future__ import annotations

from collections import Counter

counts: Counter[tuple[str, ...]] = Counter()


def incr(*key: str) -> None:
    """Count one event, e.g. ``incr("token_rejected", "tampered")``."""
    counts[key] += 1


def get(*key: str) -> int:
    """Return how many times an event was counted."""
    return counts[key]
