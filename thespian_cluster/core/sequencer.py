"""The replicated global table, sequencer side: one order for every write, takeover, merge.

Rules
    * One :class:`Sequencer` per term decides every write (``core/replica.py`` has the
      wire types). It checks the request against its own table, which is always the
      table of version ``(epoch, seq)``: a claim of a free name or by its owner's node
      is granted, a claim of a name owned by anyone else (another node, or another
      incarnation of this one) is refused with the owner; a release or meta update needs
      the owner's node unless forced; a leave needs a membership. Each granted write that
      changes the table gets the next seq, is applied to the sequencer's table and is
      appended to the pending batch as an exact effect; :meth:`Sequencer.flush` turns the
      batch into one :class:`Delta` for every replica. Batching is what makes tens of
      thousands of writes a second possible over Thespian's ~1 ms messages.
    * The owner's node is the authority over an entry (it hosts the actor and sees it
      die); only it may release or change the entry without ``force``. That is also what
      makes a takeover lossless: the new table is built from what each node owns.
    * Writes from a purged incarnation are refused (``node_down``): a claim that arrives
      after its node's purge would otherwise leave an entry nobody ever purges. The set
      of purged incarnations travels in deltas (the purge), snapshots and owned states,
      so every later sequencer knows it too.
    * A sequencer whose side lost a partition (its host says ``claims_allowed=False``)
      refuses claims, joins and meta updates (``minority_partition``) and decides
      releases and purges as ever. Its origins refuse new claims at once; this covers
      the ones they sent before the cut and send again to this side's sequencer, which
      would otherwise grant them here and lose them at the heal's merge.
    * Only writes addressed to this term are decided (see ``core/replica.py``: a copy
      from an older term could otherwise be applied twice).
    * Recent decisions are remembered by ``(origin, op_id)``: a write sent again (a lost
      decision, a retry timer) gets the same decision, never a second effect.
    * :class:`Takeover`: when the sequencer died, or an older node should sequence, the
      new one picks ``epoch = newest epoch it has seen + 1``, sends :class:`Collect` to
      every live node (itself included), and each node fences itself and answers what
      it owns (:meth:`Replica.owned_state`). A node that already knows a term as new
      refuses, and the takeover starts again above it. When every live node answered (a
      node that goes down meanwhile is dropped: its entries die with it),
      :meth:`Takeover.finish` merges the states into the new sequencer's table and
      returns the snapshot to broadcast and the conflicts to report. Only then are writes
      accepted.
    * :func:`merge` is deterministic (states sorted by node; the resolver folded over
      claimants in node order) and unions group memberships. When two owners claim one
      name, the ``resolver`` picks the winner and each loser is reported once, as a
      :class:`MergeConflict`, for the actor to send ``NameConflict``. The default rule:
      the split-brain winner side if exactly one claimant is on it; else the **newer
      version**; else the smaller node id. Why newer rather than the older registration:
      in a connected cluster two owned states can name two owners only when one of them
      is stale (node A has not yet applied its own release at v11 when B's claim at v12
      was granted and acknowledged); the newer version is then provably the current
      owner, and preferring the older registration would drop B's acknowledged claim.
      The partition heal (issue 12) can pass a resolver preferring the older
      ``registered_at`` across sides.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from thespian_cluster.core.addresses import AddressKey, address_key
from thespian_cluster.core.replica import (
    ALREADY_REGISTERED,
    CHUNK_RECORDS,
    MINORITY,
    NO_TERM,
    NODE_DOWN,
    NOT_MEMBER,
    NOT_OWNER,
    NOT_REGISTERED,
    OK,
    Changes,
    Claim,
    Collect,
    Decision,
    Delta,
    DropMember,
    DropName,
    Effect,
    JoinGroup,
    LeaveGroup,
    NodeId,
    OwnedState,
    PurgeNode,
    PutMember,
    PutName,
    Release,
    Replica,
    SetMeta,
    Snapshot,
    SnapshotChunk,
    SnapshotRequest,
    Term,
    Write,
    apply_effect,
    build_table,
    iter_chunks,
    owned_by,
    owner_id,
    snapshot_chunks,
)
from thespian_cluster.core.table import Entry, Member, NameKey

Resolver = Callable[[Entry, Entry], Entry]


@dataclass(frozen=True, slots=True)
class MergeConflict:
    """``loser`` claimed the name that ``winner`` keeps; tell the loser's actor once."""

    kind: str
    name: object
    loser: Entry
    winner: Entry


#: Effects the sequencer keeps for replicas that missed a few (:meth:`Sequencer.catch_up`).
LOG_OPS = 10_000

#: The writes a losing side's sequencer refuses: claims, meta updates and joins.
CLAIM_WRITES = (Claim, SetMeta, JoinGroup)


class Sequencer:
    """Decides and orders every write of one term; see the module docstring."""

    def __init__(
        self,
        term: Term,
        entries: Iterable[Entry] = (),
        members: Iterable[Member] = (),
        *,
        down: Iterable[NodeId] = (),
        clock: Callable[[], float] = time.time,
        remember: int = 100_000,
        log_ops: int = LOG_OPS,
    ) -> None:
        self.term = term
        self.down: set[NodeId] = set(down)
        self.seq = 0
        self.table = build_table(entries, members)
        self._clock = clock
        self._remember = remember
        self._recent: dict[tuple[NodeId, int], Decision] = {}
        self._batch: list[Effect] = []
        # Effects are applied to the sequencer's own table too; it needs no report.
        self._scratch = Changes()
        self._transfers = 0  # snapshot transfers numbered: a replica keeps the newest
        # The last effects of this term (seqs seq - len + 1 .. seq): a replica that
        # missed only those catches up from them, not from the whole table.
        self._log: deque[Effect] = deque(maxlen=log_ops)
        self.chunk_records = CHUNK_RECORDS

    @property
    def node(self) -> NodeId:
        return self.term.sequencer

    def decide(self, write: Write, claims_allowed: bool = True) -> Decision | None:
        """Decide one write; a granted change is applied and batched for :meth:`flush`.

        None: the write is addressed to another term; drop it (its origin sends it again
        once its replica is in this term). Without ``claims_allowed`` (this side lost a
        partition) claims, joins and meta updates are refused (:data:`MINORITY`);
        releases and purges are decided as ever.
        """
        if write.term != self.term:
            return None
        key = (write.origin, write.op_id)
        known = self._recent.get(key)
        if known is not None:
            return known
        outcome, owner, effect = self._judge(write)
        if (
            not claims_allowed
            and outcome == OK
            and isinstance(write.request, CLAIM_WRITES)
            and not self._holds_already(write.request)
        ):
            # Refusals are answered as they are, and a claim the table already grants
            # (its decision lost, sent again) truthfully: only a change is refused.
            return Decision(write.op_id, self.term, self.seq, MINORITY, None)  # not kept
        if effect is not None:
            version = (self.term.epoch, self.seq + 1)
            # A purge always goes out, changed or not: replicas learn the node is down.
            changed = apply_effect(self.table, effect, version, self._scratch)
            if isinstance(effect, PurgeNode) and effect.node not in self.down:
                self.down.add(effect.node)
                changed = True
            if changed:
                self.seq += 1
                self._batch.append(effect)
                self._log.append(effect)
            elif isinstance(effect, DropMember):
                outcome = NOT_MEMBER
            self._scratch = Changes()
        decision = Decision(write.op_id, self.term, self.seq, outcome, owner)
        self._recent[key] = decision
        if len(self._recent) > self._remember:
            del self._recent[next(iter(self._recent))]  # dicts keep insertion order
        return decision

    def _holds_already(self, request: Claim | SetMeta | JoinGroup) -> bool:
        """The table has this claim's owner already (granting it again changes nothing)."""
        if not isinstance(request, Claim):
            return False
        owner = self.table.whereis(request.name, request.kind)
        return owner is not None and address_key(owner.address) == address_key(request.address)

    def _judge(self, write: Write) -> tuple[str, Entry | None, Effect | None]:
        request, origin = write.request, write.origin
        if origin in self.down:
            return NODE_DOWN, None, None
        if isinstance(request, Claim):
            owner = self.table.whereis(request.name, request.kind)
            if owner is not None and (
                not owned_by(owner, origin)
                or address_key(owner.address) != address_key(request.address)
            ):
                return ALREADY_REGISTERED, owner, None
            stamp = owner.registered_at if owner is not None else self._clock()
            put = PutName(request.kind, request.name, request.address, origin, request.meta, stamp)
            return OK, None, put
        if isinstance(request, Release | SetMeta):
            owner = self.table.whereis(request.name, request.kind)
            if owner is None:
                return NOT_REGISTERED, None, None
            if not request.force and not owned_by(owner, origin):
                return NOT_OWNER, owner, None
            if isinstance(request, Release):
                return OK, None, DropName(request.kind, request.name)
            return (
                OK,
                None,
                PutName(
                    owner.kind,
                    owner.name,
                    owner.address,
                    owner_id(owner),
                    request.meta,
                    owner.registered_at,
                ),
            )
        if isinstance(request, JoinGroup):
            return OK, None, PutMember(request.group, request.address, origin, request.meta)
        if isinstance(request, LeaveGroup):
            return OK, None, DropMember(request.group, request.address)
        return OK, None, request  # PurgeAddress, PurgeNode: effects as they are

    def flush(self) -> Delta | None:
        """The batch since the last flush as one delta, or None if nothing happened."""
        if not self._batch:
            return None
        ops = tuple(self._batch)
        self._batch = []
        return Delta(self.term, self.seq - len(ops) + 1, ops)

    def heartbeat(self) -> Delta:
        """The pending batch, or an empty delta: lets replicas see holes at the tail."""
        return self.flush() or Delta(self.term, self.seq + 1, ())

    def snapshot(self) -> Snapshot:
        """The whole table now (pending batch included: its delta is then a duplicate)."""
        return Snapshot(
            self.term,
            self.seq,
            tuple(self.table.names()),
            tuple(self.table.explicit_members()),
            frozenset(self.down),
        )

    def catch_up(self, request: SnapshotRequest) -> Delta | None:
        """The delta that brings a replica of this term from ``request.seq`` to now, if
        the log still holds every effect it lacks (None: send the table instead).

        Exact for the same reason deltas are: the replica holds the table of
        ``(term, request.seq)``, and applying ``request.seq + 1 .. seq`` gives the
        sequencer's (a replica that has moved on since ignores what it applied).
        """
        if request.term != self.term or request.seq >= self.seq or request.seq < 0:
            return None
        first = self.seq - len(self._log) + 1  # the oldest seq the log holds
        if request.seq + 1 < first:
            return None
        ops = tuple(itertools.islice(self._log, request.seq + 1 - first, None))
        return Delta(self.term, request.seq + 1, ops)

    def serve(self, request: SnapshotRequest) -> Snapshot | None:
        """Answer a replica's request, unless it already has everything."""
        if request.term == self.term and request.seq >= self.seq:
            return None
        return self.snapshot()

    def stream(self, snapshot: Snapshot | None = None) -> list[SnapshotChunk]:
        """``snapshot`` (by default the table now) as the chunks of a new transfer:
        what goes on the wire instead of one message holding the whole table."""
        self._transfers += 1
        return snapshot_chunks(snapshot or self.snapshot(), self._transfers, self.chunk_records)

    def stream_lazily(self, snapshot: Snapshot | None = None) -> Iterator[SnapshotChunk]:
        """:meth:`stream`, each chunk packed when it is asked for (the snapshot is taken
        now: later writes are not in it)."""
        self._transfers += 1
        return iter_chunks(snapshot or self.snapshot(), self._transfers, self.chunk_records)

    def serve_chunks(self, request: SnapshotRequest) -> list[SnapshotChunk]:
        """:meth:`serve`, streamed: no chunks when the replica has everything."""
        snapshot = self.serve(request)
        return [] if snapshot is None else self.stream(snapshot)


@dataclass
class _Stream:
    to: dict[NodeId, Any]  # recipient -> its address
    chunks: Iterator[SnapshotChunk]
    term: Term


class Streams:
    """The snapshot transfers a sequencer has under way, sent one chunk at a time.

    The host sends one chunk (to every recipient of its transfer), then asks itself
    for the next: Thespian transmits between messages, so a chunk is on the wire, and
    its receiver building from it, while the next one is packed. Transfers take turns.
    A new transfer to a node replaces whatever older one it was getting (the node keeps
    only the newest transfer), and a transfer of a term the host no longer sequences is
    dropped (its receivers would drop it too).
    """

    def __init__(self) -> None:
        self._streams: deque[_Stream] = deque()

    def start(self, to: Mapping[NodeId, Any], chunks: Iterable[SnapshotChunk], term: Term) -> None:
        for stream in self._streams:
            for node in to:
                stream.to.pop(node, None)
        self._streams = deque(s for s in self._streams if s.to)
        if to and term != NO_TERM:
            self._streams.append(_Stream(dict(to), iter(chunks), term))

    def forget(self, nodes: Iterable[NodeId]) -> None:
        """Stop sending to ``nodes`` (they left the view)."""
        self.start({node: None for node in nodes}, (), NO_TERM)

    def next(self, term: Term | None) -> tuple[list[Any], SnapshotChunk] | None:
        """The next chunk to send and the addresses to send it to, or None: done.
        ``term``: the term the host sequences now (None: none)."""
        while self._streams:
            stream = self._streams.popleft()
            if stream.term != term:
                continue
            chunk = next(stream.chunks, None)
            if chunk is None:
                continue
            self._streams.append(stream)
            return list(stream.to.values()), chunk
        return None

    def __bool__(self) -> bool:
        return bool(self._streams)


# ---- takeover and merge ------------------------------------------------------------------


def default_resolver(winners: Collection[str] = ()) -> Resolver:
    """Winner side (node names) first, then the newer version, then the smaller node id."""

    def resolve(a: Entry, b: Entry) -> Entry:
        a_wins, b_wins = a.node in winners, b.node in winners
        if a_wins != b_wins:
            return a if a_wins else b
        if a.version != b.version:
            return a if a.version > b.version else b
        return a if (a.node, a.incarnation) <= (b.node, b.incarnation) else b

    return resolve


#: A user's merge rule (``[backend] merge_resolver``): which of two claims of one name
#: keeps it when the sides of a partition merge. ``winners`` are the nodes of the side
#: that won the split-brain verdict (empty when no partition is known).
MergeResolver = Callable[[Entry, Entry, frozenset[str]], Entry]


def custom_resolver(
    resolve: MergeResolver,
    winners: Collection[str] = (),
    on_error: Callable[[str], None] = lambda why: None,
) -> Resolver:
    """``resolve`` as the merge's rule. Where it raises or returns neither claim, the
    default rule decides that name and ``on_error`` hears why: a user's bug costs that
    name its custom rule, never the merge."""
    chosen = frozenset(winners)
    fallback = default_resolver(chosen)

    def rule(a: Entry, b: Entry) -> Entry:
        try:
            kept = resolve(a, b, chosen)
        except Exception as exc:
            on_error(f"merge resolver raised {type(exc).__name__}: {exc} (for {a.name!r})")
            return fallback(a, b)
        if kept in (a, b):  # the same claim, or an equal copy of it
            return a if kept == a else b
        on_error(f"merge resolver returned neither claim of {a.name!r}: {kept!r}"[:300])
        return fallback(a, b)

    return rule


@dataclass(frozen=True, slots=True)
class Merged:
    entries: tuple[Entry, ...]
    members: tuple[Member, ...]
    conflicts: tuple[MergeConflict, ...]
    down: frozenset[NodeId] = frozenset()


def merge(states: Iterable[OwnedState], resolver: Resolver | None = None) -> Merged:
    """One table from the nodes' owned states; see the module docstring."""
    resolve = resolver or default_resolver()
    ordered = sorted(states, key=lambda s: s.node)
    claims: dict[NameKey, list[Entry]] = {}
    members: dict[tuple[str, AddressKey], Member] = {}
    down: set[NodeId] = set()
    for state in ordered:
        down.update(state.down)
        for entry in state.entries:
            claims.setdefault(entry.key, []).append(entry)
        for member in state.members:
            members.setdefault((member.group, address_key(member.address)), member)
    entries: list[Entry] = []
    conflicts: list[MergeConflict] = []
    for candidates in claims.values():
        winner = candidates[0]
        for other in candidates[1:]:
            winner = resolve(winner, other)
        entries.append(winner)
        conflicts.extend(
            MergeConflict(e.kind, e.name, e, winner) for e in candidates if e is not winner
        )
    return Merged(tuple(entries), tuple(members.values()), tuple(conflicts), frozenset(down))


class Takeover:
    """Becoming the sequencer: collect owned states, merge, then sequence.

    ``nodes`` are the live nodes (this one included); ``seen_epoch`` the newest epoch
    this node knows (``replica.seen.epoch``); ``life`` this start of the node's
    RegistryDist (:class:`Term`). If :attr:`retry_epoch` becomes set, a node knows a
    newer term: start a new ``Takeover(me, nodes, retry_epoch, life)``.
    """

    def __init__(self, me: NodeId, nodes: Iterable[NodeId], seen_epoch: int, life: int = 0) -> None:
        self.term = Term(seen_epoch + 1, me, life)
        self._waiting: set[NodeId] = {*nodes, me}
        self._states: dict[NodeId, OwnedState] = {}
        self._dropped: set[NodeId] = set()
        self.retry_epoch: int | None = None

    def collect(self) -> Collect:
        return Collect(self.term)

    def waiting(self) -> set[NodeId]:
        return set(self._waiting)

    def add(self, state: OwnedState) -> None:
        if state.term != self.term or state.node not in self._waiting:
            return
        if not state.accepted:
            self.retry_epoch = max(self.retry_epoch or 0, state.seen.epoch)
            return
        self._states[state.node] = state
        self._waiting.discard(state.node)

    def node_down(self, node: NodeId) -> None:
        """Stop waiting for ``node``; what it owned is not carried into the new table."""
        self._waiting.discard(node)
        self._states.pop(node, None)
        self._dropped.add(node)

    @property
    def complete(self) -> bool:
        return not self._waiting and self.retry_epoch is None

    def finish(
        self,
        resolver: Resolver | None = None,
        *,
        clock: Callable[[], float] = time.time,
        remember: int = 100_000,
        log_ops: int = LOG_OPS,
    ) -> tuple[Sequencer, Snapshot, tuple[MergeConflict, ...]]:
        """The new sequencer, the snapshot to broadcast (to every node, this one too),
        and the conflicts to report to their losers."""
        if not self.complete:
            raise RuntimeError(f"takeover {self.term} is still waiting for {self._waiting}")
        merged = merge(self._states.values(), resolver)
        sequencer = Sequencer(
            self.term,
            merged.entries,
            merged.members,
            down=merged.down | self._dropped,
            clock=clock,
            remember=remember,
            log_ops=log_ops,
        )
        return sequencer, sequencer.snapshot(), merged.conflicts


def joins_without_merge(sequencer: Sequencer, state: OwnedState) -> bool:
    """May a node that arrived catch up by a snapshot alone, with no takeover?

    A node joining the view is asked :class:`Collect` at the sequencer's *current* term
    (not a new one): its answer fences it there, so nothing it sequenced on its own can
    be acknowledged after it answered. If it owns nothing, knows of no purge and no newer
    term, and is no incarnation this sequencer purged, a takeover would merge nothing
    into the table: the sequencer sends it the snapshot and keeps its term. Collecting
    from every node, merging and sending the whole table to all of them cost a node
    joining a 100,000-name cluster ~10 s; a node that owns something (one that was cut
    off, the other side of a partition) still gets the takeover and its merge.

    A node that refuses the collection because it already holds this very term (the
    view dropped and re-added it before any purge) has nothing to merge either:
    whatever it owns was decided here. A purged incarnation needs the takeover in both
    cases, to be taken off ``down``, and so does a node that has seen a newer term than
    ours: it could install that term's snapshot after ours and lose what it was
    acknowledged under ours, unless a takeover leads above it.
    """
    if state.term != sequencer.term or state.seen != sequencer.term or state.node in sequencer.down:
        return False
    return not state.accepted or not (state.entries or state.members or state.down)


def must_take_over(
    sequencer: Sequencer | None, replica: Replica, *, nodes_arrived: bool = False
) -> bool:
    """Should the leader (this node) start a takeover now?

    Yes when it sequences nothing; when nodes arrived (a takeover merges what they own:
    a node that was cut off, the other side of a partition); and when its own replica
    knows a newer term than the one it sequences. The last one happens: a would-be
    sequencer's snapshot can still be on its way to this node while this node collects
    (the other one died meanwhile, so nobody refuses the collection); this node then
    installs that newer, dead term after its own, ignores its own deltas as older, and
    no write is ever acknowledged again until it leads above that term.

    Args:
        sequencer: the sequencer this node runs, if any.
        replica: this node's replica.
        nodes_arrived: nodes joined the view since the last decision.

    Returns:
        True: start a takeover above ``replica.seen``.
    """
    return nodes_arrived or sequencer is None or sequencer.term < replica.seen
