"""The cluster supervisor's children that are still placeholders, and their init message.

Each takes its settings as its first message (:class:`ConfigureComponent`) and
answers :class:`ComponentPing`, so that supervision of them can be exercised end to
end. The real RegistryDist (replicated global table) and SplitBrainDetector
(partition strategies) replace these bodies; NodeMonitor is real
(:mod:`thespian_cluster.actors.node_monitor`).
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict
from thespian.actors import Actor, ActorAddress

from thespian_cluster.messages import Reply, Request
from thespian_cluster.settings import ClusterSettings


class ConfigureComponent(BaseModel):
    model_config = ConfigDict(frozen=True)
    settings: ClusterSettings


class ComponentPing(Request):
    """Ask a cluster component who and where it is."""


class ComponentPong(Reply):
    component: str
    node: str


class _ClusterComponent(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.settings: ClusterSettings | None = None

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ConfigureComponent):
            self.settings = message.settings
            logger.info("{} started", type(self).__name__)
        elif isinstance(message, ComponentPing):
            node = self.settings.node_name if self.settings else "?"
            self.send(
                sender,
                ComponentPong(
                    request_id=message.request_id, component=type(self).__name__, node=node
                ),
            )


class SplitBrainDetector(_ClusterComponent):
    """Partition detection and resolution strategies (placeholder)."""
