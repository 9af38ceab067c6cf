"""Who is in the cluster: node identities, their health, and the leader.

A node is known by its **record**: name, incarnation (fresh on every start), start
time, admin address and the addresses of its cluster actors. The rules:

* **Names are unique.** A record whose name is already held by a live node at
  another address is *rejected*: the newcomer is told, the holder keeps running.
* **Restarts are new incarnations.** A record with a known name and the *same* admin
  address but another incarnation is that node restarted: the old incarnation is
  ``down`` (reason ``restarted``) and the new one ``up``. A heartbeat answered by a
  new incarnation at a known address proves the same thing before the new record
  arrives. Nothing of the old incarnation is ever attributed to the new one: every
  event names the incarnation it is about.
* **Stale records lose.** A record older (by start time) than the one known for its
  name is ignored, so gossip of a previous life cannot resurrect it.
* **Health** comes from :class:`~thespian_cluster.core.failure_detector.FailureDetector`;
  ``NodeUp`` / ``NodeDown`` events are emitted once per change, in order.
* **The leader** is the oldest node that is not ``down`` (start time, then name):
  every node computes the same answer from the same view, with no election.

Pure: times are supplied by the caller and addresses are opaque values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from thespian_cluster.core.failure_detector import (
    DownReason,
    FailureDetector,
    Health,
    PeerHealth,
    Transition,
)

MAX_NODE_NAME = 64


class NodeRecord(BaseModel):
    """One incarnation of one node, as every peer knows it."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str = Field(min_length=1, max_length=MAX_NODE_NAME)
    incarnation: str = Field(min_length=1, max_length=64)
    started_at: float  # wall-clock seconds: orders incarnations and picks the leader
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    #: Role (``node_monitor``, ``registry``, ...) -> that actor's address.
    agents: dict[str, Any] = Field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def admin_address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """A node incarnation came up or went down."""

    kind: Literal["up", "down"]
    node: str
    incarnation: str
    reason: str | None = None


Outcome = Literal["new", "updated", "known", "stale", "rejected", "self"]


@dataclass(frozen=True, slots=True)
class Learned:
    """What :meth:`Membership.learn` made of a record."""

    outcome: Outcome
    events: tuple[NodeEvent, ...] = ()
    reason: str | None = None  # why a record was rejected


class Membership:
    """This node's view of the cluster; see the module docstring for the rules."""

    def __init__(self, me: NodeRecord, detector: FailureDetector) -> None:
        self.me = me
        self.detector = detector
        self._records: dict[str, NodeRecord] = {}

    # ---- records -------------------------------------------------------------

    def learn(self, record: NodeRecord, now: float) -> Learned:
        """Take in a record heard from the node itself or from gossip."""
        if record.name == self.me.name:
            if record.incarnation == self.me.incarnation:
                return Learned("self")
            return Learned("rejected", reason=self._duplicate(self.me))
        known = self._records.get(record.name)
        if known is None:
            return self._add(record, now, ())
        if known.incarnation == record.incarnation:
            if known.agents == record.agents and known.address == record.address:
                return Learned("known")
            self._records[record.name] = record
            return Learned("updated")
        if record.started_at < known.started_at:
            return Learned("stale")
        if known.address != record.address and self.health(known.name) is not Health.DOWN:
            return Learned("rejected", reason=self._duplicate(known))
        gone = self._down(known.name, DownReason.RESTARTED)
        return self._add(record, now, gone)

    def update_me(self, me: NodeRecord) -> None:
        """This node's own record changed (an agent restarted at a new address)."""
        self.me = me

    def record(self, name: str) -> NodeRecord | None:
        return self.me if name == self.me.name else self._records.get(name)

    def peers(self) -> list[NodeRecord]:
        return list(self._records.values())

    def live_peers(self) -> list[NodeRecord]:
        return [r for r in self._records.values() if self.health(r.name) is not Health.DOWN]

    def _add(self, record: NodeRecord, now: float, before: Iterable[NodeEvent]) -> Learned:
        self._records[record.name] = record
        self.detector.add(record.name, now)
        up = NodeEvent("up", record.name, record.incarnation)
        return Learned("new", (*before, up))

    @staticmethod
    def _duplicate(holder: NodeRecord) -> str:
        return (
            f"node name {holder.name!r} is already in the cluster "
            f"(incarnation {holder.incarnation} at {holder.admin_address}); "
            "give this node another node_name"
        )

    # ---- health --------------------------------------------------------------

    def heard(self, name: str, incarnation: str, now: float, rtt: float | None) -> list[NodeEvent]:
        """A heartbeat from ``name`` (incarnation ``incarnation``) arrived."""
        known = self._records.get(name)
        if known is None:
            return []
        if known.incarnation != incarnation:
            # Someone else answers at a known address: the old incarnation is gone.
            return list(self._down(name, DownReason.RESTARTED))
        return self._events(self.detector.heard(name, now, rtt))

    def refused(self, name: str, incarnation: str) -> list[NodeEvent]:
        """``name``'s admin port refused a connection (checked for ``incarnation``)."""
        known = self._records.get(name)
        if known is None or known.incarnation != incarnation:
            return []
        return self._events(self.detector.refused(name))

    def left(self, name: str, incarnation: str) -> list[NodeEvent]:
        """``name`` said goodbye (a graceful stop)."""
        known = self._records.get(name)
        if known is None or known.incarnation != incarnation:
            return []
        return list(self._down(name, DownReason.LEFT))

    def tick(self, now: float) -> list[NodeEvent]:
        events: list[NodeEvent] = []
        for change in self.detector.tick(now):
            events.extend(self._events(change))
        return events

    def health(self, name: str) -> Health | None:
        if name == self.me.name:
            return Health.UP
        state = self.detector.get(name)
        return state.health if state is not None else None

    def peer_health(self, name: str) -> PeerHealth | None:
        return self.detector.get(name)

    def _down(self, name: str, reason: DownReason) -> tuple[NodeEvent, ...]:
        return tuple(self._events(self.detector.mark_down(name, reason)))

    def _events(self, change: Transition | None) -> list[NodeEvent]:
        if change is None:
            return []
        record = self._records[change.peer]
        if change.after is Health.DOWN:
            reason = change.reason.value if change.reason else None
            return [NodeEvent("down", record.name, record.incarnation, reason)]
        if change.before is Health.DOWN:
            return [NodeEvent("up", record.name, record.incarnation)]
        return []  # up <-> suspect: a health change, not a membership event

    # ---- the leader ----------------------------------------------------------

    def leader(self) -> str:
        """The oldest node that is not down (start time, then name): the same answer
        on every node that sees the same nodes."""
        candidates = [self.me, *self.live_peers()]
        return min(candidates, key=lambda r: (r.started_at, r.name)).name

    # ---- restarts ------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What a restarted NodeMonitor needs to carry on without spurious events."""
        return {
            "records": [r.model_dump() for r in self._records.values()],
            "health": {
                name: (state.health.value, state.reason.value if state.reason else None)
                for name, state in self.detector.peers().items()
            },
        }

    def restore(self, saved: Mapping[str, Any], now: float) -> None:
        """Load a :meth:`snapshot`; every peer gets a fresh grace period from ``now``."""
        health = saved.get("health", {})
        for raw in saved.get("records", ()):
            record = NodeRecord.model_validate(raw)
            if record.name == self.me.name:
                continue
            self._records[record.name] = record
            self.detector.add(record.name, now)
            status, reason = health.get(record.name, ("up", None))
            if status == Health.DOWN.value:
                self.detector.mark_down(record.name, DownReason(reason or "timeout"))
