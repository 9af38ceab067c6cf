"""The events of one scope, served by the actor that applies the scope's changes.

:class:`EventService` is not an actor: the Registry holds one for scope ``local`` and
RegistryDist one for scope ``global`` (as the Registry holds its FrontDoor). The host
passes it the requests of :mod:`thespian_cluster.event_messages` and every change it
commits to the node table (:meth:`EventService.changed`, with the table's version);
the decisions are :class:`~thespian_cluster.core.events.ScopeEvents`', this class only
builds messages and sends them.

What it adds to the core:

* **Subscriptions and waits outlive the host actor.** Each is kept in the node table
  (``put_event_record``); a restarted host reloads them, sends every subscriber a
  :class:`~thespian_cluster.event_messages.Resync` with a fresh snapshot and keeps
  waiting for the awaited names. Nothing is replayed and nothing is lost silently.
* **Dead subscribers are dropped**: :meth:`EventService.tick` probes a batch of them
  every liveness round (a refused port is a dead actor), and the host passes on the
  deaths it learns of itself (:meth:`EventService.dead`).
* **Every request is answered**: a wait that expires is answered
  ``RegistryError(timeout)``; a scope that cannot report changes (a global backend
  that keeps no mirror) answers ``RegistryError(unknown_request)`` saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from loguru import logger

from thespian_cluster.backends.reads import whereis_reply
from thespian_cluster.cluster_messages import Unsubscribed
from thespian_cluster.core import reasons as why
from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.events import (
    Change,
    GroupTopic,
    MemberChange,
    NamesTopic,
    ScopeEvents,
    Topic,
    Waiter,
)
from thespian_cluster.core.replica import MirrorUpdate
from thespian_cluster.core.table import Entry, Member, Name, NameKey, Removal
from thespian_cluster.event_messages import (
    AwaitName,
    GroupSnapshot,
    MemberJoined,
    MemberLeft,
    MetaChanged,
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
from thespian_cluster.messages import (
    ErrorCode,
    GroupMember,
    Message,
    RegistrationInfo,
    RegistryError,
    Request,
    Whereis,
)
from thespian_cluster.node_table import GlobalMirror, TableWriter

#: The requests an :class:`EventService` answers.
EVENT_REQUESTS = (SubscribeNames, UnsubscribeNames, SubscribeGroup, UnsubscribeGroup, AwaitName)

Send = Callable[[Any, Any], None]
Records = Callable[[], tuple[list[Entry], list[Member]]]


class EventService:
    """Subscriptions and waits of ``scope`` on this node; see the module docstring.

    Args:
        scope: ``local`` or ``global``.
        table: the host's writer of the node table (where records are kept).
        send: the host's ``send``.
        records: the scope's entries and explicit memberships as committed now.
        lookup: the scope's entry of a name key now, or None.
        probe_interval: seconds between two probes of a batch of subscribers.
        arm: ask the host to call :meth:`tick` in that many seconds (a wait's deadline);
            a host that ticks often anyway passes None.
        unavailable: why this scope cannot report changes, or None if it can.
    """

    def __init__(
        self,
        scope: str,
        table: TableWriter,
        send: Send,
        records: Records,
        lookup: Callable[[NameKey], Entry | None],
        probe_interval: float,
        arm: Callable[[float], None] | None = None,
        unavailable: str | None = None,
    ) -> None:
        self.scope = scope
        self._table = table
        self._send = send
        self._records = records
        self._lookup = lookup
        self._unavailable = unavailable
        self._probe_interval = probe_interval
        self._arm = arm
        self._events = ScopeEvents()
        self._probe_cursor = 0
        self._next_probe = 0.0

    # ---- start ---------------------------------------------------------------------

    def restore(self) -> None:
        """After the host (re)started: take up the kept subscriptions (each gets a
        :class:`Resync`) and waits."""
        kept = self._table.event_records(self.scope)
        subscriptions = [r for r in kept if _is_subscription(r)]
        waits = [r for r in kept if isinstance(r, Waiter)]
        if subscriptions:
            self._ensure_copy()
            version = self._table.version()
            for subscriber, topic in subscriptions:
                self._events.subscribe(subscriber, topic)
                self._resync(subscriber, topic, version, "restarted")
        for waiter in waits:
            entry = self._lookup(waiter.key)
            if entry is not None:
                self._answer(waiter, entry)
            else:
                self._events.wait(waiter)
        if subscriptions or waits:
            logger.info(
                "{} events: took up {} subscription(s) and {} wait(s) after a restart",
                self.scope,
                len(subscriptions),
                len(waits),
            )

    # ---- requests ------------------------------------------------------------------

    def handle(self, request: Request, client: Any) -> None:
        """Answer one of :data:`EVENT_REQUESTS` (validated)."""
        if self._unavailable is not None:
            self._send(client, _error(request, ErrorCode.UNKNOWN_REQUEST, self._unavailable))
            return
        if isinstance(request, AwaitName):
            self._await(request, client)
        elif isinstance(request, SubscribeNames | SubscribeGroup):
            topic = _topic(request)
            self._ensure_copy()
            if not self._events.subscribed(request.subscriber, topic):
                self._keep(request.subscriber, topic)
            self._events.subscribe(request.subscriber, topic)
            version = self._table.version()
            self._send(client, self._snapshot(topic, request.request_id, version))
        elif isinstance(request, UnsubscribeNames | UnsubscribeGroup):
            topic = _topic(request)
            was = self._events.unsubscribe(request.subscriber, topic)
            if was:
                self._table.drop_event_record(self.scope, _record_key(request.subscriber, topic))
            self._send(client, Unsubscribed(request_id=request.request_id, was_subscribed=was))

    def _await(self, request: AwaitName, client: Any) -> None:
        key = (request.kind, request.name)
        entry = self._lookup(key)
        if entry is not None:
            self._send(client, whereis_reply(_as_whereis(request), entry))
            return
        waiter = Waiter(key, client, request, time.monotonic() + request.timeout)
        self._events.wait(waiter)
        self._table.put_event_record(self.scope, _wait_key(waiter), waiter)
        if self._arm is not None:
            self._arm(request.timeout)

    # ---- changes -------------------------------------------------------------------

    def changed(self, update: MirrorUpdate, version: int | None) -> None:
        """The host committed ``update`` at ``version``: tell whom it concerns."""
        if version is None or not update:
            return
        applied = self._events.apply(update)
        for waiter, entry in applied.answered:
            self._answer(waiter, entry)
        for recipients, change in applied.events:
            event = self._event(change, version)
            for subscriber in recipients:
                self._tell(subscriber, event)

    def reloaded(self) -> None:
        """The host rewrote the scope whole: every subscriber gets a fresh snapshot."""
        for key in self._events.waited_keys():
            entry = self._lookup(key)
            if entry is not None:
                for waiter in self._events.take_waiters(key):
                    self._answer(waiter, entry)
        subscriptions = self._events.subscriptions()
        if not subscriptions:
            return
        self._events.load(*self._records())
        version = self._table.version()
        for subscriber, topic in subscriptions:
            self._resync(subscriber, topic, version, "reloaded")

    # ---- time and deaths -----------------------------------------------------------

    def tick(
        self, now: float, probe_dead: Callable[[Sequence[Any]], list[Any]], batch: int
    ) -> None:
        """Expire waits; every ``probe_interval``, probe up to ``batch`` subscribers and
        drop the dead ones."""
        for waiter in self._events.expired(now):
            self._table.drop_event_record(self.scope, _wait_key(waiter))
            request = waiter.request
            detail = f"no {request.kind} {request.name!r} within {request.timeout:g} s"
            self._send(waiter.client, _error(request, ErrorCode.TIMEOUT, detail))
        if now < self._next_probe:
            return
        self._next_probe = now + self._probe_interval
        watched = self._events.subscribers()
        if not watched:
            return
        start = self._probe_cursor % len(watched)
        chosen = (watched[start:] + watched[:start])[:batch]
        self._probe_cursor = start + len(chosen)
        for address in probe_dead(chosen):
            self.dead(address)

    def dead(self, address: Any) -> None:
        """``address``'s actor is dead: drop its subscriptions and waits."""
        topics, waits = self._events.drop(address)
        for topic in topics:
            self._table.drop_event_record(self.scope, _record_key(address, topic))
        for waiter in waits:
            self._table.drop_event_record(self.scope, _wait_key(waiter))

    # ---- messages ------------------------------------------------------------------

    def _ensure_copy(self) -> None:
        if not self._events.has_copy:
            self._events.load(*self._records())

    def _keep(self, subscriber: Any, topic: Topic) -> None:
        self._table.put_event_record(
            self.scope, _record_key(subscriber, topic), (subscriber, topic)
        )

    def _snapshot(
        self, topic: Topic, request_id: str, version: int
    ) -> NamesSnapshot | GroupSnapshot:
        rows = self._events.snapshot(topic)
        if isinstance(topic, GroupTopic):
            members = [GroupMember.of(m) for m in rows if isinstance(m, Member)]
            return GroupSnapshot(
                request_id=request_id, scope=self.scope, group=topic.group, members=members,
                version=version,
            )  # fmt: skip
        names = [RegistrationInfo.of(e) for e in rows if isinstance(e, Entry)]
        return NamesSnapshot(
            request_id=request_id, scope=self.scope, kind=topic.kind, prefix=topic.prefix,
            names=names, version=version,
        )  # fmt: skip

    def _resync(self, subscriber: Any, topic: Topic, version: int, reason: str) -> None:
        self._tell(subscriber, Resync(snapshot=self._snapshot(topic, "", version), reason=reason))

    def _answer(self, waiter: Waiter, entry: Entry) -> None:
        self._table.drop_event_record(self.scope, _wait_key(waiter))
        self._send(waiter.client, whereis_reply(_as_whereis(waiter.request), entry))

    def _event(self, change: Change, version: int) -> Message:
        if isinstance(change, MemberChange):
            member = change.member
            kind = MemberJoined if change.kind == "joined" else MemberLeft
            return kind.model_construct(
                scope=self.scope, group=member.group, address=member.address, node=member.node,
                meta=dict(member.meta), reason=change.reason, version=version,
            )  # fmt: skip
        entry = change.entry
        fields = {
            "scope": self.scope, "name": entry.name, "kind": entry.kind,
            "address": entry.address, "node": entry.node, "meta": dict(entry.meta),
            "reason": change.reason, "version": version,
        }  # fmt: skip
        if change.kind == "moved":
            assert change.previous is not None
            return NameMoved.model_construct(
                **fields, previous=change.previous.address, previous_node=change.previous.node
            )
        event = {"registered": NameRegistered, "unregistered": NameUnregistered}.get(
            change.kind, MetaChanged
        )
        return event.model_construct(**fields)

    def _tell(self, subscriber: Any, event: Any) -> None:
        try:
            self._send(subscriber, event)
        except Exception:  # one bad subscriber address must not stop the others' events
            logger.exception("{} events: could not send to {}", self.scope, subscriber)


def _topic(request: Any) -> Topic:
    if isinstance(request, SubscribeGroup | UnsubscribeGroup):
        return GroupTopic(request.group)
    return NamesTopic(request.kind, request.prefix)


def _is_subscription(record: Any) -> bool:
    return (
        isinstance(record, tuple)
        and len(record) == 2
        and isinstance(record[1], NamesTopic | GroupTopic)
    )


def _record_key(subscriber: Any, topic: Topic) -> Any:
    return ("subscription", address_key(subscriber), topic)


def _wait_key(waiter: Waiter) -> Any:
    return ("wait", address_key(waiter.client), waiter.request.request_id)


def _as_whereis(request: AwaitName) -> Whereis:
    return Whereis.model_construct(
        request_id=request.request_id, name=request.name, kind=request.kind
    )


def _error(request: Request, code: ErrorCode, detail: str) -> RegistryError:
    return RegistryError(request_id=request.request_id, code=code, detail=detail)


class ObservedTable(TableWriter):
    """The Registry's writer of the node table: each committed change of the local
    scope also goes to :attr:`events` (set once the service exists)."""

    events: EventService | None = None

    def write(
        self,
        entries: Iterable[Entry] = (),
        removed_names: Iterable[tuple[str, Name]] = (),
        members: Iterable[Member] = (),
        removed_members: Iterable[tuple[str, Any]] = (),
        reasons: Mapping[Any, str] | None = None,
    ) -> int:
        update = MirrorUpdate(
            tuple(entries), tuple(removed_names), tuple(members), tuple(removed_members),
            reasons or {},
        )  # fmt: skip
        version = super().write(
            update.entries, update.dropped_names, update.members, update.dropped_members
        )
        if self.events is not None:
            self.events.changed(update, version)
        return version

    def write_removal(self, removal: Removal, address: Any) -> int:
        akey = address_key(address)
        reasons: dict[Any, str] = {e.key: why.OWNER_DIED for e in removal.names}
        reasons.update(((g, akey), why.OWNER_DIED) for g in removal.groups)
        return self.write(
            removed_names=[e.key for e in removal.names],
            removed_members=[(g, address) for g in removal.groups],
            reasons=reasons,
        )


class ObservedMirror(GlobalMirror):
    """RegistryDist's global mirror: each committed change also goes to :attr:`events`;
    a rewrite of the whole mirror resyncs every subscriber."""

    events: EventService | None = None

    def write_update(self, update: MirrorUpdate) -> int | None:
        version = super().write_update(update)
        if self.events is not None:
            self.events.changed(update, version)
        return version

    def replace(self, entries: Iterable[Entry], members: Iterable[Member]) -> int:
        version = super().replace(entries, members)
        if self.events is not None:
            self.events.reloaded()
        return version
