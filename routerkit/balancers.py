"""Balancers: which of the replicas that may serve a read gets it.

One balancer per cluster and configuration, kept by the runtime: its state
(the round-robin turn) lives across health snapshots and is shared by every
thread, so a rotation goes on when the set of usable replicas changes and
spreads concurrent requests too. A replica of weight 0 is drained under every
policy: still monitored, never read from.

Pure: no Django, no I/O, no locks (`itertools.count` advances atomically).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Sequence

Choose = Callable[[], str]


class Balancer:
    """Chooses among candidate replicas by a policy: random, round_robin or weighted."""

    __slots__ = ("_turn", "_weights", "cached", "policy")

    def __init__(self, replicas: Sequence[str], weights: Sequence[float], policy: str) -> None:
        self.policy = policy
        self._weights = dict(zip(replicas, weights, strict=True))
        self._turn = itertools.count().__next__
        # (candidates, how to choose among them): the hot path hands in the
        # same tuple for as long as a snapshot lasts, so this is built once
        # per snapshot, and checked by identity.
        self.cached: tuple[Sequence[str], Choose | None] = ((), None)

    def prepare(self, candidates: Sequence[str]) -> tuple[Sequence[str], Choose | None]:
        """Build (and keep) the chooser for `candidates`; None when all are drained."""
        cached = (candidates, self.chooser(candidates))
        self.cached = cached
        return cached

    def pick(self, candidates: Sequence[str]) -> str | None:
        """Return a replica among `candidates`, or None if every one is drained.

        For a one-off set (the replicas that meet a client's requirement):
        the kept chooser of the hot path is left alone.
        """
        choose = self.chooser(candidates)
        return choose() if choose is not None else None

    def chooser(self, candidates: Sequence[str]) -> Choose | None:
        serving = tuple(r for r in candidates if self._weights.get(r, 1.0) > 0)
        if not serving:
            return None
        count = len(serving)
        if count == 1:
            only = serving[0]
            return lambda: only
        if self.policy == "round_robin":
            turn = self._turn
            return lambda: serving[turn() % count]
        draw = random.random
        if self.policy == "weighted":
            bounds = list(itertools.accumulate(self._weights.get(r, 1.0) for r in serving))
            total = bounds[-1]
            last = count - 1
            return lambda: serving[min(bisect.bisect(bounds, draw() * total), last)]
        # random.choice() goes through _randbelow(); this is about four times cheaper.
        return lambda: serving[int(draw() * count)]
