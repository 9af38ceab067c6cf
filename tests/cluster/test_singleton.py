"""Cluster singletons on real nodes: one instance, moved when its node dies, restarted by
its restart type; the probe's log (thespian_cluster.testing.singletons) says exactly
when each instance ran, so "never two at once" is checked over the whole test."""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from pathlib import Path

import pytest

from tests.integration._cli import run_cli
from thespian_cluster import (
    ChildTerminated,
    ListNames,
    NameUnregistered,
    TerminateChild,
    Whereis,
    ask,
)
from thespian_cluster.local_cluster import ClusterNode, LocalCluster, wait_for
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.testing.singletons import (
    Declared,
    answering,
    declare,
    move,
    one_instance,
    overlaps,
    probe_spec,
    runs,
)

pytestmark = pytest.mark.cluster

NAMES = ["a", "b", "c"]
DEFAULTS = ClusterSettings.build()


def start_three(cluster: LocalCluster) -> dict[str, ClusterNode]:
    first = cluster.start("a", cluster_nodes=NAMES)
    for name in NAMES[1:]:
        cluster.start(name, leader=first, cluster_nodes=NAMES)
    cluster.wait_formed(NAMES)
    return dict(cluster.nodes)


def declared_on_three(
    cluster: LocalCluster, log: Path
) -> tuple[dict[str, ClusterNode], dict[str, Declared]]:
    """Three nodes, each declaring the probe singleton (logging to ``log``)."""
    nodes = start_three(cluster)
    return nodes, {n: declare(node, [probe_spec(log)]) for n, node in nodes.items()}


def test_one_instance_runs_and_moves_within_detection_plus_a_second_after_sigkill(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    log = tmp_path / "instances.log"
    nodes, declared = declared_on_three(cluster, log)
    holder, _ = one_instance(list(nodes.values()))
    roles = {n: d.status() for n, d in declared.items()}
    assert {n: s.role for n, s in roles.items() if s} == {
        n: ("running" if n == holder else "standby") for n in NAMES
    }
    assert all(s is not None and s.holder_node == holder for s in roles.values())
    # A malformed event (its sender may run other code) is dropped: the holder keeps
    # its instance; a status request after it proves the manager took it and went on.
    _, pid = one_instance(list(nodes.values()))
    junk = NameUnregistered.model_construct(
        scope="global",
        name="coord",
        kind="singleton",
        address=None,
        node=5,
        reason=None,
        version="x",
        seq=0,
    )
    nodes[holder].client().tell(declared[holder].managers["coord"], junk)
    after = declared[holder].status()
    assert after is not None and after.role == "running" and after.last_stop is None, after
    assert one_instance(list(nodes.values())) == (holder, pid)
    locks = nodes[holder].ask(ListNames(kind="singleton", scope="global")).names
    assert [(i.name, i.node, i.meta) for i in locks] == [("coord", holder, {"state": "running"})]
    # `status` lists the singletons and where they run, as JSON and for a person.
    other = nodes[next(n for n in NAMES if n != holder)]
    shown = run_cli("status", "--json", "--port", str(other.port), cookie=other.cookie)
    assert json.loads(shown.stdout)["singletons"] == [
        {"name": "coord", "node": holder, "state": "running"}
    ]
    table = run_cli("status", "--port", str(other.port), cookie=other.cookie).stdout
    assert "cluster singletons" in table and "coord" in table.split("cluster singletons")[1]

    moves = []
    for _ in range(2):
        moved = move(nodes, holder, nodes[holder].kill)
        assert moved.to[0] != holder
        assert moved.answered <= moved.detected + 1.0, moved
        moves.append((moved.answered, moved.detected))
        # The killed node comes back (a new incarnation) and stands by.
        survivor = nodes[moved.to[0]]
        back = cluster.start(holder, leader=survivor, cluster_nodes=NAMES)
        nodes[holder] = back
        cluster.wait_formed(NAMES)
        declared[holder] = declare(back, [probe_spec(log)])
        wait_for(
            lambda d=declared[holder]: (s := d.status()) is not None and s.role == "standby",
            10,
            "the restarted node to stand by",
        )
        assert one_instance(list(nodes.values())) == moved.to
        holder = moved.to[0]
    print("moves (kill -> new instance answers, kill -> detected), s:", moves)
    print("median move", statistics.median(m for m, _ in moves))
    assert overlaps(runs(log)) == []


def test_restart_types_and_intensity_as_in_otp(cluster: LocalCluster, tmp_path: Path) -> None:
    log = tmp_path / "instances.log"
    node = cluster.start("a", cluster_nodes=["a"])
    specs = [
        probe_spec(log, "perm", "permanent"),
        probe_spec(log, "trans", "transient"),
        probe_spec(log, "temp", "temporary"),
    ]
    declared = declare(node, specs, max_restarts=2, max_seconds=30)
    client = node.client()

    def instance(name: str, not_: object = None) -> object:
        """The instance registered as ``name`` (other than ``not_``), once it answers."""

        def found() -> object:
            address = node.ask(Whereis(name=name, scope="global")).address
            if address is None or address == not_ or client.ask(address, "who", 1) is None:
                return None
            return address

        return wait_for(found, 10, f"{name} up")

    # permanent: restarted after a crash, on this node, the name following it.
    first = instance("perm")
    client.tell(first, "crash")
    wait_for(
        lambda: (s := declared.status("perm")) is not None and s.restarts == 1 and s.instance,
        10,
        "perm restarted",
    )
    instance("perm", not_=first)

    # transient: a crash restarts it; a normal exit finishes it, cluster-wide.
    crashed = instance("trans")
    client.tell(crashed, "crash")
    client.tell(instance("trans", not_=crashed), "exit_normally")
    wait_for(lambda: (s := declared.status("trans")) and s.role == "finished", 10, "trans done")
    assert declared.status("trans").restarts == 1  # type: ignore[union-attr]
    assert node.ask(Whereis(name="trans", scope="global")).address is None
    # The manager marks the lock finished (an UpdateMeta) as it says so: wait for it.
    wait_for(
        lambda: (
            node.ask(Whereis(name="trans", kind="singleton", scope="global")).meta
            == {"state": "finished"}
        ),
        10,
        "the lock marked finished",
    )

    # temporary: never restarted, even after a crash.
    client.tell(instance("temp"), "crash")
    wait_for(lambda: (s := declared.status("temp")) and s.role == "finished", 10, "temp done")
    assert declared.status("temp").restarts == 0  # type: ignore[union-attr]

    # intensity: max_restarts=2 in 30 s; perm has used one. Two more crashes exceed it:
    # its manager escalates (exits), the supervisor restarts the manager, which claims
    # the lock again and starts a fresh instance.
    old_manager = declared.managers["perm"]
    victim = instance("perm")
    client.tell(victim, "crash")
    client.tell(instance("perm", not_=victim), "crash")
    children = wait_for(
        lambda: next(
            (c for c in _children(declared) if c.id == "perm" and c.address != old_manager), None
        ),
        15,
        "a new manager for perm",
    )
    assert children.restart_count >= 1
    wait_for(lambda: answering(node, "perm"), 10, "the new manager's instance to answer")
    assert len(runs(log)) == 7  # perm x4, trans x2, temp x1: each a process of its own


def _children(declared: Declared) -> list:
    from thespian_cluster import ChildrenReply, WhichChildren, ask

    reply = ask(declared.node.client(), declared.supervisor, WhichChildren(), 5)
    return reply.children if isinstance(reply, ChildrenReply) else []


def test_a_paused_holder_stops_its_instance_when_it_resumes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    log = tmp_path / "instances.log"
    nodes, declared = declared_on_three(cluster, log)
    holder, stale_pid = one_instance(list(nodes.values()))
    survivors = [node for n, node in nodes.items() if n != holder]
    nodes[holder].pause()
    paused = time.monotonic()
    new_holder, _ = one_instance(survivors, timeout=DEFAULTS.cluster_heartbeat_timeout + 10)
    moved = time.monotonic() - paused
    assert new_holder != holder
    assert moved <= DEFAULTS.cluster_heartbeat_timeout + 1.0, moved
    nodes[holder].resume()
    resumed = time.monotonic()
    wait_for(
        lambda: (s := declared[holder].status()) is not None and s.instance is None,
        10,
        "the resumed holder to stop its stale instance",
    )
    status = declared[holder].status()
    assert status is not None and "paused" in (status.last_stop or ""), status
    one_instance(list(nodes.values()))
    stale = next(r for r in runs(log) if r.pid == stale_pid)
    print(f"stale instance ran {stale.last - resumed:.3f} s after the resume")
    assert stale.last - resumed < 0.5
    # Apart from that stale tail, the instances never overlapped.
    others = [r for r in runs(log) if r.pid != stale_pid]
    assert overlaps(others) == []


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def test_a_stopped_or_killed_manager_never_leaves_two_instances(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """TerminateChild of the holder's manager frees the lock only once its instance has
    exited; a manager SIGKILLed leaves its instance running (Thespian stops children
    only on a graceful exit), and the next holder makes that orphan go before its own
    instance takes the name."""
    log = tmp_path / "instances.log"
    nodes, declared = declared_on_three(cluster, log)
    holder, pid = one_instance(list(nodes.values()))
    client = nodes[holder].client()
    stopped = ask(client, declared[holder].supervisor, TerminateChild(child_id="coord"), 15)
    assert isinstance(stopped, ChildTerminated)
    elsewhere, _ = one_instance(list(nodes.values()))
    assert elsewhere != holder
    old = next(r for r in runs(log) if r.pid == pid)
    assert overlaps(runs(log)) == [], (old, runs(log))

    # SIGKILL the new holder's manager (the instance's parent process).
    _, orphan = one_instance(list(nodes.values()))
    os.kill(_ppid(orphan), signal.SIGKILL)

    def orphan_gone_and_one_runs() -> tuple[str, int] | None:
        now = time.monotonic()
        alive = [r for r in runs(log) if r.last > now - 0.3]
        found = one_instance(list(nodes.values()))
        return found if [r.pid for r in alive] == [found[1]] != [orphan] else None

    found = wait_for(orphan_gone_and_one_runs, 20, "the orphan gone and one instance running")
    assert found[1] != orphan
