"""The replicated global table, node side: identities, the wire types, the replica, the origin.

The global registry keeps one table of names and groups (a :class:`NameTable`) on every
node. One node, the **sequencer** (``core/sequencer.py``), orders every write; every node
holds a :class:`Replica` that applies the sequencer's ordered changes. This module has
everything a node needs that is not the sequencer itself.

Identity
    A node is a :class:`NodeId` ``(name, incarnation)``; the incarnation is a fresh string
    per start. Entries and members record both, so purging a dead incarnation
    (:class:`PurgeNode`) never removes what the restarted node registered since.

Terms and versions
    A :class:`Term` is ``(epoch, sequencer)``, ordered by epoch and then by the
    sequencer's id, so two would-be sequencers of one epoch are ordered deterministically.
    Within a term the sequencer numbers the writes it applies ``1, 2, 3, ...`` with no
    holes; the pair ``(epoch, seq)`` is a write's version, stored in the entry it puts.

Writes (origin → sequencer)
    A :class:`Write` carries the origin node, an op id unique per origin incarnation, and
    one request: :class:`Claim`, :class:`Release`, :class:`SetMeta`, :class:`JoinGroup`,
    :class:`LeaveGroup`, :class:`PurgeAddress`, :class:`PurgeNode`. The sequencer answers
    with a :class:`Decision` (outcome, and the version the origin must wait for) and turns
    each write that changes the table into one **effect** (:class:`PutName`,
    :class:`DropName`, :class:`PutMember`, :class:`DropMember`, or the purge itself).
    Effects are exact, not requests: applied to the same table in the same order, they
    give the same table, so every replica that applied ``1..n`` of a term holds what the
    sequencer held after ``n`` (the sequencer stamps ``registered_at``; purges are
    deterministic functions of the table).

Replica rules (:meth:`Replica.apply`, :meth:`Replica.install`)
    * A :class:`Delta` of the replica's term is applied in order: a delta already applied
      is ignored (duplicates), one that overlaps is applied from the first new seq, one
      that leaves a hole is buffered until the hole is filled. A hole that persists (the
      actor asks :meth:`Replica.need_snapshot` on a timer; an empty delta from the
      sequencer is its heartbeat and shows holes at the tail) or a buffer that grows too
      big asks the sequencer for a :class:`Snapshot`.
    * A delta of an older term is ignored; one of a newer term means the replica missed
      a takeover's snapshot, so it asks for one.
    * A snapshot is installed when its term is newer, or when it is of the same term and
      further along (catch-up). Installing replaces the table and reports the difference.
    * Answering a takeover's :class:`Collect` (:meth:`Replica.owned_state`) **fences**
      the replica: from then on it applies nothing of an older term. Without the fence an
      old sequencer still alive could get a write applied, hence acknowledged, on this
      node after its owned state was sent, and the new table would not have it.

Read your writes and re-sending (:class:`Origin`)
    An origin replies to its client only when its own replica has applied the decision's
    version (:meth:`Replica.applied`), refusals included, so a client that reads next
    sees what the decision saw. A write whose decision belongs to a term the replica has
    since left was never applied here before the fence, so it is not in the new table
    either; the origin sends it again (:meth:`Origin.unacknowledged`). Writes are safe to
    send twice: the sequencer remembers recent op ids (unique per origin incarnation
    even across restarts of the actor: they start at the clock), and every request is idempotent
    by meaning (claiming a name one owns is a meta update, releasing a free name says so).

Writes are addressed to a term (the origin replica's). A sequencer ignores writes of
another term: without that, a copy of a write that its origin already saw answered under
an older term could still arrive, be decided again under the new one (where nobody
remembers its op id), and undo a later write (a stale release dropping a newer claim:
the state machine found exactly that). The origin sends every unanswered write again,
addressed to the new term, once its replica has installed that term.

Why no acknowledged write is lost across a takeover: the new table is the merge of what
every live node owns in its replica, collected after the fence. An acknowledged write of
node N was applied by N's replica before N answered (or it would not be acknowledged: the
fence stops later applies), so N's owned state reflects it.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from thespian_cluster.core import reasons as why
from thespian_cluster.core.addresses import AddressKey, address_key
from thespian_cluster.core.columns import Columns, pack, unpack
from thespian_cluster.core.records import Record, WireMessage
from thespian_cluster.core.table import Entry, Member, Name, NameKey, NameTable

# ---- identities -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class NodeId(Record):
    """One life of a node: its configured name and a fresh string per start."""

    name: str
    incarnation: str


@dataclass(frozen=True, slots=True, order=True)
class Term(Record):
    """The reign of one sequencer; newer terms compare greater (epoch, then sequencer,
    then life).

    ``life`` tells apart the lives of one node's RegistryDist (a restart keeps the node's
    incarnation and forgets the epochs it led): without it a restarted one could lead
    the very term of its previous life, and a snapshot of that life still on its way
    would be installed as a catch-up of the new one (the state machine found it).
    """

    epoch: int
    sequencer: NodeId
    life: int = 0


NO_NODE = NodeId("", "")
NO_TERM = Term(0, NO_NODE)

Version = tuple[int, int]  # (epoch, seq)


def owned_by(item: Entry | Member, node: NodeId) -> bool:
    return item.node == node.name and item.incarnation == node.incarnation


def owner_id(item: Entry | Member) -> NodeId:
    return NodeId(item.node, item.incarnation)


# ---- writes: origin -> sequencer ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim(Record):
    """Register ``(kind, name)`` for ``address`` (hosted on the origin node)."""

    kind: str
    name: Name
    address: Any
    meta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Release(Record):
    """Unregister a name the origin node owns (any owner with ``force``)."""

    kind: str
    name: Name
    force: bool = False


@dataclass(frozen=True, slots=True)
class SetMeta(Record):
    """Replace the meta of a name the origin node owns (any owner with ``force``)."""

    kind: str
    name: Name
    meta: Mapping[str, Any]
    force: bool = False


@dataclass(frozen=True, slots=True)
class JoinGroup(Record):
    """Make ``address`` (hosted on the origin node) a member of ``group``."""

    group: str
    address: Any
    meta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LeaveGroup(Record):
    group: str
    address: Any


@dataclass(frozen=True, slots=True)
class PurgeAddress(Record):
    """An actor died: forget its names and memberships. Also an effect, applied as is."""

    address: Any


@dataclass(frozen=True, slots=True)
class PurgeNode(Record):
    """A node incarnation is down: forget what it owned. Also an effect, applied as is."""

    node: NodeId


Request = Claim | Release | SetMeta | JoinGroup | LeaveGroup | PurgeAddress | PurgeNode


@dataclass(frozen=True, slots=True)
class Write(Record):
    """One request from ``origin`` to the sequencer of ``term``.

    ``op_id`` is unique per origin incarnation, across restarts of its actor too
    (:class:`Origin` starts at the clock). ``term`` is the origin replica's term
    when sent: a sequencer decides only writes of its own term, so a copy still in
    flight from an older term (already answered there) cannot be applied a second time
    in a newer one, where the sequencer does not remember it.
    """

    origin: NodeId
    op_id: int
    request: Request
    term: Term


# Decision outcomes (plain strings: small on the wire, stable in logs).
OK = "ok"
ALREADY_REGISTERED = "already_registered"
NOT_REGISTERED = "not_registered"
NOT_OWNER = "not_owner"
NOT_MEMBER = "not_member"
NODE_DOWN = "node_down"  # the origin's incarnation was purged: a late write, refused
#: The sequencer's side lost a partition: it decides no claims, joins or meta updates
#: (a write its origin sent while it could write, re-sent to this side's new sequencer,
#: must not be granted here only to be lost at the heal's merge).
MINORITY = "minority_partition"


@dataclass(frozen=True, slots=True)
class Decision(Record):
    """The sequencer's answer to one write.

    The origin answers its client once its replica has applied ``(term, seq)``
    (:meth:`Replica.applied`). ``owner`` is the current owner for
    ``already_registered`` / ``not_owner``.
    """

    op_id: int
    term: Term
    seq: int
    outcome: str
    owner: Entry | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK


# ---- effects: sequencer -> every replica ------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutName(Record):
    """Set the entry of ``(kind, name)`` exactly (a claim or a meta update)."""

    kind: str
    name: Name
    address: Any
    node: NodeId
    meta: Mapping[str, Any]
    registered_at: float


@dataclass(frozen=True, slots=True)
class DropName(Record):
    kind: str
    name: Name


@dataclass(frozen=True, slots=True)
class PutMember(Record):
    group: str
    address: Any
    node: NodeId
    meta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DropMember(Record):
    group: str
    address: Any


Effect = PutName | DropName | PutMember | DropMember | PurgeAddress | PurgeNode


@dataclass(frozen=True, slots=True)
class Delta(WireMessage):
    """Effects ``first_seq, first_seq + 1, ...`` of ``term``; no effects = a heartbeat
    saying the sequencer's last seq is ``first_seq - 1``."""

    term: Term
    first_seq: int
    ops: tuple[Effect, ...]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.ops) - 1

    def __str__(self) -> str:
        # Short: Thespian formats every message it sends and receives for a debug line,
        # whatever the log level, and the full form of 1,000 effects cost ~3 ms each time.
        return f"Delta(epoch={self.term.epoch}, seqs={self.first_seq}..{self.last_seq})"


@dataclass(frozen=True, slots=True)
class Snapshot(WireMessage):
    """The whole table of ``term`` after ``seq`` (``seq`` 0: a takeover's merged table)."""

    term: Term
    seq: int
    entries: tuple[Entry, ...]
    members: tuple[Member, ...]
    down: frozenset[NodeId] = frozenset()

    def __str__(self) -> str:  # short, as Delta's
        return (
            f"Snapshot(epoch={self.term.epoch}, seq={self.seq}, "
            f"{len(self.entries)} names, {len(self.members)} members)"
        )


@dataclass(frozen=True, slots=True)
class SnapshotChunk(WireMessage):
    """Part ``index`` (of ``count``) of the snapshot of ``term`` after ``seq``, as the
    sequencer's transfer number ``transfer`` cut it (:func:`snapshot_chunks`).

    A replica builds the new table from the chunks as they come (in any order) and
    installs it only once it has every chunk of one transfer: until then it keeps its
    old table, term and seq (reads and ``caught_up`` see nothing half-installed). A
    chunk of an older transfer, or of a snapshot the replica may not install, is
    dropped; a chunk of a newer one starts over. Transfers are numbered per sequencer
    (:attr:`Term` names the sequencer's life), so "newer" is ``(term, seq, transfer)``.
    """

    term: Term
    seq: int
    transfer: int
    index: int
    count: int
    body: Columns
    down: frozenset[NodeId] = frozenset()

    @property
    def key(self) -> tuple[Term, int, int]:
        return (self.term, self.seq, self.transfer)

    def __str__(self) -> str:  # short, as Delta's (the full form of a chunk cost ~6 ms)
        return (
            f"SnapshotChunk(epoch={self.term.epoch}, seq={self.seq}, "
            f"transfer={self.transfer}, {self.index + 1}/{self.count})"
        )


#: Records (names and members) per chunk: ~20 ms to pack or unpack on these machines,
#: small enough that a joiner builds while the next chunk is on its way.
CHUNK_RECORDS = 5000


def snapshot_chunks(
    snapshot: Snapshot, transfer: int, size: int = CHUNK_RECORDS
) -> list[SnapshotChunk]:
    """``snapshot`` cut into chunks of at most ``size`` records (at least one chunk)."""
    return list(iter_chunks(snapshot, transfer, size))


def iter_chunks(
    snapshot: Snapshot, transfer: int, size: int = CHUNK_RECORDS
) -> Iterator[SnapshotChunk]:
    """:func:`snapshot_chunks`, each packed only when it is asked for (the first one
    can be on its way while the next is packed)."""
    entries, members = snapshot.entries, snapshot.members
    total = len(entries) + len(members)
    count = max(1, -(-total // size))
    for index in range(count):
        start, end = index * size, (index + 1) * size
        part_members = members[max(0, start - len(entries)) : max(0, end - len(entries))]
        body = pack(entries[start:end], part_members)
        yield SnapshotChunk(
            snapshot.term, snapshot.seq, transfer, index, count, body, snapshot.down
        )


def valid_chunk(chunk: Any) -> bool:
    """The envelope of a peer's chunk has the shape this code builds (the body is
    checked as it is unpacked)."""
    return (
        isinstance(chunk, SnapshotChunk)
        and isinstance(chunk.term, Term)
        and _node_ok(chunk.term.sequencer)
        and type(chunk.term.epoch) is int
        and type(chunk.term.life) is int
        and all(type(v) is int for v in (chunk.seq, chunk.transfer, chunk.index, chunk.count))
        and 0 <= chunk.index < chunk.count
        and isinstance(chunk.down, frozenset)
        and all(_node_ok(n) for n in chunk.down)
    )


def _node_ok(node: Any) -> bool:
    """A NodeId of strings (ordering terms compares them: another type would raise)."""
    return (
        isinstance(node, NodeId)
        and isinstance(node.name, str)
        and isinstance(node.incarnation, str)
    )


@dataclass
class _Assembly:
    """A snapshot being received chunk by chunk, built into a table of its own."""

    key: tuple[Term, int, int]
    count: int
    down: frozenset[NodeId]
    table: NameTable = field(default_factory=NameTable)
    received: set[int] = field(default_factory=set)
    #: Chunks unpacked but not yet loaded: loaded in index order, so that the table's
    #: order (listings, a group's join order) is the sequencer's whatever the arrival.
    waiting: dict[int, tuple[list[Entry], list[Member]]] = field(default_factory=dict)
    loaded: int = 0  # chunks 0 .. loaded - 1 are in the table
    members: list[Member] = field(default_factory=list)

    def load(self, index: int, entries: list[Entry], members: list[Member]) -> list[Entry]:
        """Take chunk ``index``; the entries it let into the table (its own and those
        of the chunks after it that were waiting for it)."""
        self.received.add(index)
        self.waiting[index] = (entries, members)
        staged: list[Entry] = []
        while self.loaded in self.waiting:
            entries, members = self.waiting.pop(self.loaded)
            self.table.load(entries)
            staged.extend(entries)
            self.members.extend(members)  # joined at the end, after every name
            self.loaded += 1
        return staged


@dataclass(frozen=True, slots=True)
class SnapshotRequest(WireMessage):
    """``node`` (holding ``term`` up to ``seq``) asks ``sequencer`` for a snapshot."""

    node: NodeId
    sequencer: NodeId
    term: Term
    seq: int


@dataclass(frozen=True, slots=True)
class Collect(WireMessage):
    """A would-be sequencer of ``term`` asks a node for what it owns."""

    term: Term


@dataclass(frozen=True, slots=True)
class OwnedState(WireMessage):
    """A node's answer to :class:`Collect`: its own entries and members.

    ``accepted`` is false when the node already knows a term at least as new (``seen``);
    the would-be sequencer then starts again with a higher epoch.
    """

    node: NodeId
    term: Term
    accepted: bool
    seen: Term
    entries: tuple[Entry, ...] = ()
    members: tuple[Member, ...] = ()
    down: frozenset[NodeId] = frozenset()

    def __str__(self) -> str:  # short, as Delta's
        return (
            f"OwnedState(node={self.node.name}, epoch={self.term.epoch}, "
            f"accepted={self.accepted}, {len(self.entries)} names)"
        )


@dataclass(slots=True)
class Changes:
    """What one apply or install changed, for the node-local table and for events.

    ``registered`` holds new entries and changed ones (a meta update is reported here
    alone; an owner change also reports the old entry in ``unregistered``). ``left`` holds
    ``(group, address)`` pairs. ``need_snapshot``, when set, is to be sent to its
    ``sequencer``.
    """

    registered: list[Entry] = field(default_factory=list)
    unregistered: list[Entry] = field(default_factory=list)
    joined: list[Member] = field(default_factory=list)
    left: list[tuple[str, Any]] = field(default_factory=list)
    need_snapshot: SnapshotRequest | None = None
    #: A snapshot chunk was taken (progress of a transfer, installed or not yet).
    chunk_taken: bool = False
    #: The entries that chunk (and any waiting behind it) let into the table being
    #: assembled for transfer ``staged_from``; ``staged_first``: the first of them.
    #: A replica whose own table is empty may mirror them at once (the backend does:
    #: a joiner's mirror fills as the chunks come, not all at the end).
    staged: list[Entry] = field(default_factory=list)
    staged_from: tuple[Term, int, int] | None = None
    staged_first: bool = False
    #: Every effect that changed the table, in the order it was applied, with why
    #: (:mod:`thespian_cluster.core.reasons`): what name events are made of.
    steps: list[Step] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.registered or self.unregistered or self.joined or self.left)


#: One change of the table, for events: ``("put", Entry)``, ``("drop", NameKey)``,
#: ``("join", Member)`` or ``("leave", (group, address))``, then its reason; or
#: ``("batch", steps, _)``: changes without an order among them (a snapshot's).
Step = tuple[str, Any, str]


@dataclass(frozen=True, slots=True)
class MirrorUpdate:
    """What a copy of the table kept elsewhere (the node table's mirror) must write so
    that it equals the replica again: the replica's *end* state of every key an apply
    or install touched.

    No key is in both a put and a drop, so the writes commute: any order gives the
    same copy. (Replaying :class:`Changes` in a fixed order does not: one apply may
    put and drop a name, as a delta that fills a hole drains the buffered ones after
    it, and "drop, then put" left a released name in the mirror for good.)
    """

    entries: tuple[Entry, ...] = ()
    dropped_names: tuple[NameKey, ...] = ()
    members: tuple[Member, ...] = ()
    dropped_members: tuple[tuple[str, Any], ...] = ()  # (group, address)
    #: For name events, never for the copy: the change as :attr:`Changes.steps` (in
    #: order), or, without steps, why keys went (by name key or ``(group,
    #: address_key)``; what is not there changed for ``normal`` reasons).
    steps: tuple[Step, ...] = ()
    reasons: Mapping[Any, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.entries or self.dropped_names or self.members or self.dropped_members)


def mirror_update(table: NameTable, changes: Changes) -> MirrorUpdate:
    """The :class:`MirrorUpdate` that brings a copy of ``table`` as it was before
    ``changes`` to ``table`` as it is now.

    Args:
        table: the replica's table, *after* the apply or install that made ``changes``.
        changes: what that apply or install reported.

    Returns:
        Every touched name and membership, put as ``table`` holds it or dropped.
    """
    touched_names = {e.key for e in changes.registered}
    touched_names.update(e.key for e in changes.unregistered)
    entries: list[Entry] = []
    dropped_names: list[NameKey] = []
    for kind, name in touched_names:
        entry = table.whereis(name, kind)
        if entry is None:
            dropped_names.append((kind, name))
        else:
            entries.append(entry)
    touched_members = {
        (m.group, address_key(m.address)): (m.group, m.address) for m in changes.joined
    }
    touched_members.update(((g, address_key(a)), (g, a)) for g, a in changes.left)
    members: list[Member] = []
    dropped_members: list[tuple[str, Any]] = []
    for group, address in touched_members.values():
        member = table.member(group, address)
        if member is None:
            dropped_members.append((group, address))
        else:
            members.append(member)
    return MirrorUpdate(
        tuple(entries), tuple(dropped_names), tuple(members), tuple(dropped_members),
        tuple(changes.steps),
    )  # fmt: skip


class EarlyMirror:
    """What the node table's mirror gets while a joiner's table streams in.

    A replica whose installed table is empty (a node that just joined) has nothing a
    chunk could contradict, so the chunk's entries go into the mirror as they come:
    one commit per chunk instead of 100,000 puts after the last one (~0.4 s), and
    ``lookup()`` finds names before the node is caught up (``caught_up`` still waits
    for the last chunk: the replica's term, seq and table are the old ones until then).
    At the last chunk only its own entries and the members are left to write.

    Whenever the mirror may hold entries that the table to come lacks (a newer
    transfer started over, or anything else changed the replica meanwhile), the answer
    is ``None``: rewrite the mirror whole from the replica. Otherwise the mirror equals
    the replica plus the staged entries of one transfer, and equals the replica after
    every install.
    """

    def __init__(self) -> None:
        self.transfer: tuple[Term, int, int] | None = None  # its staged entries are mirrored
        self.extra = False  # another transfer's staged entries are mirrored too

    def chunk(
        self, table: NameTable, changes: Changes, was_empty: bool, installed: bool
    ) -> MirrorUpdate | None:
        """The update after a chunk (``was_empty``: the replica's table before it;
        ``installed``: it completed a transfer), or None: rewrite the mirror whole."""
        key = changes.staged_from
        if not installed:
            if changes.staged and was_empty and (changes.staged_first or self.transfer == key):
                if self.transfer is not None and self.transfer != key:
                    self.extra = True
                self.transfer = key
                return MirrorUpdate(tuple(changes.staged))
            return MirrorUpdate()
        if self.transfer is None:
            return mirror_update(table, changes)
        early, extra = self.transfer, self.extra
        self.transfer, self.extra = None, False
        if early == key and not extra and was_empty:
            # Every entry but this chunk's is mirrored already, and nothing else was.
            return MirrorUpdate(tuple(changes.staged), members=tuple(table.explicit_members()))
        return None

    def other(self, table: NameTable, changes: Changes) -> MirrorUpdate | None:
        """The update after any other apply or install (None: rewrite whole)."""
        if self.transfer is not None:
            self.transfer, self.extra = None, False
            return None
        return mirror_update(table, changes)


# ---- applying effects -----------------------------------------------------------------


def apply_effect(table: NameTable, effect: Effect, version: Version, changes: Changes) -> bool:
    """Apply one effect exactly; True when the table changed."""
    if isinstance(effect, PutName):
        old = table.whereis(effect.name, effect.kind)
        if old is not None and (
            not owned_by(old, effect.node)
            or address_key(old.address) != address_key(effect.address)
        ):
            # An owner change (the sequencer saw the old owner released first, or this is
            # a merge's winner); drop it so the put below is not a refused claim.
            table.unregister(effect.name, effect.kind)
            changes.unregistered.append(old)
        entry = table.register(
            effect.name,
            effect.kind,
            effect.address,
            # Interned: 100,000 unpickled copies of one node's name and incarnation
            # would otherwise cost ~100 bytes a name.
            sys.intern(effect.node.name),
            effect.meta,
            incarnation=sys.intern(effect.node.incarnation),
            registered_at=effect.registered_at,
            version=version,
        )
        assert isinstance(entry, Entry)  # the old owner is gone or is this owner
        changes.registered.append(entry)
        changes.steps.append(("put", entry, why.NORMAL))
        return True
    if isinstance(effect, DropName):
        removed = table.unregister(effect.name, effect.kind)
        if removed is not None:
            changes.unregistered.append(removed)
            changes.steps.append(("drop", removed.key, why.NORMAL))
        return removed is not None
    if isinstance(effect, PutMember):
        member = table.join(
            effect.group,
            effect.address,
            sys.intern(effect.node.name),
            effect.meta,
            incarnation=sys.intern(effect.node.incarnation),
        )
        changes.joined.append(member)
        changes.steps.append(("join", member, why.NORMAL))
        return True
    if isinstance(effect, DropMember):
        if table.leave(effect.group, effect.address):
            changes.left.append((effect.group, effect.address))
            changes.steps.append(("leave", (effect.group, effect.address), why.NORMAL))
            return True
        return False
    if isinstance(effect, PurgeAddress):
        removal = table.remove_address(effect.address)
        changes.unregistered.extend(removal.names)
        changes.left.extend((group, effect.address) for group in removal.groups)
        _because(
            changes, why.OWNER_DIED, removal.names, [(g, effect.address) for g in removal.groups]
        )
        return bool(removal)
    # PurgeNode: a full scan, but node loss is rare and the scan is ~20 ms at 100,000.
    node = effect.node
    entries = [e for e in table.names() if owned_by(e, node)]
    for entry in entries:
        table.unregister(entry.name, entry.kind)
    members = [m for m in table.explicit_members() if owned_by(m, node)]
    for member in members:
        table.leave(member.group, member.address)
    changes.unregistered.extend(entries)
    changes.left.extend((m.group, m.address) for m in members)
    _because(changes, why.NODE_DOWN, entries, [(m.group, m.address) for m in members])
    return bool(entries or members)


def _because(
    changes: Changes, reason: str, entries: Iterable[Entry], members: Iterable[tuple[str, Any]]
) -> None:
    changes.steps.extend(("drop", entry.key, reason) for entry in entries)
    changes.steps.extend(("leave", member, reason) for member in members)


def build_table(entries: Iterable[Entry], members: Iterable[Member]) -> NameTable:
    """A table holding exactly these entries and members (a snapshot or a merge)."""
    table = NameTable()
    with table.loading():
        for e in entries:
            table.register(
                e.name,
                e.kind,
                e.address,
                sys.intern(e.node),
                e.meta,
                incarnation=sys.intern(e.incarnation),
                registered_at=e.registered_at,
                version=e.version,
            )
        for m in members:
            table.join(m.group, m.address, sys.intern(m.node), m.meta, incarnation=m.incarnation)
    return table


def _difference(old: NameTable, new: NameTable, changes: Changes, moved_reason: str) -> None:
    """Report in ``changes`` how ``new`` differs from ``old`` (an install's difference).

    What a snapshot no longer holds was purged where it was decided (a merge that
    dropped a down node's names, deltas this replica missed); a name it gives another
    owner was won by that owner (``moved_reason``: a merge's conflict, or a change of
    hands while this replica was not following). One batch of steps: a snapshot's
    differences have no order among themselves.
    """
    old_kinds, new_kinds = old.by_kind(), new.by_kind()
    old_members = {(m.group, address_key(m.address)): m for m in old.explicit_members()}
    new_members = {(m.group, address_key(m.address)): m for m in new.explicit_members()}
    steps: list[Step]
    if not old_kinds and not old_members:
        # A joiner's first table: everything is new, for normal reasons, which is what
        # an update without steps says (MirrorUpdate.steps): no 100,000 steps to build.
        changes.registered.extend(new.names())
        changes.joined.extend(new_members.values())
        return
    empty: Mapping[Name, Entry] = {}
    gone = [
        e
        for kind, names in old_kinds.items()
        for name, e in names.items()
        if name not in new_kinds.get(kind, empty)
    ]
    left = [(m.group, m.address) for k, m in old_members.items() if k not in new_members]
    changes.unregistered.extend(gone)
    changes.left.extend(left)
    steps = [("drop", e.key, why.PURGED) for e in gone]
    steps += [("leave", m, why.PURGED) for m in left]
    for entry in new.names():
        was = old_kinds.get(entry.kind, empty).get(entry.name)
        if was is entry or was == entry:
            continue
        reason = why.NORMAL
        if was is not None and (
            not owned_by(was, owner_id(entry))
            or address_key(was.address) != address_key(entry.address)
        ):
            changes.unregistered.append(was)
            reason = moved_reason
        changes.registered.append(entry)
        steps.append(("put", entry, reason))
    for member_key, member in new_members.items():
        if old_members.get(member_key) != member:
            changes.joined.append(member)
            steps.append(("join", member, why.NORMAL))
    if steps:
        changes.steps.append(("batch", tuple(steps), why.NORMAL))


def table_state(
    table: NameTable,
) -> tuple[dict[NameKey, Entry], dict[tuple[str, AddressKey], Member]]:
    """Names and explicit members keyed for comparison (tests, diffs)."""
    names = {e.key: e for e in table.names()}
    members = {(m.group, address_key(m.address)): m for m in table.explicit_members()}
    return names, members


# ---- the replica ----------------------------------------------------------------------


class Replica:
    """One node's copy of the global table; see the module docstring for the rules.

    Reads (:meth:`whereis`, :meth:`names`, :meth:`members`, :meth:`groups`, or
    :attr:`table` directly) see every applied write.
    """

    def __init__(self, node: NodeId, *, max_buffered_ops: int = 100_000) -> None:
        self.node = node
        self.table = NameTable()
        self.term = NO_TERM
        self.seq = 0
        self.fence = NO_TERM  # the newest Collect answered; older terms are not applied
        self.max_buffered_ops = max_buffered_ops
        self._buffer: dict[int, Delta] = {}  # first_seq -> delta of self.term
        self._buffered_ops = 0
        self._known_seq = 0  # the highest seq of self.term heard of
        self._newer: Term | None = None  # a newer term heard of, whose snapshot we lack
        # Purged incarnations, handed to the next sequencer so that it refuses their
        # late writes too (a claim arriving after its node's purge would never be purged).
        self.down: set[NodeId] = set()
        self._assembly: _Assembly | None = None  # a streamed snapshot under way

    # ---- reads ----------------------------------------------------------------------

    def whereis(self, name: Name, kind: str) -> Entry | None:
        return self.table.whereis(name, kind)

    def names(self, kind: str | None = None) -> list[Entry]:
        return self.table.names(kind)

    def members(self, group: str, node: str | None = None) -> list[Member]:
        return self.table.members(group, node)

    def groups(self) -> list[str]:
        return self.table.groups()

    @property
    def seen(self) -> Term:
        """The newest term this replica knows of: a takeover starts above its epoch."""
        return max(self.term, self.fence, self._newer or NO_TERM)

    def applied(self, term: Term, seq: int) -> bool:
        """Has this replica applied version ``seq`` of ``term``?"""
        return term == self.term and seq <= self.seq

    # ---- deltas ---------------------------------------------------------------------

    def apply(self, delta: Delta) -> Changes:
        """Apply a delta (see the module docstring); report what changed."""
        changes = Changes()
        if delta.term != self.term or self.fence > self.term:
            if delta.term > self.term and delta.term >= self.fence:
                # We missed a takeover's snapshot (or joined late): only a snapshot helps.
                self._newer = max(self._newer or NO_TERM, delta.term)
                changes.need_snapshot = self.need_snapshot()
            return changes
        self._known_seq = max(self._known_seq, delta.last_seq, delta.first_seq - 1)
        if delta.first_seq > self.seq + 1:
            if delta.ops:
                self._buffer[delta.first_seq] = delta
                self._buffered_ops += len(delta.ops)
            if self._buffered_ops > self.max_buffered_ops:
                changes.need_snapshot = self.need_snapshot()
            return changes
        self._apply_from(delta, changes)
        self._drain(changes)
        self._drop_spent_assembly()  # deltas may have carried us past a transfer's seq
        return changes

    def _apply_from(self, delta: Delta, changes: Changes) -> None:
        epoch = self.term.epoch
        for seq in range(self.seq + 1, delta.last_seq + 1):
            effect = delta.ops[seq - delta.first_seq]
            apply_effect(self.table, effect, (epoch, seq), changes)
            if isinstance(effect, PurgeNode):
                self.down.add(effect.node)
            self.seq = seq

    def _drain(self, changes: Changes) -> None:
        """Apply buffered deltas that the hole-filling one made contiguous."""
        while self._buffer:
            first = min(self._buffer)
            if first > self.seq + 1:
                return
            delta = self._buffer.pop(first)
            self._buffered_ops -= len(delta.ops)
            self._apply_from(delta, changes)

    def lagging(self) -> bool:
        """Is there a hole, or a newer term, that only a snapshot or a late delta fills?"""
        return self._newer is not None or self._known_seq > self.seq

    def need_snapshot(self) -> SnapshotRequest | None:
        """The request to send if :meth:`lagging` (ask on a timer: a hole may just be a
        delta still on its way)."""
        if not self.lagging():
            return None
        source = (self._newer or self.term).sequencer
        return SnapshotRequest(self.node, source, self.term, self.seq)

    # ---- snapshots and takeovers ----------------------------------------------------

    def install(self, snapshot: Snapshot) -> Changes:
        """Replace the table with ``snapshot`` if it is newer; report the difference."""
        if not self._admits(snapshot.term, snapshot.seq):
            return Changes()
        table = build_table(snapshot.entries, snapshot.members)
        return self._adopt(table, snapshot.term, snapshot.seq, snapshot.down)

    def receive(self, chunk: SnapshotChunk) -> Changes:
        """Take one chunk of a streamed snapshot (see :class:`SnapshotChunk`); the last
        one of a transfer installs the table built from them, as :meth:`install` does.

        A malformed chunk (``valid_chunk``, or columns that do not check) changes
        nothing; ``chunk_taken`` in the result says whether it was taken.
        """
        changes = Changes()
        if not valid_chunk(chunk) or not self._admits(chunk.term, chunk.seq):
            return changes
        assembly = self._assembly
        if assembly is not None and assembly.key > chunk.key:
            return changes  # of an older transfer than the one under way
        fresh = assembly is None or assembly.key < chunk.key
        if fresh:
            assembly = _Assembly(chunk.key, chunk.count, chunk.down)
        assert assembly is not None
        if (
            chunk.count != assembly.count
            or chunk.down != assembly.down
            or chunk.index in assembly.received
        ):
            return changes  # a duplicate (or a chunk that contradicts its transfer)
        table = assembly.table
        try:
            entries, members = unpack(chunk.body, table.canonical_address, table.shared_meta)
        except ValueError:
            return changes
        if fresh:
            self._assembly = assembly
        first = assembly.loaded == 0
        changes.staged = assembly.load(chunk.index, entries, members)
        changes.staged_from = assembly.key
        changes.staged_first = first and bool(assembly.loaded)
        changes.chunk_taken = True
        if len(assembly.received) < assembly.count:
            return changes
        self._assembly = None
        for member in assembly.members:
            table.join(
                member.group,
                member.address,
                member.node,
                member.meta,
                incarnation=member.incarnation,
            )
        term, seq, _ = assembly.key
        installed = self._adopt(table, term, seq, assembly.down)
        installed.chunk_taken = True
        installed.staged, installed.staged_from = changes.staged, changes.staged_from
        installed.staged_first = changes.staged_first
        return installed

    def empty_before(self, term: Term) -> bool:
        """Is the installed table empty and of another term than ``term`` (a joiner's,
        before its first table)? Then a snapshot of ``term`` replaces nothing, and no
        delta of ``term`` is applied or buffered until it is installed."""
        return term != self.term and not self.table.by_kind() and not self.table.explicit_members()

    @property
    def receiving(self) -> bool:
        """Is a streamed snapshot under way (some chunks taken, not all)?"""
        return self._assembly is not None

    def _admits(self, term: Term, seq: int) -> bool:
        """May a snapshot of ``term`` after ``seq`` be installed now? Only a newer one,
        and never one below the fence (we promised a newer sequencer to apply nothing
        older)."""
        newer = term > self.term or (term == self.term and seq > self.seq)
        return newer and term >= self.fence

    def _adopt(self, table: NameTable, term: Term, seq: int, down: Iterable[NodeId]) -> Changes:
        """Make ``table`` (the snapshot of ``term`` after ``seq``) the replica's."""
        changes = Changes()
        old = self.table
        self.table = table
        _difference(old, table, changes, why.CONFLICT if seq == 0 else why.PURGED)
        if term != self.term:
            self._known_seq = 0
            self._buffer.clear()
            self._buffered_ops = 0
        self.term, self.seq = term, seq
        self.down = set(down)
        if self._newer is not None and self._newer <= self.term:
            self._newer = None
        self._drop_spent_assembly()
        for first in [f for f, d in self._buffer.items() if d.last_seq <= self.seq]:
            self._buffered_ops -= len(self._buffer.pop(first).ops)
        self._drain(changes)
        return changes

    def _drop_spent_assembly(self) -> None:
        """A transfer that can no longer be installed (the replica moved past it, by an
        install or by deltas) is dropped with its table, not held until a newer one."""
        assembly = self._assembly
        if assembly is not None and not self._admits(assembly.key[0], assembly.key[1]):
            self._assembly = None

    def owned_state(self, collect: Collect) -> OwnedState:
        """Answer a takeover: what this node owns, and fence off older terms."""
        if collect.term <= self.term or collect.term < self.fence:
            return OwnedState(self.node, collect.term, False, self.seen)
        self.fence = collect.term
        assembly = self._assembly
        if assembly is not None and assembly.key[0] < self.fence:
            self._assembly = None  # below the fence now: it can never be installed
        node = self.node
        entries = tuple(e for e in self.table.names() if owned_by(e, node))
        members = tuple(m for m in self.table.explicit_members() if owned_by(m, node))
        down = frozenset(self.down)
        return OwnedState(self.node, collect.term, True, self.seen, entries, members, down)


# ---- the origin: this node's writes until they are applied here -------------------------


class Origin:
    """Tracks this node's writes from submission to acknowledgement (read your writes).

    The actor sends :meth:`write`'s result to the sequencer (of the term the replica
    is in), feeds every
    :class:`Decision` to :meth:`decided`, and after every apply/install answers the
    clients of :meth:`completed`. When the sequencer changes (the replica installs a new
    term) or on a retry timer it sends :meth:`unacknowledged` again.
    """

    def __init__(self, node: NodeId, first_op: int | None = None) -> None:
        """Args:
        node: this node's identity.
        first_op: the first op id; by default the clock in nanoseconds, so that a
            RegistryDist restarted within one node incarnation never reuses an op id
            of its previous life. The sequencer remembers decisions by (origin,
            op id): a reused id would get the old write's decision, and the new
            write would be acknowledged without ever being applied.
        """
        self.node = node
        self._next_op = time.time_ns() if first_op is None else first_op
        self._pending: dict[int, Request] = {}
        self._decisions: dict[int, Decision] = {}
        self._waiting: dict[Term, list[tuple[int, int]]] = {}  # term -> heap of (seq, op id)

    def write(self, request: Request, term: Term) -> Write:
        """A new write, addressed to the sequencer of ``term`` (the replica's term)."""
        write = Write(self.node, self._next_op, request, term)
        self._next_op += 1
        self._pending[write.op_id] = request
        return write

    def pending(self) -> int:
        return len(self._pending)

    def decided(self, decision: Decision) -> None:
        if decision.op_id not in self._pending:
            return  # already acknowledged, or a duplicate of an old decision
        known = self._decisions.get(decision.op_id)
        if known is not None and known.term >= decision.term:
            return
        self._decisions[decision.op_id] = decision
        heapq.heappush(self._waiting.setdefault(decision.term, []), (decision.seq, decision.op_id))

    def completed(self, replica: Replica) -> list[tuple[Write, Decision]]:
        """The writes whose decision the replica has now applied (answer their clients)."""
        done: list[tuple[Write, Decision]] = []
        term = replica.term
        for term in [t for t in self._waiting if t < replica.term]:
            del self._waiting[term]  # left behind: unacknowledged() sends them again
        heap = self._waiting.get(replica.term)
        while heap and heap[0][0] <= replica.seq:
            _, op_id = heapq.heappop(heap)
            decision = self._decisions.get(op_id)
            if decision is not None and decision.term == replica.term:
                del self._decisions[op_id]
                done.append((Write(self.node, op_id, self._pending.pop(op_id), term), decision))
        return done

    def unacknowledged(self, replica: Replica) -> list[Write]:
        """Writes to send (again) to the sequencer of ``replica``'s term, oldest first:
        no decision yet, or a decision of a term this replica has left unapplied."""
        return [
            Write(self.node, op_id, request, replica.term)
            for op_id, request in self._pending.items()
            if (d := self._decisions.get(op_id)) is None or d.term < replica.term
        ]

    def forget(self, op_id: int) -> Request | None:
        """Give up on a write (its client's deadline passed)."""
        self._decisions.pop(op_id, None)
        return self._pending.pop(op_id, None)
