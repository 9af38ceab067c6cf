"""Cluster singletons under test: a probe instance that logs while it runs, and helpers.

The probe (:class:`SingletonProbe`) appends ``<monotonic> <node> <pid> start`` to a log
file when it starts and a ``tick`` line every :data:`TICK` seconds while it runs. The
monotonic clock is machine-wide (network namespaces share it), so the log of a whole
cluster on one machine says exactly when each instance ran, and :func:`overlaps` finds
two that ran at once. The tests and ``bench/singleton.py`` use it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from thespian_cluster.cluster_messages import NodeDown
from thespian_cluster.core.supervision import ChildSpec, RegisterAs, RestartType
from thespian_cluster.local_cluster import ClusterNode, wait_for
from thespian_cluster.messages import (
    ChildrenReply,
    ConfigureSupervisor,
    NormalExit,
    StartSupervisor,
    SupervisedBy,
    Whereis,
)
from thespian_cluster.netns import subscribe_timed, timed_events
from thespian_cluster.node import ask
from thespian_cluster.singleton_messages import GetSingletonStatus, SingletonStatus
from thespian_cluster.supervisors.singleton import NODE_NAME_ENV

TICK = 0.05
PROBE = "thespian_cluster.testing.singletons.SingletonProbe"


class SingletonProbe(Actor):
    """A singleton instance that logs its life; see the module docstring.

    Its ``init_message`` is ``"log:<path>"``. It answers ``"who"`` with ``(node, pid)``;
    ``"crash"`` ends its process at once (an abnormal exit); ``"exit_normally"`` says
    ``NormalExit`` to its manager and exits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.node = os.environ.get(NODE_NAME_ENV, "?")
        self.log: str | None = None
        self.supervised_by: SupervisedBy | None = None

    def _write(self, what: str) -> None:
        if self.log is not None:
            with open(self.log, "a") as log:
                log.write(f"{time.monotonic():.4f} {self.node} {os.getpid()} {what}\n")

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, str) and message.startswith("log:"):
            self.log = message[4:]
            self._write("start")
            self.wakeupAfter(TICK)
        elif isinstance(message, SupervisedBy):
            self.supervised_by = message
        elif isinstance(message, WakeupMessage):
            self._write("tick")
            self.wakeupAfter(TICK)
        elif message == "who":
            self.send(sender, (self.node, os.getpid()))
        elif message == "crash":
            os._exit(3)
        elif message == "exit_normally" and self.supervised_by is not None:
            child_id = self.supervised_by.child_id
            self.send(self.supervised_by.supervisor, NormalExit(child_id=child_id))
            self.send(self.myAddress, ActorExitRequest())


def probe_spec(
    log: Path, name: str = "coord", restart: RestartType = "permanent", shutdown: float = 2.0
) -> ChildSpec:
    """A singleton spec of the probe, registered globally as ``name``."""
    return ChildSpec(
        id=name,
        actor_class=PROBE,
        restart=restart,
        shutdown=shutdown,
        placement="cluster",
        register_as=RegisterAs(name=name, scope="global"),
        init_message=f"log:{log}",
    )


@dataclass
class Declared:
    """A supervisor on one node that declares singletons, and their managers."""

    node: ClusterNode
    supervisor: Any
    managers: dict[str, Any]  # child id -> manager address

    def status(self, child_id: str = "coord", timeout: float = 5.0) -> SingletonStatus | None:
        try:
            reply = ask(self.node.client(), self.managers[child_id], GetSingletonStatus(), timeout)
        except Exception:
            return None
        return reply if isinstance(reply, SingletonStatus) else None


def declare(
    node: ClusterNode, specs: list[ChildSpec], max_restarts: int = 3, max_seconds: float = 5.0
) -> Declared:
    """Start a supervisor of ``specs`` on ``node`` and wait until its children are up."""
    client = node.client()
    supervisor = client.createActor("thespian_cluster.supervisors.supervisor.Supervisor")
    client.tell(
        supervisor,
        ConfigureSupervisor(children=specs, max_restarts=max_restarts, max_seconds=max_seconds),
    )
    started = ask(client, supervisor, StartSupervisor(), 15)
    if not isinstance(started, ChildrenReply):
        raise RuntimeError(f"the supervisor on {node.name} did not start: {started!r}")
    return Declared(node, supervisor, {c.id: c.address for c in started.children})


def answering(
    node: ClusterNode, name: str = "coord", timeout: float = 1.0, not_on: str | None = None
) -> Any:
    """``(node, pid)`` of the instance ``node`` finds under ``name``, if it answers.

    An instance on node ``not_on`` counts as none and is not asked: it is the node a
    fault hit, and a message to an address cut off stays in this client's transmit
    queue until Thespian gives up on it, holding up the client's later messages.
    """
    try:
        found = node.ask(Whereis(name=name, scope="global"), timeout)
        if found.address is None or found.node == not_on:
            return None
        return node.client().ask(found.address, "who", timeout)
    except Exception:
        return None


@dataclass(frozen=True)
class Run:
    """One instance's life in the log: where, which process, first and last line."""

    node: str
    pid: int
    first: float
    last: float


def runs(log: Path) -> list[Run]:
    """Every instance the log saw, in start order."""
    found: dict[int, Run] = {}
    if not log.exists():
        return []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue  # a line being written
        at, node, pid = float(parts[0]), parts[1], int(parts[2])
        run = found.get(pid)
        found[pid] = Run(node, pid, at, at) if run is None else Run(node, pid, run.first, at)
    return sorted(found.values(), key=lambda r: r.first)


def overlaps(found: list[Run], slack: float = 0.0) -> list[tuple[Run, Run]]:
    """Pairs of runs that were alive at once (beyond ``slack`` seconds)."""
    pairs = []
    for i, one in enumerate(found):
        for other in found[i + 1 :]:
            if min(one.last, other.last) - max(one.first, other.first) > slack:
                pairs.append((one, other))
    return pairs


def one_instance(
    nodes: list[ClusterNode], timeout: float = 15.0, not_on: str | None = None
) -> tuple[str, int]:
    """Wait until every node of ``nodes`` finds the same instance (not on ``not_on``)
    and it answers; its ``(node, pid)``."""

    def agreed() -> tuple[str, int] | None:
        seen = {answering(n, not_on=not_on) for n in nodes}
        return next(iter(seen)) if len(seen) == 1 and None not in seen else None

    return wait_for(agreed, timeout, f"{[n.name for n in nodes]} to find one instance")


@dataclass(frozen=True)
class Move:
    """A singleton moved by a fault: where to, and seconds from the fault to the new
    instance answering on every survivor, and to the survivors' first ``NodeDown``."""

    to: tuple[str, int]
    answered: float
    detected: float
    at: float  # the fault's moment (monotonic)


def move(
    nodes: dict[str, ClusterNode], holder: str, fault: Callable[[], None], timeout: float = 20.0
) -> Move:
    """Apply ``fault`` to ``holder`` (kill it, cut it off) and time the move."""
    survivors = [n for name, n in nodes.items() if name != holder]
    logs = {s.name: subscribe_timed(s) for s in survivors}
    at = time.monotonic()
    fault()
    to = one_instance(survivors, timeout, not_on=holder)
    answered = time.monotonic() - at
    downs = [
        when
        for s in survivors
        for when, event in timed_events(s, logs[s.name])
        if isinstance(event, NodeDown) and event.node == holder
    ]
    return Move(to, answered, min(downs) - at, at)
