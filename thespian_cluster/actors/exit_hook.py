"""``RegistryExitHook``: free an actor's names the moment it exits.

Mix it in before ``Actor``::

    class Weather(RegistryExitHook, Actor):
        def receiveMessage(self, message, sender):
            super().receiveMessage(message, sender)   # the hook sees ActorExitRequest
            ...

On ``ActorExitRequest`` the hook sends :class:`~thespian_cluster.messages.ActorExiting`
to this node's Registry (its address comes from the node table, no lookup message),
so the names are free before the actor's process is even gone. Without the hook the
Registry still notices the death, through dead letters or its liveness probes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from thespian.actors import ActorExitRequest

from thespian_cluster.messages import ActorExiting
from thespian_cluster.node_table import TableReader

#: Set by ``start_node`` before the actor system forks, so every actor inherits it.
NODE_DIR_ENV = "THESPIAN_CLUSTER_NODE_DIR"


def node_registry() -> Any | None:
    """The Registry address of the node this process belongs to, or None."""
    node_dir = os.environ.get(NODE_DIR_ENV)
    return TableReader(Path(node_dir)).registry() if node_dir else None


class RegistryExitHook:
    """Mixin for an ``Actor`` subclass; see the module docstring."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        # Deliberately not chained: the next class is usually ``Actor``, whose
        # receiveMessage asserts that it was overridden.
        if isinstance(message, ActorExitRequest):
            registry = node_registry()
            if registry is not None:
                self.send(registry, ActorExiting(address=self.myAddress))  # type: ignore[attr-defined]
