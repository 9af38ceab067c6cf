"""Name and group events, and AwaitName, in scope local on one real node.

A subscriber is an :class:`~tests.integration.actors.EventLog` actor of the node: it
keeps every event it is sent, and the test reads them back. Deaths are real (SIGKILL of
an actor's process), and so is the Registry's restart (SIGKILL of its process: its
supervisor starts it again).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from tests.integration.actors import EventLog, Worker
from thespian_cluster import (
    AwaitName,
    GroupSnapshot,
    JoinGroup,
    LeaveGroup,
    MemberJoined,
    MemberLeft,
    MetaChanged,
    NameRegistered,
    NamesSnapshot,
    NameUnregistered,
    Node,
    Register,
    Registered,
    RegistryError,
    Resync,
    SubscribeGroup,
    SubscribeNames,
    Unregister,
    Unsubscribed,
    UnsubscribeNames,
    UpdateMeta,
    WhereisReply,
    registry_address,
)
from thespian_cluster.core.events import Waiter
from thespian_cluster.local_cluster import wait_for
from thespian_cluster.node_table import TableReader
from thespian_cluster.supervisors.os_process import pid_listening_on


def _events(node: Node, log: Any, count: int, what: str = "events") -> list[Any]:
    """The first ``count`` messages ``log`` has, once it has them."""
    return wait_for(
        lambda: (seen := node.system.ask(log, "events", 5)) and len(seen) >= count and seen,
        10,
        what,
    )[:count]


def _kill(address: Any) -> None:
    pid = pid_listening_on(address.addressDetails.sockname[1])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def test_names_snapshot_then_every_change_once_with_reasons(node: Node) -> None:
    system = node.system
    first, second = system.createActor(Worker), system.createActor(Worker)
    assert isinstance(node.ask(Register(name="before", address=first)), Registered)
    log = system.createActor(EventLog)
    snapshot = node.ask(SubscribeNames(subscriber=log))
    assert isinstance(snapshot, NamesSnapshot)
    assert [i.name for i in snapshot.names] == ["before"] and snapshot.version > 0
    again = node.ask(SubscribeNames(subscriber=log))  # the same subscription, no copy
    assert isinstance(again, NamesSnapshot) and again.version == snapshot.version
    node.ask(Register(name="svc", address=second, meta={"v": 1}))
    node.ask(Register(name="svc", address=second, meta={"v": 1}))  # unchanged: no event
    node.ask(UpdateMeta(name="svc", meta={"v": 2}))
    node.ask(Unregister(name="svc"))
    _kill(first)  # its name goes with it: owner_died
    events = _events(node, log, 4)
    assert [type(e) for e in events] == [
        NameRegistered,
        MetaChanged,
        NameUnregistered,
        NameUnregistered,
    ]
    assert [e.reason for e in events] == ["normal", "normal", "normal", "owner_died"]
    assert [e.name for e in events] == ["svc", "svc", "svc", "before"]
    assert events[1].meta == {"v": 2} and events[3].address == first
    versions = [e.version for e in events]
    assert versions == sorted(versions) and versions[0] > snapshot.version
    assert snapshot.seq == 0 and [e.seq for e in events] == [1, 2, 3, 4]  # none lost
    assert all(e.scope == "local" for e in events)
    bye = node.ask(UnsubscribeNames(subscriber=log))
    assert isinstance(bye, Unsubscribed) and bye.was_subscribed
    assert node.ask(UnsubscribeNames(subscriber=log)).was_subscribed is False  # idempotent
    node.ask(Register(name="after", address=second))
    node.ask(Register(name="marker", address=second))
    assert len(system.ask(log, "events", 5)) == 4


def test_kind_and_prefix_filters(node: Node) -> None:
    system = node.system
    owner = system.createActor(Worker)
    tools, transports = system.createActor(EventLog), system.createActor(EventLog)
    node.ask(SubscribeNames(subscriber=tools, prefix="tool."))
    node.ask(SubscribeNames(subscriber=transports, kind="transport"))
    for name, kind in [("tool.a", "server"), ("other", "server"), ("tool.b", "transport")]:
        node.ask(Register(name=name, address=owner, kind=kind))
    assert [e.name for e in _events(node, tools, 2)] == ["tool.a", "tool.b"]
    assert [e.name for e in _events(node, transports, 1)] == ["tool.b"]


def test_group_events_explicit_and_automatic(node: Node) -> None:
    system = node.system
    member, server = system.createActor(Worker), system.createActor(Worker)
    log = system.createActor(EventLog)
    snapshot = node.ask(SubscribeGroup(subscriber=log, group="workers"))
    assert isinstance(snapshot, GroupSnapshot) and snapshot.members == []
    node.ask(SubscribeGroup(subscriber=log, group="tool_servers"))
    node.ask(JoinGroup(group="workers", address=member))
    node.ask(Register(name="t", address=server, meta={"capabilities": {"tools": {}}}))
    node.ask(UpdateMeta(name="t", meta={"capabilities": {}}))  # no tools: leaves the group
    node.ask(LeaveGroup(group="workers", address=member))
    events = _events(node, log, 4)
    assert [(type(e), e.group, e.address) for e in events] == [
        (MemberJoined, "workers", member),
        (MemberJoined, "tool_servers", server),
        (MemberLeft, "tool_servers", server),
        (MemberLeft, "workers", member),
    ]


def test_await_answers_at_once_later_or_times_out(node: Node) -> None:
    system = node.system
    owner = system.createActor(Worker)
    node.ask(Register(name="there", address=owner))
    now = node.ask(AwaitName(name="there", timeout=5))
    assert isinstance(now, WhereisReply) and now.address == owner
    waiters = [system.createActor(EventLog) for _ in range(3)]
    for waiter in waiters:
        system.tell(waiter, ("send", node.registry, AwaitName(name="later", timeout=30)))
    late = system.createActor(EventLog)
    system.tell(late, ("send", node.registry, AwaitName(name="never", timeout=0.3)))
    timed_out = _events(node, late, 1, "the timeout")[0]
    assert isinstance(timed_out, RegistryError) and timed_out.code == "timeout"
    node.ask(Register(name="later", address=owner))
    for waiter in waiters:
        reply = _events(node, waiter, 1, "the await's answer")[0]
        assert isinstance(reply, WhereisReply) and reply.address == owner


def test_a_restarted_registry_resyncs_its_subscribers_and_keeps_waiting(node: Node) -> None:
    system = node.system
    owner = system.createActor(Worker)
    log, waiter = system.createActor(EventLog), system.createActor(EventLog)
    node.ask(Register(name="kept", address=owner))
    node.ask(SubscribeNames(subscriber=log))
    system.tell(waiter, ("send", node.registry, AwaitName(name="awaited", timeout=60)))
    kept = TableReader(node.settings.node_dir)
    wait_for(lambda: any(isinstance(r, Waiter) for r in kept.event_records("local")), 5, "kept")
    old = node.registry
    _kill(old)
    new = wait_for(
        lambda: (found := registry_address(system, node.root)) != old and found, 20, "a restart"
    )
    node._registry = new
    resync = _events(node, log, 1, "the resync")[0]
    assert isinstance(resync, Resync) and resync.reason == "restarted" and resync.seq == 1
    assert [i.name for i in resync.snapshot.names] == ["kept"]
    node.ask(Register(name="awaited", address=owner))
    events = _events(node, log, 2)
    assert isinstance(events[1], NameRegistered) and events[1].name == "awaited"
    assert events[1].seq == 2
    answer = _events(node, waiter, 1, "the await survived")[0]
    assert isinstance(answer, WhereisReply) and answer.address == owner


def test_a_dead_subscriber_is_dropped(node: Node) -> None:
    system = node.system
    owner = system.createActor(Worker)
    log = system.createActor(EventLog)
    node.ask(SubscribeNames(subscriber=log))
    _kill(log)
    # the next change's event to it is a dead letter (or a probe finds it): dropped
    node.ask(Register(name="x", address=owner))
    wait_for(
        lambda: node.ask(UnsubscribeNames(subscriber=log)).was_subscribed is False,
        10,
        "the dead subscriber dropped",
    )
