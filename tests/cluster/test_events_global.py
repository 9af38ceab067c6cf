"""Name events and AwaitName in scope global, across real node processes.

Each node has an :class:`~tests.integration.actors.EventLog` subscribed through its own
node's Registry; the writes come from three nodes at once and one node is SIGKILLed in
the middle of them. What every surviving subscriber sees is checked against what was
acknowledged and against the node's own table at the end.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.actors import EventLog, Worker
from thespian_cluster import (
    AwaitName,
    ListNames,
    NameRegistered,
    NamesSnapshot,
    NameUnregistered,
    Register,
    Registered,
    Resync,
    SubscribeNames,
    WhereisReply,
)
from thespian_cluster.local_cluster import ClusterNode, LocalCluster
from thespian_cluster.node_table import TableReader
from thespian_cluster.supervisors.os_process import pid_listening_on

pytestmark = pytest.mark.cluster

PER_NODE = 40


def _three(cluster: LocalCluster) -> tuple[ClusterNode, ClusterNode, ClusterNode]:
    a = cluster.start("a")
    b, c = cluster.start("b", leader=a), cluster.start("c", leader=a)
    cluster.wait_formed(["a", "b", "c"])
    return a, b, c


def _seen(node: ClusterNode, log: Any) -> list[Any]:
    return node.client().ask(log, "events", 10) or []


def _replay(snapshot: NamesSnapshot, events: list[Any]) -> dict[str, Any]:
    """The table the events make of the snapshot; fails on a lost or doubled event."""
    table = {info.name: info.address for info in snapshot.names}
    for event in events:
        assert not isinstance(event, Resync), "no stream restarted in this test"
        if isinstance(event, NameRegistered):
            assert event.name not in table, f"{event.name} registered twice"
            table[event.name] = event.address
        elif isinstance(event, NameUnregistered):
            assert table.pop(event.name, None) == event.address, f"{event.name}: not held"
    return table


@pytest.fixture(params=["global", "etcd"])
def cluster_of(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster on the built-in global backend, or on etcd (the session's server)."""
    settings = request.getfixturevalue("etcd_backend") if request.param == "etcd" else {}
    with LocalCluster(tmp_path, **settings) as cluster:
        yield cluster


def test_every_node_sees_each_change_once_and_a_dead_nodes_names_go_with_node_down(
    cluster_of: LocalCluster,
) -> None:
    a, b, c = _three(cluster_of)
    logs, snapshots = {}, {}
    for node in (a, b):
        log = node.client().createActor(EventLog)
        snapshot = node.ask(SubscribeNames(subscriber=log, scope="global"))
        assert isinstance(snapshot, NamesSnapshot) and snapshot.names == []
        logs[node.name], snapshots[node.name] = log, snapshot
    acknowledged: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def register_from(node: ClusterNode) -> None:
        owner = node.client().createActor(Worker)
        for index in range(PER_NODE):
            name = f"{node.name}-{index}"
            try:
                reply = node.ask(Register(name=name, address=owner, scope="global"), 5)
            except Exception:  # c is killed under its own writes
                return
            if isinstance(reply, Registered):
                acknowledged[node.name].append(name)

    writers = [threading.Thread(target=register_from, args=(n,)) for n in (a, b, c)]
    for writer in writers:
        writer.start()
    wait_for(lambda: len(acknowledged["c"]) >= PER_NODE // 4, 30, "c's first writes")
    c.kill()
    for writer in writers:
        writer.join(60)
    survivors = set(acknowledged["a"] + acknowledged["b"])
    assert len(survivors) == 2 * PER_NODE and acknowledged["c"]

    for node in (a, b):

        def purged(node: ClusterNode = node) -> bool:  # c's names go once it is seen down
            return {i.name for i in node.ask(ListNames(scope="global")).names} == survivors

        wait_for(purged, 30, f"c's names purged on {node.name}")

        def settled(node: ClusterNode = node) -> list[Any] | None:
            events = _seen(node, logs[node.name])
            made = _replay(snapshots[node.name], events)
            return events if set(made) == survivors else None

        events = wait_for(settled, 30, f"{node.name}'s events to reach its table")
        registered = [e.name for e in events if isinstance(e, NameRegistered)]
        assert len(registered) == len(set(registered)), "a name registered twice"
        assert survivors | set(acknowledged["c"]) <= set(registered)
        # c may die after its write was applied and before it answered its client
        assert {n for n in registered if n not in survivors} <= {f"c-{i}" for i in range(PER_NODE)}
        for name in [n for n in registered if n.startswith("c-")]:  # purged with its node
            gone = [e for e in events if isinstance(e, NameUnregistered) and e.name == name]
            assert [e.reason for e in gone] == ["node_down"], (node.name, name, gone)
        assert all(e.reason == "normal" for e in events if isinstance(e, NameRegistered))
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # none lost
        versions = [e.version for e in events]
        assert versions == sorted(versions) and versions[0] > snapshots[node.name].version


def test_await_on_one_node_is_answered_by_a_registration_on_another(
    cluster: LocalCluster,
) -> None:
    a, b, _ = _three(cluster)
    waiters = [a.client().createActor(EventLog) for _ in range(3)]
    for waiter in waiters:
        request = AwaitName(name="coordinator", scope="global", timeout=30)
        a.client().tell(waiter, ("send", a.registry(), request))
    kept = TableReader(a.node_dir)
    wait_for(lambda: len(kept.event_records("global")) == 3, 10, "the waits at a's RegistryDist")
    owner = b.client().createActor(Worker)
    registered_at = time.monotonic()
    assert isinstance(
        b.ask(Register(name="coordinator", address=owner, scope="global")), Registered
    )
    for waiter in waiters:
        answer = wait_for(lambda w=waiter: _seen(a, w), 10, "the await's answer")[0]
        assert isinstance(answer, WhereisReply) and answer.address == owner
    lag = time.monotonic() - registered_at
    assert lag < 5.0
    now = a.ask(AwaitName(name="coordinator", scope="global", timeout=1))
    assert isinstance(now, WhereisReply) and now.address == owner


def test_a_restarted_registry_dist_resyncs_with_the_whole_scope_and_no_false_events(
    cluster: LocalCluster,
) -> None:
    """A restarted RegistryDist's mirror holds only its own names until a snapshot
    comes: the Resync waits for that, so it carries the whole scope, and names that
    never changed are not reported as registered."""
    a, b, c = _three(cluster)
    for node in (a, c):
        owner = node.client().createActor(Worker)
        for index in range(5):
            request = Register(name=f"{node.name}-{index}", address=owner, scope="global")
            assert isinstance(node.ask(request), Registered)
    log = b.client().createActor(EventLog)
    wait_for(lambda: len(b.ask(ListNames(scope="global")).names) == 10, 10, "b sees all")
    snapshot = b.ask(SubscribeNames(subscriber=log, scope="global"))
    assert len(snapshot.names) == 10
    dist = TableReader(b.node_dir).agent("registry_dist")
    pid = pid_listening_on(dist.addressDetails.sockname[1])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    resync = wait_for(lambda: _seen(b, log), 30, "the resync")[0]
    assert isinstance(resync, Resync) and resync.reason == "restarted"
    assert sorted(i.name for i in resync.snapshot.names) == sorted(
        f"{n}-{i}" for n in "ac" for i in range(5)
    )
    late = a.client().createActor(Worker)
    assert isinstance(b.ask(Register(name="after", address=late, scope="global")), Registered)
    events = wait_for(lambda: (e := _seen(b, log)) and len(e) >= 2 and e, 10, "the next")
    assert [(type(e).__name__, getattr(e, "name", None)) for e in events] == [
        ("Resync", None),
        ("NameRegistered", "after"),
    ]
