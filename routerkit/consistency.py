"""Read-your-writes and monotonic reads across requests.

At the end of a unit of work, routerkit records what the client's next reads
require: for every primary it wrote, the primary's WAL position taken after
the commit ("lsn" mode) or a time until which reads stay on the primary
("time" mode); for every database it read from, the position it has seen. The
requirements travel in a signed token through STICKY["STORE"]. A replica
serves a later read only if it has replayed that position; a requirement is
dropped once every replica of its cluster is known to have.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import connections

from routerkit import stats
from routerkit.conf import Cluster, Config
from routerkit.health import (
    DOWN,
    NOT_REPLICA,
    UNKNOWN,
    Monitor,
    Snapshot,
    get_monitor,
    select_text,
)
from routerkit.state import Scope
from routerkit.values import MAX_LSN, Requirement, fits, parse_lsn

logger = logging.getLogger("routerkit")

TOKEN_SALT = "routerkit.consistency"
# A token older than this is ignored. Requirements are normally dropped within
# an interval or two; this bounds the damage of a replica stuck far behind.
TOKEN_MAX_AGE = 600
# A real token is well under this: anything longer is refused before unsigning.
MAX_TOKEN_LENGTH = 1024
_VERSION = 1


# In a token: every cluster not listed by name. Used when the clusters do not
# all fit under MAX_TOKEN_LENGTH.
_OTHERS = "*"


def encode(requirements: Mapping[str, Requirement]) -> str:
    """Return the signed token for `requirements`, never longer than MAX_TOKEN_LENGTH.

    When the clusters do not all fit, even compressed (a few dozen of them), the
    token lists as many as fit, in name order, and sends every other cluster's
    reads to its primary until the token expires: what is dropped costs
    primary reads, never a stale read.
    """
    entries = sorted(requirements.items())
    token = _dumps(entries)
    if len(token) <= MAX_TOKEN_LENGTH:
        return token
    token = _dumps(entries, compress=True)
    if len(token) <= MAX_TOKEN_LENGTH:
        return token
    others = Requirement(until=time.time() + TOKEN_MAX_AGE)
    for kept in range(len(entries) - 1, -1, -1):
        token = _dumps([*entries[:kept], (_OTHERS, others)], compress=True)
        if len(token) <= MAX_TOKEN_LENGTH:
            break
    return token


def _dumps(entries: list[tuple[str, Requirement]], *, compress: bool = False) -> str:
    payload = {"v": _VERSION, "r": {alias: [req.lsn, req.until] for alias, req in entries}}
    token = signing.dumps(payload, salt=TOKEN_SALT, compress=compress)
    # Signed here: the client's next request need not check it (as loaded
    # from JSON, the payload is the same lists and numbers).
    _verified.add(token, payload)
    return token


def decode(raw: str, config: Config) -> dict[str, Requirement]:
    """Return the requirements of a token, or none if it is not one we can trust.

    Tampered, expired, oversized and malformed tokens are ignored and counted,
    never an error: the worst outcome is a read from the primary. A token
    whose signature this process already checked is not checked again.
    """
    if len(raw) > MAX_TOKEN_LENGTH:
        return _reject("oversized")
    known = _verified.get(raw)
    if known is None:
        try:
            payload = signing.loads(raw, salt=TOKEN_SALT, max_age=TOKEN_MAX_AGE)
        except signing.SignatureExpired:
            return _reject("expired")
        except (signing.BadSignature, ValueError, json.JSONDecodeError):
            return _reject("tampered")
        _verified.add(raw, payload)
    else:
        payload, signed_at = known
        if time.time() - signed_at > TOKEN_MAX_AGE:
            return _reject("expired")
    try:
        return _parse(payload, config)
    except (TypeError, ValueError, AttributeError, KeyError):
        return _reject("malformed")


class VerifiedTokens:
    """Tokens whose signature was checked, with when they were signed.

    A client sends the same token halves request after request until it
    writes or its floors rise: checking the HMAC once per value instead of
    once per request is what keeps a token's cost per request under one
    signature check. Bounded, and emptied when SECRET_KEY or its fallbacks
    change (a key taken out of use must stop vouching for tokens). Lock-free:
    a dict's get and set are atomic, and a lost entry costs one check.
    """

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._entries: dict[str, tuple[Any, float]] = {}
        self._keys: tuple[object, object] = (None, None)

    def get(self, raw: str) -> tuple[Any, float] | None:
        keys = (settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS)
        if keys[0] is not self._keys[0] or keys[1] is not self._keys[1]:
            self._entries = {}
            self._keys = keys
            return None
        return self._entries.get(raw)

    def add(self, raw: str, payload: Any) -> None:
        entries = self._entries
        if len(entries) >= self._size:
            entries = self._entries = {}
        # Django's format is value:timestamp:signature, the timestamp in base 62.
        entries[raw] = (payload, signing.b62_decode(raw.rsplit(":", 2)[-2]))


_verified = VerifiedTokens()


def _parse(payload: Any, config: Config) -> dict[str, Requirement]:
    if payload["v"] != _VERSION:
        raise ValueError("unknown version")
    requirements = {}
    others: Requirement | None = None
    for alias, (lsn, until) in payload["r"].items():
        if alias == _OTHERS and lsn is None and isinstance(until, (int, float)):
            others = Requirement(until=until)
            continue
        if alias not in config.clusters:
            continue  # a cluster no longer configured: nothing to require
        if lsn is not None and not (isinstance(lsn, int) and 0 <= lsn <= MAX_LSN):
            raise ValueError("bad position")
        if until is not None and not isinstance(until, (int, float)):
            raise ValueError("bad time")
        requirements[alias] = Requirement(lsn, until)
    if others is not None:
        for primary in config.clusters:
            requirements.setdefault(primary, others)
    return requirements


def _reject(reason: str) -> dict[str, Requirement]:
    stats.incr("token_rejected", reason)
    logger.info("routerkit: ignored a %s consistency token", reason)
    return {}


@dataclass(frozen=True)
class Tokens:
    """The two halves of a client's token, as its store keeps them.

    `written` holds the positions of the client's writes and is replaced only
    by a request that wrote; `seen` holds monotonic-read floors and is replaced
    only when a floor rises. No request ever deletes either: with requests in
    parallel, the one that finishes last would otherwise erase what another
    just wrote. A half that no longer restricts anything is simply ignored,
    and expires TOKEN_MAX_AGE after it was issued.
    """

    written: str | None = None
    seen: str | None = None


def start(scope: Scope, tokens: Tokens, config: Config, outer: Scope | None = None) -> None:
    """Begin a unit of work: restore a client's tokens and take a health snapshot.

    `outer` is the implicit scope of the code the unit of work runs in, if
    any (a test calling the test client, a command calling a view).
    """
    if not config.clusters:
        return
    if config.sticky.mode != "off":
        # Merged into what the scope inherited: a block nested in a request or
        # task (restore_token() in a view) keeps its parent's requirements.
        written = decode(tokens.written, config) if tokens.written else {}
        seen = decode(tokens.seen, config) if tokens.seen else {}
        scope.received = _merged(scope.received, written)
        scope.received_seen = _merged(scope.received_seen, seen)
        if outer is not None and outer.written:
            _adopt(scope, outer, config)
        scope.requirements = _merged(scope.requirements, scope.received, scope.received_seen)
    monitor = get_monitor(config)
    snapshot = monitor.refresh_if_due()
    if scope.requirements:
        snapshot = _caught_up(scope.requirements, snapshot, config, monitor)
    scope.snapshot = snapshot


def _adopt(scope: Scope, outer: Scope, config: Config) -> None:
    """Let a unit of work see what the code around it wrote outside any scope.

    A test that creates rows and then calls the test client, or a command
    that calls a view, expects the request to read them. The surrounding
    writes become positions that both the request and the surrounding code's
    later reads honour, so neither reads a replica that has not replayed them.
    """
    written = _written(outer, config, time.time())
    if written is None:
        return
    # Keep a cluster pinned where no position could be taken (inside atomic()).
    outer.written.difference_update(p for p, r in written.items() if r.lsn is not None)
    outer.received = written
    outer.requirements = _merged(outer.received, outer.received_seen)
    scope.received = _merged(scope.received, written)


def hand_back(scope: Scope, outer: Scope) -> None:
    """Make what a finished unit of work wrote bind the code around it too.

    A test that posts through the test client and then reads the ORM must see
    the post: its later reads honour the positions the request issued.
    """
    outer.received = _merged(outer.received, scope.issued)
    outer.requirements = _merged(outer.received, outer.received_seen)


def finish(scope: Scope, config: Config) -> Tokens:
    """End a unit of work: return the token halves to store (None: leave as is)."""
    if not config.clusters or config.sticky.mode == "off":
        return Tokens()
    snapshot = get_monitor(config).current()
    now = time.time()
    written = _written(scope, config, now)
    seen = _seen(scope, config, snapshot)

    def live(requirements: dict[str, Requirement]) -> dict[str, Requirement]:
        return {
            primary: requirement
            for primary, requirement in requirements.items()
            if not _satisfied(primary, requirement, config, snapshot, now)
        }

    # An empty half is not sent: it would overwrite what a parallel request
    # just stored, as surely as deleting it would.
    written_live = live(written) if written is not None else {}
    seen_live = live(seen) if seen is not None else {}
    scope.issued = written_live
    return Tokens(
        written=encode(written_live) if written_live else None,
        seen=encode(seen_live) if seen_live else None,
    )


def capture(scope: Scope, config: Config) -> dict[str, Requirement]:
    """Return everything the unit of work requires of later reads (for a task)."""
    now = time.time()
    snapshot = get_monitor(config).current()
    written = _written(scope, config, now)
    seen = _seen(scope, config, snapshot)
    merged = _merged(
        written if written is not None else scope.received,
        seen if seen is not None else scope.received_seen,
    )
    return {p: r for p, r in merged.items() if not _satisfied(p, r, config, snapshot, now)}


def _written(scope: Scope, config: Config, now: float) -> dict[str, Requirement] | None:
    """The client's write positions after this unit of work, or None if it wrote nothing.

    Call it after the work's transactions have committed: a position read
    inside a transaction can be replayed before the commit is.
    """
    clusters = [p for p in scope.written if config.cluster(p).replicas]
    if not clusters:
        return None
    requirements = dict(scope.received)
    for primary in clusters:
        previous = requirements.get(primary, Requirement())
        # Asked of the primary itself, not of the health snapshot: a process
        # that has not probed yet must still hand out a position.
        lsn = None
        if config.sticky.mode == "lsn":
            lsn = _write_position(primary, config)
        if lsn is not None:
            requirements[primary] = previous.merge(lsn=lsn)
        else:
            # Time mode, a backend without positions, or the position could not
            # be read: keep this cluster's reads on the primary for WINDOW.
            requirements[primary] = previous.merge(until=now + config.sticky.window)
    return requirements


def _seen(scope: Scope, config: Config, snapshot: Snapshot) -> dict[str, Requirement] | None:
    """Monotonic-read floors after this unit of work, or None if none rose.

    Each floor is a position the unit of work is known to have read at
    least, from its own health snapshot (taken before its first read): a
    replica's replay position as probed or asked, at most the primary's
    position in that snapshot, which is also the floor of a read on the
    primary. The primary is not asked where it is now: that costs a query
    per request, and its position now stays just ahead of the replicas while
    anyone writes, so a client whose requests come faster than the lag would
    never return to a replica.
    """
    floors = dict(scope.received_seen)
    rose = False
    read = scope.snapshot or snapshot
    for alias in scope.read_from:
        primary = config.primary_of(alias)
        if primary not in config.clusters or not config.cluster(primary).replicas:
            continue
        if alias == primary and primary in scope.written:
            continue  # the write position covers it
        # At most the primary's position at the snapshot: answers published
        # since move replicas on all the time, and a floor that rose with each
        # would mean a new token (an HMAC and a cookie) on every request.
        position = read.position(alias)
        cap = read.primary_lsn.get(primary)
        if position is not None and cap is not None:
            position = min(position, cap)
        previous = floors.get(primary, Requirement())
        if position is not None and (previous.lsn is None or position > previous.lsn):
            floors[primary] = previous.merge(lsn=position)
            rose = True
    return floors if rose else None


def _merged(*parts: dict[str, Requirement]) -> dict[str, Requirement]:
    merged: dict[str, Requirement] = {}
    for part in parts:
        for primary, requirement in part.items():
            previous = merged.get(primary)
            merged[primary] = (
                requirement
                if previous is None
                else previous.merge(lsn=requirement.lsn, until=requirement.until)
            )
    return merged


def _satisfied(
    primary: str, requirement: Requirement, config: Config, snapshot: Snapshot, now: float
) -> bool:
    """Tell whether a requirement no longer restricts any read of its cluster.

    Only when every replica of the cluster is known to have replayed it: a
    replica down or unknown may come back behind the client's position, and
    the token is what keeps it from serving that client then. A replica that
    stays down keeps tokens alive for TOKEN_MAX_AGE at most; reads meanwhile
    go to the replicas that fit.
    """
    if requirement.until is not None and requirement.until > now:
        return False
    if requirement.lsn is None:
        return True
    return all(
        (health := snapshot.replicas.get(replica)) is not None
        and health.state not in _UNSETTLED
        and fits(snapshot, replica, requirement, now)
        for replica in config.cluster(primary).replicas
    )


# States in which a replica's position may not be what it will serve from next.
_UNSETTLED = frozenset((DOWN, UNKNOWN, NOT_REPLICA))


def _caught_up(
    requirements: Mapping[str, Requirement], snapshot: Snapshot, config: Config, monitor: Monitor
) -> Snapshot:
    """Ask a replica itself whether it has replayed what the client requires.

    The health snapshot dates from the last probe, which is older than a
    client's write of a moment ago: by the snapshot, no replica could serve
    the client's next read. For each cluster where that is so, the usable
    replica furthest along as far as the process knows (probes and other
    requests' answers) is asked for its replay position: one light query on
    the probe's connection, shared by the requests that need it at the same
    moment, none on the primary. Replicas the process knows to be behind that
    one are not asked: when it has not replayed the client's position, they
    are unlikely to have, and asking every replica would multiply the cost of
    every read that follows a write. With STICKY["WAIT"] the request asks
    again until the replica catches up or the wait is over.
    """
    now = time.time()
    for primary, requirement in requirements.items():
        lsn = requirement.lsn
        if lsn is None or (requirement.until is not None and requirement.until > now):
            continue
        usable = snapshot.usable.get(primary, ())
        if not usable or any(fits(snapshot, r, requirement, now) for r in usable):
            continue
        snapshot = _ask(usable, config.cluster(primary), lsn, snapshot, config.sticky.wait, monitor)
    return snapshot


# Outcomes of asking a replica (the `outcome` label of routerkit_replica_checks_total).
CAUGHT_UP = "caught_up"  # it had replayed the client's position: the read goes there
BEHIND = "behind"  # it had not (after STICKY["WAIT"], if set)
FAILED = "failed"  # it did not answer within LAG.TIMEOUT, or failed (then it is marked down)

# Between two rounds while waiting (STICKY["WAIT"]): replay is usually a
# matter of milliseconds, and asking costs a fraction of one.
_FIRST_PAUSE = 0.001
_LONGEST_PAUSE = 0.01


def _furthest(usable: tuple[str, ...], known: Snapshot, cluster: Cluster) -> str | None:
    """The usable, undrained replica furthest along in `known` (ties drawn at random)."""
    weights = dict(zip(cluster.replicas, cluster.weights, strict=True))
    serving = [r for r in usable if weights.get(r, 1.0) > 0]
    if not serving:
        return None
    random.shuffle(serving)
    return max(serving, key=lambda r: known.position(r) or -1)


def _ask(
    usable: tuple[str, ...],
    cluster: Cluster,
    lsn: int,
    snapshot: Snapshot,
    wait: float,
    monitor: Monitor,
) -> Snapshot:
    """Ask the furthest replica (until `wait` is over) whether it has replayed `lsn`.

    While waiting, each round asks the furthest as of the answers so far:
    every answer is published, so a replica that moves on is asked next.
    """
    deadline = time.monotonic() + wait
    pause = _FIRST_PAUSE
    while True:
        replica = _furthest(usable, monitor.snapshot, cluster)
        if replica is None:
            return snapshot
        position = monitor.replay_position(replica, lsn)
        if position is None:
            stats.incr("replica_check", replica, FAILED)
            return snapshot
        snapshot = snapshot.advanced(replica, position)
        if position >= lsn:
            stats.incr("replica_check", replica, CAUGHT_UP)
            return snapshot
        if time.monotonic() + pause > deadline:
            stats.incr("replica_check", replica, BEHIND)
            return snapshot
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)


def _write_position(primary: str, config: Config) -> int | None:
    """Read the primary's position after a write, on the request's own connection.

    The monitor learns it too: replicas are judged against the newest
    position of their primary, also while its probe is slow.
    """
    connection = connections[primary]
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    try:
        connection.ensure_connection()
        # On the driver's connection: Django's cursor wrapper, execute wrappers
        # and query log would cost more than the query. pg_current_wal_insert_lsn()
        # is at or past the end of every commit record written so far, even
        # with synchronous_commit off.
        text = select_text(connection.connection, "SELECT pg_current_wal_insert_lsn()::text")
        position = parse_lsn(text) if text else None
    except Exception:
        logger.warning("routerkit: could not read the WAL position of %r", primary)
        return None
    if position is not None:
        get_monitor(config).positions.add(primary, position)
    return position
