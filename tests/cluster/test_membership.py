"""Membership and node health across real node processes (issue: NodeMonitor).

Every node is `thespian-cluster start` in its own process group on a free port;
crashes are ``os.killpg(SIGKILL)``, hangs ``SIGSTOP`` of the whole group.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from thespian_cluster import RegistryError
from thespian_cluster.cluster_messages import (
    ForceNodeCheck,
    GetNodeHealth,
    NodeDown,
    NodeHealthReply,
    NodeStatusReply,
    NodeUp,
    Subscribed,
    SubscribeNodeEvents,
)
from thespian_cluster.local_cluster import ClusterNode, EventLog, LocalCluster, free_port
from thespian_cluster.supervisors.os_process import pid_listening_on

pytestmark = pytest.mark.cluster


def subscribe(node: ClusterNode) -> Any:
    """An EventLog actor on ``node``, subscribed to its NodeMonitor's events."""
    log = node.client().createActor(EventLog)
    assert isinstance(node.ask_monitor(SubscribeNodeEvents(subscriber=log)), Subscribed)
    return log


def events(node: ClusterNode, log: Any) -> list[NodeUp | NodeDown]:
    found = node.client().ask(log, "events", 10)
    assert isinstance(found, list)
    return found


def test_nodes_join_in_any_order_and_all_know_each_other(cluster: LocalCluster) -> None:
    leader_port = free_port()
    leader_address = f"127.0.0.1:{leader_port}"
    # b starts before its leader exists: it keeps trying and says so once.
    b = cluster.start("b", leader=leader_address)
    assert not b.cluster_nodes().joined
    a = cluster.start("a", port=leader_port)
    c = cluster.start("c", leader=a)
    cluster.wait_formed(["a", "b", "c"])
    for node in (a, b, c):
        reply = node.cluster_nodes()
        assert reply.joined and reply.refused is None
        assert reply.leader == "b"  # the oldest node (it started first), not the convention leader
    assert b.output.read_text().count("not reachable yet") == 1
    infos = c.status().nodes
    assert {i.name for i in infos} == {"a", "b", "c"}
    assert all(i.health == "up" for i in infos)
    assert len({i.incarnation for i in infos}) == 3


def test_a_killed_node_is_down_on_every_survivor_and_subscribers_hear_once(
    cluster: LocalCluster,
) -> None:
    a = cluster.start("a")
    b, c = cluster.start("b", leader=a), cluster.start("c", leader=a)
    cluster.wait_formed(["a", "b", "c"])
    log = subscribe(a)
    dead_incarnation = a.status().by_name("b").incarnation  # type: ignore[union-attr]
    b.kill()
    for survivor in (a, c):
        wait_for(lambda s=survivor: s.health_of("b") == "down", 5, "b down")
        assert survivor.status().by_name("b").reason == "refused"  # type: ignore[union-attr]
    assert a.cluster_nodes().nodes == ["a", "c"]
    wait_for(lambda: events(a, log), 5, "the NodeDown event")
    assert events(a, log) == [NodeDown(node="b", incarnation=dead_incarnation, reason="refused")]


def test_a_hung_node_is_suspect_then_down_then_up_again(cluster: LocalCluster) -> None:
    a = cluster.start("a")
    b = cluster.start("b", leader=a)
    cluster.wait_formed(["a", "b"])
    log = subscribe(a)
    b.pause()
    try:
        wait_for(lambda: a.health_of("b") == "suspect", 5, "b suspect")
        wait_for(lambda: a.health_of("b") == "down", 5, "b down")
        assert a.status().by_name("b").reason == "timeout"  # type: ignore[union-attr]
    finally:
        b.resume()
    wait_for(lambda: a.health_of("b") == "up", 5, "b up again after SIGCONT")
    wait_for(lambda: b.health_of("a") == "up", 5, "a up again as b sees it")
    incarnation = b.cluster_nodes and a.status().by_name("b").incarnation  # type: ignore[union-attr]
    assert events(a, log) == [
        NodeDown(node="b", incarnation=incarnation, reason="timeout"),
        NodeUp(node="b", incarnation=incarnation),
    ]


def test_a_node_restarted_on_its_port_is_a_new_incarnation(cluster: LocalCluster) -> None:
    a = cluster.start("a")
    b = cluster.start("b", leader=a)
    cluster.wait_formed(["a", "b"])
    log = subscribe(a)
    old = a.status().by_name("b").incarnation  # type: ignore[union-attr]
    b.kill()
    reborn = cluster.start("b", leader=a, port=b.port)
    new = reborn.status().by_name("b").incarnation  # type: ignore[union-attr]
    assert new != old
    wait_for(lambda: a.status().by_name("b").incarnation == new, 5, "the new b")  # type: ignore[union-attr]
    wait_for(lambda: a.health_of("b") == "up", 5, "the new b up")
    seen = events(a, log)
    assert seen[0] == NodeDown(node="b", incarnation=old, reason=seen[0].reason)
    assert seen[0].reason in ("refused", "restarted")
    assert seen[-1] == NodeUp(node="b", incarnation=new)
    assert all(e.incarnation == old for e in seen if isinstance(e, NodeDown))


def test_a_second_node_with_a_taken_name_is_refused_and_the_first_keeps_running(
    cluster: LocalCluster,
) -> None:
    a = cluster.start("a")
    b = cluster.start("b", leader=a)
    cluster.wait_formed(["a", "b"])
    first = a.status().by_name("b").incarnation  # type: ignore[union-attr]
    impostor = cluster.start("b", leader=a, wait=False)
    assert impostor.process.wait(30) != 0
    assert "already in the cluster" in impostor.output.read_text()
    assert "Traceback" not in impostor.output.read_text()
    assert a.cluster_nodes().nodes == ["a", "b"]
    assert a.status().by_name("b").incarnation == first  # type: ignore[union-attr]
    reply = a.ask_monitor(ForceNodeCheck())
    assert isinstance(reply, NodeStatusReply)
    assert reply.by_name("b").health == "up"  # type: ignore[union-attr]
    assert b.cluster_nodes().nodes == ["a", "b"]


def test_five_nodes_and_one_lost(cluster: LocalCluster) -> None:
    first = cluster.start("n1")
    names = ["n1"] + [cluster.start(f"n{i}", leader=first).name for i in range(2, 6)]
    cluster.wait_formed(names)
    cluster.nodes["n3"].kill()
    survivors = [n for n in names if n != "n3"]
    for name in survivors:
        node = cluster.nodes[name]
        wait_for(lambda node=node: node.health_of("n3") == "down", 5, f"n3 down on {name}")
    cluster.wait_formed(survivors)


def test_node_monitor_restart_rebuilds_without_spurious_events(cluster: LocalCluster) -> None:
    a = cluster.start("a")
    b, c = cluster.start("b", leader=a), cluster.start("c", leader=a)
    cluster.wait_formed(["a", "b", "c"])
    log = subscribe(b)
    monitor = b.monitor()
    os.kill(_pid_of(monitor), signal.SIGKILL)
    wait_for(lambda: b.monitor() != monitor, 10, "a new NodeMonitor on b")
    assert b.cluster_nodes().nodes == ["a", "b", "c"]
    # Peers learn the new address: a's view of b answers a forced check.
    reply = a.ask_monitor(ForceNodeCheck())
    assert reply.by_name("b").health == "up"  # type: ignore[union-attr]
    assert events(b, log) == []  # nothing went down or came up
    c_incarnation = b.status().by_name("c").incarnation  # type: ignore[union-attr]
    c.kill()
    wait_for(lambda: events(b, log), 5, "the restarted monitor's NodeDown")
    assert events(b, log) == [NodeDown(node="c", incarnation=c_incarnation, reason="refused")]


def test_health_requests_and_bad_input(cluster: LocalCluster) -> None:
    a = cluster.start("a")
    b = cluster.start("b", leader=a)
    cluster.wait_formed(["a", "b"])
    checked = a.ask_monitor(ForceNodeCheck())  # replies once b has answered a ping
    assert isinstance(checked, NodeStatusReply)
    assert checked.by_name("b").rtt_ms is not None  # type: ignore[union-attr]
    reply = a.ask_monitor(GetNodeHealth(node="b"))
    assert isinstance(reply, NodeHealthReply)
    assert reply.info.health == "up" and reply.info.rtt_ms is not None
    assert reply.info.admin_address == b.leader_address
    unknown = a.ask_monitor(GetNodeHealth(node="nobody"))
    assert isinstance(unknown, RegistryError) and unknown.code == "unknown_node"
    bad = GetNodeHealth.model_construct(request_id="r1", node=None)
    refused = a.ask_monitor(bad)
    assert isinstance(refused, RegistryError) and refused.code == "invalid_request"
    assert refused.request_id == "r1"
    junk = SubscribeNodeEvents.model_construct(request_id="r2", subscriber="not an actor")
    refused = a.ask_monitor(junk)
    assert isinstance(refused, RegistryError) and refused.code == "invalid_request"
    assert a.cluster_nodes().nodes == ["a", "b"]


def _pid_of(address: Any) -> int:
    pid = pid_listening_on(address.addressDetails.sockname[1])
    assert pid is not None
    return pid


def test_stopping_a_member_at_any_moment_of_its_start_leaves_nothing(cluster: LocalCluster) -> None:
    """Ctrl-C at random moments of a member's start (before, during and after its join):
    the CLI exits and no process of that node survives (no second actor system)."""
    a = cluster.start("a")
    cluster.start("b", leader=a)
    seed = random.randrange(1 << 30)
    print(f"random seed {seed}")
    chance = random.Random(seed)
    for attempt in range(8):
        member = cluster.start(f"m{attempt}", leader=a, wait=False)
        time.sleep(chance.uniform(0.2, 1.4))  # the moment of the Ctrl-C is the test's input
        member.process.send_signal(signal.SIGINT)
        assert member.process.wait(30) is not None
        try:
            wait_for(lambda m=member: not _processes_of(m.config), 10, f"m{attempt} gone")
        except TimeoutError:
            left = {
                pid: Path(f"/proc/{pid}/status").read_text().split("\n")[:7]
                for pid in _processes_of(member.config)
            }
            output = member.output.read_text()[-2500:]
            raise AssertionError(f"left behind: {left}\n{output}") from None
    assert a.cluster_nodes().nodes[:2] == ["a", "b"]


def _processes_of(config: Path) -> list[int]:
    """Live processes started for this node's config (the CLI, its admin, its actors)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(config).encode() in cmdline and state not in ("Z", "X"):
            found.append(int(pid))
    return found
