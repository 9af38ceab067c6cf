"""Name and group events of one scope on one node: who listens, what to tell them.

The semantics, after OTP's ``pg:monitor_scope/1``, syn's event handler and gproc's
``await``:

* **A subscription is a subscriber and a topic**: the names of a scope
  (:class:`NamesTopic`, optionally of one ``kind`` and names starting with ``prefix``)
  or the members of one group (:class:`GroupTopic`, explicit or automatic).
  Subscribing answers the topic's current state (a snapshot); from then on every change
  of it is reported once, in the order this node applied the changes.
  Subscribing again to the same topic is the same subscription: a fresh snapshot, no
  second copy of each event. Unsubscribing is idempotent; :meth:`ScopeEvents.drop`
  forgets a dead subscriber.
* **Changes are diffed, not replayed**: while anyone subscribes, the scope keeps a copy
  of the scope's table, and each change (a
  :class:`~thespian_cluster.core.replica.MirrorUpdate`: the end state of every key it
  touched) is compared with the copy. So a name put again with the same owner and meta
  says nothing, an owner change is one ``moved``, and a server whose capabilities
  change joins and leaves the automatic groups exactly when its membership changes
  (one row per address, as :meth:`NameTable.members` lists them).
* **Reasons** come with the update (:mod:`thespian_cluster.core.reasons`); a change
  without one is ``normal``. A member change takes the reason of its own key, else of
  the name change of the same address that caused it (a dead server leaves
  ``servers`` with ``owner_died``).
* **Awaiting a name** costs no copy: a waiter is answered by the first update that
  puts its name, or expires at its deadline.

Nothing here sends: :meth:`ScopeEvents.apply` returns who is to be told what, and the
actor hosting the scope (Registry for ``local``, RegistryDist for ``global``) sends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from thespian_cluster.core import reasons as why
from thespian_cluster.core.addresses import AddressKey, address_key
from thespian_cluster.core.replica import MirrorUpdate, Step, build_table
from thespian_cluster.core.table import Entry, Member, NameKey, NameTable

NameChangeKind = Literal["registered", "unregistered", "moved", "meta"]
MemberChangeKind = Literal["joined", "left"]


@dataclass(frozen=True, slots=True)
class NamesTopic:
    """The names of a scope: all, or those of ``kind``, or those starting with
    ``prefix`` (a tuple name by its first part)."""

    kind: str | None = None
    prefix: str | None = None

    def matches(self, entry: Entry) -> bool:
        if self.kind is not None and entry.kind != self.kind:
            return False
        if self.prefix is None:
            return True
        first = entry.name if isinstance(entry.name, str) else entry.name[0]
        return first.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class GroupTopic:
    """The members of one group, explicit or automatic."""

    group: str


Topic = NamesTopic | GroupTopic


@dataclass(frozen=True, slots=True)
class NameChange:
    """``entry`` was registered, unregistered (``entry`` is the old one), moved to a new
    owner (``previous`` is the old entry) or had its meta changed."""

    kind: NameChangeKind
    entry: Entry
    reason: str = why.NORMAL
    previous: Entry | None = None


@dataclass(frozen=True, slots=True)
class MemberChange:
    """``member`` joined or left its group."""

    kind: MemberChangeKind
    member: Member
    reason: str = why.NORMAL


Change = NameChange | MemberChange


@dataclass(frozen=True, slots=True)
class Waiter:
    """Someone waiting for ``key`` to be registered, until ``deadline``."""

    key: NameKey
    client: Any
    request: Any
    deadline: float


@dataclass
class Applied:
    """What one update means: ``events`` (the recipients of each change, in order)
    and the waiters it answers, each with the entry that answers it."""

    events: list[tuple[list[Any], Change]] = field(default_factory=list)
    answered: list[tuple[Waiter, Entry]] = field(default_factory=list)


class ScopeEvents:
    """The subscriptions and waiters of one scope on one node; see the module docstring."""

    def __init__(self) -> None:
        self._topics: dict[Topic, dict[AddressKey, Any]] = {}
        self._waiters: dict[NameKey, list[Waiter]] = {}
        self._copy: NameTable | None = None

    # ---- subscriptions ---------------------------------------------------------------

    @property
    def has_copy(self) -> bool:
        """Is the copy of the table built? :meth:`load` it before the first subscribe."""
        return self._copy is not None

    def load(self, entries: Iterable[Entry], members: Iterable[Member]) -> None:
        """(Re)build the copy from the scope's records as they are now."""
        self._copy = build_table(entries, members)

    def subscribe(self, subscriber: Any, topic: Topic) -> list[Entry] | list[Member]:
        """Add (or keep) the subscription; the topic's snapshot."""
        self._topics.setdefault(topic, {})[address_key(subscriber)] = subscriber
        return self.snapshot(topic)

    def subscribes(self, subscriber: Any) -> bool:
        """Has ``subscriber`` any subscription left?"""
        akey = address_key(subscriber)
        return any(akey in subs for subs in self._topics.values())

    def subscribed(self, subscriber: Any, topic: Topic) -> bool:
        return address_key(subscriber) in self._topics.get(topic, {})

    def snapshot(self, topic: Topic) -> list[Entry] | list[Member]:
        copy = self._copy
        assert copy is not None, "load() the copy first"
        if isinstance(topic, GroupTopic):
            return copy.members(topic.group)
        return [e for e in copy.names(topic.kind) if topic.matches(e)]

    def unsubscribe(self, subscriber: Any, topic: Topic) -> bool:
        """Was it subscribed? Idempotent."""
        subscribers = self._topics.get(topic)
        if subscribers is None or subscribers.pop(address_key(subscriber), None) is None:
            return False
        if not subscribers:
            del self._topics[topic]
        self._forget_copy_if_idle()
        return True

    def drop(self, subscriber: Any) -> tuple[list[Topic], list[Waiter]]:
        """Forget a dead subscriber's subscriptions and waits; those it had."""
        akey = address_key(subscriber)
        had = [t for t, subs in self._topics.items() if akey in subs]
        for topic in had:
            self.unsubscribe(subscriber, topic)
        dropped: list[Waiter] = []
        for key in list(self._waiters):
            waiting = self._waiters[key]
            dropped.extend(w for w in waiting if address_key(w.client) == akey)
            self._set_waiters(key, [w for w in waiting if address_key(w.client) != akey])
        return had, dropped

    def subscriptions(self) -> list[tuple[Any, Topic]]:
        return [(s, t) for t, subs in self._topics.items() for s in subs.values()]

    def subscribers(self) -> list[Any]:
        """One address per subscriber or waiter (the actors worth probing)."""
        found: dict[AddressKey, Any] = {}
        for subs in self._topics.values():
            found.update(subs)
        for waiters in self._waiters.values():
            found.update((address_key(w.client), w.client) for w in waiters)
        return list(found.values())

    def _forget_copy_if_idle(self) -> None:
        if not self._topics:
            self._copy = None  # ~ the scope's size in memory, only while someone listens

    # ---- waiters ---------------------------------------------------------------------

    def wait(self, waiter: Waiter) -> None:
        """Answer ``waiter`` when its name is registered (the caller checked it is not)."""
        self._waiters.setdefault(waiter.key, []).append(waiter)

    def expired(self, now: float) -> list[Waiter]:
        """Remove and return the waiters whose deadline has passed."""
        late: list[Waiter] = []
        for key in list(self._waiters):
            waiting = self._waiters[key]
            late.extend(w for w in waiting if w.deadline <= now)
            self._set_waiters(key, [w for w in waiting if w.deadline > now])
        return late

    def waited_keys(self) -> list[NameKey]:
        return list(self._waiters)

    def take_waiters(self, key: NameKey) -> list[Waiter]:
        """Remove and return the waiters of ``key`` (its name exists: answer them)."""
        return self._waiters.pop(key, [])

    @property
    def idle(self) -> bool:
        """Nobody subscribes or waits: a change has nothing to tell."""
        return not self._topics and not self._waiters

    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def _set_waiters(self, key: NameKey, waiters: list[Waiter]) -> None:
        if waiters:
            self._waiters[key] = waiters
        else:
            self._waiters.pop(key, None)

    # ---- changes ---------------------------------------------------------------------

    def apply(self, update: MirrorUpdate) -> Applied:
        """Bring the copy to ``update``'s end state; the events and answers it makes,
        step by step in the order the update's steps were applied (a ``batch`` step,
        whose parts have no order, as one: its members' rows are compared once)."""
        applied = Applied()
        steps = update.steps or (("batch", tuple(_end_state_steps(update)), why.NORMAL),)
        copy = self._copy
        if copy is not None and not self._topics:
            self._copy = copy = None  # nobody listens (a subscribe that failed half-way)
        if copy is not None:
            groups = {t.group for t in self._topics if isinstance(t, GroupTopic)}
            for step in steps:
                parts = step[1] if step[0] == "batch" else (step,)
                self._steps(copy, groups, parts, applied)
        # Waiters last: if a step raised, they are still here for the host's resync.
        for kind, item, _ in _flat(steps):
            if kind == "put":
                for waiter in self._waiters.pop(item.key, ()):
                    applied.answered.append((waiter, item))
        return applied

    def _steps(
        self, copy: NameTable, groups: set[str], steps: Sequence[Step], applied: Applied
    ) -> None:
        """Apply ``steps`` to the copy: each one's name event in order, then whoever
        joined or left a subscribed group between before and after them all."""
        touched: dict[AddressKey, tuple[Any, str]] = {}  # address -> (address, reason)
        for kind, item, reason in steps:
            if kind in ("put", "drop"):
                name_key = item.key if kind == "put" else item
                old = copy.whereis(name_key[1], name_key[0])
                if old is not None:
                    touched[address_key(old.address)] = (old.address, reason)
                if kind == "put":
                    touched[address_key(item.address)] = (item.address, reason)
            else:
                address = item.address if kind == "join" else item[1]
                touched[address_key(address)] = (address, reason)
        before = {
            (group, akey): copy.membership(group, address)
            for group in groups
            for akey, (address, _) in touched.items()
        }
        for kind, item, reason in steps:
            change: NameChange | None = None
            if kind == "put":
                change = _put(copy, item, reason)
            elif kind == "drop":
                gone = copy.unregister(item[1], item[0])
                change = NameChange("unregistered", gone, reason) if gone is not None else None
            elif kind == "join":
                copy.join(
                    item.group, item.address, item.node, item.meta, incarnation=item.incarnation
                )
            else:
                copy.leave(item[0], item[1])
            if change is not None:
                recipients = self._names_recipients(change.entry)
                if recipients:
                    applied.events.append((recipients, change))
        for (group, akey), was in before.items():
            address, reason = touched[akey]
            now = copy.membership(group, address)
            if (was is None) == (now is None):
                continue
            subscribers = list(self._topics[GroupTopic(group)].values())
            if was is None:
                assert now is not None
                applied.events.append((subscribers, MemberChange("joined", now, reason)))
            else:
                applied.events.append((subscribers, MemberChange("left", was, reason)))

    def _names_recipients(self, entry: Entry) -> list[Any]:
        recipients: dict[AddressKey, Any] = {}
        for topic, subscribers in self._topics.items():
            if isinstance(topic, NamesTopic) and topic.matches(entry):
                recipients.update(subscribers)
        return list(recipients.values())


def _put(copy: NameTable, entry: Entry, reason: str) -> NameChange | None:
    """Put ``entry`` into the copy; the change it is, if any."""
    old = copy.whereis(entry.name, entry.kind)
    moved = old is not None and address_key(old.address) != address_key(entry.address)
    if moved:
        copy.unregister(entry.name, entry.kind)
    copy.register(
        entry.name, entry.kind, entry.address, entry.node, entry.meta,
        incarnation=entry.incarnation, registered_at=entry.registered_at,
        version=entry.version,
    )  # fmt: skip
    if old is None:
        return NameChange("registered", entry, reason)
    if moved:
        return NameChange("moved", entry, reason, previous=old)
    if dict(old.meta) != dict(entry.meta):
        return NameChange("meta", entry, reason)
    return None


def _flat(steps: Iterable[Step]) -> Iterator[Step]:
    for step in steps:
        if step[0] == "batch":
            yield from step[1]
        else:
            yield step


def _end_state_steps(update: MirrorUpdate) -> list[Step]:
    """Steps for an update that carries only end states (drops, then puts)."""
    reasons = update.reasons
    steps: list[Step] = [
        ("drop", key, reasons.get(key, why.NORMAL)) for key in update.dropped_names
    ]
    steps += [("put", e, reasons.get(e.key, why.NORMAL)) for e in update.entries]
    steps += [
        ("join", m, reasons.get((m.group, address_key(m.address)), why.NORMAL))
        for m in update.members
    ]
    steps += [
        ("leave", (g, a), reasons.get((g, address_key(a)), why.NORMAL))
        for g, a in update.dropped_members
    ]
    return steps
