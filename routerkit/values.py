"""The plain values every layer shares: positions, requirements, health, reasons.

Pure Python with no Django and no routerkit import: everything above reads
these, and nothing here knows where they come from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

_N = TypeVar("_N", int, float)

# -- WAL positions ----------------------------------------------------------

MAX_LSN = (1 << 64) - 1


def parse_lsn(text: str) -> int:
    """Return the integer position of a pg_lsn text such as ``"16/B374D848"``."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"not a WAL position: {text!r}")
    value = (int(high, 16) << 32) | int(low, 16)
    if not 0 <= value <= MAX_LSN or len(low) > 8:
        raise ValueError(f"not a WAL position: {text!r}")
    return value


def format_lsn(value: int) -> str:
    """Return the pg_lsn text of an integer position."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# -- What one client's reads need ------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """What one client's next reads of one cluster need."""

    lsn: int | None = None  # a replica must have replayed this position
    until: float | None = None  # wall clock: reads stay on the primary until then

    def merge(self, lsn: int | None = None, until: float | None = None) -> Requirement:
        """Return the requirement that needs both: the later position and time."""
        merged_lsn, merged_until = _later(self.lsn, lsn), _later(self.until, until)
        if merged_lsn == self.lsn and merged_until == self.until:
            return self  # the common case, on every request: nothing new
        return Requirement(merged_lsn, merged_until)


def _later(kept: _N | None, new: _N | None) -> _N | None:
    # Zero counts as unset, like None.
    if not new:
        return kept or None
    if not kept:
        return new
    return kept if kept >= new else new


# -- What a probe reads -----------------------------------------------------


@dataclass(frozen=True)
class PrimaryStatus:
    lsn: int | None  # pg_current_wal_lsn(); None where the backend has no positions
    in_recovery: bool = False


@dataclass(frozen=True)
class ReplicaStatus:
    in_recovery: bool
    replay_lsn: int | None
    receive_lsn: int | None
    # Seconds since the last replayed commit; None if nothing was replayed yet.
    replay_age: float | None
    # The WAL receiver is streaming; None when the role may not see it.
    streaming: bool | None


class ProbeError(Exception):
    """The database could not be reached or answered unexpectedly."""


# -- Replica health ---------------------------------------------------------

HEALTHY = "healthy"
LAGGING = "lagging"
DOWN = "down"
UNKNOWN = "unknown"
NOT_REPLICA = "not_replica"
RECEIVER_DOWN = "receiver_down"
STATES = (HEALTHY, LAGGING, DOWN, UNKNOWN, NOT_REPLICA, RECEIVER_DOWN)


@dataclass(frozen=True)
class ReplicaHealth:
    alias: str
    primary: str
    state: str
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    replay_lsn: int | None = None
    probe_seconds: float | None = None
    checked_at: float = 0.0  # wall clock
    # Out of the rotation for lag: it comes back only under the hysteresis
    # limits, also after a round in which its lag was not known.
    held: bool = False
    # Connection failures in a row, and when (time.monotonic()) to probe again.
    failures: int = 0
    retry_at: float = 0.0

    @property
    def healthy(self) -> bool:
        return self.state == HEALTHY


@dataclass(frozen=True)
class Snapshot:
    """Health of every replica at one moment; read by routing decisions."""

    taken_at: float  # wall clock, comparable across processes
    expires: float  # time.monotonic() after which it is ignored
    replicas: Mapping[str, ReplicaHealth]
    primary_lsn: Mapping[str, int | None]
    # primary -> replicas in the read rotation, in configuration order
    usable: Mapping[str, tuple[str, ...]]
    # primary -> lagging replicas kept in the rotation by LAG["MIN_REPLICAS"]
    guarded: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def position(self, alias: str) -> int | None:
        """Return the replay position of a replica, or the WAL position of a primary."""
        health = self.replicas.get(alias)
        if health is not None:
            return health.replay_lsn
        return self.primary_lsn.get(alias)

    def advanced(self, replica: str, replay_lsn: int) -> Snapshot:
        """Return this snapshot with a replica known to have replayed `replay_lsn`.

        A replica's position only moves forward: a lower one changes nothing.
        Health, lag and the rotation stay as they were judged.
        """
        health = self.replicas.get(replica)
        if health is None or (health.replay_lsn is not None and health.replay_lsn >= replay_lsn):
            return self
        replicas = {**self.replicas, replica: replace(health, replay_lsn=replay_lsn)}
        return replace(self, replicas=replicas)


def fits(snapshot: Snapshot, replica: str, requirement: Requirement, now: float) -> bool:
    """Tell whether a replica may serve a client with this requirement."""
    if requirement.until is not None and requirement.until > now:
        return False
    if requirement.lsn is None:
        return True
    health = snapshot.replicas.get(replica)
    position = health.replay_lsn if health is not None else None
    return position is not None and position >= requirement.lsn


# -- Why a read went where it did ------------------------------------------

PRIMARY = "primary"  # the cluster has no replicas, or the operation is a write
REPLICA = "replica"  # a usable replica that meets the client's requirement
FORCED = "forced"  # use_primary()
WRITTEN = "written"  # this request or task wrote to the primary
TRANSACTION = "transaction"  # inside atomic() on the primary
STICKY = "sticky"  # the client's time window after a write (STICKY MODE "time")
TOKEN_PENDING = "token_pending"  # no usable replica has replayed the client's position
LAGGING_REASON = "lagging"  # no usable replica; at least one is out for lag
UNHEALTHY = "unhealthy"  # no usable replica: down, unknown or mis-pointed
UNLISTED = "unlisted"  # a Django test case that does not list the replica in `databases`
CAPACITY = "capacity"  # a lagging replica kept serving by LAG["MIN_REPLICAS"]
REASONS = (
    PRIMARY,
    REPLICA,
    FORCED,
    WRITTEN,
    TRANSACTION,
    STICKY,
    TOKEN_PENDING,
    LAGGING_REASON,
    UNHEALTHY,
    UNLISTED,
    CAPACITY,
)
