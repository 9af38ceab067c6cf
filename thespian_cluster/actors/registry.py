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
the backend is distributed. A global claim (``Register``, ``RegisterMany``,
``JoinGroup``) goes to the RegistryDist of the node that hosts its actor
(:mod:`thespian_cluster.core.homes`): that node watches the actor, and its death purges
the actor's names. When the actor's IP does not tell, the Registry probes the actor
(``Thespian_StatusReq``) and the claim waits here, never blocking, until the answer
or ``cluster_heartbeat_timeout``; an actor no node hosts gets
``RegistryError(unknown_home)``. Local names are not homed: they belong to this
node's namespace whoever hosts the actor.

What a caller can rely on, whatever it sends:

* **Validated on receipt.** Every message goes through
  :func:`~thespian_cluster.validation.revalidate` before anything else; the handlers
  only ever see the fresh, validated copy. A request that fails gets
  ``RegistryError(invalid_request)`` and changes nothing; junk (strings, dicts,
  ``None``, bytes...) is logged at debug level and answered only when it carries a
  usable ``request_id``. ``receiveMessage`` never raises, so no message can make
  Thespian retry it or kill the actor.
* **All or nothing.** A change reaches the backend (memory) and the node table
  together or not at all. The backend interface stays a set of plain calls; the
  Registry does the bookkeeping: before a change it reads the affected key's prior
  state through the backend's own read methods (``whereis``, ``get_group_members``),
  and if the backend call or the table write raises, :meth:`Registry._undo` puts the
  key back in both (the table write is one LMDB transaction, so a failed write
  leaves the table as it was) and the reply is ``RegistryError(backend_failure)``.
  This costs one read per write and asks nothing of a custom backend beyond its
  interface.
* **Never poisoned.** Reads skip (and log once) a record that cannot be put in a
  reply; on start the Registry drops every record of the node table it reloads that
  would not pass validation today, with one log line each.
"""

from __future__ import annotations

import reprlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loguru import logger
from pydantic import BaseModel, ConfigDict
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    DeadEnvelope,
    WakeupMessage,
)
from thespian.system.messages.status import Thespian_ActorStatus, Thespian_StatusReq

from thespian_cluster.actors.event_service import EVENT_REQUESTS, EventService, ObservedTable
from thespian_cluster.actors.front_door import ROUTES, FrontDoor
from thespian_cluster.actors.liveness import listening, refused
from thespian_cluster.backends import RegistryBehavior, load_backend
from thespian_cluster.backends.reads import whereis_reply
from thespian_cluster.cluster_messages import ClusterView, SubscribeClusterView
from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.homes import (
    Home,
    Homes,
    Host,
    Placement,
    Route,
    Waiting,
    route,
    sockname,
)
from thespian_cluster.core.table import Conflict, Entry, Member, Name, Removal
from thespian_cluster.global_messages import Forwarded
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
    RegisteredMany,
    RegisterMany,
    RegistrationInfo,
    RegistryError,
    Reply,
    Request,
    SupervisedBy,
    Unregister,
    Unregistered,
    UnregisteredMany,
    UnregisterMany,
    UpdateMeta,
    Whereis,
    new_request_id,
)
from thespian_cluster.node_table import TableReader
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.validation import entry_problem, member_problem, revalidate

T = TypeVar("T")
R = TypeVar("R", bound=Request)
_MAX_EARLY = 10_000  # requests kept before configuration; a flood must not grow it forever
_MAX_LOGGED_BAD = 10_000  # bad records remembered for log-once
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80


_HOMES_TIMER = "thespian_cluster.registry.homes"  # the wakeup payload of homing deadlines
_REDELIVER_TIMER = "thespian_cluster.registry.redeliver"
_REDELIVER_TICK = 0.02  # seconds between looks for a restarted actor's successor
_REDELIVER_WAIT = 2.0  # seconds a forward waits for one (a restart takes ~30-100 ms)
_EVENTS_TIMER = "thespian_cluster.registry.events"  # ... and of AwaitName deadlines
#: Seconds a RegistryDist may take to answer a forwarded write: it answers within its
#: own deadline (5 s), so past this (plus a heartbeat timeout for its node to be seen
#: down) the node is gone and the client gets ``RegistryError(timeout)``.
_WRITE_DEADLINE = 5.0
#: Global claims, written by the actor's node. Releases, meta updates and leaves are
#: not routed: only the owner's node may release or update (``not_owner`` elsewhere),
#: and any node may leave.
_HOMED = (Register, JoinGroup, RegisterMany)


@dataclass
class _Gather:
    """A client's global write carried out by other nodes' RegistryDists (or split
    between nodes): their replies come here and make the client's one reply."""

    client: Any
    request: Request
    items: list[Any]
    results: list[Reply | None]
    deadline: float
    parts: dict[str, str] = field(default_factory=dict)  # sub request id -> node


class ConfigureRegistry(BaseModel):
    """Sent once by the Registry's supervisor right after creating it."""

    model_config = ConfigDict(frozen=True)
    settings: ClusterSettings


class Registry(Actor):
    """See the module docstring. Users talk to it; they never subclass it."""

    def __init__(self) -> None:
        super().__init__()
        self.backend: RegistryBehavior | None = None
        self.table: ObservedTable | None = None
        self.events: EventService | None = None  # subscriptions and waits, scope local
        self.front_door: FrontDoor | None = None
        self.settings: ClusterSettings | None = None
        self._early: list[tuple[Any, ActorAddress]] = []  # requests before configuration
        self._probe_cursor = 0  # round robin over the watched actors
        self._logged_bad: set[str] = set()  # records already logged as unreadable
        # Homing of global writes (core.homes); None without a cluster.
        self.homes: Homes | None = None
        self._waiting: Waiting[tuple[Request, Any, float]] = Waiting()
        self._parts: dict[str, tuple[_Gather, list[int]]] = {}  # sub request id -> its gather
        self._gathers: list[_Gather] = []
        self._monitor: Any = None  # the NodeMonitor this Registry gets ClusterViews from
        self._timer_at: float | None = None
        # Forwards whose receiver died unread: (forward, dead address key, deadline).
        self._redeliver: list[tuple[Forwarded, Any, float]] = []
        self._redeliver_armed = False
        self._handlers: dict[type, Callable[[Any], Reply]] = {
            Register: self._register,
            Unregister: self._unregister,
            Whereis: self._whereis,
            ListNames: self._list_names,
            UpdateMeta: self._update_meta,
            RegisterMany: self._register_many,
            UnregisterMany: self._unregister_many,
            JoinGroup: self._join_group,
            LeaveGroup: self._leave_group,
            GroupMembers: self._group_members,
            ListGroups: self._list_groups,
        }

    # ---- receive ---------------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if type(message) is ConfigureRegistry:
            # Not caught: a Registry that cannot open its table must fail where its
            # supervisor sees it, not sit unconfigured queueing requests.
            self._configure(message.settings)
            return
        try:
            self._receive(message, sender)
        except Exception:  # last resort: Thespian would retry the message, then drop it
            logger.exception("registry failed on a {}", type(message).__name__)

    def _receive(self, message: Any, sender: ActorAddress) -> None:
        if self.backend is None:
            if len(self._early) < _MAX_EARLY:
                self._early.append((message, sender))
        elif isinstance(message, WakeupMessage):
            if message.payload == _HOMES_TIMER:
                self._homes_timer()
            elif message.payload == _EVENTS_TIMER:
                self._events_tick()
            elif message.payload == _REDELIVER_TIMER:
                self._redeliver_due()
            else:
                self._probe_batch()
        elif isinstance(message, DeadEnvelope):
            if isinstance(message.deadMessage, Forwarded):
                self._undelivered(message.deadMessage, message.deadAddress)
            # A dead letter can arrive seconds after the send failed; by then the kernel
            # may have given the dead actor's port to a new actor (a restarted child
            # that registered again). A port that accepts now is not dead.
            if listening(message.deadAddress):
                logger.debug("registry kept {}: a dead letter, but it listens", message.deadAddress)
            else:
                self._forget(message.deadAddress, "dead letter")
        elif isinstance(message, Thespian_ActorStatus):
            self._probed(message)
        elif isinstance(message, ClusterView):
            if sender == self._monitor:  # only this node's NodeMonitor says who is up
                self._on_view(message)
        elif isinstance(message, Reply) and _str_attr(message, "request_id") in self._parts:
            self._part_answered(message)
        elif isinstance(message, ActorExitRequest):
            self._stop()  # the table persists for a restarted Registry: only clients to answer
        elif isinstance(message, SupervisedBy):
            pass
        else:
            checked = revalidate(message)  # never act on what arrived, only on this
            if isinstance(checked, Request):
                if self._front_door.handles(checked):
                    self._elsewhere(checked, sender)
                elif isinstance(checked, EVENT_REQUESTS):
                    self._event_service.handle(checked, sender)
                else:
                    self.send(sender, self._answer(checked))
            elif isinstance(checked, ActorExiting):
                self._forget(checked.address, "exit hook")
            elif isinstance(checked, RegistryError):
                self.send(sender, checked)  # invalid_request
            elif checked is not None:
                logger.debug("registry ignored a {}", type(checked).__name__)

    def _configure(self, settings: ClusterSettings) -> None:
        if self.backend is not None:
            return
        self.settings = settings
        self.backend = load_backend(settings.registry_backend, settings.node_name)
        self.table = ObservedTable(settings.node_dir)
        loaded = self.table.load(check_entry=entry_problem, check_member=member_problem)
        for key, reason in loaded.dropped:
            logger.warning("registry dropped node table record {}: {}", _short.repr(key), reason)
        if loaded.entries or loaded.members:
            self.backend.restore(loaded.entries, loaded.members)
            logger.info(
                "registry restored {} names, {} memberships",
                len(loaded.entries),
                len(loaded.members),
            )
        self.table.set_registry(self.myAddress)
        reader = TableReader(settings.node_dir)
        backend = self.backend
        self.events = EventService(
            "local",
            self.table,
            self.send,
            records=reader.records,
            lookup=lambda key: backend.whereis(key[1], key[0]),
            probe_interval=settings.liveness_probe_interval,
            hold_timeout=0.0,  # ready at once: nothing is ever held
            arm=lambda seconds: self.wakeupAfter(seconds, payload=_EVENTS_TIMER),
        )
        self.table.events = self.events
        self.events.ready()
        distributed = settings.cluster_enabled and self.backend.is_distributed()
        if settings.cluster_enabled and not distributed:
            logger.warning(
                "registry backend {} cannot serve scope 'global': global requests will "
                "answer not_distributed (use registry_backend = 'global')",
                settings.registry_backend,
            )
        self.front_door = FrontDoor(settings.node_dir, settings.node_name, distributed)
        if distributed:
            # A probe's answer is kept for one liveness round: long enough for a batch
            # and a retry, short enough that a reused port is not taken for its old owner.
            self.homes = Homes(
                settings.node_name,
                settings.host,
                settings.admin_port,
                remember=settings.liveness_probe_interval,
            )
            self._watch_view()
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

    # ---- global writes: done by the node that hosts the actor (core.homes) ------------

    def _elsewhere(self, request: Request, client: Any, deadline: float | None = None) -> None:
        """A request for another actor or the global table. A global write goes to the
        RegistryDist of the node that hosts its actor; when that is unknown, the actor is
        probed first (the request waits here, nothing blocks) or the write is refused."""
        homes = self.homes
        if homes is None or not isinstance(request, _HOMED):
            self.send(*self._front_door.take(request, client))
            return
        now = time.monotonic()
        items = _write_items(request)
        plan = route(self._places(items, now))
        if plan.only_here(homes.me.name):
            self.send(*self._front_door.take(request, client))
        elif plan.probes:
            self._park(request, client, plan, now, deadline)
        else:
            self._spread(request, client, items, plan, now)

    def _places(self, items: list[Any], now: float) -> list[Placement]:
        homes = self.homes
        assert homes is not None
        here = Home(homes.me, here=True)
        by_address: dict[Any, Placement] = {}  # a batch's items often share an actor
        places: list[Placement] = []
        for item in items:
            # A batch's items are not validated yet: what cannot be placed goes to this
            # node's RegistryDist, which validates each and answers invalid_request.
            placed: Placement = here
            if isinstance(item, Register | JoinGroup) and sockname(item.address) is not None:
                key = address_key(item.address)
                placed = by_address.get(key) or homes.place(item.address, now)
                by_address[key] = placed
            places.append(placed)
        return places

    def _park(
        self, request: Request, client: Any, plan: Route, now: float, deadline: float | None
    ) -> None:
        settings = self._settings
        if deadline is None:
            deadline = now + settings.cluster_heartbeat_timeout
        probes = self._waiting.add((request, client, deadline), plan.probes, deadline)
        if probes is None:
            self.send(client, _error(request, ErrorCode.UNAVAILABLE, "too many writes waiting"))
            return
        for address in probes:
            logger.debug("registry asks {} which node hosts it", address)
            self.send(address, Thespian_StatusReq())
        self._arm(deadline, now)

    def _probed(self, status: Thespian_ActorStatus) -> None:
        address = getattr(status, "actorAddress", None)
        if self.homes is None or address is None or not self._waiting.probing(address):
            return
        placed = self.homes.probed(address, getattr(status, "adminAddress", None), time.monotonic())
        if placed is not None:  # None: its node is not in the view yet; wait for one
            self._resume(address)

    def _resume(self, address: Any) -> None:
        for request, client, deadline in self._waiting.answered(address):
            self._elsewhere(request, client, deadline)

    def _spread(
        self, request: Request, client: Any, items: list[Any], plan: Route, now: float
    ) -> None:
        """Send each node its part of ``request``; answer the client when all have."""
        homes = self.homes
        assert homes is not None
        deadline = now + _WRITE_DEADLINE + self._settings.cluster_heartbeat_timeout
        gather = _Gather(client, request, items, [None] * len(items), deadline)
        for index, why in plan.refused:
            gather.results[index] = _item_error(gather, index, ErrorCode.UNKNOWN_HOME, why)
        for node, (host, indices) in plan.parts.items():
            target = (
                self._front_door.reader.agent("registry_dist")
                if host.name == homes.me.name
                else host.registry_dist
            )
            if target is None:
                for index in indices:
                    gather.results[index] = _item_error(
                        gather, index, ErrorCode.UNAVAILABLE, f"node {node}'s registry is not up"
                    )
                continue
            sub_id = new_request_id()  # the client's id may already be as long as allowed
            gather.parts[sub_id] = node
            self._parts[sub_id] = (gather, indices)
            self.send(
                target, Forwarded(request=_part(request, indices, sub_id), reply_to=self.myAddress)
            )
        if gather.parts:
            self._gathers.append(gather)
            self._arm(deadline, now)
        else:
            self._finish(gather)

    def _part_answered(self, reply: Reply) -> None:
        gather, indices = self._parts.pop(reply.request_id)
        gather.parts.pop(reply.request_id, None)
        results = getattr(reply, "results", None)
        if (
            isinstance(gather.request, RegisterMany)
            and isinstance(results, list)
            and len(results) == len(indices)
        ):
            for index, result in zip(indices, results, strict=True):
                gather.results[index] = result
        else:
            for index in indices:  # one write, or a whole part refused (RegistryError)
                gather.results[index] = reply.model_copy(
                    update={"request_id": _item_id(gather, index)}
                )
        if not gather.parts:
            self._gathers.remove(gather)
            self._finish(gather)

    def _finish(self, gather: _Gather) -> None:
        request = gather.request
        results = gather.results
        if isinstance(request, RegisterMany):
            self.send(gather.client, RegisteredMany(request_id=request.request_id, results=results))
        else:
            assert results[0] is not None
            self.send(gather.client, results[0])

    def _arm(self, at: float, now: float) -> None:
        if self._timer_at is None or at < self._timer_at:
            self._timer_at = at
            self.wakeupAfter(max(0.0, at - now), payload=_HOMES_TIMER)

    def _homes_timer(self) -> None:
        """Deadlines: a probe not answered makes its actor homeless; a node that did not
        answer its part makes those items time out."""
        self._timer_at = None
        now = time.monotonic()
        homes = self.homes
        if homes is None:
            return
        for address in self._waiting.overdue(now):
            homes.silent(address, now, "no answer to a status probe in time")
            self._resume(address)
        for gather in [g for g in self._gathers if now >= g.deadline]:
            self._gathers.remove(gather)
            for sub_id, node in gather.parts.items():
                _, indices = self._parts.pop(sub_id)
                for index in indices:
                    gather.results[index] = _item_error(
                        gather, index, ErrorCode.TIMEOUT, f"node {node} did not answer in time"
                    )
            self._finish(gather)
        upcoming = [g.deadline for g in self._gathers]
        waiting = self._waiting.next_deadline()
        if waiting is not None:
            upcoming.append(waiting)
        if upcoming:
            self._arm(min(upcoming), now)

    def _stop(self) -> None:
        """Answer every client still waiting for a home or another node's reply."""
        for request, client, _ in self._waiting.drain():
            self.send(client, _error(request, ErrorCode.UNAVAILABLE, "the registry is stopping"))
        for gather in self._gathers:
            self.send(
                gather.client,
                _error(gather.request, ErrorCode.UNAVAILABLE, "the registry is stopping"),
            )
        self._gathers.clear()
        self._parts.clear()

    def _on_view(self, view: ClusterView) -> None:
        if self.homes is not None:
            settled = self.homes.set_view(
                (Host(r.name, r.host, r.port, r.agents.get("registry_dist")) for r in view.records),
                complete=view.joined,
                now=time.monotonic(),
            )
            for address in settled:
                self._resume(address)

    def _undelivered(self, forwarded: Forwarded, dead: Any) -> None:
        """A request forwarded to an actor that died before it read it (this node's
        RegistryDist restarting): to its successor once that is up, else answered
        ``unavailable`` after :data:`_REDELIVER_WAIT`; never left for the client to
        time out. (A part sent to another node's RegistryDist is answered at its
        deadline, see _homes_timer.)"""
        if forwarded.reply_to == self.myAddress:
            return
        self._redeliver.append((forwarded, address_key(dead), time.monotonic() + _REDELIVER_WAIT))
        if not self._redeliver_armed:  # one timer for all of them, however many die
            self._redeliver_armed = True
            self.wakeupAfter(0.0, payload=_REDELIVER_TIMER)

    def _redeliver_due(self) -> None:
        self._redeliver_armed = False
        waiting, self._redeliver = self._redeliver, []
        now = time.monotonic()
        successors: dict[str, Any] = {}  # one node-table read per role and round
        for forwarded, dead, deadline in waiting:
            request = forwarded.request
            # A forwarded read is RegistryDist's too (a backend that keeps no mirror).
            role = ROUTES.get(type(request), "registry_dist")
            if role not in successors:
                successors[role] = self._front_door.reader.agent(role)
            successor = successors[role]
            if successor is not None and address_key(successor) != dead:
                logger.debug("registry forwards a {} again", type(request).__name__)
                self.send(successor, forwarded)
            elif now >= deadline:
                detail = f"this node's {role} stopped before it read the request"
                self.send(forwarded.reply_to, _error(request, ErrorCode.UNAVAILABLE, detail))
            else:
                self._redeliver.append((forwarded, dead, deadline))
        if self._redeliver:
            self._redeliver_armed = True
            self.wakeupAfter(_REDELIVER_TICK, payload=_REDELIVER_TIMER)

    def _watch_view(self) -> None:
        """Subscribe to this node's NodeMonitor (again, when it restarted elsewhere)."""
        monitor = self._front_door.reader.agent("node_monitor")
        if monitor is not None and monitor != self._monitor:
            self._monitor = monitor
            self.send(monitor, SubscribeClusterView(subscriber=self.myAddress))

    @property
    def _settings(self) -> ClusterSettings:
        assert self.settings is not None
        return self.settings

    @property
    def _backend(self) -> RegistryBehavior:
        assert self.backend is not None
        return self.backend

    @property
    def _front_door(self) -> FrontDoor:
        assert self.front_door is not None
        return self.front_door

    @property
    def _table(self) -> ObservedTable:
        assert self.table is not None
        return self.table

    @property
    def _event_service(self) -> EventService:
        assert self.events is not None
        return self.events

    def _events_tick(self) -> None:
        settings = self.settings
        assert settings is not None
        self._event_service.tick(time.monotonic(), refused, settings.liveness_probe_batch)

    # ---- names -----------------------------------------------------------------------

    def _register(self, request: Register) -> Reply:
        backend = self._backend
        with self._undo(name=(request.kind, request.name)):
            result = backend.register(request.name, request.address, request.kind, request.meta)
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
        with self._undo(name=(request.kind, request.name)):
            entry = self._backend.unregister(request.name, request.kind)
            if entry is None:
                return _not_registered(request, request.name, request.kind)
            self._table.write(removed_names=[entry.key])
        return Unregistered(request_id=request.request_id, name=entry.name, kind=entry.kind)

    def _register_many(self, request: RegisterMany) -> Reply:
        results = [self._item(item, Register, self._register) for item in request.registrations]
        return RegisteredMany(request_id=request.request_id, results=results)

    def _unregister_many(self, request: UnregisterMany) -> Reply:
        results = [self._item(item, Unregister, self._unregister) for item in request.names]
        return UnregisteredMany(request_id=request.request_id, results=results)

    def _item(self, item: Any, kind: type[R], handle: Callable[[R], Reply]) -> Reply:
        """One item of a batch, validated and done on its own: a bad one fails alone."""
        checked = revalidate(item)
        if isinstance(checked, kind):
            try:
                return handle(checked)
            except Exception as exc:  # as _answer does for a single request
                logger.exception("registry backend failed on a batch item")
                return _error(checked, ErrorCode.BACKEND_FAILURE, f"{type(exc).__name__}: {exc}")
        if isinstance(checked, RegistryError):
            return checked
        return RegistryError(
            request_id="", code=ErrorCode.INVALID_REQUEST, detail=f"not a {kind.__name__}"
        )

    def _whereis(self, request: Whereis) -> Reply:
        entry = self._backend.whereis(request.name, request.kind)
        reply = None
        if entry is not None:
            reply = self._readable(entry, lambda e: whereis_reply(request, e))
        return reply or whereis_reply(request, None)

    def _list_names(self, request: ListNames) -> Reply:
        infos = (self._readable(e, RegistrationInfo.of) for e in self._backend.list(request.kind))
        return NameList(request_id=request.request_id, names=[i for i in infos if i is not None])

    def _update_meta(self, request: UpdateMeta) -> Reply:
        with self._undo(name=(request.kind, request.name)):
            entry = self._backend.update(request.name, request.kind, request.meta)
            if entry is None:
                return _not_registered(request, request.name, request.kind)
            self._table.write(entries=[entry])
        return MetaUpdated(
            request_id=request.request_id, name=entry.name, kind=entry.kind, meta=dict(entry.meta)
        )

    # ---- groups ----------------------------------------------------------------------

    def _join_group(self, request: JoinGroup) -> Reply:
        with self._undo(member=(request.group, request.address)):
            member = self._backend.join_group(request.group, request.address, request.meta)
            self._table.write(members=[member])
        return JoinedGroup(request_id=request.request_id, group=request.group)

    def _leave_group(self, request: LeaveGroup) -> Reply:
        with self._undo(member=(request.group, request.address)):
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
        rows = (self._readable(m, GroupMember.of) for m in members)
        return GroupMembersReply(
            request_id=request.request_id,
            group=request.group,
            members=[r for r in rows if r is not None],
        )

    def _list_groups(self, request: ListGroups) -> Reply:
        groups = [g for g in self._backend.groups() if type(g) is str and g]
        return GroupList(request_id=request.request_id, groups=groups)

    # ---- all or nothing --------------------------------------------------------------

    @contextmanager
    def _undo(
        self,
        name: tuple[str, Name] | None = None,
        member: tuple[str, Any] | None = None,
    ) -> Iterator[None]:
        """Run a change of one name or one membership; if it raises, put it back.

        The prior state is read first through the backend's read methods. On an
        exception the key is restored in the backend and then in the node table (a
        failed LMDB transaction changed nothing, but a failure after the commit
        would leave the table ahead), and the exception goes on to :meth:`_answer`,
        which replies ``backend_failure``.
        """
        backend = self._backend
        prior_entry = backend.whereis(name[1], name[0]) if name is not None else None
        prior_member = _find_member(backend, *member) if member is not None else None
        try:
            yield
        except BaseException:
            if name is not None:
                self._restore_name(*name, prior_entry)
            if member is not None:
                self._restore_member(*member, prior_member)
            raise

    def _restore_name(self, kind: str, name: Name, prior: Entry | None) -> None:
        backend = self._backend
        try:
            current = backend.whereis(name, kind)
            if current is not None and (
                prior is None or address_key(current.address) != address_key(prior.address)
            ):
                backend.unregister(name, kind)
            if prior is not None:  # the owner registering again: its meta comes back
                backend.register(prior.name, prior.address, prior.kind, prior.meta)
            restored = backend.whereis(name, kind)
            if restored is None:
                self._table.write(removed_names=[(kind, name)])
            else:
                self._table.write(entries=[restored])
        except Exception:
            logger.exception(
                "registry could not roll back {} {}: memory and node table may disagree",
                kind,
                _short.repr(name),
            )

    def _restore_member(self, group: str, address: Any, prior: Member | None) -> None:
        backend = self._backend
        try:
            if prior is None:
                backend.leave_group(group, address)
                self._table.write(removed_members=[(group, address)])
            else:
                restored = backend.join_group(group, prior.address, prior.meta)
                self._table.write(members=[restored])
        except Exception:
            logger.exception(
                "registry could not roll back {}'s membership of {}: memory and node table "
                "may disagree",
                address,
                _short.repr(group),
            )

    # ---- reads that survive bad records ----------------------------------------------

    def _readable(self, record: Any, build: Callable[[Any], T]) -> T | None:
        """``build(record)``, or None (logged once per record) if the record cannot be
        put in a reply: one bad record must not fail a whole listing."""
        try:
            return build(record)
        except Exception as exc:
            key = _describe_record(record)
            if key not in self._logged_bad:
                if len(self._logged_bad) >= _MAX_LOGGED_BAD:
                    self._logged_bad.clear()
                self._logged_bad.add(key)
                logger.warning(
                    "registry skipped a record it cannot reply with: {} ({}: {})",
                    key,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "",
                )
            return None

    # ---- death -----------------------------------------------------------------------

    def _forget(self, address: Any, how: str) -> None:
        if self.homes is not None:
            self.homes.forget(address)
            if self._waiting.probing(address):  # a probe's dead letter: it will never answer
                self.homes.silent(address, time.monotonic(), f"dead: {how}")
                self._resume(address)
        if self.front_door is not None and self.front_door.cluster_enabled:
            dist = self.front_door.reader.agent("registry_dist")
            if dist is not None:  # it frees the actor's global names, if it has any
                self.send(dist, ActorExiting(address=address))
        if self.events is not None:
            self.events.dead(address)
        removal: Removal = self._backend.remove_address(address)
        if removal:
            try:
                self._table.write_removal(removal, address)
            except Exception:  # the actor is dead either way; a restart reloads and re-probes
                logger.exception("registry could not remove dead actor {} from the table", address)
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
        try:
            self._events_tick()
            watched = self._backend.watched_addresses()
            if watched:
                start = self._probe_cursor % len(watched)
                chosen = (watched[start:] + watched[:start])[: settings.liveness_probe_batch]
                self._probe_cursor = start + len(chosen)
                for address in refused(chosen):
                    self._forget(address, "liveness probe")
            if self.homes is not None:
                self._watch_view()
        except Exception:  # logged, not hidden; the next round must still come
            logger.exception("registry liveness probe round failed")
        finally:
            # Re-armed whatever happened: without this timer probing stops for good.
            self.wakeupAfter(settings.liveness_probe_interval)


def _error(request: Request, code: ErrorCode, detail: str) -> RegistryError:
    return RegistryError(request_id=request.request_id, code=code, detail=detail)


def _str_attr(message: Any, attribute: str) -> str | None:
    value = getattr(message, attribute, None)
    return value if isinstance(value, str) else None


def _write_items(request: Request) -> list[Any]:
    """The writes a global request stands for (a batch's items as they came)."""
    if isinstance(request, RegisterMany):
        return list(request.registrations)
    return [request]


def _part(request: Request, indices: list[int], sub_id: str) -> Request:
    """The part of ``request`` made of its items at ``indices``, under ``sub_id``."""
    if isinstance(request, RegisterMany):
        items = [request.registrations[i] for i in indices]
        return request.model_copy(update={"request_id": sub_id, "registrations": items})
    return request.model_copy(update={"request_id": sub_id})


def _item_id(gather: _Gather, index: int) -> str:
    """The request id the client matches result ``index`` by."""
    if isinstance(gather.request, RegisterMany):
        item_id = getattr(gather.items[index], "request_id", "")
        return item_id if isinstance(item_id, str) else ""
    return gather.request.request_id


def _item_error(gather: _Gather, index: int, code: ErrorCode, detail: str) -> RegistryError:
    return RegistryError(request_id=_item_id(gather, index), code=code, detail=detail)


def _not_registered(request: Request, name: Any, kind: str) -> RegistryError:
    return _error(request, ErrorCode.NOT_REGISTERED, f"no {kind} is registered as {name!r}")


def _describe_record(record: Any) -> str:
    """A short label for a record (never its full repr: its meta may be megabytes)."""
    label = getattr(record, "name", getattr(record, "group", None))
    owner = getattr(record, "address", None)
    return f"{type(record).__name__} {_short.repr(label)} of {_short.repr(owner)}"


def _find_member(backend: RegistryBehavior, group: str, address: Any) -> Member | None:
    """``address``'s membership of ``group`` as the backend reports it, or None."""
    akey = address_key(address)
    return next(
        (m for m in backend.get_group_members(group) if address_key(m.address) == akey), None
    )
