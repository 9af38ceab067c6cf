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
from thespian.actors import ActorAddress

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
from thespian_cluster.messages import (
    ErrorCode,
    GroupMember,
    RegistrationInfo,
    RegistryError,
    Reply,
    Request,
    Whereis,
)
from thespian_cluster.node_table import GlobalMirror, TableWriter
from thespian_cluster.validation import revalidate

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
        hold_timeout: how long a request may wait for :meth:`ready` before it is
            answered ``unavailable``.
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
        hold_timeout: float,
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
        self._hold_timeout = hold_timeout
        self._arm = arm
        self._events = ScopeEvents()
        self._probe_cursor = 0
        self._next_probe = 0.0
        self._ready = False
        self._sent: dict[Any, int] = {}  # subscriber's address key -> messages sent (seq)
        self._held: list[tuple[Request, Any, float]] = []  # before ready: (request, client, since)

    # ---- start ---------------------------------------------------------------------

    def ready(self) -> None:
        """The scope's records are complete (the host started, its backend caught up):
        take up the kept subscriptions and waits, then the requests held until now.
        Later calls do nothing."""
        if self._ready:
            return
        self._ready = True
        try:
            self._restore()
        except Exception:  # the kept records are lost, not the host
            logger.exception("{} events: could not take up the kept subscriptions", self.scope)
        held, self._held = self._held, []
        for request, client, since in held:
            self.handle(request, client, since)

    def _restore(self) -> None:
        subscriptions: list[tuple[Any, Topic]] = []
        waits: list[Waiter] = []
        bad: list[Any] = []
        for key, record in self._table.event_records(self.scope):
            if _is_subscription(record):
                subscriptions.append(record)
            elif _is_wait(record):
                waits.append(record)
            else:
                bad.append(key)
        if bad:
            logger.warning("{} events: dropped {} unreadable record(s)", self.scope, len(bad))
            self._table.drop_event_records(self.scope, bad, raw=True)
        if subscriptions:
            self._ensure_copy()
            for subscriber, topic in subscriptions:
                self._events.subscribe(subscriber, topic)
            self._resync(subscriptions, "restarted")
        for waiter in waits:
            entry = self._lookup(waiter.key)
            if entry is not None:
                self._answer([(waiter, entry)])
            else:
                self._events.wait(waiter)
                if self._arm is not None:
                    self._arm(max(0.0, waiter.deadline - time.monotonic()))
        if subscriptions or waits:
            logger.info(
                "{} events: took up {} subscription(s) and {} wait(s)",
                self.scope,
                len(subscriptions),
                len(waits),
            )

    # ---- requests ------------------------------------------------------------------

    def handle(self, request: Request, client: Any, since: float | None = None) -> None:
        """Answer one of :data:`EVENT_REQUESTS` (validated); always answers. ``since``:
        when it arrived, if it was held until now (an await's deadline counts from it)."""
        if self._unavailable is not None:
            self._send(client, _error(request, ErrorCode.UNKNOWN_REQUEST, self._unavailable))
            return
        if not self._ready:
            self._held.append((request, client, time.monotonic()))
            return
        try:
            self._handle(request, client, time.monotonic() if since is None else since)
        except Exception as exc:  # a failed LMDB write, a record that cannot be sent
            logger.exception("{} events failed on {}", self.scope, type(request).__name__)
            failure = _error(request, ErrorCode.BACKEND_FAILURE, f"{type(exc).__name__}: {exc}")
            self._send(client, failure)

    def _handle(self, request: Request, client: Any, since: float) -> None:
        if isinstance(request, AwaitName):
            self._await(request, client, since)
        elif isinstance(request, SubscribeNames | SubscribeGroup):
            topic = _topic(request)
            if not self._events.subscribed(request.subscriber, topic):
                # Kept first: if this write fails, no copy is left behind without a topic.
                self._table.put_event_record(
                    self.scope, _record_key(request.subscriber, topic), (request.subscriber, topic)
                )
            self._ensure_copy()
            self._events.subscribe(request.subscriber, topic)
            version = self._table.version()
            seq = self._sent.setdefault(address_key(request.subscriber), 0)
            snapshot = self._snapshot(topic, request.request_id, version)
            self._send(client, snapshot.model_copy(update={"seq": seq}))
        elif isinstance(request, UnsubscribeNames | UnsubscribeGroup):
            topic = _topic(request)
            was = self._events.unsubscribe(request.subscriber, topic)
            if not self._events.subscribes(request.subscriber):
                self._sent.pop(address_key(request.subscriber), None)
            if was:
                self._table.drop_event_records(self.scope, [_record_key(request.subscriber, topic)])
            self._send(client, Unsubscribed(request_id=request.request_id, was_subscribed=was))

    def _await(self, request: AwaitName, client: Any, since: float) -> None:
        key = (request.kind, request.name)
        entry = self._lookup(key)
        if entry is not None:
            self._send(client, whereis_reply(_as_whereis(request), entry))
            return
        waiter = Waiter(key, client, request, since + request.timeout)
        self._table.put_event_record(self.scope, _wait_key(waiter), waiter)
        self._events.wait(waiter)
        if self._arm is not None:
            self._arm(request.timeout)

    # ---- changes -------------------------------------------------------------------

    def changed(self, update: MirrorUpdate, version: int | None) -> None:
        """The host committed ``update`` at ``version``: tell whom it concerns. Never
        raises (the change is committed whatever its events do)."""
        if version is None or not update or not self._ready or self._events.idle:
            return  # the usual case on a hot path (every local write): nothing to do
        try:
            applied = self._events.apply(update)
        except Exception:  # the copy no longer matches: rebuild it and resync everyone
            logger.exception("{} events: a change did not apply to the copy", self.scope)
            self.reloaded()
            return
        self._answer(applied.answered)
        for recipients, change in applied.events:
            kind, fields = self._event(change, version)
            for subscriber in recipients:
                self._tell(subscriber, kind.model_construct(**fields, seq=self._count(subscriber)))

    def reloaded(self) -> None:
        """The host rewrote the scope whole: every subscriber gets a fresh snapshot."""
        if not self._ready:
            return
        try:
            for key in self._events.waited_keys():
                entry = self._lookup(key)
                if entry is not None:
                    self._answer([(w, entry) for w in self._events.take_waiters(key)])
            subscriptions = self._events.subscriptions()
            if subscriptions:
                self._events.load(*self._records())
                self._resync(subscriptions, "reloaded")
        except Exception:
            logger.exception("{} events: could not resync after a reload", self.scope)

    # ---- time and deaths -----------------------------------------------------------

    def tick(
        self, now: float, probe_dead: Callable[[Sequence[Any]], list[Any]], batch: int
    ) -> None:
        """Expire waits and held requests; every ``probe_interval``, probe up to
        ``batch`` subscribers and drop the dead ones. Never raises."""
        try:
            self._expire(now)
            if now >= self._next_probe:
                self._next_probe = now + self._probe_interval
                watched = self._events.subscribers()
                if watched:
                    start = self._probe_cursor % len(watched)
                    chosen = (watched[start:] + watched[:start])[:batch]
                    self._probe_cursor = start + len(chosen)
                    for address in probe_dead(chosen):
                        self.dead(address)
        except Exception:
            logger.exception("{} events: a tick failed", self.scope)

    def _expire(self, now: float) -> None:
        def limit(request: Request) -> float:  # an await held past its own timeout ends
            timeout = request.timeout if isinstance(request, AwaitName) else self._hold_timeout
            return min(timeout, self._hold_timeout)

        late = [h for h in self._held if now - h[2] >= limit(h[0])]
        if late:
            self._held = [h for h in self._held if now - h[2] < limit(h[0])]
            for request, client, _ in late:
                if isinstance(request, AwaitName) and request.timeout <= self._hold_timeout:
                    detail = f"no {request.kind} {request.name!r} within {request.timeout:g} s"
                    self._tell(client, _error(request, ErrorCode.TIMEOUT, detail))
                else:
                    detail = f"scope {self.scope} is not caught up yet"
                    self._tell(client, _error(request, ErrorCode.UNAVAILABLE, detail))
        expired = self._events.expired(now)
        for waiter in expired:
            request = waiter.request
            detail = f"no {request.kind} {request.name!r} within {request.timeout:g} s"
            self._tell(waiter.client, _error(request, ErrorCode.TIMEOUT, detail))
        self._drop_waits(expired)

    def dead(self, address: Any) -> None:
        """``address``'s actor is dead: drop its subscriptions and waits."""
        if self._events.idle:
            return  # every dead actor of the node comes here: no commit when nobody listens
        try:
            self._sent.pop(address_key(address), None)
            topics, waits = self._events.drop(address)
            keys = [_record_key(address, topic) for topic in topics]
            keys += [_wait_key(w) for w in waits]
            if keys:
                self._table.drop_event_records(self.scope, keys)
        except Exception:
            logger.exception("{} events: could not drop dead subscriber {}", self.scope, address)

    # ---- messages ------------------------------------------------------------------

    def _ensure_copy(self) -> None:
        if not self._events.has_copy:
            self._events.load(*self._records())

    def _snapshot(
        self, topic: Topic, request_id: str, version: int
    ) -> NamesSnapshot | GroupSnapshot:
        rows = self._events.snapshot(topic)
        if isinstance(topic, GroupTopic):
            members = _readable(rows, GroupMember.of)
            return GroupSnapshot(
                request_id=request_id, scope=self.scope, group=topic.group, members=members,
                version=version,
            )  # fmt: skip
        names = _readable(rows, RegistrationInfo.of)
        return NamesSnapshot(
            request_id=request_id, scope=self.scope, kind=topic.kind, prefix=topic.prefix,
            names=names, version=version,
        )  # fmt: skip

    def _resync(self, subscriptions: list[tuple[Any, Topic]], reason: str) -> None:
        version = self._table.version()
        snapshots: dict[Topic, NamesSnapshot | GroupSnapshot] = {}  # one per topic
        for subscriber, topic in subscriptions:
            if topic not in snapshots:
                snapshots[topic] = self._snapshot(topic, "", version)
            seq = self._count(subscriber)  # a restarted host counts from 0 again
            self._tell(subscriber, Resync(snapshot=snapshots[topic], reason=reason, seq=seq))

    def _answer(self, answered: list[tuple[Waiter, Entry]]) -> None:
        """Answer each waiter first, then forget its record (a record left behind is
        only answered again after a restart, where the name exists: at once)."""
        for waiter, entry in answered:
            reply: Reply
            try:
                reply = whereis_reply(_as_whereis(waiter.request), entry)
            except Exception as exc:  # an entry that cannot be put in a reply
                detail = f"{type(exc).__name__}: {exc}"
                reply = _error(waiter.request, ErrorCode.BACKEND_FAILURE, detail)
            self._tell(waiter.client, reply)
        self._drop_waits([w for w, _ in answered])

    def _drop_waits(self, waits: list[Waiter]) -> None:
        if waits:
            try:
                self._table.drop_event_records(self.scope, [_wait_key(w) for w in waits])
            except Exception:
                logger.exception("{} events: could not drop {} wait(s)", self.scope, len(waits))

    def _count(self, subscriber: Any) -> int:
        """The ``seq`` of the next message to ``subscriber`` (counted)."""
        akey = address_key(subscriber)
        seq = self._sent.get(akey, 0) + 1
        self._sent[akey] = seq
        return seq

    def _event(
        self, change: Change, version: int
    ) -> tuple[type[NameEvent | GroupEvent], dict[str, Any]]:
        """The event class and fields of ``change`` (the recipient's ``seq`` to add)."""
        if isinstance(change, MemberChange):
            member = change.member
            kind = MemberJoined if change.kind == "joined" else MemberLeft
            return kind, {
                "scope": self.scope, "group": member.group, "address": member.address,
                "node": member.node, "meta": dict(member.meta), "reason": change.reason,
                "version": version,
            }  # fmt: skip
        entry = change.entry
        fields = {
            "scope": self.scope, "name": entry.name, "kind": entry.kind,
            "address": entry.address, "node": entry.node, "meta": dict(entry.meta),
            "reason": change.reason, "version": version,
        }  # fmt: skip
        if change.kind == "moved":
            assert change.previous is not None
            fields["previous"] = change.previous.address
            fields["previous_node"] = change.previous.node
            return NameMoved, fields
        event = {"registered": NameRegistered, "unregistered": NameUnregistered}.get(
            change.kind, MetaChanged
        )
        return event, fields

    def _tell(self, subscriber: Any, message: Any) -> None:
        try:
            self._send(subscriber, message)
        except Exception:  # one bad subscriber address must not stop the others' events
            logger.exception("{} events: could not send to {}", self.scope, subscriber)


def _topic(request: Any) -> Topic:
    if isinstance(request, SubscribeGroup | UnsubscribeGroup):
        return GroupTopic(request.group)
    return NamesTopic(request.kind, request.prefix)


def _is_subscription(record: Any) -> bool:
    """A kept ``(subscriber, topic)`` as this version writes it (records come from disk)."""
    if not (isinstance(record, tuple) and len(record) == 2):
        return False
    subscriber, topic = record
    if isinstance(topic, GroupTopic):
        fields_ok = type(topic.group) is str
    elif isinstance(topic, NamesTopic):
        fields_ok = all(v is None or type(v) is str for v in (topic.kind, topic.prefix))
    else:
        return False
    return fields_ok and isinstance(subscriber, ActorAddress)


def _is_wait(record: Any) -> bool:
    """A kept :class:`Waiter` whose request is a valid ``AwaitName`` today."""
    if not isinstance(record, Waiter):
        return False
    try:
        return (
            isinstance(record.client, ActorAddress)
            and isinstance(revalidate(record.request), AwaitName)
            and isinstance(record.deadline, float)
            and record.key == (record.request.kind, record.request.name)
        )
    except Exception:  # a field layout of another version: not ours to use
        return False


def _readable(rows: Sequence[Any], build: Callable[[Any], Any]) -> list[Any]:
    """Each row as a reply row; one that cannot be built is skipped (and logged)."""
    built = []
    for row in rows:
        try:
            built.append(build(row))
        except Exception as exc:
            logger.warning("events skipped a record they cannot send: {!r} ({})", row, exc)
    return built


def _record_key(subscriber: Any, topic: Topic) -> Any:
    return ("subscription", address_key(subscriber), topic)


def _wait_key(waiter: Waiter) -> Any:
    return (
        "wait",
        address_key(waiter.client),
        waiter.request.request_id,
        waiter.key,
        waiter.deadline,
    )


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
            reasons=reasons or {},
        )  # fmt: skip
        version = super().write(
            update.entries, update.dropped_names, update.members, update.dropped_members
        )
        if self.events is not None:
            self.events.changed(update, version)  # never raises: the write stands
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
