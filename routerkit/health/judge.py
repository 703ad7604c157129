"""Judge one replica from one probe: its state, lag, hysteresis and retry time.

Pure: no I/O and no clock. The monitor passes the time in, so every state
transition is a table test (tests/test_judge.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from routerkit.values import (
    DOWN,
    HEALTHY,
    LAGGING,
    NOT_REPLICA,
    RECEIVER_DOWN,
    UNKNOWN,
    ProbeError,
    ReplicaHealth,
    ReplicaStatus,
)

if TYPE_CHECKING:
    from routerkit.conf import Lag

# A replica that left the rotation for lag comes back only under this share of
# the limits, so that it does not flap around the threshold.
HYSTERESIS = 0.5
# A replica that cannot be reached is probed again this many INTERVALs later,
# never sooner (requests waiting on a position may refresh every 50 ms), and
# never later: it rejoins within two intervals of being reachable, however
# long it was down. A refused connection costs a millisecond; one that hangs
# is bounded by the probe's timeouts and never piles up (see the monitor).
RETRY_INTERVALS = 1.0

# Samples of the primary's position further apart than this many INTERVALs
# have a gap between them: the process did not look (see age()).
HISTORY_GAP = 2.0

# (monotonic time, the primary's position then), oldest first, positions rising.
History = Sequence[tuple[float, int]]


def due(health: ReplicaHealth, now: float) -> bool:
    """Tell whether a replica is to be probed now (not backing off)."""
    return health.retry_at <= now


def down(previous: ReplicaHealth, *, now: float, lag: Lag) -> ReplicaHealth:
    """A replica that could not be reached, by a probe or by a request's read."""
    return replace(
        previous,
        state=DOWN,
        lag_bytes=None,
        lag_seconds=None,
        failures=previous.failures + 1,
        retry_at=now + lag.interval * RETRY_INTERVALS,
    )


def not_probed(previous: ReplicaHealth) -> ReplicaHealth:
    """A replica left out of this round (backing off, or its last probe still runs).

    What was known is kept, but never healthy: nothing says it still is.
    """
    state = previous.state if previous.state in (DOWN, UNKNOWN) else UNKNOWN
    return replace(previous, state=state, lag_bytes=None, lag_seconds=None, probe_seconds=None)


def judge(
    previous: ReplicaHealth,
    outcome: ReplicaStatus | ProbeError | None,
    *,
    primary_lsn: int | None,
    history: History,
    lag: Lag,
    now: float,
    wall: float,
    probe_seconds: float | None = None,
    orphaned: bool = False,
) -> ReplicaHealth:
    """Return a replica's health after a probe.

    `outcome` is what the probe read, the error it raised, or None when it
    did not answer within LAG.TIMEOUT. `primary_lsn` is the newest position of
    the primary known, and `history` its recent positions over time.

    `orphaned` says the primary did not answer its probe: `primary_lsn` is then
    the newest position known anywhere (its last one, or a replica's received
    WAL). A replica whose WAL receiver is down because the primary is has
    still replayed everything it can get, so it may serve; its lag is how far
    it is behind the others.
    """
    # Until it answers again, the last position it was seen at stays known:
    # what a client read from it before it failed is at most that far.
    base = ReplicaHealth(
        previous.alias,
        previous.primary,
        UNKNOWN,
        replay_lsn=previous.replay_lsn,
        probe_seconds=probe_seconds,
        checked_at=wall,
        held=previous.held,
        failures=previous.failures,
        retry_at=previous.retry_at,
    )
    if isinstance(outcome, ProbeError):
        return down(base, now=now, lag=lag)
    if outcome is None:
        return base  # timed out: the probe goes on in the background; we do not know
    status = replace(base, replay_lsn=outcome.replay_lsn, failures=0, retry_at=0.0)
    if not outcome.in_recovery:
        return replace(status, state=NOT_REPLICA)  # promoted, or mis-pointed
    if outcome.replay_lsn is None and primary_lsn is None and outcome.streaming:
        # A backend without positions to compare.
        return replace(status, state=HEALTHY, lag_bytes=0, lag_seconds=0.0, held=False)
    if outcome.replay_lsn is None or primary_lsn is None:
        return status
    if outcome.streaming is False and not orphaned:
        return replace(status, state=RECEIVER_DOWN)
    lag_bytes = max(0, primary_lsn - outcome.replay_lsn)
    # Idle-safe: a replica that has replayed everything the primary had lags
    # by no time, however long ago the last commit was.
    lag_seconds: float | None = 0.0
    if lag_bytes and orphaned and (not history or outcome.replay_lsn >= history[-1][1]):
        # Past the last position the primary was seen at: the history, which
        # stopped with the primary, cannot date it.
        lag_seconds = None
    elif lag_bytes:
        lag_seconds = age(history, outcome.replay_lsn, now, gap=lag.interval * HISTORY_GAP)
    if lag_seconds is None:
        # Older than the history: the time since its last replayed commit is
        # then the best measure there is (a lower bound of its lag).
        lag_seconds = outcome.replay_age
    if lag_seconds is None:
        return replace(status, lag_bytes=lag_bytes)
    share = HYSTERESIS if previous.held else 1.0
    over = lag_bytes > lag.max_bytes * share or lag_seconds > lag.max_seconds * share
    return replace(
        status,
        state=LAGGING if over else HEALTHY,
        lag_bytes=lag_bytes,
        lag_seconds=lag_seconds,
        held=over,
    )


def age(history: History, position: int, now: float, gap: float = math.inf) -> float | None:
    """Return how long ago the primary passed `position`, if the history covers it.

    That is the age of the oldest data the replica lacks. Between the two
    samples around `position` the primary is taken to have written at an even
    rate: a replica 10 ms behind reports about 10 ms, not one INTERVAL (the
    time since the sample before it), which would keep an excluded replica
    out for good when INTERVAL exceeds the hysteresis limit.

    Samples further apart than `gap` bracket a time nobody looked (the process
    was idle): the primary may have written all of it just now, so the
    earliest it is known to have passed `position`, the later sample, dates
    it. An idle period never makes a replica milliseconds behind look
    seconds behind; one that stays in the gap ages from the later sample on.
    """
    before: tuple[float, int] | None = None
    for when, lsn in history:
        if lsn > position:
            if before is None:
                return None  # older than the whole history
            then, passed = before
            if when - then > gap:
                return max(0.0, now - when)
            share = (position - passed) / (lsn - passed)
            return max(0.0, now - (then + (when - then) * share))
        before = (when, lsn)
    # At or past the newest sample: the primary passed it after that sample.
    return None if before is None else max(0.0, now - before[0])


# -- asking a replica where it is ------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What a replica answered when a request asked its replay position."""

    asked: float  # monotonic time of the question: it had replayed `position` by then
    position: int
    # Bytes of WAL replayed per second since an answer at least RATE_SPAN older
    # (None until there is one).
    rate: float | None = None


# An answer is given again for this long instead of asking (see worth_asking()).
ANSWER_REUSE = 0.002
# Past this age an answer predicts nothing: the replica is asked.
ANSWER_TRUSTED = 0.02
# A replay rate is measured over at least this long.
RATE_SPAN = 0.05


def answered(
    previous: Answer | None, reference: Answer | None, asked: float, position: int
) -> Answer:
    """The answer a replica gave at `asked`, with its replay rate since `reference`."""
    rate = None
    if reference is not None and asked - reference.asked >= RATE_SPAN:
        rate = max(0, position - reference.position) / (asked - reference.asked)
    elif previous is not None:
        rate = previous.rate
    return Answer(asked, position, rate)


def worth_asking(answer: Answer | None, want: int, now: float) -> bool:
    """Tell whether asking a replica again may find it at `want`, given its last answer.

    Not asked when the answer is at `want` already (the caller reads the
    replica) or younger than ANSWER_REUSE. Asked when there is no answer, it
    is older than ANSWER_TRUSTED, or it is young but the replica replays fast
    enough to have reached `want` within twice the answer's age.
    Under load (answers milliseconds old) a replica a steady 200 ms behind is
    then asked about once per ANSWER_TRUSTED instead of once per request, and
    as its replay nears a client's position it is asked again. A replica that replays
    nothing (a stall, or no writes to replay) is asked: its rate says nothing
    of when it will move on.
    """
    if answer is None:
        return True
    if answer.position >= want:
        return False
    age = now - answer.asked
    if age < ANSWER_REUSE:
        return False
    if age >= ANSWER_TRUSTED or not answer.rate:
        return True
    return (want - answer.position) / answer.rate <= 2 * age
