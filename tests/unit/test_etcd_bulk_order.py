"""The etcd backend's bulk writes keep one name's writes in order and always answer,
and only a side with a majority of ``cluster_nodes`` revokes a down node's lease.

These run :class:`EtcdBackend` with its real threads against an in-memory store (our
own :class:`EtcdStore` interface, not etcd: the point is the order in which the
backend calls it, which a real etcd cannot be made to show on demand).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from thespian_cluster.backends.etcd.backend import EtcdBackend, EtcdConfig
from thespian_cluster.backends.etcd.client import KeyValue
from thespian_cluster.backends.etcd.store import StoreUnavailable
from thespian_cluster.backends.etcd.view import Change, name_key, node_key, node_value
from thespian_cluster.backends.scope import Deferred
from thespian_cluster.cluster_messages import ClusterView
from thespian_cluster.core.membership import NodeRecord
from thespian_cluster.core.replica import NodeId
from thespian_cluster.messages import (
    Register,
    Registered,
    RegisteredMany,
    RegisterMany,
    RegistryError,
    Reply,
    Request,
    Unregister,
    Unregistered,
)
from thespian_cluster.settings import ClusterSettings

PREFIX = "/t/"


class MemoryStore:
    """The calls :class:`EtcdBackend` makes, on a dict; ``create_all`` waits for
    ``release`` so a test can act while a bulk transaction is in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kv: dict[str, KeyValue] = {}
        self.revision = 1
        self.calls: list[tuple[str, str]] = []
        self.in_bulk = threading.Event()
        self.release = threading.Event()
        self.touched = threading.Event()  # a single write's call arrived
        self.fail_bulk: Exception | None = None
        self.lose_answer = 0  # bulk transactions applied whose answer is then lost

    def _put(self, key: str, value: bytes, lease: int) -> int:
        self.revision += 1
        self.kv[key] = KeyValue(key.encode(), value, self.revision, self.revision, 1, lease)
        return self.revision

    def create_all(
        self, items: list[tuple[str, bytes]], lease: int
    ) -> tuple[bool, dict[str, KeyValue], int]:
        self.in_bulk.set()
        self.release.wait(10)
        if self.fail_bulk is not None:
            raise self.fail_bulk
        with self.lock:
            self.calls += [("create_all", key) for key, _ in items]
            current = {key: self.kv[key] for key, _ in items if key in self.kv}
            if current:
                return False, current, self.revision
            revision = self.revision + 1
            for key, value in items:
                self.kv[key] = KeyValue(key.encode(), value, revision, revision, 1, lease)
            self.revision = revision
            if self.lose_answer:
                self.lose_answer -= 1
                raise StoreUnavailable("the answer was lost (the txn was applied)")
            return True, {}, revision

    def create(self, key: str, value: bytes, lease: int) -> tuple[bool, KeyValue | None, int]:
        with self.lock:
            self.calls.append(("create", key))
            self.touched.set()
            if key in self.kv:
                return False, self.kv[key], self.revision
            return True, None, self._put(key, value, lease)

    def get(self, key: str) -> KeyValue | None:
        with self.lock:
            self.calls.append(("get", key))
            self.touched.set()
            return self.kv.get(key)

    def delete_if(self, key: str, mod_revision: int) -> tuple[bool, int]:
        with self.lock:
            self.calls.append(("delete_if", key))
            if key not in self.kv or self.kv[key].mod_revision != mod_revision:
                return False, self.revision
            del self.kv[key]
            self.revision += 1
            return True, self.revision

    # ---- the session thread's calls ----

    def grant(self, ttl: int) -> int:
        return 7

    def put(self, key: str, value: bytes, lease: int) -> int:
        with self.lock:
            return self._put(key, value, lease)

    def listing(self, prefix: str) -> tuple[list[Any], int]:
        return [], self.revision

    def watch(self, prefix: str, start: int, deliver: Any, stop: threading.Event) -> None:
        stop.wait()

    def close_watch(self) -> None:
        pass

    def keepalive(self, lease: int) -> int:
        return 10

    def revoke(self, lease: int) -> bool:
        with self.lock:
            self.calls.append(("revoke", str(lease)))
        self.touched.set()
        return True


class Mirror:
    def write_update(self, update: Any) -> None:
        pass

    def replace(self, entries: Any, members: Any) -> None:
        pass


class Host:
    """The RegistryDist side, in this thread: :meth:`pump` runs what the threads woke."""

    def __init__(self, tmp_path: Path, cluster_nodes: tuple[str, ...] = ()) -> None:
        self.node = NodeId("a", "inc-1")
        self.settings = ClusterSettings(
            node_name="a", data_dir=tmp_path, cluster_nodes=list(cluster_nodes)
        )
        self.address = None
        self.mirror = Mirror()
        self.woke = threading.Event()
        self.ready = False  # the backend said the mirror holds the scope

    def send(self, to: Any, message: Any) -> None:
        pass

    def probe_dead(self, addresses: Any) -> list[Any]:
        return []

    def wake(self) -> None:
        self.woke.set()

    def caught_up(self) -> None:
        self.ready = True


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[EtcdBackend, MemoryStore, Host]]:
    yield from _running(Host(tmp_path))


@pytest.fixture
def of_three(tmp_path: Path) -> Iterator[tuple[EtcdBackend, MemoryStore, Host]]:
    yield from _running(Host(tmp_path, ("a", "b", "c")))


def _running(host: Host) -> Iterator[tuple[EtcdBackend, MemoryStore, Host]]:
    backend = EtcdBackend(host, EtcdConfig(prefix=PREFIX, write_threads=4))  # type: ignore[arg-type]
    store = MemoryStore()
    backend.store = store  # type: ignore[assignment]
    backend.start(False)
    try:
        pump(backend, host, lambda: backend._ready, "the first lease and listing")
        yield backend, store, host
    finally:
        store.release.set()
        backend.stop()


def pump(backend: EtcdBackend, host: Host, done: Callable[[], object], what: str) -> None:
    """Run the backend's wake-ups (as its host actor does) until ``done()``."""
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        host.woke.wait(0.05)
        host.woke.clear()
        backend.woken()


def ask(backend: EtcdBackend, request: Request) -> list[Reply]:
    answers: list[Reply] = []
    backend.write(request, Deferred(request, time.monotonic() + 30, answers.append))
    return answers


def actor(port: int) -> ActorAddress:
    return ActorAddress(TCPv4ActorAddress("127.0.0.1", port, external=True))


def test_a_release_sent_while_a_bulk_holds_its_name_waits_for_the_bulk(
    running: tuple[EtcdBackend, MemoryStore, Host],
) -> None:
    backend, store, host = running
    owner = actor(40001)
    names = [f"n{i}" for i in range(5)]
    bulk = ask(
        backend,
        RegisterMany(registrations=[Register(name=n, address=owner) for n in names]),
    )
    assert store.in_bulk.wait(10)
    release = ask(backend, Unregister(name="n3", scope="global"))
    # Not parked, the release would reach the store now and find no n3.
    assert not store.touched.wait(1.0), store.calls
    store.release.set()
    pump(backend, host, lambda: bulk and release, "both answers")
    assert isinstance(bulk[0], RegisteredMany)
    assert all(isinstance(r, Registered) for r in bulk[0].results)
    assert isinstance(release[0], Unregistered), release
    key = name_key(PREFIX, "server", "n3")
    assert store.calls.index(("create_all", key)) < store.calls.index(("get", key))
    assert key not in store.kv


def test_a_bulk_that_fails_on_a_bug_answers_every_item_and_frees_its_names(
    running: tuple[EtcdBackend, MemoryStore, Host],
) -> None:
    backend, store, host = running
    owner = actor(40002)
    store.fail_bulk = RuntimeError("a bug in the store")
    bulk = ask(
        backend,
        RegisterMany(registrations=[Register(name=f"m{i}", address=owner) for i in range(3)]),
    )
    assert store.in_bulk.wait(10)
    later = ask(backend, Register(name="m1", address=owner, scope="global"))
    store.release.set()
    pump(backend, host, lambda: bulk and later, "both answers")
    assert isinstance(bulk[0], RegisteredMany)
    assert [getattr(r, "code", None) for r in bulk[0].results] == ["backend_failure"] * 3
    assert isinstance(later[0], Registered), later  # m1 was not left held
    assert not isinstance(later[0], RegistryError)


def test_a_bulk_applied_but_unanswered_is_registered_on_retry_without_a_rewrite(
    running: tuple[EtcdBackend, MemoryStore, Host],
) -> None:
    backend, store, host = running
    owner = actor(40003)
    store.lose_answer = 1
    store.release.set()
    bulk = ask(
        backend,
        RegisterMany(registrations=[Register(name=f"r{i}", address=owner) for i in range(4)]),
    )
    pump(backend, host, lambda: bulk, "the answer")
    assert isinstance(bulk[0], RegisteredMany)
    assert all(isinstance(r, Registered) for r in bulk[0].results), bulk[0].results
    # The retry found its own records: no replace (MemoryStore has none), no create.
    assert [call for call, _ in store.calls] == ["create_all"] * 8


def view(*names: str) -> ClusterView:
    records = [
        NodeRecord(name=n, incarnation=f"inc-{n}", started_at=1.0, host="127.0.0.1", port=9)
        for n in names
    ]
    return ClusterView(records=records, leader=names[0], joined=True)


def test_only_a_side_with_a_majority_of_the_cluster_revokes_a_down_nodes_lease(
    of_three: tuple[EtcdBackend, MemoryStore, Host],
) -> None:
    backend, store, _ = of_three
    for name, lease in (("b", 21), ("c", 31)):
        record = node_value(f"inc-{name}", lease)
        backend.view.apply([Change(node_key(PREFIX, name), 5, record, lease)])
    backend.view_changed(view("a", "b", "c"))
    # Cut off alone: b and c are down in the view before any split-brain verdict came
    # (the detector's verdict follows the view): still no revocation of their leases.
    backend.view_changed(view("a"))
    backend.node_down(NodeId("b", "inc-b"), "left the view")
    backend.node_down(NodeId("c", "inc-c"), "left the view")
    assert not store.touched.wait(1.0), store.calls
    # With b, a holds 2 of 3: c's lease goes.
    backend.view_changed(view("a", "b"))
    backend.node_down(NodeId("c", "inc-c"), "left the view")
    assert store.touched.wait(10)
    assert [call for call in store.calls if call[0] == "revoke"] == [("revoke", "31")]
