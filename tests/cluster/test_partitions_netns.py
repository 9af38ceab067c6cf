"""Membership over real network partitions: every node in its own network namespace.

The nodes are real ``thespian-cluster start`` processes run by ``ip netns exec``, each
with its own address on the lab's bridge (:mod:`thespian_cluster.netns`). A cut sets a
node's veth down (a pulled cable); a split moves a side to an island bridge. The test
process reaches the nodes over the bridge, so while a node is cut it asks the other
side, or a client started inside the cut node's namespace, or (after the heal) the
node's own event log, which stamps every event with the machine-wide monotonic clock.

Default heartbeat settings (interval 0.25 s, timeout 2.5 s), as in test_membership.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from thespian_cluster.cluster_messages import NodeDown, NodeUp
from thespian_cluster.local_cluster import ClusterNode, LocalCluster, wait_for
from thespian_cluster.netns import (
    CLAIMS,
    NetnsLab,
    ask_status_in_namespace,
    measure_partition,
    subscribe_timed,
    sweep,
    timed_events,
)
from thespian_cluster.settings import ClusterSettings

pytestmark = pytest.mark.cluster

DEFAULTS = ClusterSettings.build()
TIMEOUT = DEFAULTS.cluster_heartbeat_timeout
#: Down comes ``timeout`` after the last heartbeat heard, which may precede the cut by an
#: interval (and the detector ticks once more per interval): the earliest a down can be.
EARLIEST_DOWN = TIMEOUT - 2 * DEFAULTS.cluster_heartbeat_interval


def start_nodes(cluster: LocalCluster, lab: NetnsLab, names: list[str]) -> list[ClusterNode]:
    """Start ``names`` (the first is everyone's convention leader), each in its namespace."""
    first = cluster.start(names[0], **lab.place(names[0]))
    rest = [cluster.start(name, leader=first, **lab.place(name)) for name in names[1:]]
    return [first, *rest]


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        return probe.connect_ex((host, port)) == 0


def test_three_nodes_in_three_namespaces_form_a_cluster(
    netns_lab: NetnsLab, netns_cluster: LocalCluster
) -> None:
    nodes = start_nodes(netns_cluster, netns_lab, ["a", "b", "c"])
    netns_cluster.wait_formed(["a", "b", "c"])
    addresses = {n.name: n.host for n in nodes}
    assert len(set(addresses.values())) == 3
    for node in nodes:
        assert node.host == netns_lab.address(node.name)
        assert reachable(node.host, node.port)  # over the bridge, from the root namespace
        assert not reachable("127.0.0.1", node.port)  # it is not on this namespace's loopback
        infos = node.status().nodes
        assert {i.name: i.admin_address for i in infos} == {n.name: n.leader_address for n in nodes}
        assert all(i.health == "up" for i in infos)


def test_a_cut_node_is_down_on_both_sides_then_up_again_after_the_heal(
    netns_lab: NetnsLab, netns_cluster: LocalCluster
) -> None:
    a, b, c = start_nodes(netns_cluster, netns_lab, ["a", "b", "c"])
    netns_cluster.wait_formed(["a", "b", "c"])
    incarnations = {i.name: i.incarnation for i in a.status().nodes}
    logs = {n.name: subscribe_timed(n) for n in (a, b, c)}

    cut_at = time.monotonic()
    netns_lab.cut("c")
    assert not reachable(c.host, c.port)
    wait_for(lambda: a.health_of("c") == "suspect", TIMEOUT, "c suspect on a")
    for survivor in (a, b):
        wait_for(lambda s=survivor: s.health_of("c") == "down", TIMEOUT + 2, "c down")
        info = survivor.status().by_name("c")
        assert info is not None and info.reason == "timeout"
        assert survivor.cluster_nodes().nodes == ["a", "b"]
    # The cut side, asked from inside its namespace: it sees the others down.
    seen_by_c = ask_status_in_namespace(
        netns_lab.slots["c"].namespace, c.host, c.port, cookie=c.cookie
    )
    assert {i.name: (i.health, i.reason) for i in seen_by_c.nodes if not i.is_self} == {
        "a": ("down", "timeout"),
        "b": ("down", "timeout"),
    }

    heal_at = time.monotonic()
    netns_lab.heal()
    names = ["a", "b", "c"]
    for node in (a, b, c):
        wait_for(lambda n=node: all(i.health == "up" for i in n.status().nodes), 10, "all up again")
        assert {i.name: i.incarnation for i in node.status().nodes} == incarnations
    netns_cluster.wait_formed(names)

    events = {name: timed_events(netns_cluster.nodes[name], log) for name, log in logs.items()}
    for name in ("a", "b"):
        assert [e for _, e in events[name]] == [
            NodeDown(node="c", incarnation=incarnations["c"], reason="timeout"),
            NodeUp(node="c", incarnation=incarnations["c"]),
        ]
    assert sorted((type(e).__name__, e.node) for _, e in events["c"]) == [
        ("NodeDown", "a"),
        ("NodeDown", "b"),
        ("NodeUp", "a"),
        ("NodeUp", "b"),
    ]
    for name, seen in events.items():
        downs = [t - cut_at for t, e in seen if isinstance(e, NodeDown)]
        ups = [t - heal_at for t, e in seen if isinstance(e, NodeUp)]
        assert all(EARLIEST_DOWN < d < TIMEOUT + 2 for d in downs), (name, downs)
        assert all(0 < u < 5 for u in ups), (name, ups)
        print(
            f"{name}: cut -> down {max(downs) * 1000:.0f} ms, heal -> up {max(ups) * 1000:.0f} ms"
        )


def test_five_nodes_split_three_two_and_heal(
    netns_lab: NetnsLab, netns_cluster: LocalCluster
) -> None:
    names = ["n1", "n2", "n3", "n4", "n5"]
    nodes = start_nodes(netns_cluster, netns_lab, names)
    netns_cluster.wait_formed(names)
    incarnations = {i.name: i.incarnation for i in nodes[0].status().nodes}
    majority, minority = ["n1", "n2", "n3"], ["n4", "n5"]

    timing = measure_partition(netns_lab, netns_cluster.nodes, [majority, minority])

    print(f"3|2 split: cut -> down {timing.cut_to_down_ms}, heal -> up {timing.heal_to_up_ms}")
    for name in names:
        other = minority if name in majority else majority
        seen = [e for _, e in timing.events[name]]
        downs = [e for e in seen if isinstance(e, NodeDown)]
        assert sorted(e.node for e in downs) == other, name  # its own side never went down
        assert all(e.reason == "timeout" for e in downs)
        assert sorted(e.node for e in seen if isinstance(e, NodeUp)) == other
        assert EARLIEST_DOWN * 1000 < timing.cut_to_down_ms[name] < (TIMEOUT + 2) * 1000
        assert 0 < timing.heal_to_up_ms[name] < 5000
    netns_cluster.wait_formed(names)
    for node in nodes:
        assert {i.name: i.incarnation for i in node.status().nodes} == incarnations


def test_a_lab_whose_owner_died_is_swept_and_a_live_ones_is_not(netns_lab: NetnsLab) -> None:
    """A run killed half-way leaves a lab; the next sweep deletes it, and only it."""
    script = (
        "import sys, time; from thespian_cluster.netns import NetnsLab\n"
        "lab = NetnsLab(); lab.add('x'); lab.split(['x'], []); print(lab.id, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        orphan = owner.stdout.readline().strip()
        assert orphan and (CLAIMS / orphan).exists()
        assert orphan not in sweep()  # its owner lives: a parallel run's lab is left alone
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
    netns_lab.add("y")
    assert orphan in sweep()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert orphan not in listed and orphan not in links
    assert not (CLAIMS / orphan).exists()
    assert netns_lab.slots["y"].namespace in listed  # ours (the caller's) is still there
