"""The cluster protocol: node membership and health (answered by NodeMonitor).

Send these to the node's Registry (the front door, which forwards them) or to
NodeMonitor itself; every reply echoes its request's ``request_id``::

    reply = node.ask(GetNodeStatus())
    for info in reply.nodes:
        print(info.name, info.health, info.rtt_ms)

Subscribe an actor to membership events with :class:`SubscribeNodeEvents`; it then
gets :class:`NodeUp` and :class:`NodeDown` once per change, in order. Every event
names the node *incarnation* it is about: a node restarted on the same address is a
new incarnation, reported down (reason ``restarted``) and then up.

The peer messages at the end (:class:`Hello`, :class:`JoinRefused`, :class:`Goodbye`)
travel between NodeMonitors only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from thespian_cluster.core.membership import MAX_NODE_NAME, NodeRecord
from thespian_cluster.messages import Address, Message, Reply, Request

Health = Literal["up", "suspect", "down"]

# ---- requests ---------------------------------------------------------------------


class ClusterNodes(Request):
    """The nodes of the cluster and which one leads. Replies :class:`ClusterNodesReply`."""


class GetNodeStatus(Request):
    """Health of every known node (the seeds' ``get_node_status/0``).

    Replies :class:`NodeStatusReply`.
    """


class GetNodeHealth(Request):
    """Health of one node (``get_node_health/1``). Replies :class:`NodeHealthReply`, or
    ``RegistryError(unknown_node)`` for a node this node has never heard of."""

    node: str = Field(min_length=1, max_length=MAX_NODE_NAME)


class ForceNodeCheck(Request):
    """Ping every node now; reply once each has answered or timed out
    (``force_node_check/0``). Replies :class:`NodeStatusReply`."""


class SubscribeNodeEvents(Request):
    """Send ``subscriber`` :class:`NodeUp` / :class:`NodeDown` from now on.

    Replies :class:`Subscribed`. A subscriber that dies is dropped.
    """

    subscriber: Address


class UnsubscribeNodeEvents(Request):
    """Stop sending events to ``subscriber``. Replies :class:`Unsubscribed`."""

    subscriber: Address


# ---- replies ----------------------------------------------------------------------


class NodeHealthInfo(Message):
    """One node as this node sees it."""

    name: str
    incarnation: str
    health: Health
    admin_address: str
    started_at: float  # wall-clock seconds
    last_seen: float | None  # seconds ago; None for this node itself
    rtt_ms: float | None  # round trip of the last answered heartbeat
    reason: str | None = None  # why it is down
    is_self: bool = False
    expected: bool = True  # listed in cluster_nodes (always True when that is empty)


class ClusterNodesReply(Reply):
    node: str  # the node that answers
    nodes: list[str]  # every node that is not down, this one included, sorted
    leader: str  # the oldest node that is not down
    joined: bool  # False while a member has not reached its convention leader yet
    expected: list[str]  # cluster_nodes
    refused: str | None = None  # why the cluster refused this node, if it did


class NodeStatusReply(Reply):
    node: str
    leader: str
    nodes: list[NodeHealthInfo]

    def by_name(self, name: str) -> NodeHealthInfo | None:
        return next((n for n in self.nodes if n.name == name), None)


class NodeHealthReply(Reply):
    info: NodeHealthInfo


class Subscribed(Reply):
    pass


class Unsubscribed(Reply):
    was_subscribed: bool


# ---- events -----------------------------------------------------------------------


class NodeUp(Message):
    """Node ``node`` (this ``incarnation`` of it) is up: joined, or back after silence."""

    node: str
    incarnation: str


class NodeDown(Message):
    """Node ``node`` (this ``incarnation``) is down.

    ``reason``: ``refused`` (its process is gone), ``timeout`` (no heartbeat within
    ``cluster_heartbeat_timeout``: hung or cut off), ``restarted`` (a new incarnation
    answers at its address) or ``left`` (it stopped gracefully).
    """

    node: str
    incarnation: str
    reason: str


# ---- between NodeMonitors -----------------------------------------------------------


class Hello(Message):
    """A NodeMonitor introduces itself (and what it knows) to another.

    ``answer`` asks the receiver to say Hello back, with what *it* knows.
    """

    record: NodeRecord
    known: list[NodeRecord] = Field(default_factory=list, max_length=10_000)
    answer: bool = False


class JoinRefused(Message):
    """The cluster refuses a node (its name is taken); ``reason`` says what to do."""

    reason: str = Field(max_length=1000)


class Goodbye(Message):
    """A node stops gracefully: peers mark it down (reason ``left``) at once."""

    node: str = Field(min_length=1, max_length=MAX_NODE_NAME)
    incarnation: str = Field(min_length=1, max_length=64)


class SubscribeClusterView(Request):
    """For the node's own cluster actors: send ``subscriber`` a :class:`ClusterView` now
    and after every change of the live nodes or of their records. Replies
    :class:`Subscribed`."""

    subscriber: Address


class ClusterView(Message):
    """The live nodes (this one included) with their records, and the leader.

    ``joined`` is False while a member has not reached its convention leader: its
    view is then only itself, and nothing should be decided on it.
    """

    records: list[NodeRecord]
    leader: str
    joined: bool
    #: Live nodes not heard from lately: worth no traffic that can wait (a hung node
    #: holds every message sent to it until it resumes).
    suspect: list[str] = Field(default_factory=list)


class AwaitJoin(Request):
    """Used by ``start_node``: reply :class:`JoinOutcome` once this node has joined
    its convention leader or been refused, or after ``timeout`` seconds."""

    timeout: float = Field(gt=0, le=60)


class JoinOutcome(Reply):
    joined: bool
    refused: str | None = None


# ---- partitions (answered by SplitBrainDetector) ------------------------------------
# The rules of the decision are in thespian_cluster.core.partition; docs/partitions.md
# tells an operator what each strategy and minority action does.

#: What a node does about the verdict now: ``none`` (it is a winner), ``advisory``
#: (a loser that only reports), ``readonly`` (refuses global writes) or ``shutdown``
#: (stops its cluster supervisor).
PartitionAction = Literal["none", "advisory", "readonly", "shutdown"]


class GetPartitionStatus(Request):
    """This node's latest split-brain verdict (the seeds' ``get_partition_status/0``).

    Replies :class:`PartitionStatus`.
    """


class ForceResolution(Request):
    """Fetch NodeMonitor's view and decide now (``force_resolution/0``).

    Replies :class:`PartitionStatus` with the new verdict.
    """


class SubscribePartitionEvents(Request):
    """Send ``subscriber`` partition events from now on.

    Replies :class:`PartitionStatus` (the current verdict, so the subscriber knows
    ``writable`` from the first moment), then sends :class:`PartitionDetected`,
    :class:`PartitionHealed` and :class:`WritableChanged` as they happen, in order.
    Subscriptions survive a restart of the detector; a subscriber that dies is dropped.
    """

    subscriber: Address


class UnsubscribePartitionEvents(Request):
    """Stop sending partition events to ``subscriber``. Replies :class:`Unsubscribed`."""

    subscriber: Address


class PartitionStatus(Reply):
    """One node's split-brain verdict; every node list is sorted."""

    node: str  # the node that answers
    partition_detected: bool  # some node is unreachable (down by timeout, or never seen)
    strategy: str
    master_node: str | None
    last_check: float | None  # wall-clock seconds of the decision; None before the first
    reachable: list[str]  # this side: this node and every node up or suspect
    unreachable: list[str]  # down by timeout (maybe alive elsewhere), or expected, never seen
    dead: list[str]  # down because refused, left or restarted: on no side
    winner: bool  # this side may keep writing
    action: PartitionAction
    writable: bool  # global claims, joins and meta updates are allowed here
    reason: str  # why, in words


# ---- partition events ---------------------------------------------------------------


class PartitionDetected(Message):
    """Node ``node`` can no longer reach ``unreachable``; ``winner`` says whether its side
    keeps writing and ``action`` what it does. Sent once per partition (a change of
    who is unreachable while it lasts is not a new partition)."""

    node: str
    unreachable: list[str]
    winner: bool
    action: PartitionAction
    reason: str


class PartitionHealed(Message):
    """Node ``node`` reaches every node again (none is unreachable); sent once per heal.

    ``was_winner`` is this side's verdict during the partition: a registry merging
    tables after the heal knows which side it was on.
    """

    node: str
    reachable: list[str]
    was_winner: bool


class WritableChanged(Message):
    """Node ``node`` may (``writable``) or may no longer take global claims, joins and
    meta updates. Sent on every change of ``writable``, in order, after the events above
    that caused it; the subscribe reply carries the value to start from."""

    node: str
    writable: bool
    action: PartitionAction
    reason: str
