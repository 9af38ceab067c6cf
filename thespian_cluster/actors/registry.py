"""The Registry actor: the node's front door for names and groups.

It translates protocol messages (:mod:`thespian_cluster.messages`) into calls on
the configured :class:`~thespian_cluster.backends.RegistryBehavior`, records every
change in the node table (so lookups need no message and a restart loses nothing),
and frees the names of actors that die. Death reaches it three ways:

1. **exit hook** — an actor with :class:`RegistryExitHook` sends :class:`ActorExiting`
   while handling its ``ActorExitRequest``: freed within one message (~2 ms);
2. **dead letters** — the Registry is the node's dead-letter handler, so any message
   sent on this node to a dead registered actor frees its names at once;
3. **liveness probes** — every ``liveness_probe_interval`` it checks up to
   ``liveness_probe_batch`` watched actors' ports (:mod:`.liveness`): a dead actor's
   port refuses the connection.

Requests with ``scope="global"`` answer ``RegistryError(not_distributed)`` unless
the backend is distributed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    DeadEnvelope,
    WakeupMessage,
)

from thespian_cluster.actors.liveness import refused
from thespian_cluster.backends import RegistryBehavior, load_backend
from thespian_cluster.core.table import Conflict, Entry, Member, Removal
from thespian_cluster.messages import (
    ActorExiting,
    AlreadyRegistered,
    ErrorCode,
    GroupList,
    GroupMember,
    GroupMembers,
    GroupMembersReply,
    JoinedGroup,
    JoinGroup,
    LeaveGroup,
    LeftGroup,
    ListGroups,
    ListNames,
    MetaUpdated,
    NameList,
    Register,
    Registered,
    RegistrationInfo,
    RegistryError,
    Reply,
    Request,
    SupervisedBy,
    Unregister,
    Unregistered,
    UpdateMeta,
    Whereis,
    WhereisReply,
)
from thespian_cluster.node_table import TableWriter
from thespian_cluster.settings import ClusterSettings


class ConfigureRegistry(BaseModel):
    """Sent once by the Registry's supervisor right after creating it."""

    model_config = ConfigDict(frozen=True)
    settings: ClusterSettings


class Registry(Actor):
    """See the module docstring. Users talk to it; they never subclass it."""

    def __init__(self) -> None:
        super().__init__()
        self.backend: RegistryBehavior | None = None
        self.table: TableWriter | None = None
        self.settings: ClusterSettings | None = None
        self._early: list[tuple[Any, ActorAddress]] = []  # requests before configuration
        self._probe_cursor = 0  # round robin over the watched actors
        self._handlers: dict[type, Callable[[Any], Reply]] = {
            Register: self._register,
            Unregister: self._unregister,
            Whereis: self._whereis,
            ListNames: self._list_names,
            UpdateMeta: self._update_meta,
            JoinGroup: self._join_group,
            LeaveGroup: self._leave_group,
            GroupMembers: self._group_members,
            ListGroups: self._list_groups,
        }

    # ---- receive ---------------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ConfigureRegistry):
            self._configure(message.settings)
        elif self.backend is None:
            self._early.append((message, sender))
        elif isinstance(message, Request):
            self.send(sender, self._answer(message))
        elif isinstance(message, DeadEnvelope):
            self._forget(message.deadAddress, "dead letter")
        elif isinstance(message, ActorExiting):
            self._forget(message.address, "exit hook")
        elif isinstance(message, WakeupMessage):
            self._probe_batch()
        elif isinstance(message, ActorExitRequest | SupervisedBy):
            pass  # an exit needs no cleanup: the table persists for a restarted Registry
        else:
            logger.warning("registry ignored a {}", type(message).__name__)

    def _configure(self, settings: ClusterSettings) -> None:
        if self.backend is not None:
            return
        self.settings = settings
        self.backend = load_backend(settings.registry_backend, settings.node_name)
        self.table = TableWriter(settings.node_dir)
        entries, members = self.table.load()
        if entries or members:
            self.backend.restore(entries, members)
            logger.info("registry restored {} names, {} memberships", len(entries), len(members))
        self.table.set_registry(self.myAddress)
        self.handleDeadLetters()
        self.wakeupAfter(settings.liveness_probe_interval)
        early, self._early = self._early, []
        for message, sender in early:
            self.receiveMessage(message, sender)

    def _answer(self, request: Request) -> Reply:
        handler = self._handlers.get(type(request))
        if handler is None:
            return _error(request, ErrorCode.UNKNOWN_REQUEST, type(request).__name__)
        if getattr(request, "scope", "local") == "global" and not self._backend.is_distributed():
            return _error(
                request,
                ErrorCode.NOT_DISTRIBUTED,
                f"scope 'global' needs a distributed backend; this node runs "
                f"{type(self._backend).__name__} (cluster_enabled = false?)",
            )
        try:
            return handler(request)
        except Exception as exc:  # a backend bug must not crash the node's registry
            logger.exception("registry backend failed on {}", type(request).__name__)
            return _error(request, ErrorCode.BACKEND_FAILURE, f"{type(exc).__name__}: {exc}")

    @property
    def _backend(self) -> RegistryBehavior:
        assert self.backend is not None
        return self.backend

    @property
    def _table(self) -> TableWriter:
        assert self.table is not None
        return self.table

    # ---- names -----------------------------------------------------------------------

    def _register(self, request: Register) -> Reply:
        result = self._backend.register(request.name, request.address, request.kind, request.meta)
        if isinstance(result, Conflict):
            owner = result.owner
            return AlreadyRegistered(
                request_id=request.request_id,
                name=owner.name,
                kind=owner.kind,
                owner=owner.address,
                node=owner.node,
            )
        self._table.write(entries=[result])
        return Registered(
            request_id=request.request_id,
            name=result.name,
            kind=result.kind,
            address=result.address,
            node=result.node,
        )

    def _unregister(self, request: Unregister) -> Reply:
        entry = self._backend.unregister(request.name, request.kind)
        if entry is None:
            return _not_registered(request, request.name, request.kind)
        self._table.write(removed_names=[entry.key])
        return Unregistered(request_id=request.request_id, name=entry.name, kind=entry.kind)

    def _whereis(self, request: Whereis) -> Reply:
        entry = self._backend.whereis(request.name, request.kind)
        if entry is None:
            return WhereisReply(request_id=request.request_id, name=request.name, kind=request.kind)
        return WhereisReply(
            request_id=request.request_id,
            name=entry.name,
            kind=entry.kind,
            address=entry.address,
            node=entry.node,
            meta=dict(entry.meta),
        )

    def _list_names(self, request: ListNames) -> Reply:
        return NameList(
            request_id=request.request_id,
            names=[_info(e) for e in self._backend.list(request.kind)],
        )

    def _update_meta(self, request: UpdateMeta) -> Reply:
        entry = self._backend.update(request.name, request.kind, request.meta)
        if entry is None:
            return _not_registered(request, request.name, request.kind)
        self._table.write(entries=[entry])
        return MetaUpdated(
            request_id=request.request_id, name=entry.name, kind=entry.kind, meta=dict(entry.meta)
        )

    # ---- groups ----------------------------------------------------------------------

    def _join_group(self, request: JoinGroup) -> Reply:
        member = self._backend.join_group(request.group, request.address, request.meta)
        self._table.write(members=[member])
        return JoinedGroup(request_id=request.request_id, group=request.group)

    def _leave_group(self, request: LeaveGroup) -> Reply:
        was_member = self._backend.leave_group(request.group, request.address)
        if was_member:
            self._table.write(removed_members=[(request.group, request.address)])
        return LeftGroup(request_id=request.request_id, group=request.group, was_member=was_member)

    def _group_members(self, request: GroupMembers) -> Reply:
        backend = self._backend
        members = (
            backend.get_local_group_members(request.group)
            if request.local_only
            else backend.get_group_members(request.group)
        )
        return GroupMembersReply(
            request_id=request.request_id,
            group=request.group,
            members=[_member(m) for m in members],
        )

    def _list_groups(self, request: ListGroups) -> Reply:
        return GroupList(request_id=request.request_id, groups=self._backend.groups())

    # ---- death -----------------------------------------------------------------------

    def _forget(self, address: Any, how: str) -> None:
        removal: Removal = self._backend.remove_address(address)
        if removal:
            self._table.write_removal(removal, address)
            logger.info(
                "freed {} name(s) and {} group membership(s) of dead actor {} ({})",
                len(removal.names),
                len(removal.groups),
                address,
                how,
            )

    def _probe_batch(self) -> None:
        settings = self.settings
        assert settings is not None
        watched = self._backend.watched_addresses()
        if watched:
            start = self._probe_cursor % len(watched)
            chosen = (watched[start:] + watched[:start])[: settings.liveness_probe_batch]
            self._probe_cursor = start + len(chosen)
            for address in refused(chosen):
                self._forget(address, "liveness probe")
        self.wakeupAfter(settings.liveness_probe_interval)


def _error(request: Request, code: ErrorCode, detail: str) -> RegistryError:
    return RegistryError(request_id=request.request_id, code=code, detail=detail)


def _not_registered(request: Request, name: Any, kind: str) -> RegistryError:
    return _error(request, ErrorCode.NOT_REGISTERED, f"no {kind} is registered as {name!r}")


def _info(entry: Entry) -> RegistrationInfo:
    return RegistrationInfo(
        name=entry.name,
        kind=entry.kind,
        address=entry.address,
        node=entry.node,
        meta=dict(entry.meta),
    )


def _member(member: Member) -> GroupMember:
    return GroupMember(address=member.address, node=member.node, meta=dict(member.meta))
