"""``ClusterSupervisor``: RegistryDist, NodeMonitor and SplitBrainDetector, one_for_one.

After every child start it tells NodeMonitor and SplitBrainDetector where the
cluster actors are now (:class:`~thespian_cluster.actors.node_monitor.Agents`), so
the node's record that peers hold always names the live incarnation of each, and the
detector always watches the live NodeMonitor.
"""

from __future__ import annotations

from typing import Any

from thespian_cluster.actors.cluster_members import ConfigureComponent, RegistryDist
from thespian_cluster.actors.node_monitor import Agents, NodeMonitor
from thespian_cluster.actors.split_brain import SplitBrainDetector
from thespian_cluster.core.supervision import ChildSpec
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.supervisors.supervisor import Supervisor

NODE_MONITOR = "node_monitor"
SPLIT_BRAIN_DETECTOR = "split_brain_detector"


class ConfigureCluster(ConfigureComponent):
    """The ClusterSupervisor's init message."""


class ClusterSupervisor(Supervisor):
    strategy = "one_for_one"
    max_restarts = 10
    max_seconds = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.settings: ClusterSettings | None = None

    def configure(self, message: Any) -> bool:
        if isinstance(message, ConfigureCluster):
            self.settings = message.settings
            return True
        return False

    def child_specs(self) -> list[ChildSpec]:
        assert self.settings is not None, "ConfigureCluster must come first"
        init = ConfigureComponent(settings=self.settings)
        return [
            ChildSpec(id="registry_dist", actor_class=RegistryDist, init_message=init),
            ChildSpec(id=NODE_MONITOR, actor_class=NodeMonitor, init_message=init),
            ChildSpec(id=SPLIT_BRAIN_DETECTOR, actor_class=SplitBrainDetector, init_message=init),
        ]

    def _start(self, child_id: str) -> Any:
        address = super()._start(child_id)
        agents = {c.spec.id: c.address for c in self.core.children if c.running}
        for told in (NODE_MONITOR, SPLIT_BRAIN_DETECTOR):
            child = self.core.child(told)
            if child is not None and child.running:
                self.send(child.address, Agents(agents=agents))
        return address
