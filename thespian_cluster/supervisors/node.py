"""``NodeSupervisor``: the root of a node's tree (one_for_one).

::

    NodeSupervisor (one_for_one)          global name "thespian_cluster.node"
     ├── Registry                         names and groups of this node
     └── ClusterSupervisor (one_for_one)  only with cluster_enabled
          ├── RegistryDist
          ├── NodeMonitor
          └── SplitBrainDetector

``start_node`` creates it under a Thespian global name and sends :class:`StartNode`;
the reply :class:`NodeInfo` carries what the node handle needs.
"""

from __future__ import annotations

import os
from typing import Any

from thespian.actors import ActorAddress

from thespian_cluster.actors.registry import ConfigureRegistry, Registry
from thespian_cluster.core.supervision import ChildSpec
from thespian_cluster.messages import Reply, Request, SupervisorError, SupervisorErrorCode
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.supervisors.cluster import ClusterSupervisor, ConfigureCluster
from thespian_cluster.supervisors.supervisor import Supervisor

ROOT_GLOBAL_NAME = "thespian_cluster.node"
REGISTRY_CHILD = "registry"
CLUSTER_CHILD = "cluster"


class StartNode(Request):
    settings: ClusterSettings


class GetNodeInfo(Request):
    """Ask a node's root who it is. Replies :class:`NodeInfo`."""


class NodeInfo(Reply):
    node: str
    pgid: int
    registry: Any


class NodeSupervisor(Supervisor):
    strategy = "one_for_one"
    max_restarts = 10
    max_seconds = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.settings: ClusterSettings | None = None

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, StartNode):
            # start_node returns once the whole tree is up, as OTP's start_link does.
            self.when_up(
                lambda: self.send(sender, self._info(message.request_id)),
                lambda why: self.send(
                    sender,
                    SupervisorError(
                        request_id=message.request_id,
                        code=SupervisorErrorCode.START_FAILED,
                        detail=why,
                    ),
                ),
            )
            if self.settings is None:
                self.settings = message.settings
                self.start_children()
        elif isinstance(message, GetNodeInfo):
            self.send(sender, self._info(message.request_id))
        else:
            super().receiveMessage(message, sender)

    def _info(self, request_id: str) -> NodeInfo:
        registry = self.core.child(REGISTRY_CHILD)
        return NodeInfo(
            request_id=request_id,
            node=self.settings.node_name if self.settings else "",
            pgid=os.getpgid(0),
            registry=registry.address if registry else None,
        )

    def child_specs(self) -> list[ChildSpec]:
        if self.settings is None:
            return []  # a stray root created by a lookup: it supervises nothing
        specs = [
            ChildSpec(
                id=REGISTRY_CHILD,
                actor_class=Registry,
                init_message=ConfigureRegistry(settings=self.settings),
            )
        ]
        if self.settings.cluster_enabled:
            specs.append(
                ChildSpec(
                    id=CLUSTER_CHILD,
                    actor_class=ClusterSupervisor,
                    init_message=ConfigureCluster(settings=self.settings),
                    shutdown=10.0,
                )
            )
        return specs
