"""Starting and always stopping what the benchmarks measure: nodes and plain actor systems."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from thespian.actors import ActorSystem

from bench.actors import Echo
from bench.common import Context, kill_group
from thespian_cluster import ClusterSettings, Node, start_node
from thespian_cluster.testing.ports import free_port

SYSTEM_BASE = "multiprocTCPBase"


def settings(ctx: Context, name: str, **overrides: Any) -> ClusterSettings:
    """A node on a free port with its data in the run's scratch directory."""
    values: dict[str, Any] = {
        "node_name": name,
        "admin_port": free_port(),
        "data_dir": ctx.node_dir(name),
        "log_level": "WARNING",
    }
    values.update(overrides)
    return ClusterSettings.build(**values)


@contextlib.contextmanager
def running_node(config: ClusterSettings) -> Iterator[Node]:
    node = start_node(config, log_to_stderr=False)
    try:
        yield node
    finally:
        node.stop()


@contextlib.contextmanager
def plain_system(capabilities: dict[str, Any] | None = None) -> Iterator[ActorSystem]:
    """A raw Thespian multiprocTCPBase system (no thespian_cluster actors at all).

    Its admin daemonizes into its own process group; that group is SIGKILLed after the
    shutdown, so nothing is left behind even if an actor hangs.
    """
    caps = {"Admin Port": free_port(), **(capabilities or {})}
    system = ActorSystem(SYSTEM_BASE, caps, transientUnique=True)
    pgid: int | None = None
    try:
        probe = system.createActor(Echo)
        pgid = system.ask(probe, ("pgid",), 10)
        yield system
    finally:
        try:
            system.shutdown()
        finally:
            kill_group(pgid if isinstance(pgid, int) else None)
