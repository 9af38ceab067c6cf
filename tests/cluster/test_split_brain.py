"""Split-brain detection and decisions across real node processes (issue 12).

A partition is simulated here by SIGSTOP of a node's process group (:func:`cut`)
and healed by SIGCONT (:func:`heal`): to the other nodes a stopped node is exactly a
node behind a network cut (heartbeats time out, its port still accepts). The tests
only use these two functions to cut and heal, so they can be re-run over network
namespaces (a link set down and up) by replacing them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from thespian_cluster import RegistryError
from thespian_cluster.cluster_messages import (
    ClusterNodes,
    ForceResolution,
    GetPartitionStatus,
    PartitionDetected,
    PartitionHealed,
    PartitionStatus,
    SubscribePartitionEvents,
    WritableChanged,
)
from thespian_cluster.local_cluster import ClusterNode, EventLog, LocalCluster
from thespian_cluster.messages import ChildrenReply, WhichChildren
from thespian_cluster.node import cluster_agent, root_address
from thespian_cluster.supervisors.os_process import pid_listening_on

pytestmark = pytest.mark.cluster

#: Fast failure detection: a cut node is down after 1 s.
FAST = {"cluster_heartbeat_interval": 0.1, "cluster_heartbeat_timeout": 1.0}


def cut(node: ClusterNode) -> None:
    """Cut ``node`` off from every other node."""
    node.pause()


def heal(node: ClusterNode) -> None:
    node.resume()


def detector(node: ClusterNode) -> Any:
    system = node.client()
    return cluster_agent(system, root_address(system), "split_brain_detector")


def ask(node: ClusterNode, request: Any) -> Any:
    return node.client().ask(detector(node), request, 10)


def status(node: ClusterNode) -> PartitionStatus:
    reply = ask(node, GetPartitionStatus())
    assert isinstance(reply, PartitionStatus), reply
    return reply


def subscribe(node: ClusterNode) -> Any:
    log = node.client().createActor(EventLog)
    reply = ask(node, SubscribePartitionEvents(subscriber=log))
    assert isinstance(reply, PartitionStatus)  # the verdict to start from
    return log


def partition_events(node: ClusterNode, log: Any) -> list[Any]:
    found = node.client().ask(log, "events", 10)
    assert isinstance(found, list)
    return found


def three(cluster: LocalCluster) -> tuple[ClusterNode, ClusterNode, ClusterNode]:
    a = cluster.start("a")
    b, c = cluster.start("b", leader=a), cluster.start("c", leader=a)
    cluster.wait_formed(["a", "b", "c"])
    for node in (a, b, c):  # every detector has decided on the whole cluster
        wait_for(lambda n=node: status(n).reachable == ["a", "b", "c"], 10, "a whole view")
    return a, b, c


@pytest.fixture
def majority(tmp_path: Path) -> Any:
    with LocalCluster(tmp_path, cluster_nodes=["a", "b", "c"], **FAST) as running:
        yield running


def test_the_majority_keeps_winning_and_a_heal_is_announced_once(majority: LocalCluster) -> None:
    a, b, c = three(majority)
    before = status(a)
    assert before.partition_detected is False and before.winner and before.writable
    assert (before.strategy, before.master_node) == ("winner_takes_all", None)
    assert before.action == "none"
    assert before.last_check is not None and before.unreachable == [] and before.dead == []
    log = subscribe(a)
    cut(c)
    try:
        for side in (a, b):
            wait_for(lambda s=side: status(s).unreachable == ["c"], 5, "c unreachable")
            now = status(side)
            assert now.partition_detected and now.winner and now.writable
            assert now.reachable == ["a", "b"] and now.action == "none"
            assert "majority: 2 of 3" in now.reason
        forced = ask(a, ForceResolution())
        assert isinstance(forced, PartitionStatus) and forced.unreachable == ["c"]
        assert forced.last_check is not None and forced.last_check >= before.last_check
    finally:
        heal(c)
    wait_for(lambda: not status(a).partition_detected, 5, "the heal on a")
    ask(a, ForceResolution())  # one more decision: still no second event
    assert partition_events(a, log) == [
        PartitionDetected(
            node="a", unreachable=["c"], winner=True, action="none", reason=forced.reason
        ),
        PartitionHealed(node="a", reachable=["a", "b", "c"], was_winner=True),
    ]
    log_text = (majority.work_dir / "data").glob("a-*/node.log")
    text = next(log_text).read_text()
    assert text.count("partition detected: c unreachable") == 1
    assert text.count("partition healed") == 1


def test_without_the_configured_master_the_others_go_readonly_and_back(tmp_path: Path) -> None:
    settings = {"split_brain_strategy": "configured_master", "master_node": "c", **FAST}
    with LocalCluster(tmp_path, cluster_nodes=["a", "b", "c"], **settings) as cluster:
        a, b, c = three(cluster)
        log = subscribe(b)
        cut(c)
        try:
            for side in (a, b):
                wait_for(lambda s=side: status(s).partition_detected, 5, "the partition")
                now = status(side)
                assert not now.winner and not now.writable and now.action == "readonly"
                assert now.master_node == "c" and "'c' is unreachable" in now.reason
        finally:
            heal(c)
        wait_for(lambda: status(b).writable, 5, "b writable again")

        # The detector answers the status and tells the log by two different paths: the
        # reply can arrive before the event does.
        def four_events() -> list[Any] | None:
            events = partition_events(b, log)
            return events if len(events) >= 4 else None

        seen = wait_for(four_events, 5, "the heal's events")
        assert [type(e) for e in seen] == [
            PartitionDetected,
            WritableChanged,
            PartitionHealed,
            WritableChanged,
        ]
        assert [e.writable for e in seen if isinstance(e, WritableChanged)] == [False, True]
        assert seen[2] == PartitionHealed(node="b", reachable=["a", "b", "c"], was_winner=False)


def test_a_minority_under_shutdown_stops_its_cluster_supervisor(tmp_path: Path) -> None:
    settings = {"split_brain_minority_action": "shutdown", **FAST}
    with LocalCluster(tmp_path, cluster_nodes=["a", "b", "c"], **settings) as cluster:
        a, b, c = three(cluster)
        cut(b)
        cut(c)
        try:
            system = a.client()

            def cluster_stopped() -> bool:
                tree = system.ask(root_address(system), WhichChildren(), 10)
                assert isinstance(tree, ChildrenReply)
                return not tree.by_id("cluster").running

            wait_for(cluster_stopped, 10, "a's cluster supervisor to stop")
        finally:
            heal(b)
            heal(c)
        text = next((tmp_path / "data").glob("a-*/node.log")).read_text()
        assert text.count("stops its cluster supervisor (split_brain_minority_action") == 1
        assert "lost a partition (minority: 1 of 3" in text
        # b and c, resumed, are the majority (a's cluster is gone): b saw a and c silent
        # for a moment when it woke up, and did not stop for it.
        wait_for(lambda: status(b).winner and status(c).winner, 10, "b and c winners")
        b_log = next((tmp_path / "data").glob("b-*/node.log")).read_text()
        assert "stops its cluster supervisor (split" not in b_log


def test_requests_bad_input_and_a_detector_restart(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, cluster_nodes=["a", "b"], **FAST) as cluster:
        a = cluster.start("a")
        b = cluster.start("b", leader=a)
        cluster.wait_formed(["a", "b"])
        wait_for(lambda: status(a).reachable == ["a", "b"], 10, "a whole view")
        bad = SubscribePartitionEvents.model_construct(request_id="r1", subscriber="no actor")
        refused = ask(a, bad)
        assert isinstance(refused, RegistryError) and refused.code == "invalid_request"
        assert refused.request_id == "r1"
        odd = ask(a, ClusterNodes())
        assert isinstance(odd, RegistryError) and odd.code == "unknown_request"

        log = subscribe(a)
        old = detector(a)
        os.kill(_pid_of(old), signal.SIGKILL)
        wait_for(lambda: detector(a) != old, 10, "a new detector on a")
        again = status(a)
        assert again.reachable == ["a", "b"] and again.winner and not again.partition_detected
        assert partition_events(a, log) == []  # nothing changed: no event
        # The subscription survived the restart; 1 of 2 is a tie that a (smallest) wins.
        cut(b)
        try:
            wait_for(lambda: partition_events(a, log), 5, "PartitionDetected after the restart")
            event = partition_events(a, log)[0]
            assert isinstance(event, PartitionDetected) and event.unreachable == ["b"]
            assert event.winner and "tie" in event.reason
        finally:
            heal(b)


def _pid_of(address: Any) -> int:
    pid = pid_listening_on(address.addressDetails.sockname[1])
    assert pid is not None
    return pid
