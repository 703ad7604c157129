"""Read-your-writes and monotonic reads across requests.

At the end of a unit of work, routerkit records what the client's next reads
require: for every primary it wrote, the primary's WAL position taken after
the commit ("lsn" mode) or a time until which reads stay on the primary
("time" mode); for every database it read from, the position it has seen. The
requirements travel in a signed token through STICKY["STORE"]. A replica
serves a later read only if it has replayed that position; a requirement is
dropped once every replica of its cluster has.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core import signing
from django.db import connections

from routerkit import stats
from routerkit.conf import Config
from routerkit.health import Snapshot, get_monitor
from routerkit.lsn import MAX_LSN, parse_lsn
from routerkit.state import Scope

logger = logging.getLogger("routerkit")

TOKEN_SALT = "routerkit.consistency"
# A token older than this is ignored. Requirements are normally dropped within
# an interval or two; this bounds the damage of a replica stuck far behind.
TOKEN_MAX_AGE = 600
# A real token is well under this: anything longer is refused before unsigning.
MAX_TOKEN_LENGTH = 1024
_VERSION = 1


@dataclass(frozen=True)
class Requirement:
    """What one client's next reads of one cluster need."""

    lsn: int | None = None  # a replica must have replayed this position
    until: float | None = None  # wall clock: reads stay on the primary until then

    def merge(self, lsn: int | None = None, until: float | None = None) -> Requirement:
        return Requirement(
            lsn=max(filter(None, (self.lsn, lsn)), default=None),
            until=max(filter(None, (self.until, until)), default=None),
        )


def encode(requirements: Mapping[str, Requirement]) -> str:
    """Return the signed token for `requirements`."""
    payload = {
        "v": _VERSION,
        "r": {alias: [req.lsn, req.until] for alias, req in sorted(requirements.items())},
    }
    return signing.dumps(payload, salt=TOKEN_SALT, compress=False)


def decode(raw: str, config: Config) -> dict[str, Requirement]:
    """Return the requirements of a token, or none if it is not one we can trust.

    Tampered, expired, oversized and malformed tokens are ignored and counted,
    never an error: the worst outcome is a read from the primary.
    """
    if len(raw) > MAX_TOKEN_LENGTH:
        return _reject("oversized")
    try:
        payload = signing.loads(raw, salt=TOKEN_SALT, max_age=TOKEN_MAX_AGE)
    except signing.SignatureExpired:
        return _reject("expired")
    except (signing.BadSignature, ValueError, json.JSONDecodeError):
        return _reject("tampered")
    try:
        return _parse(payload, config)
    except (TypeError, ValueError, AttributeError, KeyError):
        return _reject("malformed")


def _parse(payload: Any, config: Config) -> dict[str, Requirement]:
    if payload["v"] != _VERSION:
        raise ValueError("unknown version")
    requirements = {}
    for alias, (lsn, until) in payload["r"].items():
        if alias not in config.clusters:
            continue  # a cluster no longer configured: nothing to require
        if lsn is not None and not (isinstance(lsn, int) and 0 <= lsn <= MAX_LSN):
            raise ValueError("bad position")
        if until is not None and not isinstance(until, (int, float)):
            raise ValueError("bad time")
        requirements[alias] = Requirement(lsn, until)
    return requirements


def _reject(reason: str) -> dict[str, Requirement]:
    stats.incr("token_rejected", reason)
    logger.info("routerkit: ignored a %s consistency token", reason)
    return {}


def capture(scope: Scope, config: Config, snapshot: Snapshot) -> dict[str, Requirement]:
    """Return what the client's next reads require after this unit of work.

    Call it after the work's transactions have committed: a position read
    inside a transaction can be replayed before the commit is.
    """
    sticky = config.sticky
    now = time.time()
    requirements = dict(scope.requirements)
    for primary in scope.written:
        if not config.cluster(primary).replicas:
            continue
        previous = requirements.get(primary, Requirement())
        # Asked of the primary itself, not of the health snapshot: a process
        # that has not probed yet must still hand out a position.
        lsn = _position_after_commit(primary) if sticky.mode == "lsn" else None
        if lsn is not None:
            requirements[primary] = previous.merge(lsn=lsn)
        else:
            # Time mode, a backend without positions, or the position could not
            # be read: keep this cluster's reads on the primary for WINDOW.
            requirements[primary] = previous.merge(until=now + sticky.window)
    # Monotonic reads: a later read must not see less than this one did.
    for alias in scope.read_from:
        primary = config.primary_of(alias)
        position = snapshot.position(alias)
        if position is not None and primary in config.clusters:
            requirements[primary] = requirements.get(primary, Requirement()).merge(lsn=position)
    return {
        primary: req
        for primary, req in requirements.items()
        if not _satisfied(primary, req, config, snapshot, now)
    }


def _satisfied(
    primary: str, requirement: Requirement, config: Config, snapshot: Snapshot, now: float
) -> bool:
    """Tell whether a requirement no longer restricts any read of its cluster."""
    if requirement.until is not None and requirement.until > now:
        return False
    if requirement.lsn is None:
        return True
    for replica in config.cluster(primary).replicas:
        health = snapshot.replicas.get(replica)
        if health is None or health.replay_lsn is None or health.replay_lsn < requirement.lsn:
            return False
    return True


def _position_after_commit(primary: str) -> int | None:
    connection = connections[primary]
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    try:
        with connection.cursor() as cursor:
            # The insert position is at or past the end of every commit record
            # written so far, even with synchronous_commit off.
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            row = cursor.fetchone()
        return parse_lsn(row[0]) if row else None
    except Exception:
        logger.warning("routerkit: could not read the WAL position of %r", primary)
        return None


# With a position still waiting on replication, look at replica health this
# often at most: replicas usually replay within milliseconds, and a fresh look
# lets the read go to one instead of the primary. Bounded by LAG.TIMEOUT.
PENDING_REFRESH = 0.05


def start(scope: Scope, token: str | None, config: Config) -> None:
    """Begin a unit of work: restore a client's token and take a health snapshot."""
    if not config.clusters:
        return
    if token and config.sticky.mode != "off":
        scope.requirements = decode(token, config)
    pending = any(r.lsn is not None for r in scope.requirements.values())
    scope.snapshot = get_monitor(config).refresh_if_due(PENDING_REFRESH if pending else None)


def finish(scope: Scope, config: Config) -> str | None:
    """End a unit of work: return the token its client should carry, if any."""
    if not config.clusters or config.sticky.mode == "off":
        return None
    requirements = capture(scope, config, get_monitor(config).current())
    return encode(requirements) if requirements else None
