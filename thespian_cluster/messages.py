"""The public protocol: every request the Registry answers and every reply it sends.

All messages are pydantic models, validated when they are built, so bad input is a
``pydantic.ValidationError`` at the caller and never reaches an actor. Every request
carries a ``request_id`` (a fresh one unless you give your own) and its reply echoes
it: Thespian's ``ask()`` does not match replies to requests, so you can.

    from thespian_cluster import Register, Whereis

    reply = asys.ask(registry, Register(name="weather", address=addr, kind="server"), 5)
    assert isinstance(reply, Registered)
    reply = asys.ask(registry, Whereis(name="weather", kind="server"), 5)
    reply.address  # the owner's ActorAddress, or None

Errors come back as :class:`RegistryError` replies with a stable ``code``
(see :class:`ErrorCode`), never as exceptions across actors.

**One public surface.** This module also re-exports the public messages of the other
protocol modules, :mod:`thespian_cluster.cluster_messages` (node membership, health,
partitions), :mod:`thespian_cluster.global_messages` (the global registry's status and
``NameConflict``) and :mod:`thespian_cluster.event_messages` (name and group events,
``AwaitName``), so every request, reply and event a user sends or receives imports
from here and from ``thespian_cluster``::

    from thespian_cluster import GetNodeStatus, NodeDown, NodeUp, SubscribeNodeEvents

The rule: a class of a protocol module is *public* when a user's code sends it, receives
it as a reply or receives it as an event; it is then listed in ``__all__`` here and in
``thespian_cluster``. A class that only a node's own actors exchange (the NodeMonitor
handshake, the global registry's replication traffic) is *internal*: it is named in
:data:`INTERNAL_MESSAGES`, is exported nowhere, and may change in any release.
``tests/unit/test_public_api.py`` fails for a class that is in neither list.
"""

from __future__ import annotations

import importlib
import pickle
import uuid
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    model_validator,
)
from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.limits import (  # the one source of truth for limits
    MAX_BATCH,
    MAX_META_BYTES,
    MAX_NAME_LENGTH,
    MAX_NAME_PARTS,
    MAX_REQUEST_ID_LENGTH,
    key_problem,
    member_key,
    name_key,
    surely_fits,
)
from thespian_cluster.core.supervision import ChildSpec, Placement, RestartType, Strategy
from thespian_cluster.core.table import Entry, Member

if TYPE_CHECKING:  # at run time by __getattr__ below: they import this module
    from thespian_cluster.cluster_messages import (
        ClusterNodes,
        ClusterNodesReply,
        ForceNodeCheck,
        ForceResolution,
        GetNodeHealth,
        GetNodeStatus,
        GetPartitionStatus,
        NodeDown,
        NodeHealthInfo,
        NodeHealthReply,
        NodeStatusReply,
        NodeUp,
        PartitionDetected,
        PartitionHealed,
        PartitionStatus,
        Subscribed,
        SubscribeNodeEvents,
        SubscribePartitionEvents,
        Unsubscribed,
        UnsubscribeNodeEvents,
        UnsubscribePartitionEvents,
        WritableChanged,
    )
    from thespian_cluster.event_messages import (
        AwaitName,
        GroupEvent,
        GroupSnapshot,
        MemberJoined,
        MemberLeft,
        MetaChanged,
        NameEvent,
        NameMoved,
        NameRegistered,
        NamesSnapshot,
        NameUnregistered,
        Resync,
        SubscribeGroup,
        SubscribeNames,
        UnsubscribeGroup,
        UnsubscribeNames,
    )
    from thespian_cluster.global_messages import (
        GetGlobalStatus,
        GlobalStatus,
        NameConflict,
        NameLost,
    )
    from thespian_cluster.singleton_messages import (
        ConfigureSingleton,
        GetSingletonStatus,
        SingletonStatus,
    )

#: Validation context of a receiver (``model_validate(..., context=RECEIVED)``): turns on
#: the checks only a receiver needs, such as "this address is a real TCP actor address"
#: (a sender may build messages with test addresses; a node only stores TCP ones).
RECEIVED: dict[str, Any] = {"received": True}

Scope = Literal["local", "global"]
NamePart = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]
#: A name: a non-empty string of at most 255 characters, or a non-empty tuple of them.
Name = NamePart | Annotated[tuple[NamePart, ...], Field(min_length=1, max_length=MAX_NAME_PARTS)]
#: ``server``, ``transport`` or a kind of your own (letters, digits, ``_.:-``).
Kind = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")]
GroupName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]


def _check_address(value: Any, info: ValidationInfo) -> ActorAddress:
    if not isinstance(value, ActorAddress):
        raise ValueError(f"expected a Thespian ActorAddress, got {type(value).__name__}")
    if info.context is not None and info.context.get("received"):
        _check_tcp_address(value)
    return value


def _check_tcp_address(value: ActorAddress) -> None:
    """A receiver stores only addresses it can probe and key: TCP ``(ip, port)``.

    The object arrived unpickled, so even its inner fields may be anything.
    """
    details = getattr(value, "addressDetails", None)
    if type(value) is not ActorAddress or type(details) is not TCPv4ActorAddress:
        raise ValueError(f"expected a TCP actor address, got {type(details).__name__} details")
    sockname = getattr(details, "sockname", None)
    if not (
        isinstance(sockname, tuple)
        and len(sockname) >= 2
        and type(sockname[0]) is str
        and 0 < len(sockname[0]) <= 64
        and type(sockname[1]) is int
        and 0 < sockname[1] < 65536
    ):
        raise ValueError("the TCP actor address has no usable (ip, port)")


def _check_meta(value: dict[str, Any]) -> dict[str, Any]:
    try:
        size = len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:  # any pickling failure means it cannot cross a process
        raise ValueError(f"meta must be picklable: {exc}") from None
    if size > MAX_META_BYTES:
        raise ValueError(f"meta is {size} bytes pickled; the limit is {MAX_META_BYTES}")
    return value


Address = Annotated[Any, AfterValidator(_check_address)]
Meta = Annotated[dict[str, Any], AfterValidator(_check_meta)]


def new_request_id() -> str:
    return uuid.uuid4().hex


class Message(BaseModel):
    """Base of every protocol message: immutable, strict about unknown fields.

    ``str()`` is short (the class; the request id, name, group, kind and code it has):
    Thespian formats every message it sends for two debug lines, whatever the log
    level, and pydantic's full form of a message with an actor address cost 5-6 us
    each time (``repr()`` still shows every field).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def __str__(self) -> str:
        fields = self.__dict__
        shown = [
            f"{key}={fields[key]!r}"
            for key in ("request_id", "name", "group", "kind", "code")
            if fields.get(key) is not None
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


class Request(Message):
    request_id: str = Field(
        default_factory=new_request_id, min_length=1, max_length=MAX_REQUEST_ID_LENGTH
    )


class _NamedRequest(Request):
    """A request about one ``(kind, name)``: the pair must fit a node table key."""

    name: Name
    kind: Kind = "server"

    @model_validator(mode="after")
    def _fits_the_table(self) -> _NamedRequest:
        if surely_fits(self.kind, self.name):
            return self
        problem = key_problem(name_key(self.kind, self.name), "name")
        if problem:
            raise ValueError(problem)
        return self


class _MembershipRequest(Request):
    """A request about one ``(group, address)``: the pair must fit a node table key."""

    group: GroupName
    address: Address

    @model_validator(mode="after")
    def _fits_the_table(self) -> _MembershipRequest:
        akey = address_key(self.address)
        if (
            isinstance(akey, tuple)
            and len(akey) == 3
            and akey[0] == "tcp"
            and type(akey[2]) is int
            and surely_fits(self.group, akey[1])
        ):
            return self
        problem = key_problem(member_key(self.group, self.address), "group")
        if problem:
            raise ValueError(problem)
        return self


class Reply(Message):
    request_id: str


# ---- requests ---------------------------------------------------------------------


class Register(_NamedRequest):
    """Claim ``name`` for ``address``. Replies :class:`Registered` or :class:`AlreadyRegistered`."""

    name: Name
    address: Address
    kind: Kind = "server"
    scope: Scope = "local"
    meta: Meta = Field(default_factory=dict)


class Unregister(_NamedRequest):
    """Free ``name``. Replies :class:`Unregistered` or ``RegistryError(not_registered)``."""

    name: Name
    kind: Kind = "server"
    scope: Scope = "local"


class Whereis(_NamedRequest):
    """Find the owner of ``name``. Replies :class:`WhereisReply` (address None if free)."""

    name: Name
    kind: Kind = "server"
    scope: Scope = "local"


class ListNames(Request):
    """Every registration of ``kind`` (all kinds when None). Replies :class:`NameList`."""

    kind: Kind | None = None
    scope: Scope = "local"


class UpdateMeta(_NamedRequest):
    """Replace the meta of a registered name. Replies :class:`MetaUpdated`."""

    name: Name
    kind: Kind = "server"
    scope: Scope = "local"
    meta: Meta


class JoinGroup(_MembershipRequest):
    """Add ``address`` to ``group`` (idempotent). Replies :class:`JoinedGroup`."""

    group: GroupName
    address: Address
    scope: Scope = "local"
    meta: Meta = Field(default_factory=dict)


class LeaveGroup(_MembershipRequest):
    """Remove ``address`` from ``group``. Replies :class:`LeftGroup`."""

    group: GroupName
    address: Address
    scope: Scope = "local"


class GroupMembers(Request):
    """Members of ``group`` (this node's only, with ``local_only``).

    Replies :class:`GroupMembersReply`.
    """

    group: GroupName
    scope: Scope = "local"
    local_only: bool = False


class ListGroups(Request):
    """Every group with at least one member. Replies :class:`GroupList`."""

    scope: Scope = "local"


class RegisterMany(Request):
    """Many :class:`Register` at once (one message, one batch through the cluster).

    Each item is a whole ``Register`` (its own ``request_id``, its own ``scope`` is
    ignored: the batch's ``scope`` counts). Items are validated one by one where they
    are received, so one bad item fails alone. Replies :class:`RegisteredMany`, one
    result per item, in order.
    """

    registrations: list[Any] = Field(max_length=MAX_BATCH)
    scope: Scope = "local"


class UnregisterMany(Request):
    """Many :class:`Unregister` at once; replies :class:`UnregisteredMany`."""

    names: list[Any] = Field(max_length=MAX_BATCH)
    scope: Scope = "local"


class ActorExiting(Message):
    """One-way notice that ``address`` is exiting: free its names and groups now.

    Sent by :class:`~thespian_cluster.actors.exit_hook.RegistryExitHook` from the
    actor's ``ActorExitRequest`` handler; needs no reply.
    """

    address: Address


# ---- replies ----------------------------------------------------------------------


class RegistrationInfo(Message):
    """A registration as seen in replies."""

    name: Name
    kind: str
    address: Any
    node: str
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, entry: Entry) -> RegistrationInfo:
        return cls(
            name=entry.name,
            kind=entry.kind,
            address=entry.address,
            node=entry.node,
            meta=dict(entry.meta),
        )


class GroupMember(Message):
    """One member of a process group as seen in replies."""

    address: Any
    node: str
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, member: Member) -> GroupMember:
        return cls(address=member.address, node=member.node, meta=dict(member.meta))


class Registered(Reply):
    name: Name
    kind: str
    address: Any
    node: str


class AlreadyRegistered(Reply):
    name: Name
    kind: str
    owner: Any
    node: str


class Unregistered(Reply):
    name: Name
    kind: str


class WhereisReply(Reply):
    name: Name
    kind: str
    address: Any | None = None
    node: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class NameList(Reply):
    names: list[RegistrationInfo]


class MetaUpdated(Reply):
    name: Name
    kind: str
    meta: dict[str, Any]


class JoinedGroup(Reply):
    group: str


class LeftGroup(Reply):
    group: str
    was_member: bool


class GroupMembersReply(Reply):
    group: str
    members: list[GroupMember]

    @property
    def addresses(self) -> list[Any]:
        return [m.address for m in self.members]


class GroupList(Reply):
    groups: list[str]


class RegisteredMany(Reply):
    """One result per item of a :class:`RegisterMany`: ``Registered``,
    ``AlreadyRegistered`` or ``RegistryError``, each echoing its item's ``request_id``."""

    results: list[Any]


class UnregisteredMany(Reply):
    """One result per item of an :class:`UnregisterMany`: ``Unregistered`` or
    ``RegistryError``."""

    results: list[Any]


class ErrorCode(StrEnum):
    NOT_DISTRIBUTED = "not_distributed"
    NOT_REGISTERED = "not_registered"
    UNKNOWN_REQUEST = "unknown_request"
    BACKEND_FAILURE = "backend_failure"
    #: The request failed validation where it was received (see
    #: :func:`thespian_cluster.validation.revalidate`); nothing was changed.
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_NODE = "unknown_node"
    UNAVAILABLE = "unavailable"  # the global registry could not take the request now
    TIMEOUT = "timeout"  # no decision in time: the request may or may not have happened
    NOT_OWNER = "not_owner"  # a global name held by an actor of another node
    MINORITY_PARTITION = "minority_partition"  # this side of a partition may not write
    #: A global claim for an actor that no node of the cluster can be found to host
    #: (it did not answer: dead? or its actor system is no node of this cluster).
    #: Nothing was recorded: a name must live on the node that watches its actor.
    UNKNOWN_HOME = "unknown_home"


class RegistryError(Reply):
    """A request that could not be done; ``code`` is one of :class:`ErrorCode`."""

    code: ErrorCode
    detail: str


# ---- supervision ------------------------------------------------------------------
# Requests a Supervisor answers (see thespian_cluster.supervisors.supervisor).


class SupervisedBy(Message):
    """Sent by a supervisor to each child right after every start.

    Keep it if the child may want to exit *normally* (``NormalExit``), which matters
    to ``transient`` children: a transient child is restarted only after an
    abnormal exit.
    """

    supervisor: Address
    child_id: str


class ConfigureSupervisor(Message):
    """Configure a plain ``Supervisor`` without subclassing; must be its first message.

    Nest supervisors with it: ``ChildSpec(id="pool", actor_class=Supervisor,
    init_message=ConfigureSupervisor(strategy="one_for_all", children=[...]))``.
    """

    strategy: Strategy = "one_for_one"
    max_restarts: int = Field(3, ge=0)
    max_seconds: float = Field(5.0, gt=0)
    retry_delay: float = Field(0.1, ge=0, le=3600)
    children: list[ChildSpec] = Field(default_factory=list)


class NormalExit(Message):
    """Child → supervisor, just before the child exits: this exit is normal."""

    child_id: str


class StartSupervisor(Request):
    """Start a top-level supervisor's children. Replies :class:`ChildrenReply`.

    A supervisor starts on this, on :class:`ConfigureSupervisor`, or (nested) on its
    parent's :class:`SupervisedBy`; other requests wait until then.
    """


class StartChild(Request):
    """Add a child spec and start it. Replies :class:`ChildStarted` or :class:`SupervisorError`."""

    spec: ChildSpec


class TerminateChild(Request):
    """Stop a child, keeping its spec (unless temporary). Replies :class:`ChildTerminated`."""

    child_id: str


class RestartChild(Request):
    """Start a terminated child again. Replies :class:`ChildStarted`."""

    child_id: str


class DeleteChild(Request):
    """Remove a terminated child's spec. Replies :class:`ChildDeleted`."""

    child_id: str


class WhichChildren(Request):
    """Replies :class:`ChildrenReply`, one :class:`ChildInfo` per child in start order."""


class CountChildren(Request):
    """Replies :class:`ChildCount`."""


class ShutdownSupervisor(Request):
    """Stop every child in reverse order (each within its shutdown), then exit.

    Replies :class:`SupervisorStopped` just before the supervisor exits.
    """


class ChildInfo(Message):
    """One child in a :class:`ChildrenReply`.

    ``running`` is true from the moment the child's process exists; ``up`` only once
    its start has finished (a worker answered its first probe, a supervisor's own
    children are up, a ``register_as`` name is acknowledged). A child that is running
    but not up may still fail its start — wait for ``up`` before relying on it.
    """

    id: str
    address: Any | None
    restart: RestartType
    restart_count: int
    uptime: float | None
    running: bool
    type: Literal["worker", "supervisor"]
    up: bool = False
    #: ``cluster``: a cluster singleton's manager (``GetSingletonStatus`` says more).
    placement: Placement = "node"


class ChildStarted(Reply):
    child_id: str
    address: Any


class ChildTerminated(Reply):
    child_id: str


class ChildDeleted(Reply):
    child_id: str


class ChildrenReply(Reply):
    children: list[ChildInfo]

    def by_id(self, child_id: str) -> ChildInfo:
        return next(c for c in self.children if c.id == child_id)


class ChildCount(Reply):
    specs: int
    active: int
    supervisors: int
    workers: int


class SupervisorStopped(Reply):
    pass


class SupervisorErrorCode(StrEnum):
    NOT_FOUND = "not_found"
    ALREADY_PRESENT = "already_present"
    RUNNING = "running"
    START_FAILED = "start_failed"


class SupervisorError(Reply):
    """A supervision request that could not be done."""

    code: SupervisorErrorCode
    detail: str


# ---- one public surface -------------------------------------------------------------

#: The modules that define the protocol. Every class defined in one of them is public
#: (in ``__all__``) or internal (in :data:`INTERNAL_MESSAGES`); see the module docstring.
PROTOCOL_MODULES: Final = (
    "thespian_cluster.messages",
    "thespian_cluster.cluster_messages",
    "thespian_cluster.global_messages",
    "thespian_cluster.event_messages",
    "thespian_cluster.singleton_messages",
)

#: Classes of the protocol modules that only a node's own actors exchange: exported
#: nowhere, free to change in any release.
INTERNAL_MESSAGES: Final = frozenset(
    {
        # cluster_messages: the NodeMonitor handshake and the node's own subscriptions
        "AwaitJoin",
        "ClusterView",
        "Goodbye",
        "Hello",
        "JoinOutcome",
        "JoinRefused",
        "SubscribeClusterView",
        # global_messages: the Registry's hand-off and the replication traffic
        "Decisions",
        "Forwarded",
        "NewerTerm",
        "LinkOffer",
        "LinkHello",
        "Writes",
    }
)

__all__ = [
    "ActorExiting",
    "AlreadyRegistered",
    "AwaitName",
    "ChildCount",
    "ChildDeleted",
    "ChildInfo",
    "ChildStarted",
    "ChildTerminated",
    "ChildrenReply",
    "ClusterNodes",
    "ClusterNodesReply",
    "ConfigureSingleton",
    "ConfigureSupervisor",
    "CountChildren",
    "DeleteChild",
    "ErrorCode",
    "ForceNodeCheck",
    "ForceResolution",
    "GetGlobalStatus",
    "GetNodeHealth",
    "GetNodeStatus",
    "GetPartitionStatus",
    "GetSingletonStatus",
    "GlobalStatus",
    "GroupEvent",
    "GroupList",
    "GroupMember",
    "GroupMembers",
    "GroupMembersReply",
    "GroupSnapshot",
    "JoinGroup",
    "JoinedGroup",
    "LeaveGroup",
    "LeftGroup",
    "ListGroups",
    "ListNames",
    "MemberJoined",
    "MemberLeft",
    "Message",
    "MetaChanged",
    "MetaUpdated",
    "NameConflict",
    "NameEvent",
    "NameList",
    "NameLost",
    "NameMoved",
    "NameRegistered",
    "NameUnregistered",
    "NamesSnapshot",
    "NodeDown",
    "NodeHealthInfo",
    "NodeHealthReply",
    "NodeStatusReply",
    "NodeUp",
    "NormalExit",
    "PartitionDetected",
    "PartitionHealed",
    "PartitionStatus",
    "Register",
    "RegisterMany",
    "Registered",
    "RegisteredMany",
    "RegistrationInfo",
    "RegistryError",
    "Reply",
    "Request",
    "RestartChild",
    "Resync",
    "ShutdownSupervisor",
    "SingletonStatus",
    "StartChild",
    "StartSupervisor",
    "SubscribeGroup",
    "SubscribeNames",
    "SubscribeNodeEvents",
    "SubscribePartitionEvents",
    "Subscribed",
    "SupervisedBy",
    "SupervisorError",
    "SupervisorErrorCode",
    "SupervisorStopped",
    "TerminateChild",
    "Unregister",
    "UnregisterMany",
    "Unregistered",
    "UnregisteredMany",
    "UnsubscribeGroup",
    "UnsubscribeNames",
    "UnsubscribeNodeEvents",
    "UnsubscribePartitionEvents",
    "Unsubscribed",
    "UpdateMeta",
    "Whereis",
    "WhereisReply",
    "WhichChildren",
    "WritableChanged",
]

if not TYPE_CHECKING:  # mypy reads the imports at the top; this would hide typos from it

    def __getattr__(name: str) -> Any:
        """The public messages of the other protocol modules, imported on first use.

        They import this module (for ``Message``, ``Request``, ...), so importing them
        at its top would be a cycle that breaks whichever is imported first; PEP 562
        makes ``from thespian_cluster.messages import NodeUp`` work in any order.
        """
        if name in __all__:
            for module_name in PROTOCOL_MODULES[1:]:
                found = vars(importlib.import_module(module_name)).get(name)
                if found is not None:
                    globals()[name] = found  # from now on a plain attribute
                    return found
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
