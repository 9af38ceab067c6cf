"""A compact wire form for a snapshot's records: columns of primitives, shared values once.

A :class:`~thespian_cluster.core.replica.Snapshot` of 100,000 names pickled as 100,000
frozen :class:`Entry` objects took ~0.7 s to pickle and ~1.0 s to unpickle, most of it
in the per-object machinery of dataclass pickling, and every entry carried the owner's
node and incarnation again. :class:`Columns` holds the same records as tuples of
strings, numbers and indexes: the values many records share (addresses, owners, metas,
kinds) are listed once per chunk and referenced by their index, so pickle and unpickle
run in C over flat tuples.

:func:`pack` turns records into columns; :func:`unpack` checks every column (a peer may
run other code, or send garbage) and builds the records with the shared values interned
in the table they are for, so the table stores them as they are (no second copy).
Nothing is built unless every column checks out.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.records import Record
from thespian_cluster.core.table import Entry, Member, Name


@dataclass(frozen=True, slots=True)
class Columns(Record):
    """Entries and members as columns; ``*_of`` columns index the shared tables."""

    addresses: tuple[Any, ...]
    owners: tuple[tuple[str, str], ...]  # (node, incarnation)
    metas: tuple[Mapping[str, Any], ...]
    kinds: tuple[str, ...]
    # one per entry
    names: tuple[Name, ...]
    kind_of: tuple[int, ...]
    address_of: tuple[int, ...]
    owner_of: tuple[int, ...]
    meta_of: tuple[int, ...]
    stamps: tuple[float, ...]
    epochs: tuple[int, ...]
    seqs: tuple[int, ...]
    # one per member
    groups: tuple[str, ...] = ()
    member_address_of: tuple[int, ...] = ()
    member_owner_of: tuple[int, ...] = ()
    member_meta_of: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.names) + len(self.groups)


class _Interner:
    """Index of each distinct value, by a key function (identity first: records of one
    table share their address and meta objects)."""

    def __init__(self, key: Callable[[Any], Any]) -> None:
        self._key = key
        self._by_id: dict[int, int] = {}
        self._by_key: dict[Any, int] = {}
        self.values: list[Any] = []

    def index(self, value: Any) -> int:
        found = self._by_id.get(id(value))
        if found is not None and self.values[found] is value:
            return found
        try:
            key = self._key(value)
            hash(key)
        except TypeError:  # an unhashable meta: its own slot
            key = ("id", id(value), len(self.values))
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = len(self.values)
            self.values.append(value)
        self._by_id[id(value)] = found
        return found


def _meta_key(meta: Mapping[str, Any]) -> Any:
    return ("id", id(meta))  # equal metas of one table are mostly one object already


def pack(entries: Iterable[Entry], members: Iterable[Member] = ()) -> Columns:
    """``entries`` and ``members`` as :class:`Columns`."""
    addresses = _Interner(address_key)
    owners = _Interner(lambda owner: owner)
    metas = _Interner(_meta_key)
    kinds = _Interner(lambda kind: kind)
    names: list[Name] = []
    kind_of: list[int] = []
    address_of: list[int] = []
    owner_of: list[int] = []
    meta_of: list[int] = []
    stamps: list[float] = []
    epochs: list[int] = []
    seqs: list[int] = []
    for e in entries:
        names.append(e.name)
        kind_of.append(kinds.index(e.kind))
        address_of.append(addresses.index(e.address))
        owner_of.append(owners.index((e.node, e.incarnation)))
        meta_of.append(metas.index(e.meta))
        stamps.append(e.registered_at)
        epochs.append(e.version[0])
        seqs.append(e.version[1])
    groups: list[str] = []
    member_address_of: list[int] = []
    member_owner_of: list[int] = []
    member_meta_of: list[int] = []
    for m in members:
        groups.append(m.group)
        member_address_of.append(addresses.index(m.address))
        member_owner_of.append(owners.index((m.node, m.incarnation)))
        member_meta_of.append(metas.index(m.meta))
    return Columns(
        tuple(addresses.values),
        tuple(owners.values),
        tuple(metas.values),
        tuple(kinds.values),
        tuple(names),
        tuple(kind_of),
        tuple(address_of),
        tuple(owner_of),
        tuple(meta_of),
        tuple(stamps),
        tuple(epochs),
        tuple(seqs),
        tuple(groups),
        tuple(member_address_of),
        tuple(member_owner_of),
        tuple(member_meta_of),
    )


def _all(values: Any, kinds: type | tuple[type, ...]) -> bool:
    """A tuple of instances of ``kinds`` (the types counted in C: ~10 ns a value)."""
    return isinstance(values, tuple) and all(issubclass(t, kinds) for t in set(map(type, values)))


def _ints(values: tuple[Any, ...]) -> bool:
    return set(map(type, values)) <= {int}


def _indexes(values: Any, size: int, count: int) -> bool:
    """``count`` ints, each an index into a table of ``size``."""
    if not isinstance(values, tuple) or len(values) != count or not _ints(values):
        return False
    return not values or (min(values) >= 0 and max(values) < size)


def _names_ok(names: Any) -> bool:
    """A tuple of names: strings, or tuples of strings."""
    if not isinstance(names, tuple):
        return False
    if _all(names, str):
        return True
    return all(isinstance(n, str) or (isinstance(n, tuple) and _all(n, str)) for n in names)


def problem(columns: Any) -> str | None:
    """Why ``columns`` (from a peer) cannot be read, or None when every column checks."""
    if not isinstance(columns, Columns):
        return f"not Columns but {type(columns).__name__}"
    c = columns
    if not isinstance(c.addresses, tuple):
        return "addresses"
    try:
        for address in c.addresses:
            hash(address_key(address))
    except Exception:
        return "an address without a key"
    if not (_all(c.owners, tuple) and all(len(o) == 2 and _all(o, str) for o in c.owners)):
        return "owners"
    if not _all(c.metas, dict) or not all(_all(tuple(m), str) for m in c.metas):
        return "metas"
    if not _all(c.kinds, str):
        return "kinds"
    if not _names_ok(c.names):
        return "names"
    rows = len(c.names)
    for label, column, table in (
        ("kind_of", c.kind_of, c.kinds),
        ("address_of", c.address_of, c.addresses),
        ("owner_of", c.owner_of, c.owners),
        ("meta_of", c.meta_of, c.metas),
    ):
        if not _indexes(column, len(table), rows):
            return label
    if not (_all(c.stamps, (float, int)) and len(c.stamps) == rows):
        return "stamps"
    for label, column in (("epochs", c.epochs), ("seqs", c.seqs)):
        if not (isinstance(column, tuple) and len(column) == rows and _ints(column)):
            return label
    if not _all(c.groups, str):
        return "groups"
    members = len(c.groups)
    for label, column, table in (
        ("member_address_of", c.member_address_of, c.addresses),
        ("member_owner_of", c.member_owner_of, c.owners),
        ("member_meta_of", c.member_meta_of, c.metas),
    ):
        if not _indexes(column, len(table), members):
            return label
    return None


def unpack(
    columns: Columns,
    intern_address: Callable[[Any], Any] = lambda address: address,
    intern_meta: Callable[[Mapping[str, Any]], Mapping[str, Any]] = lambda meta: meta,
) -> tuple[list[Entry], list[Member]]:
    """The records of ``columns`` (checked first: see :func:`problem`), their shared
    values passed once through ``intern_address`` / ``intern_meta`` (the table's).

    Raises:
        ValueError: a column does not check out; nothing was interned.
    """
    why = problem(columns)
    if why is not None:
        raise ValueError(f"malformed snapshot columns: {why}")
    c = columns
    addresses: Sequence[Any] = [intern_address(a) for a in c.addresses]
    metas: Sequence[Mapping[str, Any]] = [intern_meta(m) for m in c.metas]
    owners = [(sys.intern(node), sys.intern(inc)) for node, inc in c.owners]
    kinds = [sys.intern(k) for k in c.kinds]
    entries = [
        Entry(
            name, kinds[k], addresses[a], owners[o][0], metas[m], float(t), owners[o][1], (ep, sq)
        )
        for name, k, a, o, m, t, ep, sq in zip(
            c.names,
            c.kind_of,
            c.address_of,
            c.owner_of,
            c.meta_of,
            c.stamps,
            c.epochs,
            c.seqs,
            strict=True,
        )
    ]
    members = [
        Member(group, addresses[a], owners[o][0], metas[m], owners[o][1])
        for group, a, o, m in zip(
            c.groups, c.member_address_of, c.member_owner_of, c.member_meta_of, strict=True
        )
    ]
    return entries, members
