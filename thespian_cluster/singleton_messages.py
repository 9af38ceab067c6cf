"""Cluster singletons: how to declare one, and what a manager answers about it.

Declare the singleton as a child spec with ``placement="cluster"`` under a
:class:`~thespian_cluster.supervisors.supervisor.Supervisor` on every node; its
``register_as`` (scope ``global``) is the name clients find it by::

    ChildSpec(id="coordinator", actor_class=Coordinator, placement="cluster",
              register_as=RegisterAs(name="coordinator", scope="global"))

The supervisor runs a :class:`~thespian_cluster.supervisors.singleton.ClusterSingleton`
manager for it (configured with :class:`ConfigureSingleton`); the managers of all
nodes agree through the lock name which one runs the instance. Ask any manager
:class:`GetSingletonStatus` (``WhichChildren`` of the supervisor gives its address),
or list the locks cluster-wide: ``ListNames(kind="singleton", scope="global")``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from thespian_cluster.core.supervision import ChildSpec
from thespian_cluster.messages import Message, Reply, Request


class ConfigureSingleton(Message):
    """A manager's first message: the singleton's spec and its restart intensity.

    ``settle`` is how long a manager whose side lost a partition (or that was paused)
    waits after it may write again before claiming again, so a heal's merge arrives
    first; ``pause_fence`` how late its timer may fire before it assumes it was paused
    long enough to be declared down (None: the node's heartbeat timeout less two
    heartbeat intervals, the earliest a peer can declare it down).
    """

    spec: ChildSpec
    max_restarts: int = Field(3, ge=0)
    max_seconds: float = Field(5.0, gt=0)
    retry_delay: float = Field(0.5, gt=0, le=60)
    settle: float = Field(1.0, ge=0, le=600)
    pause_fence: float | None = Field(None, gt=0, le=3600)

    @field_validator("spec")
    @classmethod
    def _global_name(cls, spec: ChildSpec) -> ChildSpec:
        if spec.register_as is None or spec.register_as.scope != "global":
            raise ValueError("a cluster singleton needs register_as with scope='global'")
        return spec


class GetSingletonStatus(Request):
    """Ask a manager how its singleton stands. Replies :class:`SingletonStatus`."""


class SingletonStatus(Reply):
    """One manager's view of its singleton.

    ``role``: ``running`` (this node runs the instance), ``standby`` (another node
    does), ``claiming``, ``waiting`` (the lock is free or the registry unreachable),
    ``fenced`` (this node holds the lock but stopped the instance: its side lost a
    partition, or it was paused), ``finished`` (the singleton ended and is not
    restarted), ``escalated``.
    """

    name: Any
    role: str
    node: str  # this manager's node
    holder_node: str | None  # where the lock is, as far as this node knows
    instance: Any | None  # this node's instance, if it runs one
    restarts: int
    finished: bool
    last_stop: str | None  # why this node last stopped its instance
