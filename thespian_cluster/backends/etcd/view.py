"""What one node knows of the etcd prefix, and how etcd's keys and values look.

Pure: no Thespian, no sockets. The backend feeds it two streams — the answers to its
own writes and the watch's events — and gets back the
:class:`~thespian_cluster.core.replica.MirrorUpdate` that keeps the node table's
global mirror equal to it.

**Layout** under the configured prefix (``/thespian-cluster/`` by default)::

    <prefix>n/<kind>/s:<name>         a name: its owner (JSON, below), on its node's lease
    <prefix>m/<group>/<ip>:<port>     a group membership, on its node's lease
    <prefix>node/<node name>          a node's lease: {"incarnation": ..., "lease": id}

``<kind>``, ``<name>`` and ``<group>`` are percent-encoded (a tuple name as
``t:<its JSON list>``), so a ``/`` in a name cannot collide with the layout. Values are JSON that an
operator can read with ``etcdctl get --prefix``::

    {"address": ["10.0.0.5", 41234], "node": "node-b", "incarnation": "…",
     "meta": {...}, "registered_at": 1796230541.6}

**Revisions.** Every record remembers the ``mod_revision`` it was read at, and a
deleted key the revision of its deletion, so an event older than what this node has
already applied is ignored: a write's answer reaches the view before the watch
delivers the same change, and the client was answered from the view (read your
writes on the origin). Tombstones are dropped once the watch has passed them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from thespian_cluster.core import reasons as why
from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.replica import MirrorUpdate
from thespian_cluster.core.table import Entry, Member, Name

NAMES = "n/"
MEMBERS = "m/"
NODES = "node/"


class RecordError(ValueError):
    """A key or value under the prefix that this code did not write (skipped)."""


# ---- keys ----------------------------------------------------------------------------------


def name_key(prefix: str, kind: str, name: Name) -> str:
    # "s:" a string name, "t:" a tuple name as its JSON list: never ambiguous.
    encoded = f"t:{json.dumps(list(name))}" if isinstance(name, tuple) else f"s:{name}"
    return f"{prefix}{NAMES}{quote(kind, safe='')}/{quote(encoded, safe='')}"


def member_key(prefix: str, group: str, address: Any) -> str:
    ip, port = sockname(address)
    return f"{prefix}{MEMBERS}{quote(group, safe='')}/{ip}:{port}"


def node_key(prefix: str, node: str) -> str:
    return f"{prefix}{NODES}{quote(node, safe='')}"


def sockname(address: Any) -> tuple[str, int]:
    """``(ip, port)`` of a TCP actor address; RecordError for anything else."""
    key = address_key(address)
    if not (isinstance(key, tuple) and len(key) == 3 and key[0] == "tcp"):
        raise RecordError(f"not a TCP actor address: {address!r}")
    return str(key[1]), int(key[2])


# ---- values --------------------------------------------------------------------------------


def entry_value(entry: Entry) -> bytes:
    """The JSON an :class:`Entry` is stored as. Raises RecordError for meta that is
    not JSON (etcd's values are read by other tools, so they hold no pickles)."""
    return _dumps(
        {
            "address": list(sockname(entry.address)),
            "node": entry.node,
            "incarnation": entry.incarnation,
            "meta": dict(entry.meta),
            "registered_at": entry.registered_at,
        }
    )


def member_value(member: Member) -> bytes:
    return _dumps(
        {
            "address": list(sockname(member.address)),
            "node": member.node,
            "incarnation": member.incarnation,
            "meta": dict(member.meta),
        }
    )


def node_value(incarnation: str, lease: int) -> bytes:
    return _dumps({"incarnation": incarnation, "lease": lease})


def parse_node(raw: bytes) -> tuple[str, int]:
    """``(incarnation, lease id)`` of a node record."""
    value = _loads(raw)
    incarnation, lease = value.get("incarnation"), value.get("lease")
    if not isinstance(incarnation, str) or not isinstance(lease, int):
        raise RecordError("a node record needs an incarnation and a lease")
    return incarnation, lease


def _dumps(value: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise RecordError(f"meta must be plain JSON for the etcd backend: {exc}") from None


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RecordError("not a JSON object")
    return value


# ---- the view ------------------------------------------------------------------------------


@dataclass
class Record:
    """One key as this node last saw it."""

    key: str
    revision: int  # mod_revision
    lease: int
    entry: Entry | None = None
    member: Member | None = None
    node: tuple[str, int] | None = None  # (incarnation, lease) of a node record


@dataclass
class Change:
    """A key's new state at ``revision``: ``value`` None for a deletion."""

    key: str
    revision: int
    value: bytes | None = None
    lease: int = 0


@dataclass
class Applied:
    """What an apply did: the mirror's update, and the entries and memberships that
    went away (the backend tells owners of this node about losses it did not ask for)."""

    update: MirrorUpdate
    removed_entries: list[Entry] = field(default_factory=list)
    removed_members: list[Member] = field(default_factory=list)


class EtcdView:
    """The prefix as this node knows it. See the module docstring."""

    def __init__(self, prefix: str, address_of: Any) -> None:
        """``address_of(ip, port)`` builds an actor address (the node table's)."""
        self.prefix = prefix
        self._address_of = address_of
        self.records: dict[str, Record] = {}
        self._tombstones: dict[str, int] = {}  # deleted key -> revision of the deletion
        self.revision = 0  # the newest revision applied from a listing or the watch

    # -- reads --

    def entry(self, kind: str, name: Name) -> Record | None:
        return self.records.get(name_key(self.prefix, kind, name))

    def member(self, group: str, address: Any) -> Record | None:
        try:
            return self.records.get(member_key(self.prefix, group, address))
        except RecordError:
            return None

    def parse_entry(self, key: str, stored: Any) -> Entry | None:
        """The entry a stored key holds (``stored``: its value, revisions and lease as
        the store read it), or None when it is not one of ours."""
        try:
            record = self._parse(Change(key, stored.mod_revision, stored.value, stored.lease))
        except RecordError:
            return None
        return record.entry

    def node_lease(self, node: str) -> tuple[str, int] | None:
        record = self.records.get(node_key(self.prefix, node))
        return record.node if record is not None else None

    def entries(self) -> list[Entry]:
        return [r.entry for r in self.records.values() if r.entry is not None]

    def members(self) -> list[Member]:
        return [r.member for r in self.records.values() if r.member is not None]

    def owned_by_address(self, address: Any) -> list[Record]:
        key = address_key(address)
        return [
            r
            for r in self.records.values()
            if (r.entry is not None and address_key(r.entry.address) == key)
            or (r.member is not None and address_key(r.member.address) == key)
        ]

    # -- writes --

    def apply(self, changes: Iterable[Change], *, watched_to: int = 0) -> Applied:
        """Apply changes newer than what is known of each key. ``watched_to``: the watch
        has delivered everything up to this revision (tombstones before it can go)."""
        puts: dict[str, Record] = {}
        drops: dict[str, Record] = {}
        for change in changes:
            known = self.records.get(change.key)
            seen = known.revision if known is not None else self._tombstones.get(change.key, 0)
            if change.revision <= seen:
                continue  # this node already has that change, or a newer one
            if change.value is None:
                if known is not None:
                    del self.records[change.key]
                    drops[change.key] = known
                    puts.pop(change.key, None)
                self._tombstones[change.key] = change.revision
                continue
            try:
                record = self._parse(change)
            except RecordError:
                continue  # not ours (another tool's key under the prefix): skipped
            if known is not None:
                drops.setdefault(change.key, known)
            self._tombstones.pop(change.key, None)
            self.records[change.key] = record
            puts[change.key] = record
        if watched_to:
            self.revision = max(self.revision, watched_to)
            self._tombstones = {k: r for k, r in self._tombstones.items() if r > watched_to}
        return _applied(puts, drops)

    def replace(self, listing: Iterable[Change], revision: int) -> Applied:
        """A fresh listing of the prefix at ``revision`` (start, or after compaction):
        everything else is gone."""
        fresh = list(listing)
        listed = {c.key for c in fresh}
        gone = [Change(k, revision) for k in self.records if k not in listed]
        self._tombstones.clear()
        # A record newer than the listing (a write answered after it was taken) stays:
        # its revision is above the listing's, so the "gone" change is ignored for it.
        applied = self.apply([*gone, *fresh])
        self.revision = revision
        return applied

    def _parse(self, change: Change) -> Record:
        assert change.value is not None
        rest = change.key[len(self.prefix) :]
        if not change.key.startswith(self.prefix):
            raise RecordError("outside the prefix")
        record = Record(change.key, change.revision, change.lease)
        if rest.startswith(NODES):
            record.node = parse_node(change.value)
            return record
        value = _loads(change.value)
        ip_port = value.get("address")
        node, incarnation, meta = value.get("node"), value.get("incarnation"), value.get("meta")
        if not (
            isinstance(ip_port, list)
            and len(ip_port) == 2
            and isinstance(ip_port[0], str)
            and isinstance(ip_port[1], int)
            and isinstance(node, str)
            and isinstance(incarnation, str)
            and isinstance(meta, dict)
        ):
            raise RecordError("a record needs address, node, incarnation and meta")
        address = self._address_of(ip_port[0], ip_port[1])
        if rest.startswith(NAMES):
            kind_part, _, name_part = rest[len(NAMES) :].partition("/")
            kind, name = unquote(kind_part), _name(unquote(name_part))
            at = value.get("registered_at", 0.0)
            record.entry = Entry(
                name,
                kind,
                address,
                node,
                meta,
                at if isinstance(at, int | float) else 0.0,
                incarnation,
                (change.revision, 0),
            )
        elif rest.startswith(MEMBERS):
            group = unquote(rest[len(MEMBERS) :].partition("/")[0])
            record.member = Member(group, address, node, meta, incarnation)
        else:
            raise RecordError("not a key of this layout")
        return record


def _name(text: str) -> Name:
    if text.startswith("s:"):
        return text[2:]
    if text.startswith("t:"):
        try:
            parts = json.loads(text[2:])
        except ValueError:
            parts = None
        if isinstance(parts, list) and all(isinstance(p, str) for p in parts):
            return tuple(parts)
    raise RecordError(f"not a name of this layout: {text[:40]!r}")


def _applied(puts: dict[str, Record], drops: dict[str, Record]) -> Applied:
    entries = [r.entry for r in puts.values() if r.entry is not None]
    members = [r.member for r in puts.values() if r.member is not None]
    dropped_names = [
        (r.entry.kind, r.entry.name)
        for k, r in drops.items()
        if r.entry is not None and k not in puts
    ]
    dropped_members = [
        (r.member.group, r.member.address)
        for k, r in drops.items()
        if r.member is not None and k not in puts
    ]
    # A node's lease revoked or expired deletes its node record and every key on its
    # lease in one revision: those went with their node.
    ended = {r.node[1] for k, r in drops.items() if r.node is not None and k not in puts}
    reasons: dict[Any, str] = {}
    for key, record in drops.items():
        if key in puts or not record.lease or record.lease not in ended:
            continue
        if record.entry is not None:
            reasons[record.entry.key] = why.NODE_DOWN
        elif record.member is not None:
            reasons[(record.member.group, address_key(record.member.address))] = why.NODE_DOWN
    update = (tuple(entries), tuple(dropped_names), tuple(members), tuple(dropped_members))
    return Applied(
        MirrorUpdate(*update, reasons=reasons),
        [r.entry for k, r in drops.items() if r.entry is not None and k not in puts],
        [r.member for k, r in drops.items() if r.member is not None and k not in puts],
    )
