"""OTP supervision against real processes: strategies, restart types, intensity,
dynamic children and register_as, with real SIGKILLs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from thespian.actors import ActorExitRequest, ActorSystem

from tests.conftest import wait_for
from tests.integration.actors import Worker
from thespian_cluster import (
    ChildCount,
    ChildDeleted,
    ChildrenReply,
    ChildSpec,
    ChildStarted,
    ChildTerminated,
    CountChildren,
    DeleteChild,
    Node,
    RegisterAs,
    RestartChild,
    StartChild,
    Supervisor,
    SupervisorError,
    TerminateChild,
    Whereis,
    WhichChildren,
)
from thespian_cluster.messages import ConfigureSupervisor
from thespian_cluster.supervisors.os_process import is_dead

WORKER = f"{Worker.__module__}.Worker"


class Tree:
    """A supervisor under test and the node it runs on."""

    def __init__(self, node: Node, address: Any) -> None:
        self.node, self.address = node, address

    @property
    def system(self) -> ActorSystem:
        return self.node.system

    def ask(self, request: Any, timeout: float = 10) -> Any:
        return self.system.ask(self.address, request, timeout)

    def children(self) -> ChildrenReply:
        reply = self.ask(WhichChildren())
        assert isinstance(reply, ChildrenReply)
        return reply

    def info(self, child_id: str) -> tuple[int, float]:
        address = self.children().by_id(child_id).address
        pid, started = self.system.ask(address, "info", 10)
        return pid, started

    def kill(self, child_id: str) -> Any:
        old = self.children().by_id(child_id)
        pid, _ = self.info(child_id)
        os.kill(pid, signal.SIGKILL)
        return old

    def wait_restarted(self, child_id: str, count: int) -> None:
        wait_for(
            lambda: (c := self.children().by_id(child_id)).restart_count >= count and c.running,
            10,
            f"{child_id} to restart",
        )


def make_tree(node: Node, strategy: str, specs: list[ChildSpec], **intensity: Any) -> Tree:
    address = node.system.createActor(Supervisor)
    node.system.tell(address, ConfigureSupervisor(strategy=strategy, children=specs, **intensity))
    return Tree(node, address)


def workers(*ids: str, **kw: Any) -> list[ChildSpec]:
    return [ChildSpec(id=i, actor_class=WORKER, **kw) for i in ids]


@pytest.fixture
def tree_factory(node: Node) -> Iterator[Any]:
    made: list[Tree] = []

    def factory(strategy: str, specs: list[ChildSpec], **intensity: Any) -> Tree:
        tree = make_tree(node, strategy, specs, **intensity)
        made.append(tree)
        return tree

    yield factory


def _snapshot(tree: Tree) -> dict[str, tuple[Any, float]]:
    return {c.id: (c.address, tree.info(c.id)[1]) for c in tree.children().children}


def test_one_for_one_restarts_only_the_dead_child(tree_factory: Any) -> None:
    tree = tree_factory("one_for_one", workers("a", "b", "c"))
    before = _snapshot(tree)
    tree.kill("b")
    tree.wait_restarted("b", 1)
    after = _snapshot(tree)
    assert after["b"][0] != before["b"][0]
    assert after["a"] == before["a"] and after["c"] == before["c"]
    assert [c.restart_count for c in tree.children().children] == [0, 1, 0]


def test_one_for_all_restarts_everyone_in_start_order(tree_factory: Any) -> None:
    tree = tree_factory("one_for_all", workers("a", "b", "c"))
    before = _snapshot(tree)
    tree.kill("b")
    for child_id in "abc":
        tree.wait_restarted(child_id, 1)
    after = _snapshot(tree)
    assert all(after[i][0] != before[i][0] for i in "abc")
    starts = [after[i][1] for i in "abc"]
    assert starts == sorted(starts), "children restart in start order"


def test_rest_for_one_restarts_the_child_and_those_after_it(tree_factory: Any) -> None:
    tree = tree_factory("rest_for_one", workers("a", "b", "c", "d"))
    before = _snapshot(tree)
    tree.kill("b")
    for child_id in "bcd":
        tree.wait_restarted(child_id, 1)
    after = _snapshot(tree)
    assert after["a"] == before["a"]
    assert all(after[i][0] != before[i][0] for i in "bcd")
    starts = [after[i][1] for i in "bcd"]
    assert starts == sorted(starts)


def test_intensity_exceeded_escalates_to_the_parent(node: Node) -> None:
    outer = make_tree(
        node,
        "one_for_one",
        [
            ChildSpec(
                id="inner",
                actor_class=Supervisor,
                init_message=ConfigureSupervisor(
                    children=workers("w"), max_restarts=2, max_seconds=30
                ),
            )
        ],
        max_restarts=10,
        max_seconds=30,
    )
    inner = Tree(node, outer.children().by_id("inner").address)
    wait_for(lambda: inner.children().by_id("w").running, 10, "inner worker")
    for count in (1, 2):
        inner.kill("w")
        inner.wait_restarted("w", count)
    inner.kill("w")  # the third restart in 30 s is one too many
    wait_for(
        lambda: outer.children().by_id("inner").restart_count == 1,
        10,
        "the parent to restart inner",
    )
    new_inner = Tree(node, outer.children().by_id("inner").address)
    assert new_inner.address != inner.address
    wait_for(lambda: new_inner.children().by_id("w").running, 10, "a fresh inner worker")
    assert new_inner.children().by_id("w").restart_count == 0


@pytest.mark.parametrize(
    ("restart", "how", "restarted"),
    [
        ("permanent", "normal", True),
        ("permanent", "kill", True),
        ("transient", "normal", False),
        ("transient", "kill", True),
        ("temporary", "normal", False),
        ("temporary", "kill", False),
    ],
)
def test_restart_types(tree_factory: Any, restart: str, how: str, restarted: bool) -> None:
    tree = tree_factory("one_for_one", workers("w", restart=restart) + workers("witness"))
    child = tree.children().by_id("w")
    if how == "kill":
        tree.kill("w")
    else:
        tree.system.tell(child.address, "exit_normally")
    if restarted:
        tree.wait_restarted("w", 1)
        return

    # An exit that is not restarted: the child stops running (temporary: its spec goes).
    def settled() -> bool:
        ids = [c.id for c in tree.children().children]
        if restart == "temporary":
            return "w" not in ids
        return not tree.children().by_id("w").running

    wait_for(settled, 10, f"{restart} child to stay down")
    # Nothing restarts it later either: a witness message round trip orders after the exit.
    tree.info("witness")
    ids = [c.id for c in tree.children().children]
    assert ids.count("w") == (0 if restart == "temporary" else 1)
    if restart != "temporary":
        assert tree.children().by_id("w").restart_count == 0


def test_dynamic_children(tree_factory: Any) -> None:
    tree = tree_factory("one_for_one", [])
    started = tree.ask(StartChild(spec=ChildSpec(id="d", actor_class=WORKER)))
    assert isinstance(started, ChildStarted) and started.child_id == "d"
    dup = tree.ask(StartChild(spec=ChildSpec(id="d", actor_class=WORKER)))
    assert isinstance(dup, SupervisorError) and dup.code == "already_present"
    count = tree.ask(CountChildren())
    assert isinstance(count, ChildCount) and (count.specs, count.active, count.workers) == (1, 1, 1)

    assert isinstance(tree.ask(DeleteChild(child_id="d")), SupervisorError)  # running
    terminated = tree.ask(TerminateChild(child_id="d"))
    assert isinstance(terminated, ChildTerminated)
    assert tree.children().by_id("d").running is False
    assert tree.ask(CountChildren()).active == 0

    restarted = tree.ask(RestartChild(child_id="d"))
    assert isinstance(restarted, ChildStarted) and restarted.address != started.address
    running = tree.ask(RestartChild(child_id="d"))
    assert isinstance(running, SupervisorError) and running.code == "running"

    tree.ask(TerminateChild(child_id="d"))
    assert isinstance(tree.ask(DeleteChild(child_id="d")), ChildDeleted)
    assert tree.children().children == []
    missing = tree.ask(TerminateChild(child_id="d"))
    assert isinstance(missing, SupervisorError) and missing.code == "not_found"


def test_shutdown_timeout_kills_a_stuck_child(tree_factory: Any) -> None:
    tree = tree_factory("one_for_one", workers("stuck", shutdown=0.5))
    pid, _ = tree.info("stuck")
    tree.system.tell(tree.children().by_id("stuck").address, "block")
    began = time.monotonic()
    reply = tree.ask(TerminateChild(child_id="stuck"), timeout=10)
    assert isinstance(reply, ChildTerminated)
    assert time.monotonic() - began >= 0.5  # it was given its shutdown time first
    wait_for(lambda: _dead(pid), 5, "the stuck child's process to be gone")


def test_brutal_kill_does_not_wait(tree_factory: Any) -> None:
    tree = tree_factory("one_for_one", workers("stuck", shutdown="brutal_kill"))
    pid, _ = tree.info("stuck")
    tree.system.tell(tree.children().by_id("stuck").address, "block")
    reply = tree.ask(TerminateChild(child_id="stuck"), timeout=10)
    assert isinstance(reply, ChildTerminated)
    wait_for(lambda: _dead(pid), 5, "the killed child's process to be gone")


def test_register_as_follows_the_child_across_restarts(tree_factory: Any) -> None:
    spec = ChildSpec(id="named", actor_class=WORKER, register_as=RegisterAs(name="svc"))
    tree = tree_factory("one_for_one", [spec])
    node = tree.node
    first = wait_for(lambda: node.ask(Whereis(name="svc")).address, 10, "first registration")
    assert first == tree.children().by_id("named").address
    gaps = []
    for count in (1, 2, 3):
        old = tree.kill("named")
        killed = time.monotonic()
        new = wait_for(
            lambda o=old: (a := node.ask(Whereis(name="svc")).address) and a != o.address and a,
            10,
            "the name to point at the new child",
        )
        gaps.append(time.monotonic() - killed)
        tree.wait_restarted("named", count)
        assert new == tree.children().by_id("named").address
    print(f"\nregister_as gap kill -> name on new child: {[round(g * 1000, 1) for g in gaps]} ms")


def test_exit_request_to_the_supervisor_stops_its_children(tree_factory: Any) -> None:
    tree = tree_factory("one_for_one", workers("a", "b"))
    pids = [tree.info(i)[0] for i in "ab"]
    tree.system.tell(tree.address, ActorExitRequest())
    wait_for(lambda: all(_dead(p) for p in pids), 10, "children to exit with their supervisor")


_dead = is_dead


def test_a_nested_supervisor_is_up_only_when_its_children_are(node: Node) -> None:
    inner = ChildSpec(
        id="inner",
        actor_class=Supervisor,
        init_message=ConfigureSupervisor(children=workers("w1", "w2")),
    )
    outer = make_tree(node, "one_for_one", [inner, *workers("w3")])
    inner_tree = Tree(node, outer.children().by_id("inner").address)
    started = {i: inner_tree.info(i)[1] for i in ("w1", "w2")}
    started["w3"] = outer.info("w3")[1]
    assert started["w1"] < started["w2"] < started["w3"], started


def test_shutdown_supervisor_stops_children_in_reverse_order_then_exits(tree_factory: Any) -> None:
    from thespian_cluster import ShutdownSupervisor, SupervisorStopped

    tree = tree_factory("one_for_one", workers("a", "b") + workers("stuck", shutdown=0.3))
    pids = {i: tree.info(i)[0] for i in ("a", "b", "stuck")}
    tree.system.tell(tree.children().by_id("stuck").address, "block")
    began = time.monotonic()
    reply = tree.ask(ShutdownSupervisor(), timeout=20)
    assert isinstance(reply, SupervisorStopped)
    wait_for(lambda: all(_dead(p) for p in pids.values()), 10, "every child to be gone")
    exits = (tree.node.settings.node_dir / "exits.log").read_text().split("\n")
    order = [line.split()[0] for line in exits if line]
    assert order == ["b", "a"], order  # reverse start order; "stuck" was killed first
    assert all(float(line.split()[1]) - began >= 0.3 for line in exits if line)
    assert tree.ask(WhichChildren(), timeout=1) is None  # the supervisor itself has exited


def test_requests_wait_until_a_supervisor_has_started(node: Node) -> None:
    from thespian_cluster import StartSupervisor

    address = node.system.createActor(Supervisor)
    early = node.system.ask(address, WhichChildren(), 0.5)
    assert early is None  # not started: the request is kept, not answered with nothing
    tree = Tree(node, address)
    started = tree.ask(StartSupervisor())
    assert isinstance(started, ChildrenReply) and started.children == []
    assert tree.children().children == []


def test_a_child_is_up_only_once_its_start_has_finished(node: Node) -> None:
    """``running`` from the process's creation, ``up`` once the start is over: a
    supervisor child is up when its own children are."""
    slow = ChildSpec(
        id="inner",
        actor_class=Supervisor,
        init_message=ConfigureSupervisor(children=workers("w1", "w2", "w3")),
    )
    outer = make_tree(node, "one_for_one", [slow])
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = outer.children().by_id("inner")
        seen.append((info.running, info.up))
        if info.up:
            break
    assert seen[-1] == (True, True)
    assert all(running for running, up in seen if up)  # never up without running
    inner = Tree(node, outer.children().by_id("inner").address)
    assert all(c.up for c in inner.children().children)
