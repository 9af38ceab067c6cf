"""``make demo``: the whole product on three local nodes, as a timeline with checks.

Three nodes (``alpha``, ``beta``, ``gamma``) start on 127.0.0.1, each its own
``thespian-cluster start`` process (:class:`~thespian_cluster.local_cluster.LocalCluster`).
Then, step by step, each with its timing:

1. the nodes join and see each other;
2. MCP-style servers and transports register globally on different nodes and are
   found from every node, by ``Whereis`` (a message) and by ``lookup()`` (no message);
3. the capability groups (``tool_servers``, ...) span the nodes;
4. a supervised worker registered as ``worker`` (``RegisterAs(scope="global")``) is
   SIGKILLed; its supervisor restarts it and the name follows the new process;
5. a cluster singleton ``coordinator`` (``placement="cluster"``) is declared on every
   node and runs on one of them, ``gamma``;
6. node ``gamma`` is SIGKILLed: every survivor reports it down, the coordinator starts
   on another node (timed from the kill), and gamma's names vanish; then it comes back
   as a new incarnation;
7. the node that sequences global claims is SIGKILLed: another takes over and claims
   succeed again;
8. a node hangs (SIGSTOP): suspect, then down, and the partition status under the
   default strategy; SIGCONT heals it;
9. everything is stopped and no process is left.

Every step checks what it shows. A step that does not behave says what it expected
and what happened, and the demo exits 1; it exits 0 only when every step passed.
``thespian-cluster demo --keep`` leaves the cluster running and prints how to stop it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from thespian.actors import Actor

from thespian_cluster.cluster_messages import NodeStatusReply
from thespian_cluster.core.supervision import ChildSpec, RegisterAs
from thespian_cluster.global_messages import GetGlobalStatus, GlobalStatus
from thespian_cluster.local_cluster import DEFAULT_COOKIE, ClusterNode, LocalCluster, wait_for
from thespian_cluster.messages import (
    ChildrenReply,
    GroupMembers,
    GroupMembersReply,
    Register,
    Registered,
    StartSupervisor,
    Whereis,
    WhichChildren,
)
from thespian_cluster.node import ask
from thespian_cluster.node_table import lookup
from thespian_cluster.partition_view import partition_status
from thespian_cluster.supervisors.supervisor import Supervisor

T = TypeVar("T")
NODES = ("alpha", "beta", "gamma")
#: name -> (kind, node it is registered on, meta)
REGISTRATIONS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "weather": ("server", "alpha", {"capabilities": {"tools": {}, "resources": {}}}),
    "calendar": ("server", "beta", {"capabilities": {"tools": {}, "prompts": {}}}),
    "docs": ("server", "gamma", {"capabilities": {"resources": {}}}),
    "stdio": ("transport", "beta", {}),
    "sse": ("transport", "gamma", {}),
}
GROUPS = ("servers", "transports", "tool_servers", "resource_servers", "prompt_servers")
WAIT = 10.0  # the longest any step waits for what it expects


class DemoServer(Actor):
    """Stands in for an MCP server or transport: answers ``"pid"`` with its process id."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if message == "pid":
            self.send(sender, os.getpid())


class DemoWorkers(Supervisor):
    """One worker, registered cluster-wide as ``worker`` on every (re)start."""

    strategy = "one_for_one"

    def child_specs(self) -> list[ChildSpec]:
        return [
            ChildSpec(
                id="worker",
                actor_class=DemoServer,
                register_as=RegisterAs(name="worker", scope="global"),
            )
        ]


class DemoSingletons(Supervisor):
    """Declares the cluster's one ``coordinator``: started on every node, it runs on one."""

    def child_specs(self) -> list[ChildSpec]:
        return [
            ChildSpec(
                id="coordinator",
                actor_class=DemoServer,
                placement="cluster",
                register_as=RegisterAs(name="coordinator", scope="global"),
            )
        ]


class StepFailed(Exception):
    """A step did not behave: what it expected and what happened instead."""

    def __init__(self, expected: str, happened: str) -> None:
        super().__init__(f"expected {expected}; {happened}")
        self.expected = expected
        self.happened = happened


@dataclass
class Timeline:
    """Prints each line with the seconds since the demo began."""

    began: float

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.began:6.2f} s] {text}", flush=True)

    def expect(
        self, check: Callable[[], T | None], expected: str, timeout: float = WAIT
    ) -> tuple[T, float]:
        """Wait until ``check()`` is truthy; return it and the seconds it took.

        Raises:
            StepFailed: after ``timeout``, naming ``expected`` and what ``check`` last
                gave (or raised).
        """
        start = time.monotonic()
        last: Any = None
        while True:
            try:
                last = check()
            except Exception as exc:  # a node that is down, a reply that timed out
                last = f"{type(exc).__name__}: {exc}"
            else:
                if last:
                    return last, time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise StepFailed(expected, f"after {timeout:.0f} s it was: {last!r}")
            time.sleep(0.005)


def run_demo(keep: bool = False, backend: str = "global") -> int:
    """Run the scenario; 0 when every step behaved. With ``keep``, leave the nodes up.

    ``backend="etcd"`` runs it with ``registry_backend = "etcd"`` on an etcd member
    started for it on 127.0.0.1 (``pip install 'thespian-cluster[etcd]'`` brings one).
    """
    timeline = Timeline(time.monotonic())
    work_dir = Path(tempfile.mkdtemp(prefix="thespian-cluster-demo-"))
    settings: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if backend == "etcd":
            from thespian_cluster.testing.etcd_server import EtcdServer

            etcd = stack.enter_context(EtcdServer(data_dir=work_dir / "etcd"))
            timeline.say(f"0. etcd started for the demo on {etcd.client_url}")
            settings = {"registry_backend": "etcd", "backend": {"endpoints": etcd.endpoints}}
        elif backend != "global":
            raise ValueError(f"the demo runs on backend 'global' or 'etcd', not {backend!r}")
        return _run(timeline, work_dir, keep and backend == "global", settings)


def _run(timeline: Timeline, work_dir: Path, keep: bool, settings: dict[str, Any]) -> int:
    cluster = LocalCluster(work_dir, cluster_nodes=list(NODES), log_level="INFO", **settings)
    status = 1
    try:
        _scenario(cluster, timeline)
        status = 0
    except StepFailed as failure:
        timeline.say(f"FAILED: expected {failure.expected}")
        timeline.say(f"        but {failure.happened}")
    except Exception as exc:  # anything else: say it plainly, still clean up
        timeline.say(f"FAILED: {type(exc).__name__}: {exc}")
    if keep and status == 0:
        _print_keep(cluster, work_dir)
        return 0
    cluster.close()
    try:
        timeline.expect(
            lambda: all(n.gone() for n in cluster._everything), "every node process gone", 5.0
        )
    except StepFailed:
        left = [n.name for n in cluster._everything if not n.gone()]
        timeline.say(f"FAILED: processes of nodes {left} are still running")
        return 1
    timeline.say(
        "every node stopped; no process left" + ("" if status == 0 else " (after a failure)")
    )
    if status == 0:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)
    else:
        print(f"node logs are kept in {work_dir}")
    return status


def _scenario(cluster: LocalCluster, t: Timeline) -> None:
    nodes = _join(cluster, t)
    actors = _register(nodes, t)
    _groups(nodes, t)
    _supervised_worker(nodes, t)
    _singleton(nodes, t)
    _node_death(cluster, nodes, t)
    _sequencer_death(cluster, nodes, actors, t)
    _hung_node(cluster, t)


# ---- the steps ------------------------------------------------------------------------


def _join(cluster: LocalCluster, t: Timeline) -> dict[str, ClusterNode]:
    t.say("1. three nodes, each its own process, on 127.0.0.1")
    first = cluster.start(NODES[0])
    t.say(f"   {first.name:<6} up on {first.leader_address} (pgid {first.pgid}), the first node")
    for name in NODES[1:]:
        node = cluster.start(name, leader=first)
        t.say(f"   {name:<6} up on {node.leader_address} (pgid {node.pgid}), joins {first.name}")
    _, took = t.expect(
        lambda: cluster.all_know(list(NODES)), f"every node to list {', '.join(NODES)}"
    )
    t.say(f"   every node knows all three ({took * 1000:.0f} ms after the last start)")
    _, took = t.expect(
        lambda: global_settled(cluster.nodes.values()), "one sequencer and epoch on every node"
    )
    followed = (
        "every node watches etcd" if _in_etcd(first) else "every replica follows one sequencer"
    )
    t.say(f"   {followed} ({took * 1000:.0f} ms later)")
    return dict(cluster.nodes)


def _in_etcd(node: ClusterNode) -> bool:
    status = node.ask(GetGlobalStatus())
    return isinstance(status, GlobalStatus) and status.sequencer == "etcd"


def global_settled(nodes: Iterable[ClusterNode]) -> bool:
    """Every node's replica follows the same sequencer and epoch, with no write waiting.

    Each join starts a takeover (the sequencer merges what the newcomer owns); a
    claim sent while one is under way may wait for it. Wait for this after
    ``wait_formed`` before the first global claims.
    """
    seen = set()
    for node in nodes:
        status = node.ask(GetGlobalStatus())
        if not isinstance(status, GlobalStatus) or not status.sequencer or status.pending:
            return False
        if status.sequencer == "etcd":  # no sequencer: every node's watch is up
            if not status.backend.get("watching"):
                return False
            seen.add(("etcd", 0))
        else:
            seen.add((status.sequencer, status.epoch))
    return len(seen) == 1


def wait_global_settled(nodes: Iterable[ClusterNode], timeout: float = WAIT) -> None:
    """:func:`global_settled`, waited for (TimeoutError after ``timeout``)."""
    listed = list(nodes)
    wait_for(lambda: global_settled(listed), timeout, "the global replicas to agree")


def _register(nodes: dict[str, ClusterNode], t: Timeline) -> dict[str, Any]:
    t.say("2. servers and transports registered globally, each on its own node")
    actors: dict[str, Any] = {}
    for name, (kind, on, meta) in REGISTRATIONS.items():
        node = nodes[on]
        actors[name] = node.client().createActor(DemoServer)
        reply = node.ask(
            Register(name=name, address=actors[name], kind=kind, scope="global", meta=meta)
        )
        if not isinstance(reply, Registered):
            raise StepFailed(f"Registered for {name!r} on {on}", f"the reply was {reply!r}")
        t.say(f"   {kind:<9} {name!r:<11} registered on {on}")
    for name, (kind, on, _) in REGISTRATIONS.items():
        for other in nodes.values():
            if other.name == on:
                continue
            t.expect(
                partial(_found_at, other, name, kind, actors[name]),
                f"{name!r} found on {other.name} by Whereis and lookup()",
            )
        others = ", ".join(n for n in nodes if n != on)
        t.say(f"   {name!r:<11} found on {others} by Whereis and by lookup()")
    return actors


def _found_at(node: ClusterNode, name: str, kind: str, address: Any) -> bool:
    return bool(_found_both_ways(node, name, kind) == address)


def _found_both_ways(node: ClusterNode, name: str, kind: str) -> Any:
    """The address both read paths agree on (None if they do not, or if not found)."""
    by_message = node.ask(Whereis(name=name, kind=kind, scope="global")).address
    entry = lookup(name, kind=kind, scope="global", node_dir=node.node_dir)
    by_table = entry.address if entry is not None else None
    return by_message if by_message == by_table else None


def _groups(nodes: dict[str, ClusterNode], t: Timeline) -> None:
    t.say("3. capability groups span the cluster (asked on beta)")
    beta = nodes["beta"]
    expected = {
        "servers": {"alpha", "beta", "gamma"},
        "transports": {"beta", "gamma"},
        "tool_servers": {"alpha", "beta"},
        "resource_servers": {"alpha", "gamma"},
        "prompt_servers": {"beta"},
    }
    for group in GROUPS:

        def members_on(g: str = group) -> set[str] | None:
            reply = beta.ask(GroupMembers(group=g, scope="global"))
            if not isinstance(reply, GroupMembersReply):
                return None
            on = {m.node for m in reply.members}
            return on if on == expected[g] else None

        on, _ = t.expect(members_on, f"group {group} with members on {sorted(expected[group])}")
        t.say(f"   {group:<17} members on {', '.join(sorted(on))}")


def _supervised_worker(nodes: dict[str, ClusterNode], t: Timeline) -> None:
    t.say("4. a supervised worker on beta, registered globally as 'worker'")
    beta, alpha = nodes["beta"], nodes["alpha"]
    client = beta.client()
    supervisor = client.createActor(DemoWorkers)
    started = ask(client, supervisor, StartSupervisor(), WAIT)
    if not isinstance(started, ChildrenReply):
        raise StepFailed("the supervisor to start its worker", f"it answered {started!r}")
    worker = started.by_id("worker").address
    _, took = t.expect(
        lambda: alpha.ask(Whereis(name="worker", scope="global")).address == worker,
        "alpha to find 'worker' at the supervised child",
    )
    pid = ask(client, worker, "pid", WAIT)
    t.say(f"   alpha finds 'worker' -> pid {pid} on beta")
    os.kill(pid, signal.SIGKILL)
    t.say(f"   SIGKILL worker (pid {pid})")

    def follows() -> Any:
        now = alpha.ask(Whereis(name="worker", scope="global")).address
        children = ask(client, supervisor, WhichChildren(), WAIT)
        if not isinstance(children, ChildrenReply):
            return None
        current = children.by_id("worker")
        fresh = now is not None and now != worker and now == current.address
        return (now, current.restart_count) if fresh else None

    (now, restarts), took = t.expect(follows, "'worker' on alpha to name the restarted worker")
    new_pid = ask(client, now, "pid", WAIT)
    t.say(
        f"   restarted (restarts={restarts}); alpha finds 'worker' -> pid {new_pid}, "
        f"{took * 1000:.0f} ms after the kill"
    )


def _coordinator(node: ClusterNode, not_on: str | None = None) -> tuple[str, int] | None:
    """Where ``node`` finds the coordinator (unless on ``not_on``) and its pid, if it
    answers."""
    found = node.ask(Whereis(name="coordinator", scope="global"))
    if found.address is None or found.node is None or found.node == not_on:
        return None
    pid = ask(node.client(), found.address, "pid", 2.0)
    return (found.node, pid) if isinstance(pid, int) else None


def _singleton(nodes: dict[str, ClusterNode], t: Timeline) -> None:
    t.say("5. a singleton 'coordinator' declared on every node (gamma first)")
    for name in ("gamma", "alpha", "beta"):
        client = nodes[name].client()
        started = ask(client, client.createActor(DemoSingletons), StartSupervisor(), WAIT)
        if not isinstance(started, ChildrenReply):
            raise StepFailed(f"{name}'s singleton supervisor to start", f"it answered {started!r}")
        if name == "gamma":
            t.expect(lambda: _coordinator(nodes["gamma"]), "the coordinator to run on gamma")
    where = [_coordinator(n) for n in nodes.values()]
    if len(set(where)) != 1 or where[0] is None or where[0][0] != "gamma":
        raise StepFailed("every node to find the one coordinator on gamma", f"they found {where}")
    t.say(
        f"   it runs on gamma (pid {where[0][1]}); alpha and beta stand by, "
        "watching its lock (a global name)"
    )


def _node_death(cluster: LocalCluster, nodes: dict[str, ClusterNode], t: Timeline) -> None:
    gamma = nodes["gamma"]
    survivors = [nodes["alpha"], nodes["beta"]]
    t.say("6. SIGKILL the whole of node gamma (its process group)")
    killed = time.monotonic()
    gamma.kill()
    _, took = t.expect(
        lambda: all(n.health_of("gamma") == "down" for n in survivors),
        "alpha and beta to report gamma down",
    )
    reason = _status(survivors[0]).by_name("gamma")
    t.say(
        f"   alpha and beta: gamma down ({reason.reason if reason else '?'}) "
        f"{took * 1000:.0f} ms after the kill"
    )

    def moved() -> tuple[str, int] | None:
        seen = {_coordinator(n, not_on="gamma") for n in survivors}
        return next(iter(seen)) if len(seen) == 1 else None

    (node, pid), _ = t.expect(moved, "the coordinator to run on alpha or beta")
    t.say(
        f"   the coordinator moved to {node} (pid {pid}): answering there "
        f"{(time.monotonic() - killed) * 1000:.0f} ms after the kill"
    )
    gone = [name for name, (_, on, _) in REGISTRATIONS.items() if on == "gamma"]

    def purged() -> bool:
        return all(
            _found_both_ways(n, name, REGISTRATIONS[name][0]) is None
            and n.ask(Whereis(name=name, kind=REGISTRATIONS[name][0], scope="global")).address
            is None
            for n in survivors
            for name in gone
        )

    _, took = t.expect(purged, f"{gone} gone from alpha and beta")
    t.say(f"   its names {', '.join(gone)} purged on alpha and beta ({took * 1000:.0f} ms later)")
    back = cluster.start("gamma", leader=nodes["alpha"])
    nodes["gamma"] = back
    _, took = t.expect(
        lambda: cluster.all_know(list(NODES)) and _found_both_ways(back, "weather", "server"),
        "the new gamma to join and see 'weather'",
    )
    t.say(
        f"   gamma restarted (a new incarnation); joined and caught up "
        f"({took * 1000:.0f} ms after its start)"
    )


def _sequencer_death(
    cluster: LocalCluster, nodes: dict[str, ClusterNode], actors: dict[str, Any], t: Timeline
) -> None:
    status = nodes["beta"].ask(GetGlobalStatus())
    if not isinstance(status, GlobalStatus) or not status.sequencer:
        raise StepFailed("beta to know the sequencing node", f"it answered {status!r}")
    in_etcd = status.sequencer == "etcd"
    seq_name = NODES[0] if in_etcd else status.sequencer
    if in_etcd:
        t.say(f"7. SIGKILL {seq_name} (etcd orders the claims: there is no sequencer to replace)")
    else:
        t.say(
            f"7. SIGKILL {seq_name}, the node that sequences global claims (epoch {status.epoch})"
        )
    cluster.nodes[seq_name].kill()
    rest = [n for name, n in nodes.items() if name != seq_name]
    origin = rest[0]
    claimant = origin.client().createActor(DemoServer)
    killed = time.monotonic()

    def claimed() -> Any:
        reply = origin.ask(
            Register(name="after-failover", address=claimant, scope="global"), timeout=2.0
        )
        return reply if isinstance(reply, Registered) else None

    t.expect(claimed, f"a global claim on {origin.name} to succeed again")
    took = time.monotonic() - killed
    now = origin.ask(GetGlobalStatus())
    who = (
        "etcd still orders claims" if in_etcd else f"{now.sequencer} took over (epoch {now.epoch})"
    )
    t.say(f"   {who}; a claim on {origin.name} succeeded {took * 1000:.0f} ms after the kill")
    t.expect(
        lambda: all(_found_both_ways(n, "after-failover", "server") == claimant for n in rest),
        "every survivor to find 'after-failover'",
    )
    kept = [name for name, (_, on, _) in REGISTRATIONS.items() if on == "beta"]
    t.expect(
        lambda: all(_found_both_ways(n, k, REGISTRATIONS[k][0]) for n in rest for k in kept),
        f"{kept} still registered on every survivor",
    )
    t.say(f"   every survivor finds it; beta's names {', '.join(kept)} are all still there")
    nodes.pop(seq_name)


def _hung_node(cluster: LocalCluster, t: Timeline) -> None:
    hung = cluster.nodes["gamma"]
    watcher = cluster.nodes["beta"]
    t.say(f"8. SIGSTOP node {hung.name} (hung: its processes are alive but silent)")
    hung.pause()
    _, took = t.expect(lambda: watcher.health_of(hung.name) == "suspect", "suspect")
    t.say(f"   {watcher.name}: {hung.name} suspect after {took:.2f} s")
    _, took2 = t.expect(lambda: watcher.health_of(hung.name) == "down", "down")
    t.say(f"   {watcher.name}: {hung.name} down (timeout) after {took + took2:.2f} s")
    status = partition_status(watcher.client())
    if status is not None:
        detected, _ = t.expect(
            lambda: _partition(watcher, want=True), f"{watcher.name} to detect a partition"
        )
        t.say(f"   partition on {watcher.name}: {_describe_partition(detected)}")
        t.say(
            f"   {watcher.name} alone holds 1 of 3 expected nodes: not the winner; "
            f"action {detected.action} "
            + (
                "(the verdict does not bind etcd: its quorum decides who writes)"
                if _in_etcd(watcher)
                else f"({'writes allowed' if detected.writable else 'no global writes'})"
            )
        )
    else:
        t.say("   (this build has no SplitBrainDetector yet: node health shows the hang)")
    hung.resume()
    t.say(f"   SIGCONT {hung.name}")
    _, took = t.expect(lambda: watcher.health_of(hung.name) == "up", "up again")
    t.say(f"   {watcher.name}: {hung.name} up again after {took * 1000:.0f} ms")
    if status is not None:
        healed, took = t.expect(
            lambda: _partition(watcher, want=False), f"{watcher.name} to see the partition heal"
        )
        t.say(f"   healed: {_describe_partition(healed)}")
        t.expect(
            lambda: isinstance(
                watcher.ask(
                    Register(name="after-heal", address=_an_actor(watcher), scope="global"),
                    timeout=2.0,
                ),
                Registered,
            ),
            f"a global claim on {watcher.name} to succeed after the heal",
        )
        t.say(f"   a global claim on {watcher.name} succeeds again")


# ---- helpers ------------------------------------------------------------------------


def _an_actor(node: ClusterNode) -> Any:
    return node.client().createActor(DemoServer)


def _status(node: ClusterNode) -> NodeStatusReply:
    return node.status()


def _partition(node: ClusterNode, want: bool) -> Any:
    status = partition_status(node.client())
    return status if status is not None and status.partition_detected == want else None


def _describe_partition(status: Any) -> str:
    text = (
        f"detected={status.partition_detected} strategy={status.strategy} "
        f"reachable={status.reachable} unreachable={status.unreachable} "
        f"winner={status.winner} action={status.action}"
    )
    return text


def _print_keep(cluster: LocalCluster, work_dir: Path) -> None:
    live = [n for n in cluster.nodes.values() if n.process.poll() is None]
    print("\nThe cluster keeps running. Explore it:")
    print(f"  export THESPIAN_CLUSTER_COOKIE={DEFAULT_COOKIE}")
    for node in live:
        print(f"  thespian-cluster status -p {node.port}      # node {node.name}")
    first = live[0].port if live else 0
    print(f"  thespian-cluster names --scope global -p {first}")
    pids = " ".join(str(n.process.pid) for n in live)
    pgids = " ".join(f"-{n.pgid}" for n in live)
    print("Stop it (each node stops gracefully on SIGTERM):")
    print(f"  kill {pids}")
    print(f"or at once: kill -9 -- {pgids}")
    print(f"Node logs: {work_dir}")
