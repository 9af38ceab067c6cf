"""Messages of the global registry: the Registry's hand-off to other actors, the traffic
between RegistryDist actors, and the one a losing owner receives.

The replication types themselves (``Delta``, ``Snapshot``, ``Collect``, ...) are the
frozen dataclasses of :mod:`thespian_cluster.core.replica`; the wrappers below carry
batches of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from thespian_cluster.core.records import WireMessage
from thespian_cluster.core.replica import Decision, Delta, Term, Write
from thespian_cluster.messages import Message, Name, Reply, Request


@dataclass(frozen=True, slots=True)
class Forwarded(WireMessage):
    """Registry -> another actor of its node (RegistryDist, NodeMonitor, ...): a request
    the Registry validated; the receiver validates it again and answers ``reply_to``."""

    request: Request
    reply_to: Any


@dataclass(frozen=True, slots=True)
class Writes(WireMessage):
    """Origin -> sequencer: writes in submission order."""

    writes: list[Write]


@dataclass(frozen=True, slots=True)
class Decisions(WireMessage):
    """Sequencer -> origin: the decisions on its writes, in order, with the delta that
    applies them (so the origin can answer its clients after one message, not two)."""

    decisions: list[Decision]
    delta: Delta | None = None


class NameConflict(Message):
    """Sent to an actor that lost a global name in a merge (a healed partition): ``name``
    of ``kind`` now belongs to ``winner`` on ``node``, on every node."""

    name: Name
    kind: str
    winner: Any
    node: str


class NameLost(Message):
    """Sent to an actor whose global name went away without its asking: ``reason`` is
    ``lease_expired`` (its node was cut off from the store longer than the lease) or
    ``deleted_in_etcd`` (someone else deleted it, e.g. revoked the node's lease). The
    name is not registered again by itself: the actor (or its supervisor) decides."""

    name: Name
    kind: str
    reason: str


class GetGlobalStatus(Request):
    """How this node's replica of the global table stands. Replies :class:`GlobalStatus`."""


class GlobalStatus(Reply):
    node: str
    sequencer: str  # the node that orders writes ("" before the first takeover)
    epoch: int
    seq: int  # writes of this epoch applied here
    sequencing: bool  # this node is the sequencer
    names: int
    groups: int
    pending: int  # this node's writes waiting for a decision
    #: Global writes answered by this node since its RegistryDist started, by
    #: ``"<request>:<outcome>"`` (e.g. ``"Register:already_registered"``,
    #: ``"Register:minority_partition"``), and names lost in merges (``"conflicts"``).
    outcomes: dict[str, int] = Field(default_factory=dict)
    #: What the backend itself reports (for etcd: its lease, revision, whether the
    #: watch is up and for how long the node table may have been stale).
    backend: dict[str, Any] = Field(default_factory=dict)
    #: This RegistryDist's peer links (actors.peer_links): ``up`` (links it dials that
    #: are up), ``sent`` / ``received`` (messages on links), ``by_thespian`` (linked
    #: types sent by Thespian: no link up yet, or it failed).
    peer_links: dict[str, int] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewerTerm(WireMessage):
    """Replica -> a sequencer whose delta it ignored: it already answered a takeover of
    ``term`` (newer than the sender's). The leader takes over above it, so a replica
    fenced by an abandoned takeover cannot stay behind for good."""

    term: Term


@dataclass(frozen=True, slots=True)
class LinkOffer(WireMessage):
    """RegistryDist -> a peer RegistryDist, by Thespian: dial ``port`` on my host for a
    direct link (:mod:`thespian_cluster.actors.peer_links`). An offer that is not an
    ``answer`` is answered with the receiver's own."""

    port: int
    answer: bool = False


@dataclass(frozen=True, slots=True)
class LinkHello(WireMessage):
    """The first frame on a peer link: the dialling RegistryDist's Thespian address."""

    sender: Any
