"""EtcdClient against a real etcd 3.5: the behaviour the registry backend will build on."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.etcd.certs import make_certificates
from tests.etcd.conftest import Etcd
from thespian_cluster.backends.etcd import (
    CasResult,
    EtcdAuthError,
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdLeaseNotFound,
    EtcdUnavailable,
    Get,
    Put,
    Watch,
    WatchEvent,
    key_missing,
)
from thespian_cluster.testing.etcd_server import EtcdServer


def collect(watch: Watch, until_revision: int, timeout: float = 10.0) -> list[WatchEvent]:
    """Every event the watch delivers up to ``until_revision`` (fails after ``timeout``)."""
    events: list[WatchEvent] = []
    deadline = time.monotonic() + timeout
    while not events or events[-1].kv.mod_revision < until_revision:
        left = deadline - time.monotonic()
        assert left > 0, f"events up to {until_revision} did not come: {events}"
        batch = watch.next(left)
        if batch is not None:
            events += batch.events
    return events


# ---- KV and txn -----------------------------------------------------------------------


def test_create_if_absent_race_has_one_winner_and_the_loser_learns_it(
    etcd: Etcd, prefix: bytes
) -> None:
    def race(key: bytes) -> dict[str, CasResult]:
        start = threading.Barrier(2)
        results: dict[str, CasResult] = {}

        def contender(who: str) -> None:
            start.wait()
            results[who] = etcd.client.create(key, who)  # each thread: its own connection

        threads = [threading.Thread(target=contender, args=(w,)) for w in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        return results

    for round_ in range(20):
        results = race(prefix + f"name-{round_}".encode())
        winners = [w for w, r in results.items() if r.succeeded]
        assert len(winners) == 1, results
        (winner,) = winners
        loser = "b" if winner == "a" else "a"
        owner = results[loser].current
        assert owner is not None
        assert owner.value == winner.encode()
        assert owner.create_revision == owner.mod_revision == results[winner].revision
        assert results[loser].revision >= results[winner].revision


def test_replace_and_delete_if_compare_the_mod_revision(etcd: Etcd, prefix: bytes) -> None:
    client = etcd.client
    key = prefix + b"cas"
    created = client.create(key, "v1")
    assert created.succeeded and created.current is None
    first = client.get(key).record
    assert first is not None and first.value == b"v1"

    swapped = client.replace(key, "v2", first.mod_revision)
    assert swapped.succeeded
    stale = client.replace(key, "v3", first.mod_revision)  # v1's revision is gone
    assert not stale.succeeded
    assert stale.current is not None and stale.current.value == b"v2"
    assert stale.current.mod_revision == swapped.revision
    assert client.get(key).record.value == b"v2"  # type: ignore[union-attr]

    assert not client.delete_if(key, first.mod_revision).succeeded
    assert client.get(key).record is not None
    assert client.delete_if(key, swapped.revision).succeeded
    assert client.get(key).record is None
    # a replace of a key that is gone: not done, and nothing there
    gone = client.replace(key, "v4", swapped.revision)
    assert not gone.succeeded and gone.current is None
    assert client.get(key).record is None


def test_txn_runs_the_failure_branch_when_a_compare_fails(etcd: Etcd, prefix: bytes) -> None:
    client = etcd.client
    a, b = prefix + b"a", prefix + b"b"
    client.put(a, "taken")
    result = client.txn([key_missing(a)], [Put(a, "mine"), Put(b, "mine")], [Get(a), Get(b)])
    assert not result.succeeded
    assert [len(r.records) for r in result.responses] == [1, 0]  # type: ignore[union-attr]
    assert client.get(b).record is None  # the success branch wrote nothing


def test_get_prefix_returns_only_the_prefix_in_key_order(etcd: Etcd, prefix: bytes) -> None:
    client = etcd.client
    for name in ("c", "a", "b"):
        client.put(prefix + name.encode(), name)
    client.put(prefix[:-1] + b"0", "next to it, not under it")
    records, revision = client.get_prefix(prefix)
    assert [r.key for r in records] == [prefix + b"a", prefix + b"b", prefix + b"c"]
    assert revision >= max(r.mod_revision for r in records)
    deleted = client.delete_prefix(prefix)
    assert deleted.count == 3
    assert client.get_prefix(prefix).records == []
    assert client.get(prefix[:-1] + b"0").record is not None


def test_bad_input_is_refused_before_anything_is_sent(etcd: Etcd) -> None:
    with pytest.raises(ValueError):
        etcd.client.put("", "no key")
    with pytest.raises(ValueError):
        etcd.client.grant(0)
    with pytest.raises(ValueError):
        EtcdClient([], timeout=1)
    with pytest.raises(ValueError):
        EtcdClient(["127.0.0.1:2379"], timeout=1)  # no scheme
    with pytest.raises(ValueError):
        EtcdClient(["http://127.0.0.1:2379"], timeout=0)


# ---- leases -----------------------------------------------------------------------------


def test_revoking_a_lease_deletes_its_keys(etcd: Etcd, prefix: bytes) -> None:
    client = etcd.client
    lease = client.grant(30)
    assert lease.ttl == 30
    keys = [prefix + b"one", prefix + b"two"]
    for key in keys:
        assert client.create(key, "x", lease=lease.id).succeeded
    assert client.get(keys[0]).record.lease == lease.id  # type: ignore[union-attr]
    info = client.time_to_live(lease.id, keys=True)
    assert info is not None and sorted(info.keys) == keys and info.granted_ttl == 30

    assert client.revoke(lease.id) is True
    assert client.get_prefix(prefix).records == []
    assert client.revoke(lease.id) is False  # already gone: not an error
    assert client.keepalive_once(lease.id) == 0
    assert client.time_to_live(lease.id) is None
    with pytest.raises(EtcdLeaseNotFound):
        client.put(prefix + b"late", "x", lease=lease.id)


def test_an_expired_lease_deletes_its_keys(etcd: Etcd, prefix: bytes) -> None:
    client = etcd.client
    lease = client.grant(2)
    key = prefix + b"ephemeral"
    written = client.put(key, "x", lease=lease.id)
    granted_at = time.monotonic()
    with client.watch(key, start_revision=written + 1) as watch:
        batch = watch.next(timeout=10)
    assert batch is not None, "the key outlived its lease by 8 s"
    waited = time.monotonic() - granted_at
    assert [(e.type, e.kv.key) for e in batch.events] == [("DELETE", key)]
    assert waited > 1.0  # deleted by expiry, not at once
    assert client.time_to_live(lease.id) is None


def test_keepalive_keeps_a_key_past_its_ttl(etcd: Etcd, prefix: bytes) -> None:
    client = etcd.client
    lease = client.grant(2)
    key = prefix + b"kept"
    client.put(key, "x", lease=lease.id)
    stop = threading.Event()
    until = time.monotonic() + 3.5  # well past the 2 s TTL
    while time.monotonic() < until:
        assert client.keepalive_once(lease.id) == 2
        stop.wait(0.5)  # the renewal cadence, not a wait for an event
    assert client.get(key).record is not None
    info = client.time_to_live(lease.id)
    assert info is not None and 0 < info.ttl <= 2
    client.revoke(lease.id)


# ---- watch ------------------------------------------------------------------------------


def test_watch_from_a_known_revision_gets_every_event_in_order(etcd: Etcd, prefix: bytes) -> None:
    client = etcd.client
    expected = []
    first: int | None = None
    for i in range(30):  # before the watch opens: history
        if i % 5 == 4:  # the key written last (a delete of nothing is no event)
            key = prefix + f"k{(i - 1) % 7}".encode()
            deleted = client.delete(key)
            assert deleted.count == 1
            revision = deleted.revision
            kind = "DELETE"
        else:
            key = prefix + f"k{i % 7}".encode()
            revision = client.put(key, str(i))
            kind = "PUT"
        first = first or revision
        expected.append((kind, key, revision))
    assert first is not None
    with client.watch(prefix, prefix=True, start_revision=first, prev_kv=True) as watch:
        for i in range(30, 60):  # while it is open: live
            key = prefix + f"k{i % 7}".encode()
            expected.append(("PUT", key, client.put(key, str(i))))
        events = collect(watch, expected[-1][2])
        assert watch.resume_revision == expected[-1][2] + 1
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == expected
    # prev_kv: each live put shows the value the key had before
    last = events[-1]
    assert last.prev_kv is not None and last.prev_kv.mod_revision < last.kv.mod_revision


def test_a_watch_from_a_compacted_revision_raises_with_the_compact_revision(
    etcd: Etcd, prefix: bytes
) -> None:
    client = etcd.client
    old = client.put(prefix + b"a", "1")
    now = client.put(prefix + b"a", "2")
    etcd.server.compact(now)
    watch = client.watch(prefix, prefix=True, start_revision=old)
    with pytest.raises(EtcdCompacted) as raised:
        watch.next(timeout=5)
    assert raised.value.compact_revision == now
    assert watch.closed
    with pytest.raises(EtcdCompacted):  # and it stays failed
        watch.next(timeout=1)
    # from the compact revision on, history is there
    with client.watch(prefix, prefix=True, start_revision=now) as watch:
        assert [e.kv.value for e in collect(watch, now)] == [b"2"]
    with pytest.raises(EtcdCompacted):
        client.get(prefix + b"a", revision=old)


def test_progress_notifications_carry_the_revision(etcd: Etcd, prefix: bytes) -> None:
    client = etcd.client
    revision = client.put(prefix + b"other", "x")  # not under the watched key
    with client.watch(prefix + b"quiet", progress_notify=True) as watch:
        batch = watch.next(timeout=5)  # the server sends one every 500 ms
        assert batch is not None and batch.progress and batch.events == []
        assert batch.revision >= revision
        assert watch.resume_revision == batch.revision + 1


def test_close_from_another_thread_ends_a_blocked_watch_promptly(etcd: Etcd, prefix: bytes) -> None:
    watch = etcd.client.watch(prefix, prefix=True)
    threading.Timer(0.2, watch.close).start()
    started = time.monotonic()
    assert list(watch) == []  # iteration ends when closed
    assert time.monotonic() - started < 1.0
    assert watch.next(timeout=0.1) is None


def test_a_restart_mid_watch_is_unavailable_and_a_resumed_watch_loses_nothing(
    own_etcd: EtcdServer,
) -> None:
    client = own_etcd.client(timeout=5)
    watch = client.watch(b"r/", prefix=True)
    seen = collect(watch, client.put(b"r/0", "0"))
    for i in range(1, 5):
        client.put(f"r/{i}".encode(), str(i))  # sent before the restart, maybe not read
    own_etcd.restart()
    with pytest.raises(EtcdUnavailable):
        while True:  # what arrived before the stream broke, then the break
            batch = watch.next(timeout=10)
            assert batch is not None, "the broken stream was not noticed"
            seen += batch.events
    # the client's kept-alive connection died with the server: the next call reconnects
    last = 0
    for i in range(5, 10):
        last = client.put(f"r/{i}".encode(), str(i))
    with client.watch(b"r/", prefix=True, start_revision=watch.resume_revision) as resumed:
        seen += collect(resumed, last)
    assert [e.kv.value for e in seen] == [str(i).encode() for i in range(10)]
    client.close()


def test_a_watch_on_a_hung_member_is_unavailable_after_the_probe(own_etcd: EtcdServer) -> None:
    client = own_etcd.client(timeout=1)
    watch = client.watch(b"h/", probe_interval=0.5)
    assert own_etcd.pid is not None
    os.killpg(own_etcd.pid, signal.SIGSTOP)  # alive, connected, and silent
    try:
        started = time.monotonic()
        with pytest.raises(EtcdUnavailable):
            watch.next()
        assert time.monotonic() - started < 0.5 + 1 + 1  # probe interval + probe timeout
    finally:
        os.killpg(own_etcd.pid, signal.SIGCONT)
    client.close()


# ---- endpoints, failover, timeouts ------------------------------------------------------


def test_an_unreachable_endpoint_fails_within_the_timeout(
    refused_endpoint: str, silent_endpoint: str
) -> None:
    refused = EtcdClient([refused_endpoint], timeout=1)
    started = time.monotonic()
    with pytest.raises(EtcdUnavailable) as raised:
        refused.get("x")
    assert time.monotonic() - started < 0.5  # a refusal needs no waiting
    assert not raised.value.maybe_applied

    silent = EtcdClient([silent_endpoint], timeout=0.5)
    for call in (lambda: silent.get("x"), silent.status, lambda: silent.watch("x")):
        started = time.monotonic()
        with pytest.raises(EtcdUnavailable) as raised:
            call()
        assert 0.45 < time.monotonic() - started < 1.0
    with pytest.raises(EtcdUnavailable) as raised:
        silent.put("x", "y")
    assert raised.value.maybe_applied  # sent, never answered: it may have been applied


def test_failover_to_the_next_endpoint(
    etcd: Etcd, prefix: bytes, refused_endpoint: str, silent_endpoint: str
) -> None:
    real = etcd.server.client_url
    client = EtcdClient([refused_endpoint, real], timeout=2)
    key = prefix + b"failover"
    assert client.create(key, "v").succeeded  # a refused connection: safe to write elsewhere
    assert client.status().endpoint == real
    with client.watch(key, start_revision=1) as watch:
        assert watch.endpoint == real
    # a hung member before the real one: a read waits its share of the timeout, then moves
    slow = EtcdClient([silent_endpoint, real], timeout=2)
    started = time.monotonic()
    assert slow.get(key).record is not None
    assert 0.9 < time.monotonic() - started < 1.5
    started = time.monotonic()
    assert slow.get(key).record is not None  # and sticks to the member that answered
    assert time.monotonic() - started < 0.2
    client.close()
    slow.close()


# ---- auth -------------------------------------------------------------------------------


def enable_auth(client: EtcdClient, password: str) -> None:
    client.request("/v3/auth/user/add", {"name": "root", "password": password}, write=True)
    client.request("/v3/auth/role/add", {"name": "root"}, write=True)
    client.request("/v3/auth/user/grant", {"user": "root", "role": "root"}, write=True)
    client.request("/v3/auth/enable", {}, write=True)


def test_auth_with_user_and_password(own_etcd: EtcdServer) -> None:
    with own_etcd.client(timeout=3) as admin:
        enable_auth(admin, "s3cret")
        with pytest.raises(EtcdAuthError):  # no credentials now
            admin.get("k")
    root = own_etcd.client(timeout=3, username="root", password="s3cret")
    revision = root.put("k", "v")
    assert root.get("k").record.value == b"v"  # type: ignore[union-attr]
    with root.watch("k", start_revision=revision) as watch:
        assert [e.kv.value for e in collect(watch, revision)] == [b"v"]

    bad = own_etcd.client(timeout=3, username="root", password="wrong")
    with pytest.raises(EtcdAuthError):
        bad.get("k")
    with pytest.raises(EtcdAuthError):
        bad.watch("k")

    # Simple tokens live in the member's memory: a restart invalidates root's token,
    # and the client authenticates again by itself (calls and watches alike).
    own_etcd.restart()
    assert root.get("k").record is not None
    own_etcd.restart()
    with root.watch("k", start_revision=revision) as watch:
        assert len(collect(watch, revision)) == 1
    root.close()


def test_tls_with_a_ca(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    with EtcdServer(cert_file=certs.cert, key_file=certs.key, ca_file=certs.ca) as server:
        assert server.client_url.startswith("https://")
        with server.client(timeout=3) as client:
            revision = client.put("k", "over tls")
            with client.watch("k", start_revision=revision) as watch:
                assert [e.kv.value for e in collect(watch, revision)] == [b"over tls"]
        # without the CA the certificate is refused: a clear error, no failover loop
        with pytest.raises(EtcdError, match="TLS"):
            EtcdClient(server.endpoints, timeout=3).get("k")
