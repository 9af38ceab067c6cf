"""Name and group events, and waiting for a name: the protocol.

Send these to a node's Registry, like every other request; scope ``global`` requests
are handed to the node's RegistryDist, which answers directly::

    from thespian_cluster import NamesSnapshot, SubscribeNames

    snapshot = asys.ask(registry, SubscribeNames(subscriber=me, scope="global"), 5)
    # ... then NameRegistered / NameUnregistered / NameMoved / MetaChanged arrive at `me`

* **Subscribe** (:class:`SubscribeNames`, :class:`SubscribeGroup`) answers a snapshot
  (:class:`NamesSnapshot`, :class:`GroupSnapshot`) and from then on sends the
  subscriber every change of that topic on this node, once, in the order the node
  applied them. Subscribing again to the same topic is the same subscription (a fresh
  snapshot, never two copies of an event). Unsubscribing is idempotent
  (:class:`~thespian_cluster.cluster_messages.Unsubscribed` says whether it was).
  A subscriber that dies is dropped.
* **Every event has a reason** (``normal``, ``owner_died``, ``node_down``, ``conflict``,
  ``purged``, ``lost``; :mod:`thespian_cluster.core.reasons`) and a ``version``: the
  node table's version when this node applied it. Versions grow along a stream; the
  snapshot's version is where the stream starts.
* **A lost event says so**: every event and :class:`Resync` carries ``seq``, which
  counts the messages this node's scope sent to that subscriber (1, 2, 3, ...; the
  snapshot reply says where the count stood). Thespian drops a message whose transmit
  timed out (an outgoing queue far beyond what the transport moves: hundreds of
  subscribers under a burst of writes); a subscriber that sees ``seq`` jump has lost
  events, and subscribes again for a fresh snapshot.
* **A stream that restarted says so**: when the actor holding the subscriptions is
  restarted (its supervisor restarts it after a crash) or the node reloads the scope
  whole (a backend re-listing its store), each subscriber gets a :class:`Resync` with a
  fresh snapshot: what it knew is replaced, nothing is replayed, and events continue
  from the snapshot's version.
* **Await** (:class:`AwaitName`) answers a :class:`~thespian_cluster.messages.WhereisReply`
  as soon as the name exists (at once if it does), or ``RegistryError(timeout)``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from thespian_cluster.messages import (
    Address,
    GroupMember,
    GroupName,
    Kind,
    Message,
    NamePart,
    RegistrationInfo,
    Reply,
    Request,
    Scope,
    _NamedRequest,
)

#: The longest an :class:`AwaitName` may wait, in seconds.
MAX_AWAIT = 3600.0

# ---- requests ---------------------------------------------------------------------


class SubscribeNames(Request):
    """Send ``subscriber`` every change of the names of ``scope`` from now on: all of
    them, or those of ``kind``, or those starting with ``prefix`` (a tuple name by its
    first part). Replies :class:`NamesSnapshot`."""

    subscriber: Address
    scope: Scope = "local"
    kind: Kind | None = None
    prefix: NamePart | None = None


class UnsubscribeNames(Request):
    """End the :class:`SubscribeNames` with these fields. Replies ``Unsubscribed``."""

    subscriber: Address
    scope: Scope = "local"
    kind: Kind | None = None
    prefix: NamePart | None = None


class SubscribeGroup(Request):
    """Send ``subscriber`` every member that joins or leaves ``group`` (explicit or
    automatic, such as ``tool_servers``). Replies :class:`GroupSnapshot`."""

    subscriber: Address
    group: GroupName
    scope: Scope = "local"


class UnsubscribeGroup(Request):
    """End the :class:`SubscribeGroup` with these fields. Replies ``Unsubscribed``."""

    subscriber: Address
    group: GroupName
    scope: Scope = "local"


class AwaitName(_NamedRequest):
    """Reply a ``WhereisReply`` once ``name`` is registered (at once if it is), or
    ``RegistryError(timeout)`` after ``timeout`` seconds."""

    kind: Kind = "server"
    scope: Scope = "local"
    timeout: float = Field(gt=0, le=MAX_AWAIT)


# ---- replies ----------------------------------------------------------------------


class NamesSnapshot(Reply):
    """The names a :class:`SubscribeNames` covers, at ``version``."""

    scope: str
    kind: str | None
    prefix: str | None
    names: list[RegistrationInfo]
    version: int
    seq: int = 0  #: the subscriber's count of messages so far: the next event is seq + 1


class GroupSnapshot(Reply):
    """The members of ``group`` at ``version``."""

    scope: str
    group: str
    members: list[GroupMember]
    version: int
    seq: int = 0  #: as :attr:`NamesSnapshot.seq`


# ---- events -----------------------------------------------------------------------


class NameEvent(Message):
    """A change of one name: its owner (the former one for :class:`NameUnregistered`),
    that owner's node and meta, why, and the node table's version on this node."""

    scope: str
    name: Any
    kind: str
    address: Any
    node: str
    meta: dict[str, Any] = Field(default_factory=dict)
    reason: str
    version: int
    seq: int = 0  #: this subscriber's message count: a jump means events were lost


class NameRegistered(NameEvent):
    """``name`` is registered (it was free)."""


class NameUnregistered(NameEvent):
    """``name`` is free again; ``address`` is the owner it had."""


class NameMoved(NameEvent):
    """``name`` has a new owner, ``address``; it was ``previous``'s, on ``previous_node``."""

    previous: Any
    previous_node: str


class MetaChanged(NameEvent):
    """The owner of ``name`` is the same; its meta is now ``meta``."""


class GroupEvent(Message):
    """A member of ``group`` came or went: the member, why, and the version."""

    scope: str
    group: str
    address: Any
    node: str
    meta: dict[str, Any] = Field(default_factory=dict)
    reason: str
    version: int
    seq: int = 0  #: as :attr:`NameEvent.seq`


class MemberJoined(GroupEvent):
    """``address`` is a member of ``group`` now."""


class MemberLeft(GroupEvent):
    """``address`` is no longer a member of ``group``."""


class Resync(Message):
    """The stream of a subscription restarted: ``snapshot`` replaces what the
    subscriber knew; events continue from its version. ``reason``: ``restarted``
    (the actor holding the subscription was restarted) or ``reloaded`` (the node
    reloaded the scope whole)."""

    snapshot: NamesSnapshot | GroupSnapshot
    reason: str
    seq: int = 0  #: as :attr:`NameEvent.seq` (1 after a restart: the count restarted)
