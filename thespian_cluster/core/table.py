"""The name and group table: the registry's data and its invariants, nothing else.

One table holds

* **names**: ``(kind, name) -> Entry``. A name has at most one owner (an actor
  address); registering a taken name returns a :class:`Conflict` naming the owner,
  registering it again from the same owner updates its meta (as syn does).
* **groups** (as OTP ``pg``): ``group -> {address: Member}``. Joining twice is one
  membership; leaving a group one is not in is a no-op that says so.
* **automatic groups**, derived from registrations and never stored on their own:
  every ``server`` is in ``servers``, every ``transport`` in ``transports``, and a
  server whose ``meta["capabilities"]`` names ``tools``, ``resources`` or
  ``prompts`` is in ``tool_servers``, ``resource_servers``, ``prompt_servers``.
  Because they are derived, they can never disagree with the names.

Every change bumps :attr:`NameTable.version`, which readers use to validate caches.
The table is pure: addresses are opaque values keyed by :func:`address_key`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from thespian_cluster.core.addresses import AddressKey, address_key
from thespian_cluster.core.records import Record

Name = str | tuple[str, ...]
NameKey = tuple[str, Name]  # (kind, name)

SERVER_KIND = "server"
TRANSPORT_KIND = "transport"

#: meta["capabilities"] entry -> automatic group of servers that declare it.
CAPABILITY_GROUPS: Mapping[str, str] = {
    "tools": "tool_servers",
    "resources": "resource_servers",
    "prompts": "prompt_servers",
}
KIND_GROUPS: Mapping[str, str] = {SERVER_KIND: "servers", TRANSPORT_KIND: "transports"}
AUTOMATIC_GROUPS: frozenset[str] = frozenset([*KIND_GROUPS.values(), *CAPABILITY_GROUPS.values()])


@dataclass(frozen=True, slots=True)
class Entry(Record):
    """One registered name and who owns it."""

    name: Name
    kind: str
    address: Any
    node: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    registered_at: float = 0.0
    # The global table (core/replica.py) records the owner's node incarnation, so a
    # purge of an old incarnation spares a restarted node, and the (epoch, seq) of the
    # write that put the entry, so a merge can tell a stale copy from the current one.
    incarnation: str = ""
    version: tuple[int, int] = (0, 0)

    @property
    def key(self) -> NameKey:
        return (self.kind, self.name)


@dataclass(frozen=True, slots=True)
class Member(Record):
    """One member of a process group."""

    group: str
    address: Any
    node: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    incarnation: str = ""


@dataclass(frozen=True, slots=True)
class Conflict:
    """A registration refused because another actor owns the name."""

    owner: Entry


@dataclass(frozen=True, slots=True)
class Removal:
    """What went away with an address (an actor that died)."""

    names: tuple[Entry, ...] = ()
    groups: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names or self.groups)


def automatic_groups(kind: str, meta: Mapping[str, Any]) -> frozenset[str]:
    """The automatic groups a registration of ``kind`` with ``meta`` belongs to."""
    groups = set()
    if kind in KIND_GROUPS:
        groups.add(KIND_GROUPS[kind])
    if kind == SERVER_KIND:
        capabilities = meta.get("capabilities") or ()
        # MCP declares capabilities as a dict ({"tools": {...}}); a list of names works too.
        names: Iterable[Any] = (
            capabilities.keys() if isinstance(capabilities, Mapping) else capabilities
        )
        if isinstance(names, str):
            names = (names,)
        for capability in names:
            if capability in CAPABILITY_GROUPS:
                groups.add(CAPABILITY_GROUPS[capability])
    return frozenset(groups)


#: automatic group -> the kind whose every registration is in it (no index of its own).
_KIND_OF_GROUP: Mapping[str, str] = {group: kind for kind, group in KIND_GROUPS.items()}


def _capability_groups(kind: str, meta: Mapping[str, Any]) -> frozenset[str] | tuple[()]:
    """The automatic groups of a registration that its kind alone does not give."""
    if kind != SERVER_KIND or not meta:
        return ()
    return automatic_groups(kind, meta) - {KIND_GROUPS[SERVER_KIND]}


class NameTable:
    """Names, groups and their indexes; see the module docstring for the rules.

    Memory, per name (the replica of a 100,000-name cluster is on every node): names
    are kept per kind (``kind -> name -> Entry``), so no ``(kind, name)`` tuple is
    stored for a name; an address holding one name points at its entry, one holding
    several at its names per kind; the kind groups (``servers``, ``transports``) are
    the names of their kind, read where they are, and only the capability groups have
    an index of their own.
    """

    def __init__(self) -> None:
        self.version = 0
        self._kinds: dict[str, dict[Name, Entry]] = {}
        # Most actors hold one name: its entry (only its kind and name are read: the
        # current entry is in _kinds), the names per kind from the second one on.
        self._names_by_address: dict[AddressKey, Entry | dict[str, set[Name]]] = {}
        self._groups: dict[str, dict[AddressKey, Member]] = {}
        self._groups_by_address: dict[AddressKey, set[str]] = {}
        # capability group -> the servers' registrations that put an address in it
        self._automatic: dict[str, dict[Name, Entry]] = {}
        # One address object per actor, however many names it holds: every request
        # brings its own unpickled copy, and at 100,000 names the copies dominate.
        self._canonical: dict[AddressKey, Any] = {}
        # Equal metas stored once (servers of one kind declare the same capabilities).
        self._metas = _MetaPool()

    @contextmanager
    def loading(self) -> Iterator[NameTable]:
        """Fill the table from records nobody changes meanwhile (a snapshot): a meta
        object shared by many records (as unpickling a snapshot gives them) is
        compared once, not once per record."""
        self._metas.memo = {}
        try:
            yield self
        finally:
            self._metas.memo = None

    # ---- bulk loading (snapshots) ------------------------------------------------

    def canonical_address(self, address: Any) -> Any:
        """The table's one copy of ``address`` (kept once something holds it)."""
        return self._intern(address, address_key(address))

    def shared_meta(self, meta: Mapping[str, Any]) -> Mapping[str, Any]:
        """The table's shared copy of ``meta`` (see :class:`_MetaPool`)."""
        return self._metas.get(meta)

    def load(self, entries: Iterable[Entry]) -> None:
        """Store ``entries`` as they are, with no copy: a snapshot's, whose addresses
        and metas came through :meth:`canonical_address` and :meth:`shared_meta`. A
        key the table holds already goes through :meth:`register`'s rules."""
        akeys: dict[int, AddressKey] = {}
        kinds = self._kinds
        for entry in entries:
            address = entry.address
            akey = akeys.get(id(address))
            if akey is None:
                akey = akeys[id(address)] = address_key(address)
            names = kinds.get(entry.kind)
            if (names is not None and entry.name in names) or self._canonical.get(
                akey
            ) is not address:
                self.register(
                    entry.name,
                    entry.kind,
                    address,
                    entry.node,
                    entry.meta,
                    incarnation=entry.incarnation,
                    registered_at=entry.registered_at,
                    version=entry.version,
                )
                continue
            self._store(entry, akey)

    def by_kind(self) -> Mapping[str, Mapping[Name, Entry]]:
        """Every entry, per kind then name: the table's own index (read it, never
        change it)."""
        return self._kinds

    # ---- names -------------------------------------------------------------------

    def register(
        self,
        name: Name,
        kind: str,
        address: Any,
        node: str,
        meta: Mapping[str, Any],
        *,
        incarnation: str = "",
        registered_at: float | None = None,
        version: tuple[int, int] = (0, 0),
    ) -> Entry | Conflict:
        """Claim ``(kind, name)`` for ``address``; the global table passes the
        sequencer's ``registered_at`` so that every replica stores the same entry."""
        owner = self.whereis(name, kind)
        akey = address_key(address)
        if owner is not None and address_key(owner.address) != akey:
            return Conflict(owner)
        stamp = time.time() if registered_at is None else registered_at
        entry = Entry(
            name,
            kind,
            self._intern(address, akey),
            node,
            self._metas.get(meta),
            stamp,
            incarnation,
            version,
        )
        if owner is not None:
            if registered_at is None:
                entry = replace(entry, registered_at=owner.registered_at)
            # Its automatic groups go with the old meta, whoever stamps the new entry.
            self._unindex_name(owner)
        self._store(entry, akey)
        return entry

    def unregister(self, name: Name, kind: str) -> Entry | None:
        entry = self._pop(kind, name)
        if entry is not None:
            self._unindex_name(entry)
            self._release(entry.address)
            self.version += 1
        return entry

    def whereis(self, name: Name, kind: str) -> Entry | None:
        names = self._kinds.get(kind)
        return names.get(name) if names is not None else None

    def names(self, kind: str | None = None) -> list[Entry]:
        if kind is not None:
            return list(self._kinds.get(kind, {}).values())
        return [e for names in self._kinds.values() for e in names.values()]

    def update_meta(self, name: Name, kind: str, meta: Mapping[str, Any]) -> Entry | None:
        entry = self.whereis(name, kind)
        if entry is None:
            return None
        self._unindex_name(entry)
        entry = replace(entry, meta=self._metas.get(meta))
        self._store(entry)
        return entry

    # ---- groups ------------------------------------------------------------------

    def join(
        self,
        group: str,
        address: Any,
        node: str,
        meta: Mapping[str, Any],
        *,
        incarnation: str = "",
    ) -> Member:
        akey = address_key(address)
        member = Member(
            group, self._intern(address, akey), node, self._metas.get(meta), incarnation
        )
        self._groups.setdefault(group, {})[akey] = member
        self._groups_by_address.setdefault(akey, set()).add(group)
        self.version += 1
        return member

    def leave(self, group: str, address: Any) -> bool:
        akey = address_key(address)
        members = self._groups.get(group)
        if not members or akey not in members:
            return False
        del members[akey]
        if not members:
            del self._groups[group]
        self._discard_index(self._groups_by_address, akey, group)
        self._release(address)
        self.version += 1
        return True

    def member(self, group: str, address: Any) -> Member | None:
        """``address``'s explicit membership of ``group``, or None."""
        return self._groups.get(group, {}).get(address_key(address))

    def membership(self, group: str, address: Any) -> Member | None:
        """``address``'s row in ``group`` as :meth:`members` lists it (explicit, else
        derived from one of its names), or None; costs the names ``address`` holds."""
        akey = address_key(address)
        explicit = self._groups.get(group, {}).get(akey)
        if explicit is not None or group not in AUTOMATIC_GROUPS:
            return explicit
        kind = _KIND_OF_GROUP.get(group)
        derived = self._automatic.get(group, {})
        for held_kind, name in self._iter_keys(akey):
            if kind is not None:
                entry = self._kinds[held_kind][name] if held_kind == kind else None
            else:
                entry = derived.get(name) if held_kind == SERVER_KIND else None
            if entry is not None:
                return Member(group, entry.address, entry.node, entry.meta, entry.incarnation)
        return None

    def members(self, group: str, node: str | None = None) -> list[Member]:
        """Explicit members then derived ones, one row per address, in join order."""
        found: dict[AddressKey, Member] = dict(self._groups.get(group, {}))
        for entry in self._derived(group):
            akey = address_key(entry.address)
            if akey not in found:
                found[akey] = Member(
                    group, entry.address, entry.node, entry.meta, entry.incarnation
                )
        return [m for m in found.values() if node is None or m.node == node]

    def groups(self) -> list[str]:
        """Every group with at least one member, explicit or automatic."""
        kinds = {KIND_GROUPS[k] for k in self._kinds if k in KIND_GROUPS}
        return sorted(set(self._groups) | set(self._automatic) | kinds)

    def explicit_members(self) -> list[Member]:
        return [m for members in self._groups.values() for m in members.values()]

    # ---- owners ------------------------------------------------------------------

    def addresses(self) -> list[Any]:
        """One address per distinct owner or member: the actors worth watching."""
        return list(self._canonical.values())

    def holders(self) -> Iterator[tuple[Any, Entry | Member]]:
        """Each distinct owner or member address with one thing it holds (its first
        name, else its first membership): a check of who hosts each actor that costs
        one look per actor, not one per name."""
        for akey, address in self._canonical.items():
            key = next(self._iter_keys(akey), None)
            entry = None if key is None else self._kinds.get(key[0], {}).get(key[1])
            if entry is not None:
                yield address, entry
            elif groups := self._groups_by_address.get(akey):
                yield address, self._groups[next(iter(groups))][akey]

    def owns_anything(self, address: Any) -> bool:
        akey = address_key(address)
        return akey in self._names_by_address or akey in self._groups_by_address

    def remove_address(self, address: Any) -> Removal:
        """Forget every name and membership of ``address`` (its actor is dead)."""
        akey = address_key(address)
        keys = sorted(self._iter_keys(akey), key=repr)
        self._names_by_address.pop(akey, None)
        names = tuple(entry for kind, name in keys if (entry := self._pop(kind, name)))
        for entry in names:
            self._unindex_groups(entry)
        groups = tuple(sorted(self._groups_by_address.pop(akey, ())))
        for group in groups:
            members = self._groups[group]
            del members[akey]
            if not members:
                del self._groups[group]
        self._canonical.pop(akey, None)
        if names or groups:
            self.version += 1
        return Removal(names, groups)

    # ---- internals ---------------------------------------------------------------

    def _intern(self, address: Any, akey: AddressKey) -> Any:
        return self._canonical.setdefault(akey, address)

    def _release(self, address: Any) -> None:
        """Forget the canonical copy of ``address`` once it holds nothing."""
        if not self.owns_anything(address):
            self._canonical.pop(address_key(address), None)

    def _pop(self, kind: str, name: Name) -> Entry | None:
        names = self._kinds.get(kind)
        if names is None:
            return None
        entry = names.pop(name, None)
        if not names:
            del self._kinds[kind]
        return entry

    def _derived(self, group: str) -> Iterable[Entry]:
        """The registrations that put their addresses in automatic ``group``."""
        kind = _KIND_OF_GROUP.get(group)
        if kind is not None:
            return self._kinds.get(kind, {}).values()
        return self._automatic.get(group, {}).values()

    def _store(self, entry: Entry, akey: AddressKey | None = None) -> None:
        kind, name = entry.kind, entry.name
        names = self._kinds.get(kind)
        if names is None:
            names = self._kinds[kind] = {}
        names[name] = entry
        akey = address_key(entry.address) if akey is None else akey
        held = self._names_by_address.get(akey)
        if held is None:
            self._names_by_address[akey] = entry
        elif isinstance(held, Entry):
            if held.kind == kind and held.name == name:
                self._names_by_address[akey] = entry  # the same key: keep the newest
            else:
                index: dict[str, set[Name]] = {held.kind: {held.name}}
                index.setdefault(kind, set()).add(name)
                self._names_by_address[akey] = index
        else:
            held.setdefault(kind, set()).add(name)
        for group in _capability_groups(kind, entry.meta):
            self._automatic.setdefault(group, {})[name] = entry
        self.version += 1

    def _iter_keys(self, akey: AddressKey) -> Iterator[NameKey]:
        held = self._names_by_address.get(akey)
        if held is None:
            return
        if isinstance(held, Entry):
            yield (held.kind, held.name)
            return
        for kind, names in held.items():
            for name in names:
                yield (kind, name)

    def _unindex_name(self, entry: Entry) -> None:
        """Drop the indexes of ``entry`` (the caller owns ``_kinds``)."""
        kind, name, akey = entry.kind, entry.name, address_key(entry.address)
        held = self._names_by_address.get(akey)
        if isinstance(held, Entry):
            if held.kind == kind and held.name == name:
                del self._names_by_address[akey]
        elif held is not None:
            names = held.get(kind)
            if names is not None:
                names.discard(name)
                if not names:
                    del held[kind]
            if len(held) == 1:
                ((last_kind, last),) = held.items()
                if len(last) == 1:  # one name left: back to its entry
                    last_name = next(iter(last))
                    current = self.whereis(last_name, last_kind)
                    if current is not None:
                        self._names_by_address[akey] = current
            elif not held:
                del self._names_by_address[akey]
        self._unindex_groups(entry)

    def _unindex_groups(self, entry: Entry) -> None:
        for group in _capability_groups(entry.kind, entry.meta):
            registrations = self._automatic.get(group, {})
            registrations.pop(entry.name, None)
            if not registrations:
                self._automatic.pop(group, None)

    @staticmethod
    def _discard_index(index: dict[AddressKey, set[str]], akey: AddressKey, item: str) -> None:
        items = index.get(akey)
        if items is not None:
            items.discard(item)
            if not items:
                del index[akey]


class _MetaPool:
    """One shared dict per distinct meta, for up to ``limit`` distinct metas.

    Entries never change their meta in place (an update stores a new one), so equal
    metas can share one dict: 100,000 servers declaring ``{"capabilities": ["tools"]}``
    hold one copy instead of 100,000 (~180 bytes a name). The pool forgets the oldest
    distinct meta beyond ``limit``: entries keep theirs, later equal ones get a new copy,
    so unique metas (a per-server URL) cost what they did and the pool stays bounded.
    """

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._shared: dict[Any, dict[str, Any]] = {}
        self._empty: dict[str, Any] = {}
        # While loading (NameTable.loading): source object -> its shared copy, by id,
        # the source kept alive so its id is not reused.
        self.memo: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] | None = None

    def get(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        if not meta:
            return self._empty
        memo = self.memo
        if memo is not None:
            seen = memo.get(id(meta))
            if seen is not None and seen[0] is meta:
                return seen[1]
        try:
            frozen = _frozen(meta)
            hash(frozen)
        except (TypeError, ValueError):  # an unhashable or unsortable value: no sharing
            return dict(meta)
        shared = self._shared.get(frozen)
        if shared is None:
            if len(self._shared) >= self._limit:
                del self._shared[next(iter(self._shared))]
            shared = self._shared[frozen] = dict(meta)
        if memo is not None:
            memo[id(meta)] = (meta, shared)
        return shared


def _frozen(value: Any) -> Any:
    """A hashable value equal for equal metas (dicts by sorted items, lists as tuples);
    the type is kept so that ``[1]`` and ``(1,)``, or ``1`` and ``True``, stay apart."""
    if isinstance(value, Mapping):
        items = ((k, type(k).__qualname__, _frozen(v)) for k, v in value.items())
        return (dict, tuple(sorted(items)))
    if isinstance(value, list | tuple):
        return (type(value), tuple(_frozen(v) for v in value))
    return (type(value), value)
