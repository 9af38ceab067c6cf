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

Once its tree is up, the root publishes where a client finds the node as the admin
capability :data:`DIRECTORY_CAPABILITY` (a :meth:`NodeInfo.directory` dict), and
publishes it again whenever its Registry child changes address. A client reads it
from the admin's answer to ``Thespian_StatusReq`` (:func:`thespian_cluster.node.node_entry`):
a lookup that creates nothing, so it cannot disturb a node that is starting (the old
lookup, a ``createActor(globalName=...)``, made a stray root that a starting node
could then pick up as its own).
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
#: Set by ``start_node`` when the actor system starts: the node's name. An actor
#: system without it runs no thespian-cluster node.
NODE_CAPABILITY = "thespian_cluster.node"
#: Published by the root once the node is ready: :meth:`NodeInfo.directory`.
DIRECTORY_CAPABILITY = "thespian_cluster.directory"
REGISTRY_CHILD = "registry"
CLUSTER_CHILD = "cluster"


class StartNode(Request):
    settings: ClusterSettings


class GetNodeInfo(Request):
    """Ask a node's root who it is. Replies :class:`NodeInfo`."""


class NodeInfo(Reply):
    """Who a node's root is: its node, process group, admin and Registry."""

    node: str
    pgid: int
    registry: Any
    admin_pid: int = 0
    backend: str = ""
    cluster: bool = False

    def directory(self, root: Any) -> dict[str, Any]:
        """What the root publishes for clients (plain data: it travels in capabilities)."""
        return {
            "node": self.node,
            "root": root,
            "registry": self.registry,
            "pgid": self.pgid,
            "admin_pid": self.admin_pid,
            "backend": self.backend,
            "cluster": self.cluster,
        }


class NodeSupervisor(Supervisor):
    strategy = "one_for_one"
    max_restarts = 10
    max_seconds = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.settings: ClusterSettings | None = None
        self._ready = False
        self._published: dict[str, Any] | None = None

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        self._receive(message, sender)
        if self._ready:
            self._publish()  # a restarted Registry has a new address

    def _receive(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, StartNode):
            # start_node returns once the whole tree is up, as OTP's start_link does;
            # a client sees the node ready no earlier (published before the reply).
            self.when_up(
                lambda: self._started(sender, message.request_id),
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

    def _started(self, to: ActorAddress, request_id: str) -> None:
        self._ready = True
        self._publish()
        self.send(to, self._info(request_id))

    def _publish(self) -> None:
        directory = self._info("").directory(self.myAddress)
        if directory != self._published:
            self.updateCapability(DIRECTORY_CAPABILITY, directory)
            self._published = directory

    def _info(self, request_id: str) -> NodeInfo:
        registry = self.core.child(REGISTRY_CHILD)
        settings = self.settings
        return NodeInfo(
            request_id=request_id,
            node=settings.node_name if settings else "",
            pgid=os.getpgid(0),
            registry=registry.address if registry else None,
            admin_pid=os.getppid(),  # the admin forks the root
            backend=settings.registry_backend if settings else "",
            cluster=settings.cluster_enabled if settings else False,
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
