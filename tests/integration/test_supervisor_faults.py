"""Failed starts, injected for real: a child whose ``__init__`` raises, one that cannot
take its init message, one whose registration the node's Registry refuses.

The rules under test (thespian_cluster.core.supervision): at a supervisor's own start a
failed child fails the supervisor; on a restart each failed attempt counts against the
restart intensity and is retried after ``retry_delay``, so a child that fails N times
comes up, and one that never starts escalates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from thespian.actors import ActorExitRequest

from tests.conftest import wait_for
from tests.integration.actors import FLAKY_FILE, BadConfigWorker, FlakyWorker, HookedWorker
from tests.integration.test_supervisor import WORKER, Tree, make_tree, workers
from thespian_cluster import (
    ChildSpec,
    Node,
    Register,
    RegisterAs,
    Registered,
    StartSupervisor,
    Supervisor,
    SupervisorError,
    TerminateChild,
    Whereis,
    WhichChildren,
)
from thespian_cluster.messages import ConfigureSupervisor
from thespian_cluster.supervisors.os_process import is_dead, pid_listening_on

FLAKY = f"{FlakyWorker.__module__}.FlakyWorker"
FAST_RETRY = {"retry_delay": 0.05}


def flaky_starts(node: Node, setting: str) -> Path:
    switch = node.settings.node_dir / FLAKY_FILE
    switch.write_text(setting)
    return switch


def pid_of(address: Any) -> int:
    pid = pid_listening_on(address.addressDetails.sockname[1])
    assert pid is not None, f"no process listens for {address}"
    return pid


def gone(tree: Tree) -> bool:
    """The supervisor has exited: nothing answers at its address any more."""
    return tree.ask(WhichChildren(), timeout=0.5) is None


def exits_of(node: Node, child_id: str) -> int:
    """How many incarnations of ``child_id`` were stopped with ActorExitRequest."""
    log = node.settings.node_dir / "exits.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines if line.split()[0] == child_id)


# ---- a start that raises ------------------------------------------------------------------


def test_a_failing_restart_is_retried_until_the_child_starts(node: Node) -> None:
    specs = [ChildSpec(id="flaky", actor_class=FLAKY), *workers("witness")]
    tree = make_tree(node, "one_for_one", specs, max_restarts=10, max_seconds=30, **FAST_RETRY)
    witness = tree.info("witness")
    switch = flaky_starts(node, "3")  # the next three starts raise in __init__
    tree.kill("flaky")
    began = time.monotonic()
    tree.wait_restarted("flaky", 4)  # the exit, then three failed attempts, then success
    print(f"\nkill -> up through 3 failed starts: {(time.monotonic() - began) * 1000:.0f} ms")
    assert switch.read_text() == "0"
    assert tree.children().by_id("flaky").restart_count == 4
    assert tree.info("flaky")[0] != 0  # it answers: really up
    assert tree.info("witness") == witness  # one_for_one: nobody else was touched


def test_a_child_that_never_starts_escalates_and_the_parent_retries(node: Node) -> None:
    inner_config = ConfigureSupervisor(
        children=[ChildSpec(id="flaky", actor_class=FLAKY)],
        max_restarts=2,
        max_seconds=30,
        **FAST_RETRY,
    )
    outer = make_tree(
        node,
        "one_for_one",
        [ChildSpec(id="inner", actor_class=Supervisor, init_message=inner_config)],
        max_restarts=50,
        max_seconds=60,
        **FAST_RETRY,
    )
    inner = Tree(node, outer.children().by_id("inner").address)
    wait_for(lambda: inner.children().by_id("flaky").running, 10, "the first flaky child")
    switch = flaky_starts(node, "always")
    inner.kill("flaky")
    # inner: the exit and two failed attempts exceed 2 restarts -> inner exits; the outer
    # restarts it, and inner's own start fails (a failed start of inner, counted again).
    wait_for(lambda: gone(inner), 10, "the inner supervisor to give up")
    wait_for(
        lambda: outer.children().by_id("inner").restart_count >= 3,
        10,
        "the outer supervisor to retry inner",
    )
    switch.write_text("0")  # the cause goes away: the outer's next retry succeeds
    # Up, not merely running: an attempt already under way when the switch flipped has
    # read "always" and still fails (its address would then answer nothing).
    wait_for(lambda: outer.children().by_id("inner").up, 10, "inner up again")
    new_inner = Tree(node, outer.children().by_id("inner").address)
    wait_for(lambda: new_inner.children().by_id("flaky").running, 10, "a fresh flaky child")
    assert new_inner.children().by_id("flaky").restart_count == 0


def test_escalation_reaches_the_top_and_leaves_nothing_running(node: Node) -> None:
    inner_config = ConfigureSupervisor(
        children=[ChildSpec(id="flaky", actor_class=FLAKY)], max_restarts=1, **FAST_RETRY
    )
    outer = make_tree(
        node,
        "one_for_one",
        [ChildSpec(id="inner", actor_class=Supervisor, init_message=inner_config)],
        max_restarts=1,
        **FAST_RETRY,
    )
    inner = Tree(node, outer.children().by_id("inner").address)
    wait_for(lambda: inner.children().by_id("flaky").running, 10, "the first flaky child")
    pids = [pid_of(outer.address), pid_of(inner.address)]
    flaky_starts(node, "always")
    inner.kill("flaky")
    wait_for(lambda: gone(outer), 10, "the outer supervisor to give up as well")
    wait_for(lambda: all(is_dead(p) for p in pids), 10, "both supervisors' processes to end")


def start_failure(node: Node, failing: ChildSpec, *words: str) -> None:
    """A supervisor [first, failing] answers StartSupervisor with start_failed and exits."""
    address = node.system.createActor(Supervisor)
    node.system.tell(address, ConfigureSupervisor(children=[*workers("first"), failing]))
    reply = node.system.ask(address, StartSupervisor(), 10)
    assert isinstance(reply, SupervisorError) and reply.code == "start_failed", reply
    assert all(word in reply.detail for word in words), reply.detail
    wait_for(lambda: gone(Tree(node, address)), 10, "the supervisor that could not start to exit")
    # and it stopped the child that had started before the failure
    wait_for(lambda: exits_of(node, "first") == 1, 10, "the first child to be stopped")


def test_a_child_that_cannot_take_its_init_message_fails_the_start(node: Node) -> None:
    spec = ChildSpec(
        id="bad",
        actor_class=f"{BadConfigWorker.__module__}.BadConfigWorker",
        init_message="configure",
    )
    start_failure(node, spec, "bad could not take its str", "cannot be configured")


# ---- a registration that is refused -------------------------------------------------------


def hold(node: Node, name: str) -> Any:
    """An actor outside the supervisor that holds ``name``; exits free it (exit hook)."""
    holder = node.system.createActor(HookedWorker)
    assert isinstance(node.ask(Register(name=name, address=holder)), Registered)
    return holder


def whereis(node: Node, name: str) -> Any:
    return node.ask(Whereis(name=name)).address


def test_a_refused_registration_at_start_fails_the_supervisor(node: Node) -> None:
    holder = hold(node, "svc")
    named = ChildSpec(id="named", actor_class=WORKER, register_as=RegisterAs(name="svc"))
    start_failure(node, named, "named could not register as 'svc': already registered")
    wait_for(lambda: exits_of(node, "named") == 1, 10, "the refused child to be stopped")
    assert whereis(node, "svc") == holder
    node.system.tell(holder, ActorExitRequest())


def named_tree(node: Node, **intensity: Any) -> Tree:
    """rest_for_one [a, named→"svc"], with "named" terminated and "svc" held by another
    actor: killing "a" restarts both, and named's registration is refused."""
    named = ChildSpec(id="named", actor_class=WORKER, register_as=RegisterAs(name="svc"))
    tree = make_tree(node, "rest_for_one", [*workers("a"), named], **FAST_RETRY, **intensity)
    wait_for(lambda: whereis(node, "svc"), 10, "the first registration")
    tree.ask(TerminateChild(child_id="named"))
    wait_for(lambda: whereis(node, "svc") is None, 10, "the name to be released")
    return tree


def test_a_refused_registration_is_retried_until_the_holder_dies(node: Node) -> None:
    tree = named_tree(node, max_restarts=100, max_seconds=60)
    holder = hold(node, "svc")
    tree.kill("a")
    wait_for(lambda: tree.children().by_id("named").restart_count >= 3, 10, "refused attempts")
    assert whereis(node, "svc") == holder  # the holder keeps its name throughout
    node.system.tell(holder, ActorExitRequest())  # its exit hook frees the name
    named = wait_for(
        lambda: (
            (c := tree.children().by_id("named")).running
            and whereis(node, "svc") == c.address
            and c
        ),
        10,
        "a retry to register the child",
    )
    # Every refused incarnation was stopped (one exits.log line each, plus the first one
    # that TerminateChild stopped): none was left running unregistered.
    assert exits_of(node, "named") == named.restart_count, (exits_of(node, "named"), named)


def test_a_registration_refused_for_good_escalates(node: Node) -> None:
    tree = named_tree(node, max_restarts=2, max_seconds=30)
    holder = hold(node, "svc")
    pids = [pid_of(tree.address), tree.info("a")[0]]
    tree.kill("a")
    wait_for(lambda: gone(tree), 10, "the supervisor to give up")
    wait_for(lambda: all(is_dead(p) for p in pids), 10, "the supervisor's process to end")
    assert whereis(node, "svc") == holder
    node.system.tell(holder, ActorExitRequest())
