"""The health judge as a table: every state transition, hysteresis and retry, on a fake clock."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from routerkit.conf import Lag
from routerkit.health.judge import (
    ANSWER_TRUSTED,
    HYSTERESIS,
    RATE_SPAN,
    Answer,
    age,
    answered,
    due,
    judge,
    not_probed,
    worth_asking,
)
from routerkit.health.monitor import Positions
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

LAG = Lag(max_seconds=2.0, max_bytes=1_000, interval=1.0, timeout=0.2)
NOW = 100.0
# The primary wrote 1,000 bytes a second for the last ten seconds.
HISTORY = tuple((90.0 + i, 10_000 + 1_000 * i) for i in range(11))
PRIMARY_LSN = HISTORY[-1][1]  # 20,000

NEW = ReplicaHealth("replica1", "primary", UNKNOWN)
WAS_HEALTHY = replace(NEW, state=HEALTHY, lag_bytes=0, lag_seconds=0.0)
WAS_LAGGING = replace(NEW, state=LAGGING, held=True)
WAS_DOWN = replace(NEW, state=DOWN, failures=3, retry_at=NOW + 4.0)


def status(
    behind: int | None = 0,
    *,
    in_recovery: bool = True,
    streaming: bool | None = True,
    replay_age: float | None = 0.0,
) -> ReplicaStatus:
    replay = None if behind is None else PRIMARY_LSN - behind
    return ReplicaStatus(in_recovery, replay, replay, replay_age, streaming)


def run(previous: ReplicaHealth, outcome: object, primary_lsn: int | None = PRIMARY_LSN):
    assert outcome is None or isinstance(outcome, (ReplicaStatus, ProbeError))
    return judge(
        previous,
        outcome,
        primary_lsn=primary_lsn,
        history=HISTORY,
        lag=LAG,
        now=NOW,
        wall=1_700_000_000.0,
    )


@pytest.mark.parametrize(
    ("previous", "outcome", "primary_lsn", "state", "held"),
    [
        # From unknown (first probe) to every state.
        (NEW, status(0), PRIMARY_LSN, HEALTHY, False),
        (NEW, status(999), PRIMARY_LSN, HEALTHY, False),
        (NEW, status(1_001), PRIMARY_LSN, LAGGING, True),
        (NEW, ProbeError("refused"), PRIMARY_LSN, DOWN, False),
        (NEW, None, PRIMARY_LSN, UNKNOWN, False),
        (NEW, status(0, in_recovery=False), PRIMARY_LSN, NOT_REPLICA, False),
        (NEW, status(0, streaming=False), PRIMARY_LSN, RECEIVER_DOWN, False),
        (NEW, status(None), PRIMARY_LSN, UNKNOWN, False),  # nothing replayed yet
        (NEW, status(0), None, UNKNOWN, False),  # no position of the primary known
        (NEW, status(None), None, HEALTHY, False),  # a backend without positions
        # Healthy to every state.
        (WAS_HEALTHY, status(10), PRIMARY_LSN, HEALTHY, False),
        (WAS_HEALTHY, status(5_000), PRIMARY_LSN, LAGGING, True),
        (WAS_HEALTHY, ProbeError("refused"), PRIMARY_LSN, DOWN, False),
        (WAS_HEALTHY, None, PRIMARY_LSN, UNKNOWN, False),
        (WAS_HEALTHY, status(0, in_recovery=False), PRIMARY_LSN, NOT_REPLICA, False),
        # Hysteresis: a lagging replica comes back only under half the limits.
        (WAS_LAGGING, status(700), PRIMARY_LSN, LAGGING, True),
        (WAS_LAGGING, status(int(1_000 * HYSTERESIS)), PRIMARY_LSN, HEALTHY, False),
        (WAS_LAGGING, status(10), PRIMARY_LSN, HEALTHY, False),
        # ... and remembers it was out through a round it could not be judged.
        (WAS_LAGGING, None, PRIMARY_LSN, UNKNOWN, True),
        (WAS_LAGGING, ProbeError("refused"), PRIMARY_LSN, DOWN, True),
        (WAS_LAGGING, status(0, streaming=False), PRIMARY_LSN, RECEIVER_DOWN, True),
        (replace(WAS_LAGGING, state=UNKNOWN), status(700), PRIMARY_LSN, LAGGING, True),
        # Down comes back on the first answer.
        (WAS_DOWN, status(0), PRIMARY_LSN, HEALTHY, False),
        (WAS_DOWN, ProbeError("refused"), PRIMARY_LSN, DOWN, False),
    ],
)
def test_state_transitions(
    previous: ReplicaHealth, outcome: object, primary_lsn: int | None, state: str, held: bool
) -> None:
    judged = run(previous, outcome, primary_lsn)
    assert (judged.state, judged.held) == (state, held)
    assert judged.healthy == (state == HEALTHY)


@pytest.mark.parametrize(
    ("behind", "lag_seconds"),
    [
        (0, 0.0),  # caught up: no lag, however old the last commit
        (10, 0.01),  # 10 bytes at 1,000 bytes a second: 10 ms, not one INTERVAL
        (1_500, 1.5),
        (2_500, 2.5),
    ],
)
def test_lag_is_measured_from_the_primarys_history(behind: int, lag_seconds: float) -> None:
    judged = run(WAS_HEALTHY, status(behind))
    assert judged.lag_bytes == behind
    assert judged.lag_seconds == pytest.approx(lag_seconds)


def test_time_lag_alone_excludes_a_replica() -> None:
    """Over MAX_SECONDS but under MAX_BYTES: out for its age (a slow writer)."""
    slow = tuple((90.0 + i, 10_000 + 10 * i) for i in range(11))  # 10 bytes a second
    lsn = slow[-1][1]
    replay = lsn - 30  # three seconds behind, 30 bytes
    outcome = ReplicaStatus(True, replay, replay, 3.0, True)
    kwargs = {"primary_lsn": lsn, "history": slow, "lag": LAG, "now": NOW, "wall": 0.0}
    judged = judge(WAS_HEALTHY, outcome, **kwargs)
    assert (judged.state, judged.lag_bytes) == (LAGGING, 30)
    assert judged.lag_seconds == pytest.approx(3.0)
    # Back under half of MAX_SECONDS (1 s): healthy again.
    caught_up = ReplicaStatus(True, lsn - 5, lsn - 5, 0.5, True)
    assert judge(judged, caught_up, **kwargs).state == HEALTHY


def test_older_than_the_history_falls_back_to_the_replay_age() -> None:
    judged = run(WAS_HEALTHY, status(15_000, replay_age=30.0))
    assert (judged.state, judged.lag_seconds) == (LAGGING, 30.0)
    unknown = run(WAS_HEALTHY, status(15_000, replay_age=None))
    assert (unknown.state, unknown.lag_bytes, unknown.lag_seconds) == (UNKNOWN, 15_000, None)


@pytest.mark.parametrize("failures", [1, 2, 5, 30, 1_000])
def test_a_down_replica_is_probed_again_one_interval_later(failures: int) -> None:
    """However long the outage: it rejoins within two intervals of being reachable."""
    health = NEW
    for _ in range(failures):
        health = run(health, ProbeError("refused"))
    assert (health.state, health.failures) == (DOWN, failures)
    assert health.retry_at == NOW + LAG.interval
    assert not due(health, NOW + LAG.interval - 0.01)  # not sooner, however often refreshed
    assert due(health, NOW + LAG.interval)
    assert run(health, status(0)).state == HEALTHY


def test_an_answer_ends_the_retry_wait() -> None:
    health = run(WAS_DOWN, status(0))
    assert (health.failures, health.retry_at) == (0, 0.0)
    assert due(health, NOW)


def test_a_timeout_neither_counts_as_a_failure_nor_ends_the_retry_wait() -> None:
    health = run(WAS_DOWN, None)
    assert (health.state, health.failures, health.retry_at) == (UNKNOWN, 3, WAS_DOWN.retry_at)


@pytest.mark.parametrize(
    ("previous", "state"),
    [(WAS_HEALTHY, UNKNOWN), (WAS_LAGGING, UNKNOWN), (WAS_DOWN, DOWN), (NEW, UNKNOWN)],
)
def test_a_replica_not_probed_this_round_is_never_healthy(
    previous: ReplicaHealth, state: str
) -> None:
    skipped = not_probed(previous)
    assert skipped.state == state
    assert (skipped.held, skipped.failures, skipped.retry_at) == (
        previous.held,
        previous.failures,
        previous.retry_at,
    )


def test_age_before_any_history_is_unknown() -> None:
    assert age((), 5, NOW) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_positions_keep_the_newest_however_late_it_arrives() -> None:
    clock = FakeClock()
    positions = Positions(clock=clock)
    positions.add("primary", 100)
    clock.now = 1.0
    positions.add("primary", 300)  # a request read the position after its write
    clock.now = 2.0
    positions.add("primary", 200)  # a slow probe answering late, with an older one
    assert positions.newest("primary", since=0.0) == 300
    assert positions.history("primary") == ((0.0, 100), (1.0, 300))
    # Confirmed at 1.0: too old for a judgement that asks for 1.5 or later.
    assert positions.newest("primary", since=1.5) is None
    clock.now = 3.0
    positions.add("primary", 300)  # the same position again: confirmed, and dated later
    assert positions.newest("primary", since=2.5) == 300
    assert positions.history("primary") == ((0.0, 100), (3.0, 300))


@pytest.mark.parametrize("outcome", [ProbeError("refused"), None])
def test_a_replica_that_stops_answering_keeps_its_last_position(outcome: object) -> None:
    """What a client read from it before is at most that far: floors stay known."""
    seen = run(WAS_HEALTHY, status(10))
    assert run(seen, outcome).replay_lsn == PRIMARY_LSN - 10


def test_busy_traffic_does_not_shrink_the_history() -> None:
    """A hundred positions a second from requests: samples stay a quarter second apart."""
    clock = FakeClock()
    positions = Positions(spacing=0.25, clock=clock)
    for step in range(1_000):  # ten seconds
        clock.now = step / 100
        positions.add("primary", 1_000 + step)
    history = positions.history("primary")
    times = [when for when, _ in history]
    assert positions.newest("primary", since=9.99) == 1_999
    assert history[-1] == (9.99, 1_999)
    assert times[0] == 0.0
    assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(times[:-1]))
    assert 38 <= len(history) <= 44  # ten seconds at about a quarter second


def orphaned(outcome: object, reference: int, now: float = NOW) -> ReplicaHealth:
    """Judge with the primary not answering: `reference` is the newest position known."""
    assert isinstance(outcome, ReplicaStatus)
    return judge(
        NEW,
        outcome,
        primary_lsn=reference,
        history=HISTORY,
        lag=LAG,
        now=now,
        wall=1_700_000_000.0,
        orphaned=True,
    )


@pytest.mark.parametrize(
    ("outcome", "reference", "state", "lag_seconds"),
    [
        # Its receiver is down with the primary: it has all there is, and serves.
        (status(0, streaming=False), PRIMARY_LSN, HEALTHY, 0.0),
        # Behind the newest position known (another replica received more):
        # lag dated by the history, growing as the primary stays away.
        (status(500, streaming=False), PRIMARY_LSN, HEALTHY, 0.5),
        (status(900, streaming=False), PRIMARY_LSN, HEALTHY, 0.9),
        # Past the primary's last known position: the history cannot date it,
        # the time since its last replayed commit does.
        (status(0, streaming=False, replay_age=0.5), PRIMARY_LSN + 400, HEALTHY, 0.5),
        (status(0, streaming=False, replay_age=3.0), PRIMARY_LSN + 400, LAGGING, 3.0),
        (status(0, streaming=False, replay_age=None), PRIMARY_LSN + 400, UNKNOWN, None),
        # Lag in bytes still counts.
        (status(0, streaming=False), PRIMARY_LSN + 5_000, LAGGING, 0.0),
    ],
)
def test_with_the_primary_away_replicas_are_judged_against_each_other(
    outcome: ReplicaStatus, reference: int, state: str, lag_seconds: float | None
) -> None:
    judged = orphaned(outcome, reference)
    assert judged.state == state
    assert judged.lag_seconds == pytest.approx(lag_seconds)


def test_the_age_of_what_a_replica_lacks_grows_while_the_primary_is_away() -> None:
    behind = status(500, streaming=False)
    assert orphaned(behind, PRIMARY_LSN).state == HEALTHY
    later = orphaned(behind, PRIMARY_LSN, now=NOW + 1.6)
    assert later.state == LAGGING
    assert later.lag_seconds == pytest.approx(2.1)


# Idle from 100 to 108: no sample between. Then a burst of writes, sampled at 108.
IDLE_HISTORY = ((99.0, 20_000), (100.0, 20_000), (108.0, 20_500))


@pytest.mark.parametrize(
    ("position", "now", "expected"),
    [
        (20_000, 108.0, 0.0),  # ms behind the burst: not the eight idle seconds
        (20_250, 108.01, 0.01),
        (20_000, 110.0, 2.0),  # still there later: it ages from the later sample
    ],
)
def test_an_idle_gap_in_the_history_is_not_lag(position: int, now: float, expected: float) -> None:
    assert age(IDLE_HISTORY, position, now, gap=2.0) == pytest.approx(expected)
    # Without the gap rule the replica would look up to eight seconds behind.
    assert age(IDLE_HISTORY, position, now) >= expected


def test_after_an_idle_period_a_replica_just_behind_is_healthy() -> None:
    lag = replace(LAG, interval=1.0)  # a gap is over two intervals
    judged = judge(
        WAS_HEALTHY,
        ReplicaStatus(True, 20_000, 20_000, 8.0, True),
        primary_lsn=20_500,
        history=IDLE_HISTORY,
        lag=lag,
        now=108.0,
        wall=1_700_000_000.0,
    )
    assert judged.state == HEALTHY
    assert judged.lag_seconds == pytest.approx(0.0)


# -- asking a replica where it is (Monitor.replay_position) -------------------------


@pytest.mark.parametrize(
    ("answer", "want", "now", "ask"),
    [
        (None, 100, 0.0, True),  # nothing known
        (Answer(0.0, 150, rate=None), 100, 1.0, False),  # there already, however old
        (Answer(0.0, 50, rate=1e9), 100, 0.001, False),  # younger than ANSWER_REUSE
        (Answer(0.0, 50, rate=None), 100, 0.005, True),  # no rate yet
        (Answer(0.0, 50, rate=0.0), 100, 0.005, True),  # replaying nothing: a stall ends any time
        # 200 ms behind at 1,000 bytes/s, asked 5 ms ago: cannot be there yet.
        (Answer(0.0, 800, rate=1000.0), 1000, 0.005, False),
        (Answer(0.0, 800, rate=1000.0), 1000, ANSWER_TRUSTED, True),  # too old to predict
        # 8 ms of replay left, answer 5 ms old: it may be there.
        (Answer(0.0, 992, rate=1000.0), 1000, 0.005, True),
    ],
)
def test_worth_asking(answer: Answer | None, want: int, now: float, ask: bool) -> None:
    assert worth_asking(answer, want, now) is ask


def test_an_answer_carries_the_replay_rate_over_at_least_a_span() -> None:
    first = answered(None, None, 0.0, 1_000)
    assert first.rate is None
    soon = answered(first, first, RATE_SPAN / 2, 1_500)
    assert soon.rate is None  # too short a span to measure
    later = answered(soon, first, RATE_SPAN * 2, 2_000)
    assert later.rate == pytest.approx(1_000 / (RATE_SPAN * 2))
    carried = answered(later, later, RATE_SPAN * 2 + 0.001, 2_000)
    assert carried.rate == later.rate
    assert answered(later, first, RATE_SPAN * 2, 500).rate == 0.0  # never negative
