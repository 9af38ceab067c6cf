"""ask() round trips: raw Thespian's echo actor against the Registry's requests.

A plain multiprocTCPBase system with an :class:`~bench.actors.Echo` actor (no
thespian_cluster actor in it) and a node run side by side; each run times
``mode.asks`` sequential ``ask()`` round trips of every kind, in blocks of 100 that
alternate between the kinds, so drift on a shared machine hits all kinds alike. The
client is this process, as a script using the registry would be. Building the
request (pydantic validation) is part of what is timed: a client pays it too.

The figures split the registry's cost: the echo of a short string is raw Thespian's
round trip; the echo of a ``Whereis`` object adds the cost of the protocol's messages
(pydantic models pickled both ways); ``Whereis`` on a second, identical node whose
liveness probes are off adds the Registry's own work; ``Whereis`` on the main node
(default settings: the 11 actors it watches probed every second) adds what probing
costs the Registry.

The Registry re-validates every request it receives
(:func:`thespian_cluster.validation.revalidate`); that cost alone is timed here too,
in this process, on requests that went through pickle as they would on the wire.

The node is started with ``cluster_enabled``; while the global registry is not
built, ``scope="global"`` answers ``RegistryError(not_distributed)`` and the
global figures are reported as n/a. Once it answers, they are measured here with
no change.
"""

from __future__ import annotations

import contextlib
import pickle
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.actors import BenchWorker, Echo
from bench.common import Context, Figure, Mode, not_available
from bench.systems import plain_system, running_node, settings
from thespian_cluster import (
    ClusterSettings,
    GroupMembers,
    GroupMembersReply,
    JoinedGroup,
    JoinGroup,
    Node,
    Register,
    Registered,
    RegistryError,
    Whereis,
    WhereisReply,
)
from thespian_cluster.validation import revalidate

FAMILY = "round_trips"
TITLE = "ask() round trips: raw Thespian echo vs Registry requests"
GROUP_SIZE = 10
BLOCK = 100  # asks of one kind before the next kind's turn
NO_PROBES = 3600.0  # liveness_probe_interval of the node without probes
NEEDS_CLUSTER = "n/a (needs the cluster issue): scope='global' answers not_distributed"


def steps(mode: Mode) -> int:
    return mode.runs + 1


def weight(mode: Mode) -> float:
    return 3 + mode.runs * mode.asks * 9 / 1500


@dataclass
class Kind:
    figure: Figure
    ask: Callable[[int, int], bool]  # (run, i) -> the reply was the expected one


def run(ctx: Context) -> list[Figure]:
    mode = ctx.mode
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(plain_system())
        echo = plain.createActor(Echo)
        node, why_not_global = _start_node(ctx, stack)
        registry = node.registry
        owner = _populate(node)
        quiet = stack.enter_context(
            running_node(settings(ctx, "rt-quiet", liveness_probe_interval=NO_PROBES))
        )
        _populate(quiet)
        ctx.step("started a plain system and two nodes")

        def ask(request: Any, expected: type) -> bool:
            reply = node.system.ask(registry, request, 10)
            return isinstance(reply, expected) and reply.request_id == request.request_id

        kinds = [
            Kind(
                Figure("baseline.echo_ask", "ask() to an echo actor (raw Thespian)", "rt/s"),
                lambda r, i: plain.ask(echo, "ping", 10) == "ping",
            ),
            Kind(
                Figure(
                    "baseline.echo_ask_whereis",
                    "ask() to an echo actor, a Whereis as the message (raw Thespian)",
                    "rt/s",
                ),
                lambda r, i: isinstance(plain.ask(echo, Whereis(name="bench-known"), 10), Whereis),
            ),
            Kind(
                Figure("registry.whereis_local", "Whereis, local, via ask()", "rt/s"),
                lambda r, i: ask(Whereis(name="bench-known"), WhereisReply),
            ),
            Kind(
                Figure(
                    "registry.whereis_local_no_probes",
                    "Whereis, local, via ask(), liveness probes off",
                    "rt/s",
                    note=f"an identical node with liveness_probe_interval = {NO_PROBES:g} s",
                ),
                lambda r, i: (
                    isinstance(reply := quiet.ask(Whereis(name="bench-known")), WhereisReply)
                    and reply.address is not None
                ),
            ),
            Kind(
                Figure("registry.register_local", "Register a new name, local, via ask()", "rt/s"),
                lambda r, i: ask(Register(name=f"rt-{r}-{i}", address=owner), Registered),
            ),
            Kind(
                Figure("registry.join_group_local", "JoinGroup, local, via ask()", "rt/s"),
                lambda r, i: ask(JoinGroup(group=f"rt-{r}-{i}", address=owner), JoinedGroup),
            ),
            Kind(
                Figure(
                    "registry.group_members_local",
                    f"GroupMembers ({GROUP_SIZE} members), via ask()",
                    "rt/s",
                ),
                lambda r, i: ask(GroupMembers(group="bench-members"), GroupMembersReply),
            ),
        ]
        if why_not_global is None:
            kinds += [
                Kind(
                    Figure("registry.whereis_global", "Whereis, global, via ask()", "rt/s"),
                    lambda r, i: ask(Whereis(name="bench-known", scope="global"), WhereisReply),
                ),
                Kind(
                    Figure("registry.register_global", "Register, global, via ask()", "rt/s"),
                    lambda r, i: ask(
                        Register(name=f"rtg-{r}-{i}", address=owner, scope="global"), Registered
                    ),
                ),
            ]
        unexpected = {kind.figure.id: 0 for kind in kinds}
        for kind in kinds:  # warm up every path (imports, connections, caches)
            for i in range(min(30, mode.asks)):
                kind.ask(-1, i)
        block = min(BLOCK, mode.asks)
        for r in range(mode.runs):
            elapsed = dict.fromkeys(unexpected, 0.0)
            for start in range(0, mode.asks, block):
                for kind in kinds:
                    bad = 0
                    started = time.perf_counter()
                    for i in range(start, min(start + block, mode.asks)):
                        if not kind.ask(r, i):
                            bad += 1
                    elapsed[kind.figure.id] += time.perf_counter() - started
                    unexpected[kind.figure.id] += bad
            for kind in kinds:
                kind.figure.samples.append(mode.asks / elapsed[kind.figure.id])
            ctx.step(f"run {r + 1}/{mode.runs}")
    figures = _validation_cost(mode, owner)
    for kind in kinds:
        kind.figure.params = {"asks_per_run": mode.asks}
        if unexpected[kind.figure.id]:
            kind.figure.note = f"{unexpected[kind.figure.id]} unexpected replies"
        figures.append(kind.figure)
    if why_not_global is not None:
        figures += [
            not_available(
                "registry.whereis_global", "Whereis, global, via ask()", "rt/s", why_not_global
            ),
            not_available(
                "registry.register_global", "Register, global, via ask()", "rt/s", why_not_global
            ),
        ]
    return figures


def _validation_cost(mode: Mode, owner: Any) -> list[Figure]:
    """µs per message of the Registry's validation on receipt, median of ``mode.runs``
    timings of a few thousand calls each, on unpickled requests (as received)."""
    requests = {
        "whereis": Whereis(name="bench-known"),
        "register": Register(name="bench-new", address=owner, meta={"capabilities": {"tools": {}}}),
    }
    figures = []
    for what, request in requests.items():
        received = pickle.loads(pickle.dumps(request))
        calls = 5000
        samples = []
        for _ in range(max(3, mode.runs)):
            started = time.perf_counter()
            for _ in range(calls):
                revalidate(received)
            samples.append((time.perf_counter() - started) / calls * 1e6)
        figures.append(
            Figure(
                f"registry.revalidate_{what}_us",
                f"validation on receipt alone, one {type(request).__name__}",
                "us",
                samples=[statistics.median(samples)],
                higher_is_better=False,
            )
        )
    return figures


def _populate(node: Node) -> Any:
    """The same actors on every node: a named owner and a group of members (all watched)."""
    owner = node.system.createActor(BenchWorker)
    for _ in range(GROUP_SIZE):
        member = node.system.createActor(BenchWorker)
        node.ask(JoinGroup(group="bench-members", address=member))
    node.ask(Register(name="bench-known", address=owner))
    return owner


def _start_node(ctx: Context, stack: contextlib.ExitStack) -> tuple[Node, str | None]:
    """A cluster-enabled node if one starts (else a plain one), and why global is n/a."""
    try:
        config: ClusterSettings = settings(ctx, "rt", cluster_enabled=True, cluster_nodes=["rt"])
        node = stack.enter_context(running_node(config))
    except Exception as exc:  # e.g. the cluster wants settings this harness lacks
        ctx.note(f"round_trips: cluster-enabled node did not start ({exc}); local only")
        node = stack.enter_context(running_node(settings(ctx, "rt-local")))
        return node, f"n/a: a cluster-enabled node did not start: {exc}"
    probe = node.ask(Whereis(name="probe", scope="global"))
    if isinstance(probe, RegistryError) and probe.code == "not_distributed":
        return node, NEEDS_CLUSTER
    if not isinstance(probe, WhereisReply):
        return node, f"n/a: a global Whereis answered {probe!r}"
    return node, None
