"""Read-your-writes and monotonic reads across requests, on real replication.

Replay is paused to make replicas stale on purpose; the health monitor is
refreshed explicitly where a test needs it to have seen a new position.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock
from uuid import uuid4

import pytest
from django.core import signing
from django.db import connections
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext

from routerkit import capture_token, consistency_scope, restore_token, stats
from routerkit.conf import get_config
from routerkit.consistency import TOKEN_SALT, decode, encode
from routerkit.health import Snapshot, get_monitor
from routerkit.values import Requirement, parse_lsn
from tests.pgcluster import PgCluster
from tests.settings import MIDDLEWARE, ROUTERKIT
from tests.testapp.models import Article

REPLICAS = ("replica1", "replica2")
COOKIE = "routerkit"


def routerkit_settings(**changes: Any) -> dict[str, Any]:
    fast = {"INTERVAL": 0.05, "TIMEOUT": 1.0, **changes.pop("LAG", {})}
    return {**ROUTERKIT, "LAG": fast, **changes}


@pytest.fixture
def cluster(replication: PgCluster) -> Iterator[PgCluster]:
    """The real cluster, with health refreshed every 50 ms."""
    with override_settings(ROUTERKIT=routerkit_settings()):
        yield replication


def refresh() -> Snapshot:
    return get_monitor(get_config()).refresh()


def served(client: Client, pk: int) -> tuple[int, str | None]:
    response = client.get(f"/articles/{pk}/")
    return response.status_code, response.json().get("db")


def written_while_paused(cluster: PgCluster, client: Client) -> int:
    """Pause replay on both replicas, then let `client` create an article; return its pk."""
    for replica in REPLICAS:
        cluster.pause_replay(replica)
    pk = post(client)
    refresh()
    return pk


def decode_written(client: Client) -> dict[str, Requirement]:
    return decode(client.cookies[COOKIE].value, get_config())


def token_requires(client: Client, primary: str) -> bool:
    """Tell whether the client's write token still requires something of `primary`."""
    return primary in decode_written(client)


def post(client: Client) -> int:
    response = client.post("/articles/", {"title": uuid4().hex})
    assert response.status_code == 200
    return int(response.json()["id"])


class TestReadYourWrites:
    def test_the_next_request_reads_from_the_replica_that_replayed_the_write(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """With replica1 paused and replica2 caught up, the follow-up read uses replica2."""
        cluster.pause_replay("replica1")
        pk = post(client)
        cluster.wait_replayed("replica2")
        refresh()
        assert {served(client, pk) for _ in range(10)} == {(200, "replica2")}

    def test_with_both_replicas_behind_the_primary_serves_the_read(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """No replica has replayed the write: the primary answers, and finds the row."""
        pk = written_while_paused(cluster, client)
        assert served(client, pk) == (200, "primary")

    def test_after_resume_replicas_serve_again_and_the_token_is_dropped(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """Once every replica replayed the write, reads spread again; the token is not resent."""
        for replica in REPLICAS:
            cluster.pause_replay(replica)
        pk = post(client)
        assert COOKIE in client.cookies
        for replica in REPLICAS:
            cluster.resume_replay(replica)
            cluster.wait_replayed(replica)
        refresh()
        response = client.get(f"/articles/{pk}/")
        assert response.json()["db"] in REPLICAS
        assert COOKIE not in response.cookies  # left to expire, never deleted (see below)
        assert {served(client, pk)[1] for _ in range(30)} == set(REPLICAS)

    def test_a_parallel_request_never_erases_a_fresh_write_token(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """A read that started with an older token does not touch the write cookie.

        In a browser it may finish after a parallel POST: were it to delete or
        rewrite the cookie, the POST's position would be lost and the next read
        could miss the client's own write.
        """
        old = post(client)
        for replica in REPLICAS:
            cluster.wait_replayed(replica)
        refresh()
        stale_token = client.cookies[COOKIE].value  # satisfied by every replica now
        pk = written_while_paused(cluster, client)  # the parallel POST's fresh token
        fresh_token = client.cookies[COOKIE].value
        slow_get = Client()
        slow_get.cookies[COOKIE] = stale_token
        response = slow_get.get(f"/articles/{old}/")
        assert COOKIE not in response.cookies
        assert client.cookies[COOKIE].value == fresh_token
        assert served(client, pk) == (200, "primary")

    def test_reads_that_do_not_depend_on_the_write_keep_using_replicas(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """Another client, with no token, reads from replicas while replay is paused."""
        pk = written_while_paused(cluster, client)
        other = Client()
        assert served(other, pk) == (404, None)  # a paused replica: stale, as it may be
        assert served(client, pk) == (200, "primary")

    def test_async_views_carry_the_token_too(self, cluster: PgCluster) -> None:
        """Under ASGI, a write then a read in the next request finds the row."""
        for replica in REPLICAS:
            cluster.pause_replay(replica)

        async def flow() -> tuple[int, str]:
            client = AsyncClient()
            created = await client.post("/async/articles/", {"title": "async"})
            response = await client.get(f"/async/articles/{created.json()['id']}/")
            return response.status_code, response.json()["db"]

        assert asyncio.run(flow()) == (200, "primary")

    def test_mode_off_keeps_no_state_between_requests(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """With STICKY MODE "off", the next request reads a (stale) replica."""
        with override_settings(ROUTERKIT=routerkit_settings(STICKY={"MODE": "off"})):
            for replica in REPLICAS:
                cluster.pause_replay(replica)
            pk = post(client)
            assert COOKIE not in client.cookies
            assert served(client, pk) == (404, None)


class TestTimeMode:
    def test_reads_stay_on_the_primary_for_the_window(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """After a write, reads use the primary for WINDOW seconds, then replicas."""
        settings = routerkit_settings(STICKY={"MODE": "time", "WINDOW": 0.5})
        with override_settings(ROUTERKIT=settings):
            pk = post(client)
            for replica in REPLICAS:
                cluster.wait_replayed(replica)
            refresh()
            assert served(client, pk) == (200, "primary")
            time.sleep(0.6)
            assert served(client, pk)[1] in REPLICAS


class TestMonotonicReads:
    def test_a_client_never_goes_back_to_a_replica_behind_what_it_saw(
        self, cluster: PgCluster
    ) -> None:
        """Having read a row on replica2, a client never reads from replica1, which lacks it."""
        cluster.pause_replay("replica1")
        with consistency_scope(isolated=True):
            pk = Article.objects.create(title="seen on replica2").pk
        cluster.wait_replayed("replica2")
        cluster.pause_replay("replica2")
        refresh()
        client = Client()
        for _ in range(50):  # a fresh client lands on either replica; wait for replica2
            status, db = served(client, pk)
            if db == "replica2":
                break
            client = Client()
        assert (status, db) == (200, "replica2")
        assert {served(client, pk) for _ in range(20)} == {(200, "replica2")}

    def test_a_client_behind_every_replica_is_not_restricted(self, cluster: PgCluster) -> None:
        """Reading the oldest position requires nothing: no token is issued."""
        with consistency_scope(isolated=True):
            pk = Article.objects.create(title="old").pk
        for replica in REPLICAS:
            cluster.wait_replayed(replica)
        refresh()
        client = Client()
        assert served(client, pk)[0] == 200
        assert COOKIE not in client.cookies


class TestHealth:
    def test_a_stopped_replica_is_left_out_and_rejoins_after_restart(
        self, cluster: PgCluster
    ) -> None:
        """A replica that refuses connections leaves the rotation; after restart it is back."""
        cluster.stop_node("replica1")
        snapshot = refresh()
        assert snapshot.replicas["replica1"].state == "down"
        assert snapshot.usable["primary"] == ("replica2",)
        with consistency_scope(isolated=True):
            pk = Article.objects.create(title="x").pk
        cluster.wait_replayed("replica2")
        refresh()
        assert {served(Client(), pk)[1] for _ in range(20)} == {"replica2"}
        cluster.start_node("replica1")
        deadline = time.monotonic() + 15
        while refresh().usable["primary"] != REPLICAS:  # at its next probe
            assert time.monotonic() < deadline, "replica1 did not rejoin"
            time.sleep(0.05)
        assert {served(Client(), pk)[1] for _ in range(30)} == set(REPLICAS)

    def test_lag_over_the_threshold_excludes_a_replica_until_it_catches_up(
        self, replication: PgCluster
    ) -> None:
        """Past MAX_BYTES a replica leaves the rotation; once replayed it comes back."""
        settings = routerkit_settings(LAG={"MAX_BYTES": 64 * 1024, "MAX_SECONDS": 3600.0})
        with override_settings(ROUTERKIT=settings):
            replication.pause_replay("replica1")
            replication.execute(
                "primary",
                "INSERT INTO testapp_article (title)"
                " SELECT repeat('x', 150) FROM generate_series(1, 2000)",
                dbname="routerkit",
            )
            replication.wait_replayed("replica2")  # only replica1 may be behind
            snapshot = refresh()
            lagging = snapshot.replicas["replica1"]
            assert lagging.state == "lagging"
            assert lagging.lag_bytes is not None
            assert lagging.lag_bytes > 64 * 1024
            assert snapshot.usable["primary"] == ("replica2",)
            replication.resume_replay("replica1")
            replication.wait_replayed("replica1")
            snapshot = refresh()
            assert snapshot.replicas["replica1"].state == "healthy"
            assert snapshot.usable["primary"] == REPLICAS

    def test_a_lagging_replica_returns_only_under_half_the_limit(
        self, replication: PgCluster
    ) -> None:
        """Hysteresis: between half the limit and the limit, an excluded replica stays out."""
        replication.pause_replay("replica1")
        replication.execute(
            "primary",
            "INSERT INTO testapp_article (title)"
            " SELECT repeat('y', 150) FROM generate_series(1, 2000)",
            dbname="routerkit",
        )
        with override_settings(ROUTERKIT=routerkit_settings(LAG={"MAX_BYTES": 1024})):
            monitor = get_monitor(get_config())
            lag = monitor.refresh().replicas["replica1"].lag_bytes
            assert lag is not None
            assert monitor.snapshot.replicas["replica1"].state == "lagging"

            def with_limit(max_bytes: int) -> str:
                from dataclasses import replace

                monitor.config = replace(
                    monitor.config, lag=replace(monitor.config.lag, max_bytes=max_bytes)
                )
                return monitor.refresh().replicas["replica1"].state

            assert with_limit(int(lag * 1.5)) == "lagging"  # under the limit, over half
            assert with_limit(int(lag * 3)) == "healthy"  # under half the limit
            assert with_limit(int(lag * 1.5)) == "healthy"  # back in: the full limit applies

    def test_a_caught_up_replica_of_an_idle_primary_has_no_lag(
        self, replication: PgCluster
    ) -> None:
        """Lag is measured in positions: an old last commit on an idle primary is not lag."""
        with override_settings(ROUTERKIT=routerkit_settings(LAG={"MAX_SECONDS": 0.5})):
            for replica in REPLICAS:
                replication.wait_replayed(replica)
            time.sleep(0.8)  # longer than MAX_SECONDS since the last commit
            snapshot = refresh()
            for replica in REPLICAS:
                assert snapshot.replicas[replica].lag_seconds == 0.0
                assert snapshot.replicas[replica].state == "healthy"

    def test_positions_match_the_servers(self, cluster: PgCluster) -> None:
        """The monitor's replay positions are the replicas' own."""
        from routerkit.values import parse_lsn

        cluster.pause_replay("replica1")
        snapshot = refresh()
        replay = cluster.replay_lsn("replica1")
        assert replay is not None
        assert snapshot.replicas["replica1"].replay_lsn == parse_lsn(replay)

    def test_a_replica_alias_that_is_not_in_recovery_is_never_used(
        self, replication: PgCluster
    ) -> None:
        """An alias pointed at a primary by mistake is reported and left out."""
        settings = routerkit_settings(REPLICAS={"primary": ["replica1", "billing"]}, APPS={})
        with override_settings(ROUTERKIT=settings):
            snapshot = refresh()
            assert snapshot.replicas["billing"].state == "not_replica"
            assert snapshot.usable["primary"] == ("replica1",)


class TestTokens:
    @pytest.fixture
    def pk(self, cluster: PgCluster) -> int:
        for replica in REPLICAS:
            cluster.pause_replay(replica)
        with consistency_scope(isolated=True):
            pk = Article.objects.create(title="x").pk
        refresh()
        return pk

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("not-a-token", "tampered"),
            ("x" * 5000, "oversized"),
            (signing.dumps({"v": 1, "r": {"primary": [1, None]}}, salt="other"), "tampered"),
            (
                signing.dumps({"v": 1, "r": {"primary": [1, None]}}, key="x" * 50, salt=TOKEN_SALT),
                "tampered",
            ),
            (
                signing.dumps({"v": 1, "r": {"primary": ["0/1", None]}}, salt=TOKEN_SALT),
                "malformed",
            ),
            (signing.dumps({"v": 9, "r": {}}, salt=TOKEN_SALT), "malformed"),
            (signing.dumps([1, 2], salt=TOKEN_SALT), "malformed"),
        ],
        ids=["garbage", "oversized", "other-salt", "other-key", "bad-lsn", "version", "shape"],
    )
    def test_bad_cookies_are_ignored_and_counted(
        self, pk: int, client: Client, value: str, reason: str
    ) -> None:
        """A forged or broken token never causes an error: it is counted and ignored."""
        before = stats.get("token_rejected", reason)
        client.cookies[COOKIE] = value
        assert served(client, pk) == (404, None)  # a replica, as for a client without token
        assert stats.get("token_rejected", reason) == before + 1

    def test_an_expired_token_is_ignored(
        self, pk: int, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A token older than its maximum age no longer binds the client."""
        with monkeypatch.context() as patched:
            an_hour_ago = time.time() - 3600
            patched.setattr(signing.time, "time", lambda: an_hour_ago)
            client.cookies[COOKIE] = encode({"primary": Requirement(lsn=2**40)})
        before = stats.get("token_rejected", "expired")
        assert served(client, pk) == (404, None)
        assert stats.get("token_rejected", "expired") == before + 1

    def test_a_valid_token_is_honoured(self, pk: int, client: Client) -> None:
        """The same request with a genuine token is served by the primary."""
        client.cookies[COOKIE] = encode({"primary": Requirement(lsn=2**40)})
        assert served(client, pk) == (200, "primary")

    def test_a_token_costs_one_signature_check_per_process(
        self, pk: int, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same token again is not checked again; one issued here is never checked."""
        loads = mock.Mock(wraps=signing.loads)
        monkeypatch.setattr(signing, "loads", loads)
        position = 2**40 + uuid4().int % 2**20  # a token no earlier test made
        client.cookies[COOKIE] = signing.dumps(
            {"v": 1, "r": {"primary": [position, None]}}, salt=TOKEN_SALT
        )  # as another process of the site would sign it
        assert {served(client, pk) for _ in range(3)} == {(200, "primary")}
        assert loads.call_count == 1
        client.cookies[COOKIE] = encode({"primary": Requirement(lsn=position + 1)})
        assert served(client, pk) == (200, "primary")
        assert loads.call_count == 1

    def test_a_retired_secret_key_no_longer_vouches_for_a_token_seen_before(
        self, pk: int, client: Client
    ) -> None:
        client.cookies[COOKIE] = encode({"primary": Requirement(lsn=2**40)})
        assert served(client, pk) == (200, "primary")
        client.cookies.pop(f"{COOKIE}_seen", None)  # the floor that read set: one token
        before = stats.get("token_rejected", "tampered")
        with override_settings(SECRET_KEY="another key " * 5):
            assert served(client, pk) == (404, None)
        assert stats.get("token_rejected", "tampered") == before + 1

    def test_cookie_flags(self, cluster: PgCluster, client: Client) -> None:
        """The token cookie is HttpOnly and SameSite=Lax, and Secure on HTTPS."""
        client.post("/articles/", {"title": "x"})
        cookie = client.cookies[COOKIE]
        assert cookie["httponly"]
        assert cookie["samesite"] == "Lax"
        assert not cookie["secure"]
        secure = Client()
        secure.post("/articles/", {"title": "x"}, secure=True)
        assert secure.cookies[COOKIE]["secure"]


class TestStores:
    @pytest.mark.parametrize("store", ["session", "cache"])
    def test_session_and_cache_stores_carry_the_token(
        self, cluster: PgCluster, client: Client, store: str
    ) -> None:
        """STORE "session" and "cache" give the same read-your-writes as the cookie."""
        session_first = [MIDDLEWARE[1], MIDDLEWARE[0], *MIDDLEWARE[2:]]
        settings = routerkit_settings(STICKY={"STORE": store})
        with override_settings(ROUTERKIT=settings, MIDDLEWARE=session_first):
            for replica in REPLICAS:
                cluster.pause_replay(replica)
            pk = post(client)
            refresh()
            assert COOKIE not in client.cookies
            assert served(client, pk) == (200, "primary")
            assert served(Client(), pk) == (404, None)

    def test_the_cache_stores_client_cookie_slides_while_the_client_is_active(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """Every request that stores a token sends the client-id cookie again, same id."""
        from routerkit.consistency import TOKEN_MAX_AGE

        name = f"{COOKIE}_client"
        with override_settings(ROUTERKIT=routerkit_settings(STICKY={"STORE": "cache"})):
            for replica in REPLICAS:
                cluster.pause_replay(replica)
            responses = [client.post("/articles/", {"title": uuid4().hex}) for _ in range(3)]
            cookies = [response.cookies[name] for response in responses]
            assert {cookie.value for cookie in cookies} == {cookies[0].value}
            assert {cookie["max-age"] for cookie in cookies} == {TOKEN_MAX_AGE}
            # The last write is what the next read needs.
            pk = responses[-1].json()["id"]
            assert served(client, pk) == (200, "primary")


class TestTasks:
    def test_a_task_reads_what_its_request_wrote(self, cluster: PgCluster) -> None:
        """capture_token() after the write, restore_token() in a worker thread."""
        for replica in REPLICAS:
            cluster.pause_replay(replica)
        with consistency_scope(isolated=True):
            pk = Article.objects.create(title="for the task").pk
            token = capture_token()
        assert token is not None
        results: list[tuple[bool, str | None]] = []

        def task(token: str | None) -> None:
            from django.db import connections

            try:
                with restore_token(token):
                    article = Article.objects.filter(pk=pk).first()
                    results.append((article is not None, article and article._state.db))
            finally:
                connections.close_all()

        for carried in (token, None):
            worker = threading.Thread(target=task, args=(carried,))
            worker.start()
            worker.join(10)
        assert results == [(True, "primary"), (False, None)]

    def test_a_token_taken_inside_a_transaction_falls_back_to_the_window(
        self, cluster: PgCluster
    ) -> None:
        """Inside atomic() the position is unknown: the token keeps reads on the primary."""
        from django.db import transaction

        from routerkit.consistency import decode

        with consistency_scope(isolated=True), transaction.atomic(using="primary"):
            Article.objects.create(title="in a transaction")
            token = capture_token()
        assert token is not None
        (requirement,) = decode(token, get_config()).values()
        assert requirement.lsn is None
        assert requirement.until is not None


@pytest.fixture
def unprobed(replication: PgCluster) -> Iterator[PgCluster]:
    """The real cluster, probed only when a test says so (INTERVAL of a minute)."""
    with override_settings(ROUTERKIT=routerkit_settings(LAG={"INTERVAL": 60})):
        refresh()
        yield replication


def seen_floor(client: Client) -> int | None:
    raw = client.cookies.get(f"{COOKIE}_seen")
    return decode(raw.value, get_config())["primary"].lsn if raw else None


class TestMonotonicAcrossRequests:
    def test_a_read_on_the_primary_raises_the_floor_to_the_snapshots_position(
        self, unprobed: PgCluster, client: Client
    ) -> None:
        """After a read served by the primary, the client goes back to replicas at once.

        Another client wrote after the last probe, so the primary is now ahead
        of both (paused) replicas. The floor is where the primary was at the
        request's snapshot, which the replicas have replayed; the primary is
        not asked for its position (one query on it: the read itself). Were
        the floor the primary's position now, every later read would stay on
        the primary for as long as anyone writes faster than replicas replay.
        """
        with consistency_scope(isolated=True):
            old = Article.objects.create(title=uuid4().hex).pk
        for replica in REPLICAS:
            unprobed.wait_replayed(replica)
            unprobed.pause_replay(replica)
        snapshot = refresh()
        with consistency_scope(isolated=True):
            Article.objects.create(title=uuid4().hex)  # another client's write
        with CaptureQueriesContext(connections["primary"]) as queries:
            assert client.get(f"/primary/articles/{old}/").json()["db"] == "primary"
        assert len(queries) == 1
        # Both replicas have replayed the snapshot's position: no floor to send.
        assert all(snapshot.position(r) == snapshot.primary_lsn["primary"] for r in REPLICAS)
        assert seen_floor(client) is None
        assert served(client, old) in {(200, "replica1"), (200, "replica2")}

    def test_the_floor_never_lets_a_replica_behind_the_snapshot_serve(
        self, unprobed: PgCluster, client: Client
    ) -> None:
        """A replica behind the position the primary had at the snapshot is not read from."""
        for replica in REPLICAS:
            unprobed.pause_replay(replica)
        with consistency_scope(isolated=True):
            article = Article.objects.create(title=uuid4().hex).pk
        assert refresh().primary_lsn["primary"] == parse_lsn(unprobed.current_lsn())
        assert client.get(f"/primary/articles/{article}/").json()["db"] == "primary"
        assert seen_floor(client) == refresh().primary_lsn["primary"]
        assert served(client, article) == (200, "primary")


class TestReplicaCheck:
    """A replica is asked for its position when the last probe predates the client's write."""

    def test_a_replica_that_replayed_the_write_serves_it_before_any_probe_shows_it(
        self, unprobed: PgCluster, client: Client
    ) -> None:
        monitor = get_monitor(get_config())
        due = monitor.due
        pk = post(client)
        for replica in REPLICAS:
            unprobed.wait_replayed(replica)
        written = decode_written(client)["primary"].lsn
        assert all(
            (monitor.snapshot.position(r) or 0) < written for r in REPLICAS
        )  # by the probe, no replica could serve it
        checks = sum(stats.get("replica_check", r, "caught_up") for r in REPLICAS)
        with CaptureQueriesContext(connections["primary"]) as queries:
            status, db = served(client, pk)
        assert (status, db in REPLICAS) == (200, True)
        assert len(queries) == 0
        assert sum(stats.get("replica_check", r, "caught_up") for r in REPLICAS) == checks + 1
        # Published for every client of the process; and no probe was run.
        assert monitor.snapshot.position(db) >= written
        assert monitor.due == due
        assert served(client, pk) == (200, db)

    def test_a_replica_still_behind_leaves_the_read_to_the_primary_without_a_probe(
        self, unprobed: PgCluster, client: Client
    ) -> None:
        """Requests waiting on replication ask one replica each and never refresh.

        Both replicas stand at the same position, so either may be asked; once
        replica2 has caught up, the first request that asks it reads there,
        and every later one (its answer is the furthest along the process knows).
        """
        monitor = get_monitor(get_config())
        pk = written_while_paused(unprobed, client)
        due = monitor.due
        behind = sum(stats.get("replica_check", r, "behind") for r in REPLICAS)
        assert {served(client, pk) for _ in range(5)} == {(200, "primary")}
        assert sum(stats.get("replica_check", r, "behind") for r in REPLICAS) == behind + 5
        assert monitor.due == due
        unprobed.resume_replay("replica2")
        unprobed.wait_replayed("replica2")
        first = [served(client, pk) for _ in range(30)]
        assert (200, "replica2") in first
        after = first[first.index((200, "replica2")) :]
        assert set(after) == {(200, "replica2")}
        assert set(first) <= {(200, "primary"), (200, "replica2")}
        assert monitor.due == due

    def test_wait_lets_a_replica_catch_up_instead_of_reading_the_primary(
        self, replication: PgCluster, client: Client
    ) -> None:
        """With STICKY["WAIT"], the read waits for replay resumed meanwhile."""
        settings = routerkit_settings(LAG={"INTERVAL": 60}, STICKY={"WAIT": 5.0})
        with override_settings(ROUTERKIT=settings):
            refresh()
            pk = written_while_paused(replication, client)
            resume = threading.Timer(0.3, replication.resume_replay, ("replica1",))
            resume.start()
            try:
                assert served(client, pk) == (200, "replica1")
            finally:
                resume.join()

    def test_a_replica_that_cannot_be_asked_is_marked_down(
        self, unprobed: PgCluster, client: Client
    ) -> None:
        """An unanswered check takes the replica out at once; the request is still answered.

        replica1 is behind the client's write, and by the last probe replica2
        is ahead of it: replica2 is asked first, and has stopped since.
        """
        unprobed.pause_replay("replica1")
        with consistency_scope(isolated=True):
            Article.objects.create(title=uuid4().hex)
        unprobed.wait_replayed("replica2")
        snapshot = refresh()
        assert snapshot.position("replica2") > snapshot.position("replica1")
        pk = post(client)
        unprobed.stop_node("replica2")
        failed = stats.get("replica_check", "replica2", "failed")
        assert served(client, pk) == (200, "primary")
        assert stats.get("replica_check", "replica2", "failed") == failed + 1
        assert get_monitor(get_config()).snapshot.replicas["replica2"].state == "down"


class TestResilience:
    def test_a_down_replica_leaves_the_reads_to_the_others(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """With replica2 down, a client reads its write from replica1 once it replayed it."""
        cluster.stop_node("replica2")
        pk = post(client)
        cluster.wait_replayed("replica1")
        refresh()
        assert {served(client, pk) for _ in range(10)} == {(200, "replica1")}

    def test_a_replica_back_behind_the_clients_write_never_serves_it(
        self, replication: PgCluster, client: Client
    ) -> None:
        """Down while the client wrote, back with the write not replayed: never read from.

        The client wrote to another cluster in between, which rewrites its
        token: the first cluster's requirement must survive that too.
        """
        settings = routerkit_settings(LAG={"MAX_SECONDS": 120})
        with override_settings(ROUTERKIT=settings):
            replication.pause_replay("replica2")
            replication.refuse_connections("replica2", "routerkit")
            assert refresh().replicas["replica2"].state == "down"
            pk = post(client)
            replication.wait_replayed("replica1")
            refresh()
            invoice = client.post("/invoices/", {"number": uuid4().hex})
            assert invoice.status_code == 201
            assert token_requires(client, "primary")
            replication.accept_connections("replica2")
            deadline = time.monotonic() + 15
            while "replica2" not in refresh().usable["primary"]:
                assert time.monotonic() < deadline, "replica2 did not rejoin"
                time.sleep(0.05)
            behind = get_monitor(get_config()).snapshot.replicas["replica2"].replay_lsn
            assert behind is not None
            assert behind < decode_written(client)["primary"].lsn
            assert {served(client, pk) for _ in range(20)} == {(200, "replica1")}

    def test_a_failing_token_store_never_fails_the_request(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """With the cache store down, requests still succeed (without a token)."""
        broken = {"default": {"BACKEND": "tests.test_consistency.BrokenCache"}}
        settings = routerkit_settings(STICKY={"STORE": "cache"})
        with override_settings(ROUTERKIT=settings, CACHES=broken):
            client.cookies[f"{COOKIE}_client"] = signing.dumps("abc", salt="routerkit.client")
            assert client.post("/articles/", {"title": "x"}).status_code == 200
            assert client.get("/articles/1/").status_code in (200, 404)


class BrokenCache:
    """A cache backend whose server is down."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def close(self, **kwargs: object) -> None:
        """Django closes caches after each request; real backends do not raise here."""

    def __getattr__(self, name: str) -> object:
        def fail(*args: object, **kwargs: object) -> None:
            raise ConnectionError("cache server down")

        return fail


class TestSessionStoreWrites:
    def test_a_read_only_get_never_updates_the_session_row(
        self, cluster: PgCluster, client: Client
    ) -> None:
        """With STORE "session", GETs leave the session row as it was; floors go in a cookie.

        Each GET here reads on the primary (the replicas have not replayed the
        client's write), which raises the client's monotonic-read floor to the
        primary's position: kept in the session, that rewrote the row, whose
        write moved the position again, on every GET.
        """
        from django.contrib.sessions.models import Session
        from django.db import router

        session_first = [MIDDLEWARE[1], MIDDLEWARE[0], *MIDDLEWARE[2:]]
        settings = routerkit_settings(STICKY={"STORE": "session"})
        with override_settings(ROUTERKIT=settings, MIDDLEWARE=session_first):
            for replica in REPLICAS:
                cluster.pause_replay(replica)
            pk = post(client)
            key = client.cookies["sessionid"].value
            sessions = Session.objects.using(router.db_for_write(Session))

            def row() -> tuple[str, object]:
                session = sessions.get(session_key=key)
                return session.session_data, session.expire_date

            after_write = row()
            refresh()
            for _ in range(3):
                assert served(client, pk) == (200, "primary")
            assert row() == after_write
            assert f"{COOKIE}_seen" in client.cookies  # the floors travel here
            assert COOKIE not in client.cookies  # the written half stays in the session
            assert served(Client(), pk) == (404, None)  # another client: a replica


class TestTokenSize:
    @staticmethod
    def many_clusters(count: int, *, random_names: bool = False) -> Any:
        """A configuration of `count` primaries with long names, each with a replica."""
        from routerkit.conf import parse

        sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
        names = [
            uuid4().hex if random_names else f"customer_shard_{n:03d}_primary" for n in range(count)
        ]
        databases = {"default": sqlite}
        for name in names:
            databases[name] = sqlite
            databases[f"{name}_replica"] = sqlite
        config = parse({"REPLICAS": {name: [f"{name}_replica"] for name in names}}, databases)
        assert config.problems == ()
        return config, names

    def test_thirty_clusters_fit_compressed(self) -> None:
        """30 clusters with similar names: compressed, every position is kept exactly."""
        from routerkit.consistency import MAX_TOKEN_LENGTH, decode

        config, names = self.many_clusters(30)
        now = time.time()
        requirements = {
            name: Requirement(lsn=2**40 + n, until=now + 2) for n, name in enumerate(names)
        }
        token = encode(requirements)
        assert len(token) <= MAX_TOKEN_LENGTH
        assert decode(token, config) == requirements

    def test_a_token_for_many_clusters_never_rejects_itself(self) -> None:
        """60 clusters do not fit: the token stays under the cap and loses no guarantee."""
        from routerkit.consistency import MAX_TOKEN_LENGTH, TOKEN_MAX_AGE, decode

        config, names = self.many_clusters(60, random_names=True)
        now = time.time()
        requirements = {
            name: Requirement(lsn=0x7FFF_0000_0000 + n, until=now + 2)
            for n, name in enumerate(names)
        }
        rejected = stats.get("token_rejected", "oversized")
        token = encode(requirements)
        assert len(token) <= MAX_TOKEN_LENGTH
        decoded = decode(token, config)
        assert stats.get("token_rejected", "oversized") == rejected
        assert set(decoded) == set(names)  # every cluster still carries a requirement
        for name in names:
            exact = decoded[name] == requirements[name]
            # Dropped ones read from the primary until the token expires.
            folded = decoded[name].lsn is None and decoded[name].until >= now + TOKEN_MAX_AGE - 5
            assert exact or folded, name
        kept = sum(decoded[name] == requirements[name] for name in names)
        assert 5 <= kept < len(names)

    def test_a_token_that_fits_is_sent_as_it_is(self) -> None:
        """A handful of clusters: every position is kept exactly, and no others are added."""
        from routerkit.consistency import decode

        config, names = self.many_clusters(4)
        requirements = {name: Requirement(lsn=100 + n) for n, name in enumerate(names[:2])}
        assert decode(encode(requirements), config) == requirements


@pytest.mark.parametrize(
    ("state", "kept"),
    [("down", True), ("unknown", True), ("not_replica", True), ("lagging", False)],
)
def test_a_replica_not_settled_keeps_a_requirement_it_seems_to_meet(state: str, kept: bool) -> None:
    """Its last known position is past the write, but it may come back behind it (rebuilt)."""
    from dataclasses import replace

    from routerkit.consistency import _satisfied
    from tests.conftest import positioned_snapshot

    config = get_config()
    snapshot = positioned_snapshot(config, {"replica1": 500, "replica2": 500})
    replicas = dict(snapshot.replicas)
    replicas["replica2"] = replace(replicas["replica2"], state=state)
    snapshot = replace(snapshot, replicas=replicas)
    requirement = Requirement(lsn=400)
    assert _satisfied("primary", requirement, config, snapshot, time.time()) is not kept
