"""The global registry across real node processes (scope="global")."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.actors import HookedWorker, Worker
from thespian_cluster import (
    AlreadyRegistered,
    GroupMembers,
    GroupMembersReply,
    JoinedGroup,
    JoinGroup,
    LeaveGroup,
    LeftGroup,
    ListGroups,
    ListNames,
    MetaUpdated,
    Register,
    Registered,
    RegistryError,
    Unregister,
    Unregistered,
    UpdateMeta,
    Whereis,
    lookup,
)
from thespian_cluster.global_messages import GetGlobalStatus, GlobalStatus
from thespian_cluster.local_cluster import ClusterNode, LocalCluster
from thespian_cluster.supervisors.os_process import pid_listening_on

pytestmark = pytest.mark.cluster


def three(cluster: LocalCluster) -> tuple[ClusterNode, ClusterNode, ClusterNode]:
    a = cluster.start("a")
    b, c = cluster.start("b", leader=a), cluster.start("c", leader=a)
    cluster.wait_formed(["a", "b", "c"])
    return a, b, c


def where(node: ClusterNode, name: str, kind: str = "server") -> Any:
    return node.ask(Whereis(name=name, kind=kind, scope="global")).address


def seen_everywhere(nodes: list[ClusterNode], name: str, address: Any) -> bool:
    return all(
        where(n, name) == address
        and (lookup(name, scope="global", node_dir=n.node_dir) or _NONE).address == address
        for n in nodes
    )


class _NoEntry:
    address = None


_NONE: Any = _NoEntry()


def pid_of(address: Any) -> int:
    pid = pid_listening_on(address.addressDetails.sockname[1])
    assert pid is not None
    return pid


def test_a_global_name_is_found_on_every_node_and_refused_to_others(
    cluster: LocalCluster,
) -> None:
    a, b, c = three(cluster)
    weather = b.client().createActor(Worker)
    meta = {"capabilities": {"tools": {}}}
    reply = b.ask(Register(name="weather", address=weather, scope="global", meta=meta))
    assert isinstance(reply, Registered) and reply.node == "b"
    # read your writes on the origin, at once, by message and without one
    assert where(b, "weather") == weather
    assert lookup("weather", scope="global", node_dir=b.node_dir).address == weather  # type: ignore[union-attr]
    wait_for(lambda: seen_everywhere([a, b, c], "weather", weather), 5, "weather everywhere")
    found = c.ask(Whereis(name="weather", scope="global"))
    assert found.node == "b" and found.meta == meta
    # local scope is still each node's own
    assert c.ask(Whereis(name="weather")).address is None
    # uniqueness: another actor on another node is refused, with the owner
    rival = c.client().createActor(Worker)
    taken = c.ask(Register(name="weather", address=rival, scope="global"))
    assert isinstance(taken, AlreadyRegistered) and taken.owner == weather and taken.node == "b"
    listed = a.ask(ListNames(scope="global", kind="server"))
    assert [(i.name, i.node) for i in listed.names] == [("weather", "b")]
    tools = a.ask(GroupMembers(group="tool_servers", scope="global"))
    assert isinstance(tools, GroupMembersReply) and tools.addresses == [weather]
    # meta updates and unregistering are seen everywhere
    updated = b.ask(UpdateMeta(name="weather", scope="global", meta={"v": 2}))
    assert isinstance(updated, MetaUpdated)
    wait_for(lambda: c.ask(Whereis(name="weather", scope="global")).meta == {"v": 2}, 5, "meta")
    not_owner = c.ask(Unregister(name="weather", scope="global"))
    assert isinstance(not_owner, RegistryError) and not_owner.code == "not_owner"
    assert isinstance(b.ask(Unregister(name="weather", scope="global")), Unregistered)
    wait_for(lambda: seen_everywhere([a, b, c], "weather", None), 5, "weather gone everywhere")
    assert isinstance(c.ask(Register(name="weather", address=rival, scope="global")), Registered)


def test_nodes_racing_for_one_name_give_exactly_one_owner(cluster: LocalCluster) -> None:
    nodes = three(cluster)
    actors = [n.client().createActor(Worker) for n in nodes]
    for round_ in range(5):
        name = f"contested-{round_}"
        replies: list[Any] = [None] * 3
        start = threading.Barrier(3)

        def claim(
            i: int, name: str = name, replies: list[Any] = replies, start: Any = start
        ) -> None:
            start.wait()
            replies[i] = nodes[i].ask(Register(name=name, address=actors[i], scope="global"))

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [r for r in replies if isinstance(r, Registered)]
        losers = [r for r in replies if isinstance(r, AlreadyRegistered)]
        assert len(winners) == 1 and len(losers) == 2, replies
        owner = winners[0].address
        assert all(loser.owner == owner for loser in losers)
        wait_for(lambda n=name, o=owner: seen_everywhere(list(nodes), n, o), 5, f"{name} agreed")


def test_an_owner_death_frees_the_name_everywhere(cluster: LocalCluster) -> None:
    a, b, c = three(cluster)
    hooked = b.client().createActor(HookedWorker)
    plain = b.client().createActor(Worker)
    assert isinstance(b.ask(Register(name="hooked", address=hooked, scope="global")), Registered)
    assert isinstance(b.ask(Register(name="plain", address=plain, scope="global")), Registered)
    assert isinstance(b.ask(JoinGroup(group="pool", address=plain, scope="global")), JoinedGroup)
    wait_for(lambda: where(a, "plain") == plain and where(a, "hooked") == hooked, 5, "names")
    os.kill(pid_of(plain), signal.SIGKILL)  # found by RegistryDist's liveness probes
    b.client().tell(hooked, __import__("thespian.actors").actors.ActorExitRequest())  # exit hook
    for node in (a, b, c):
        wait_for(lambda n=node: where(n, "plain") is None, 5, f"plain freed on {node.name}")
        wait_for(lambda n=node: where(n, "hooked") is None, 5, f"hooked freed on {node.name}")
    members = c.ask(GroupMembers(group="pool", scope="global"))
    assert members.members == []
    other = c.client().createActor(Worker)
    assert isinstance(c.ask(Register(name="plain", address=other, scope="global")), Registered)


def test_a_dead_node_s_names_and_members_are_purged_on_every_survivor(
    cluster: LocalCluster,
) -> None:
    a, b, c = three(cluster)
    on_c = [c.client().createActor(Worker) for _ in range(3)]
    for index, actor in enumerate(on_c):
        assert isinstance(
            c.ask(Register(name=f"c{index}", address=actor, scope="global")), Registered
        )
    c.ask(JoinGroup(group="workers", address=on_c[0], scope="global"))
    keep = b.client().createActor(Worker)
    b.ask(Register(name="keep", address=keep, scope="global"))
    b.ask(JoinGroup(group="workers", address=keep, scope="global"))
    wait_for(lambda: where(a, "c2") == on_c[2] and where(a, "keep") == keep, 5, "replicated")
    c.kill()
    for node in (a, b):
        wait_for(lambda n=node: where(n, "c0") is None, 5, f"c's names purged on {node.name}")
        assert [where(node, f"c{i}") for i in range(3)] == [None, None, None]
        assert where(node, "keep") == keep
        group = node.ask(GroupMembers(group="workers", scope="global"))
        assert group.addresses == [keep]


def test_killing_the_sequencer_loses_no_acknowledged_registration(
    cluster: LocalCluster,
) -> None:
    a, b, c = three(cluster)
    assert a.cluster_nodes().leader == "a"  # a sequences
    actors = {n.name: n.client().createActor(Worker) for n in (b, c)}
    acknowledged: dict[str, Any] = {}
    stop = threading.Event()

    def stream(node: ClusterNode) -> None:
        i = 0
        while not stop.is_set() and i < 400:
            name = f"{node.name}-{i}"
            reply = node.ask(Register(name=name, address=actors[node.name], scope="global"))
            if isinstance(reply, Registered):
                acknowledged[name] = reply.address
            i += 1

    threads = [threading.Thread(target=stream, args=(n,)) for n in (b, c)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) >= 40, 20, "a stream of registrations")
    a.kill()
    wait_for(lambda: len(acknowledged) >= 120, 30, "registrations accepted again")
    stop.set()
    for thread in threads:
        thread.join()
    assert b.cluster_nodes().leader == "b"
    for node in (b, c):
        listed = node.ask(ListNames(scope="global"), 30)
        holders: dict[str, Any] = {}
        for info in listed.names:
            assert info.name not in holders, f"{info.name} listed twice on {node.name}"
            holders[info.name] = info.address
        missing = [name for name in acknowledged if name not in holders]
        assert not missing, f"{len(missing)} acknowledged names lost on {node.name}: {missing[:5]}"


def test_a_killed_registry_dist_restarts_and_loses_nothing(cluster: LocalCluster) -> None:
    a, b, c = three(cluster)
    actors = [b.client().createActor(Worker) for _ in range(5)]
    for index, actor in enumerate(actors):
        assert isinstance(
            b.ask(Register(name=f"b{index}", address=actor, scope="global")), Registered
        )
    wait_for(lambda: where(a, "b4") == actors[4], 5, "replicated")
    for victim in (b, a):  # a member's, then the sequencer's
        dist = cluster_child(victim, "registry_dist")
        os.kill(pid_of(dist), signal.SIGKILL)
        wait_for(lambda v=victim, d=dist: cluster_child(v, "registry_dist") != d, 10, "restart")
        for node in (a, b, c):
            for index, actor in enumerate(actors):
                wait_for(lambda n=node, i=index, x=actor: where(n, f"b{i}") == x, 10, "kept")
        fresh = victim.client().createActor(Worker)
        name = f"after-{victim.name}"
        reply = wait_for(
            lambda n=name, f=fresh, v=victim: _registered(v, n, f), 10, "claims accepted again"
        )
        assert reply.node == victim.name
        # Acknowledged means applied: on every node (a restarted RegistryDist that
        # counted its op ids from 1 again got the decisions of its first life's writes).
        for node in (a, b, c):
            wait_for(lambda n=node, x=name, f=fresh: where(n, x) == f, 10, f"{name} on {node.name}")
        taken = c.ask(Register(name="b0", address=fresh, scope="global"))
        assert isinstance(taken, AlreadyRegistered) and taken.owner == actors[0]


def test_groups_across_nodes(cluster: LocalCluster) -> None:
    a, b, c = three(cluster)
    members = {n.name: n.client().createActor(Worker) for n in (a, b, c)}
    for node in (a, b, c):
        reply = node.ask(JoinGroup(group="pool", address=members[node.name], scope="global"))
        assert isinstance(reply, JoinedGroup)
    expected = sorted(str(m) for m in members.values())
    for node in (a, b, c):
        wait_for(
            lambda n=node: (
                sorted(str(x) for x in n.ask(GroupMembers(group="pool", scope="global")).addresses)
                == expected
            ),
            5,
            f"pool complete on {node.name}",
        )
    mine = b.ask(GroupMembers(group="pool", scope="global", local_only=True))
    assert mine.addresses == [members["b"]]
    assert "pool" in a.ask(ListGroups(scope="global")).groups
    left = b.ask(LeaveGroup(group="pool", address=members["b"], scope="global"))
    assert isinstance(left, LeftGroup) and left.was_member
    wait_for(lambda: len(c.ask(GroupMembers(group="pool", scope="global")).members) == 2, 5, "left")


def test_bad_global_input_is_refused_and_loses_nothing(cluster: LocalCluster) -> None:
    a = cluster.start("a")
    actor = a.client().createActor(Worker)
    assert isinstance(a.ask(Register(name="ok", address=actor, scope="global")), Registered)
    bad = Register.model_construct(
        request_id="r1", name=None, address=actor, kind="server", scope="global", meta={}
    )
    refused = a.ask(bad)
    assert isinstance(refused, RegistryError) and refused.code == "invalid_request"
    junk = Register.model_construct(
        request_id="r2", name="x", address="nowhere", kind="server", scope="global", meta={}
    )
    assert a.ask(junk).code == "invalid_request"
    assert [i.name for i in a.ask(ListNames(scope="global")).names] == ["ok"]


def cluster_child(node: ClusterNode, child_id: str) -> Any:
    from thespian_cluster.node import cluster_agent, root_address

    system = node.client()
    return cluster_agent(system, root_address(system), child_id)


def _registered(node: ClusterNode, name: str, address: Any) -> Registered | None:
    reply = node.ask(Register(name=name, address=address, scope="global"))
    return reply if isinstance(reply, Registered) else None


def _links(node: ClusterNode) -> dict[str, int]:
    status = node.ask(GetGlobalStatus())
    assert isinstance(status, GlobalStatus), status
    return status.peer_links


@pytest.mark.parametrize("links", [True, False], ids=["peer links", "thespian only"])
def test_global_writes_travel_on_peer_links_and_find_them_again_after_a_restart(
    cluster: LocalCluster, links: bool
) -> None:
    a = cluster.start("a", global_peer_links=links)
    b = cluster.start("b", leader=a, global_peer_links=links)
    c = cluster.start("c", leader=a, global_peer_links=links)
    cluster.wait_formed(["a", "b", "c"])
    owner = b.client().createActor(Worker)
    during: list[Any] = []
    for life in range(3):
        for index in range(20):  # right after a restart, claims may wait to be accepted
            name = f"life{life}-{index}"
            wait_for(lambda n=name: _claimed(b, n, owner), 10, f"{name} registered")
        wait_for(lambda x=life: seen_everywhere([a, b, c], f"life{x}-19", owner), 10, "agreed")
        if links:
            # b's writes went to the sequencer on a link, a's decisions and deltas came
            # back and went to c on links (b's counters are its RegistryDist's: a
            # restarted one found a's port again, and a found the new one's).
            assert _links(b)["sent"] >= 15 and _links(b)["received"] >= 15, _links(b)
            assert _links(a)["up"] == 2 and _links(c)["received"] >= 15, _links(a)
        else:
            assert _links(a) == _links(b) == {}  # no link exists: Thespian carried all
        dist = cluster_child(b, "registry_dist")
        os.kill(pid_of(dist), signal.SIGKILL)
        # Asked at once, while the Registry still forwards to the dead one: answered,
        # by its successor or with an error, never left to time out.
        reply = b.ask(Register(name=f"restart{life}", address=owner, scope="global"), 10)
        assert isinstance(reply, Registered | RegistryError), reply
        during.append(reply)
        wait_for(lambda d=dist: cluster_child(b, "registry_dist") != d, 10, "restart")
        if isinstance(reply, Registered):
            wait_for(lambda x=life: seen_everywhere([a, c], f"restart{x}", owner), 10, "kept")
    # A restart takes ~30-100 ms; the Registry waits up to 2 s for the successor.
    assert any(isinstance(r, Registered) for r in during), during


def _claimed(node: ClusterNode, name: str, owner: Any) -> bool:
    """Registered by ``owner`` now, or by an earlier try that was answered late."""
    reply = node.ask(Register(name=name, address=owner, scope="global"))
    return isinstance(reply, Registered) or (
        isinstance(reply, AlreadyRegistered) and reply.owner == owner
    )
