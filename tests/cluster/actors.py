"""Actors the cluster tests create inside nodes (importable by every node process)."""

from __future__ import annotations

from typing import Any

from thespian.actors import Actor

from thespian_cluster.cluster_messages import NodeDown, NodeUp


class EventLog(Actor):
    """Keeps every NodeUp / NodeDown it gets; answers "events" with the list so far."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[NodeUp | NodeDown] = []

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, NodeUp | NodeDown):
            self.events.append(message)
        elif message == "events":
            self.send(sender, list(self.events))
