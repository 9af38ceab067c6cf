"""A real 3 | 2 network partition of five nodes, global writes on both sides, and the heal.

Nodes run in their own network namespaces (``thespian_cluster.netns``); the split
moves the minority to an island bridge, which the test process cannot reach, so the
minority side is written to by a client started inside its namespace.
"""

from __future__ import annotations

from typing import Any

import pytest
from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from thespian_cluster import ListNames, Register, Registered, RegistryError, Whereis
from thespian_cluster.global_messages import NameConflict
from thespian_cluster.local_cluster import ClusterNode, EventLog, LocalCluster, wait_for
from thespian_cluster.netns import NetnsLab, ask_status_in_namespace, register_in_namespace

pytestmark = pytest.mark.cluster

NAMES = ["n1", "n2", "n3", "n4", "n5"]
MAJORITY, MINORITY = NAMES[:3], NAMES[3:]


def start(cluster: LocalCluster, lab: NetnsLab, action: str, **more: Any) -> dict[str, ClusterNode]:
    settings: dict[str, Any] = {
        "cluster_nodes": NAMES,
        "split_brain_strategy": "winner_takes_all",
        "split_brain_minority_action": action,
        **more,
    }
    first = cluster.start(NAMES[0], **lab.place(NAMES[0]), **settings)
    nodes = {NAMES[0]: first}
    for name in NAMES[1:]:
        nodes[name] = cluster.start(name, leader=first, **lab.place(name), **settings)
    cluster.wait_formed(NAMES, timeout=20)
    return nodes


def split(lab: NetnsLab, nodes: dict[str, ClusterNode]) -> None:
    lab.split(MAJORITY, MINORITY)
    for name in MAJORITY:
        node = nodes[name]
        wait_for(lambda n=node: all(n.health_of(m) == "down" for m in MINORITY), 10, "split")
    inside = lab.slots["n4"].namespace
    n4 = nodes["n4"]

    def minority_sees_it() -> bool:
        status = ask_status_in_namespace(inside, n4.host, n4.port, cookie=n4.cookie)
        return all((status.by_name(m) or _DOWN).health == "down" for m in MAJORITY)

    wait_for(minority_sees_it, 15, "the minority to see the split")


class _Down:
    health = "down"


_DOWN: Any = _Down()


def on_minority(lab: NetnsLab, node: ClusterNode, name: str) -> dict[str, Any]:
    inside = lab.slots[node.name].namespace
    return register_in_namespace(inside, node.host, node.port, name, cookie=node.cookie)


def owners(node: ClusterNode) -> dict[str, str]:
    listed = node.ask(ListNames(scope="global"), 20)
    names = [str(i.name) for i in listed.names]
    assert len(names) == len(set(names)), f"a name listed twice on {node.name}"
    return {str(i.name): str(i.address) for i in listed.names}


def actor_at(ip: str, port: int) -> ActorAddress:
    return ActorAddress(TCPv4ActorAddress(ip, port, external=True))


@pytest.mark.parametrize("resolver", [None, "tests.cluster.resolvers:newest_claim_wins"])
def test_advisory_split_writes_on_both_sides_then_one_owner_and_the_loser_told(
    netns_lab: NetnsLab, netns_cluster: LocalCluster, resolver: str | None
) -> None:
    """The default rule keeps the winner side's claim; a ``merge_resolver`` that keeps
    the newest claim gives the name to the minority's later one."""
    more = {} if resolver is None else {"backend": {"merge_resolver": resolver}}
    nodes = start(netns_cluster, netns_lab, "advisory", **more)
    n2, n3, n4 = nodes["n2"], nodes["n3"], nodes["n4"]
    split(netns_lab, nodes)
    winner = n2.client().createActor(EventLog)

    def claim_on_majority(name: str, owner: Any) -> Any:
        return wait_for(
            lambda: _ok(n2.ask(Register(name=name, address=owner, scope="global"))),
            15,
            f"{name} on the majority",
        )

    claim_on_majority("contested", winner)
    claim_on_majority("majority-only", n3.client().createActor(EventLog))
    # The minority keeps writing under advisory: its side elects its own sequencer.
    loser = wait_for(
        lambda: _registered_there(on_minority(netns_lab, n4, "contested")), 20, "minority claim"
    )
    assert on_minority(netns_lab, nodes["n5"], "minority-only")["reply"] == "Registered"

    netns_lab.heal()
    netns_cluster.wait_formed(NAMES, timeout=20)

    def converged() -> bool:
        tables = [owners(nodes[name]) for name in NAMES]
        return all(t == tables[0] for t in tables) and {
            "contested",
            "majority-only",
            "minority-only",
        } <= set(tables[0])

    wait_for(converged, 20, "one table on every node")
    minority_claim = actor_at(*loser["actor"])
    if resolver is not None:  # the newest claim wins: the minority's, made after
        winner, loser_log, told_on, winner_node = minority_claim, winner, n2, "n4"
    else:  # the winner side's owner keeps the contested name
        loser_log, told_on, winner_node = minority_claim, n4, "n2"
    for name in NAMES:
        assert nodes[name].ask(Whereis(name="contested", scope="global")).address == winner
    wait_for(lambda: _conflicts(told_on, loser_log), 10, "the loser told")
    told = _conflicts(told_on, loser_log)
    assert told == [NameConflict(name="contested", kind="server", winner=winner, node=winner_node)]
    kept_on = n4 if resolver is not None else n2
    assert _conflicts(kept_on, winner) == []  # the winner is told nothing
    # Writes work everywhere again.
    assert isinstance(n4.ask(Register(name="after", address=winner, scope="global")), Registered)


def test_readonly_minority_refuses_claims_and_keeps_reading(
    netns_lab: NetnsLab, netns_cluster: LocalCluster
) -> None:
    nodes = start(netns_cluster, netns_lab, "readonly")
    n2, n4 = nodes["n2"], nodes["n4"]
    held = n4.client().createActor(EventLog)
    assert isinstance(n4.ask(Register(name="before", address=held, scope="global")), Registered)
    split(netns_lab, nodes)
    refused = wait_for(
        lambda: (r := on_minority(netns_lab, n4, "blocked"))["code"] == "minority_partition" and r,
        15,
        "the minority refusing claims",
    )
    assert refused["reply"] == "RegistryError"
    owner = n2.client().createActor(EventLog)
    wait_for(
        lambda: _ok(n2.ask(Register(name="while-split", address=owner, scope="global"))),
        15,
        "the majority accepting claims",
    )
    netns_lab.heal()
    netns_cluster.wait_formed(NAMES, timeout=20)
    for name in NAMES:
        node = nodes[name]
        wait_for(lambda n=node: {"before", "while-split"} <= set(owners(n)), 20, "converged")
    wait_for(
        lambda: _ok(n4.ask(Register(name="after-heal", address=held, scope="global"))),
        15,
        "the former minority writing again",
    )


def _ok(reply: Any) -> Any:
    if isinstance(reply, RegistryError) and reply.code in ("minority_partition", "timeout"):
        return None
    assert isinstance(reply, Registered), reply
    return reply


def _registered_there(result: dict[str, Any]) -> dict[str, Any] | None:
    if result["reply"] == "Registered":
        return result
    assert result["code"] in ("timeout", "unavailable", "minority_partition"), result
    return None


def _conflicts(node: ClusterNode, log: Any) -> list[Any]:
    events = node.client().ask(log, "events", 10) or []
    return [e for e in events if isinstance(e, NameConflict)]
