"""``ClusterSupervisor``: RegistryDist, NodeMonitor and SplitBrainDetector, one_for_one.

After every child start it tells every child where its siblings are now
(:class:`~thespian_cluster.actors.node_monitor.Agents`): NodeMonitor puts them in the
node's record that peers hold, the others find NodeMonitor through it.
"""

from __future__ import annotations

from typing import Any

from thespian_cluster.actors.cluster_members import ConfigureComponent
from thespian_cluster.actors.node_monitor import Agents, NodeMonitor
from thespian_cluster.actors.registry_dist import RegistryDist
from thespian_cluster.actors.split_brain import SplitBrainDetector
from thespian_cluster.core.supervision import ChildSpec
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.supervisors.supervisor import Supervisor


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
            ChildSpec(id="node_monitor", actor_class=NodeMonitor, init_message=init),
            ChildSpec(id="split_brain_detector", actor_class=SplitBrainDetector, init_message=init),
        ]

    def _start(self, child_id: str) -> Any:
        address = super()._start(child_id)
        # Every child learns where its siblings are now (NodeMonitor also tells peers).
        running = [c for c in self.core.children if c.running]
        agents = Agents(agents={c.spec.id: c.address for c in running})
        for child in running:
            self.send(child.address, agents)
        return address
