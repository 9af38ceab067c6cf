"""Global names and memberships live on the node that hosts their actor, whichever
node's Registry received the claim (``thespian_cluster.core.homes``)."""

from __future__ import annotations

from typing import Any

import pytest
from thespian.actors import ActorExitRequest

from tests.cluster.test_global_registry import three
from tests.cluster.test_partitions_netns import start_nodes
from tests.conftest import wait_for
from tests.integration.actors import Worker
from thespian_cluster import (
    GroupMembers,
    JoinedGroup,
    JoinGroup,
    Register,
    Registered,
    RegisteredMany,
    RegisterMany,
    RegistryError,
    Whereis,
)
from thespian_cluster.actors.liveness import refused
from thespian_cluster.local_cluster import ClusterNode, LocalCluster
from thespian_cluster.netns import NetnsLab

pytestmark = pytest.mark.cluster


def homes_seen_by(node: ClusterNode, name: str, group: str) -> tuple[Any, Any]:
    """(owner's (address, node), members' [(address, node)]) of ``name`` and ``group``
    in ``node``'s replica."""
    found = node.ask(Whereis(name=name, scope="global"))
    members = node.ask(GroupMembers(group=group, scope="global")).members
    return (found.address, found.node), [(m.address, m.node) for m in members]


def claim_through(node: ClusterNode, actor: Any, name: str, group: str) -> None:
    registered = node.ask(Register(name=name, address=actor, scope="global"))
    assert isinstance(registered, Registered), registered
    assert isinstance(node.ask(JoinGroup(group=group, address=actor, scope="global")), JoinedGroup)


def test_a_claim_through_another_node_survives_that_nodes_death(cluster: LocalCluster) -> None:
    a, b, c = three(cluster)
    on_b = b.client().createActor(Worker)
    on_c = c.client().createActor(Worker)
    claim_through(c, on_b, "weather", "tools")  # b hosts it; c's Registry got the claim
    claim_through(c, on_c, "local-to-c", "c-tools")  # the control: c hosts it

    def owners(node: ClusterNode) -> tuple[Any, list[Any]]:
        (owner, _), members = homes_seen_by(node, "weather", "tools")
        return owner, [address for address, _ in members]

    wait_for(lambda: owners(a) == (on_b, [on_b]), 10, "the claims on a")

    c.kill()  # SIGKILL c's whole process group
    # c's own names go (the leader purges a dead node's names) ...
    gone = ((None, None), [])
    wait_for(lambda: homes_seen_by(a, "local-to-c", "c-tools") == gone, 15, "c's names purged")
    # ... but not b's actor's, which lives on b: they were never c's.
    for node in (a, b):
        assert owners(node) == (on_b, [on_b]), f"purged on {node.name} with c"
        assert homes_seen_by(node, "weather", "tools") == ((on_b, "b"), [(on_b, "b")])
    assert b.client().ask(on_b, "info", 5) is not None  # and the actor is alive


def test_a_claim_through_another_node_goes_with_its_hosts_death(cluster: LocalCluster) -> None:
    a, b, c = three(cluster)
    on_b = b.client().createActor(Worker)
    claim_through(c, on_b, "weather", "tools")
    # Attributed to b, the node that watches the actor, on every node:
    homed_on_b = ((on_b, "b"), [(on_b, "b")])
    for node in (a, c):
        wait_for(lambda n=node: homes_seen_by(n, "weather", "tools") == homed_on_b, 10, node.name)

    b.kill()
    gone = ((None, None), [])
    for node in (a, c):
        wait_for(lambda n=node: homes_seen_by(n, "weather", "tools") == gone, 15, node.name)


def test_a_batch_through_one_node_is_homed_actor_by_actor(cluster: LocalCluster) -> None:
    a, b, c = three(cluster)
    on_a, on_b, on_c = (n.client().createActor(Worker) for n in (a, b, c))
    batch = RegisterMany(
        scope="global",
        registrations=[
            Register(name="on-a", address=on_a),
            Register(name="on-b", address=on_b),
            Register(name="on-c", address=on_c),
            Register(name="on-b-too", address=on_b),
        ],
    )
    reply = c.ask(batch)
    assert isinstance(reply, RegisteredMany) and reply.request_id == batch.request_id
    assert [(r.request_id, type(r), r.node) for r in reply.results] == [
        (item.request_id, Registered, node)
        for item, node in zip(batch.registrations, "abcb", strict=True)
    ]
    wait_for(
        lambda: (
            [a.ask(Whereis(name=n, scope="global")).node for n in ("on-a", "on-b", "on-c")]
            == ["a", "b", "c"]
        ),
        10,
        "homes on a",
    )


def test_a_claim_for_an_actor_no_node_hosts_is_refused(cluster: LocalCluster) -> None:
    a, b, c = three(cluster)
    dead = b.client().createActor(Worker)
    b.client().tell(dead, ActorExitRequest())
    wait_for(lambda: refused([dead]), 10, "the actor's port closed")
    reply = c.ask(Register(name="ghost", address=dead, scope="global"))
    assert isinstance(reply, RegistryError) and reply.code == "unknown_home", reply
    assert a.ask(Whereis(name="ghost", scope="global")).address is None


def test_a_claim_through_another_node_goes_when_its_host_is_cut_off(
    netns_lab: NetnsLab, netns_cluster: LocalCluster
) -> None:
    # One IP per node, as on separate hosts: the home is known by the IP, no probe.
    a, b, c = start_nodes(netns_cluster, netns_lab, ["a", "b", "c"])
    netns_cluster.wait_formed(["a", "b", "c"])
    on_b = b.client().createActor(Worker)
    claim_through(c, on_b, "weather", "tools")
    wait_for(lambda: homes_seen_by(a, "weather", "tools")[0][0] == on_b, 10, "the claim on a")

    netns_lab.cut("b")  # b's host is gone: a probe of its actor's port gets no answer at all
    gone = ((None, None), [])
    for node in (a, c):  # b is purged once seen down: its actor's names with it
        wait_for(lambda n=node: homes_seen_by(n, "weather", "tools") == gone, 15, node.name)
