"""The init message of the cluster supervisor's children.

Each child (RegistryDist, NodeMonitor, SplitBrainDetector) takes its settings as its
first message, :class:`ConfigureComponent`; ClusterSupervisor sends it before
anything else.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from thespian_cluster.settings import ClusterSettings


class ConfigureComponent(BaseModel):
    model_config = ConfigDict(frozen=True)
    settings: ClusterSettings
