"""``SequencedBackend``: the built-in global scope (``registry_backend = "global"``).

Every node keeps a replica of the cluster-wide table; the oldest live node sequences
every write. The rules live in :mod:`thespian_cluster.core.replica` and
:mod:`thespian_cluster.core.sequencer` (docs/global-protocol.md is the map); this
backend moves their messages through its :class:`~.scope.ScopeHost` (the node's
RegistryDist actor), like any :class:`~.scope.GlobalBackend`:

* **client writes** become writes of this node's
  :class:`~thespian_cluster.core.replica.Origin`, sent to the sequencer; the client's
  :class:`~.scope.Deferred` is resolved once this node's replica has applied the
  decision (read your writes). When the host's deadline answers ``timeout`` first, the
  writes are forgotten here (no more re-sends).
* **the sequencer** is the leader the node monitor's view names (the oldest live node).
  When that is this node and it does not sequence the newest term, it takes over:
  collects what every live node owns, merges, broadcasts the snapshot, and only then
  decides. It decides every write it receives, flushes the batch as one delta to every
  node after each message, and sends an empty delta every :data:`HEARTBEAT` so
  replicas see holes and new terms.
* **deaths**: a node that leaves the view is purged by the sequencer (``PurgeNode``);
  an actor of this node that dies (:meth:`~SequencedBackend.owner_died`, and this
  backend's own port probes of its node's owners) is purged with ``PurgeAddress``.
* **partitions**: the losing side refuses claims (``minority_partition``); a heal is a
  takeover whose merge keeps the names of the side that won, or whichever claim the
  user's ``[backend] merge_resolver = "package.module:function"`` keeps
  (:data:`~thespian_cluster.core.sequencer.MergeResolver`; OTP's ``global`` resolve
  function, syn's ``resolve_registry_conflict``).
* **restarts**: a restarted host reloads the entries its node owns from the node
  table's global mirror (they are authoritative: the node hosts those actors), and gets
  everything else from the sequencer's snapshot.

It keeps the node table's global mirror equal to its replica after every apply, so
reads (``Whereis``, listings, ``lookup(scope="global")``) cost no message.
"""

from __future__ import annotations

import importlib
import inspect
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict, field_validator

from thespian_cluster.backends.batches import Gathered, write_items
from thespian_cluster.backends.scope import Deferred, GlobalBackend, ScopeHost
from thespian_cluster.cluster_messages import ClusterView
from thespian_cluster.core import replica as core
from thespian_cluster.core.records import WireMessage
from thespian_cluster.core.replica import (
    Changes,
    Collect,
    Decision,
    Delta,
    EarlyMirror,
    MirrorUpdate,
    NodeId,
    Origin,
    OwnedState,
    Replica,
    Snapshot,
    SnapshotChunk,
    SnapshotRequest,
    Term,
    Write,
)
from thespian_cluster.core.sequencer import (
    CLAIM_WRITES,
    MergeConflict,
    MergeResolver,
    Resolver,
    Sequencer,
    Streams,
    Takeover,
    custom_resolver,
    default_resolver,
    joins_without_merge,
    must_take_over,
)
from thespian_cluster.core.snapshot_pacer import SnapshotPacer
from thespian_cluster.global_messages import (
    Decisions,
    GlobalStatus,
    NameConflict,
    NewerTerm,
    Writes,
)
from thespian_cluster.messages import (
    AlreadyRegistered,
    ErrorCode,
    JoinedGroup,
    JoinGroup,
    LeaveGroup,
    LeftGroup,
    MetaUpdated,
    Register,
    Registered,
    RegisterMany,
    RegistryError,
    Reply,
    Request,
    Unregister,
    Unregistered,
    UpdateMeta,
)
from thespian_cluster.node_table import GlobalMirror
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.validation import revalidate

#: Requests refused on the losing side of a partition (releases and leaves still work).
CLAIMS = (Register, RegisterMany, JoinGroup, UpdateMeta)
HEARTBEAT = 0.5  # seconds between the sequencer's empty deltas when idle
TICK = 0.1  # seconds between timer rounds (retries, probes, gaps)
TAKEOVER_RETRY = 3.0  # seconds a takeover may wait for owned states before it asks again
RETRY = 0.5  # seconds between re-sends of writes that have no decision yet
#: Seconds claims wait for the split-brain verdict after nodes left the view, at most.
VERDICT_WAIT = 3.0  # above the detector's own wait for NodeMonitor's view (2 s)
GAP_WAIT = 0.05  # seconds a hole may stay open before a snapshot is asked for
# Seconds a snapshot request (or a Collect answer) has before it is repeated, until a
# round trip is measured: a lost one is rare (a peer restarting), a slow one is not
# (100,000 names take seconds), and each repeat is answered with the whole table.
SNAPSHOT_WAIT = 2.0
PUMP_WAIT = 1.0  # seconds without our own NextChunk before a transfer's next chunk goes anyway


@dataclass(frozen=True, slots=True)
class NextChunk(WireMessage):
    """To itself: send the next chunk of the snapshot transfers under way."""


class SequencedConfig(BaseModel):
    """``[backend]`` of ``registry_backend = "global"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    merge_resolver: str | None = None  # "package.module:function", see MergeResolver

    @field_validator("merge_resolver")
    @classmethod
    def _importable(cls, path: str | None) -> str | None:
        if path is not None:
            load_resolver(path)  # at node start: a typo is a one-line error, not a heal bug
        return path


def load_resolver(path: str) -> MergeResolver:
    """The function ``package.module:function`` names; ValueError says why not."""
    module_name, sep, name = path.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"{path!r} is not 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, and whatever the module raises as it loads
        raise ValueError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    resolve = getattr(module, name, None)
    if not callable(resolve):
        raise ValueError(f"{module_name} has no function {name}")
    try:
        inspect.signature(resolve).bind(None, None, frozenset())
    except TypeError:
        raise ValueError(f"{path} must take (a, b, winners): see MergeResolver") from None
    except ValueError:
        pass  # no signature to read (a builtin): its first call will tell
    return resolve


class SequencedBackend(GlobalBackend):
    """See the module docstring."""

    tick_interval = TICK
    config_model = SequencedConfig
    catches_up = True  # a restarted node's mirror holds its own names until a snapshot

    def __init__(self, host: ScopeHost, config: BaseModel) -> None:
        super().__init__(host, config)
        self.settings = host.settings
        self.me = host.node
        assert isinstance(config, SequencedConfig)
        path = config.merge_resolver
        self._merge_resolver = load_resolver(path) if path is not None else None
        self.replica = Replica(self.me)
        # A random start: op ids of this actor's earlier lives (same node incarnation)
        # are still in the sequencer's memory of recent decisions.
        self.origin = Origin(self.me, first_op=secrets.randbits(62))
        # The terms this actor leads are its own (Term.life). The system-wide monotonic
        # clock: a later life on this host is always greater, even if the wall clock
        # steps back (an older life's term comparing greater would pass the fence).
        self.life = time.monotonic_ns()
        self.sequencer: Sequencer | None = None
        self.takeover: Takeover | None = None
        self.peers: dict[NodeId, Any] = {}  # live nodes (this one too) -> their RegistryDist
        self.quiet: set[str] = set()  # suspect nodes: no deltas until they answer again
        self.outcomes: Counter[str] = Counter()  # answered writes, for GetGlobalStatus
        self.leader = ""
        self.pending: dict[int, tuple[Gathered, int]] = {}  # op id -> (its request, item)
        self._probe_cursor = 0
        self._next_probe = 0.0
        self._next_retry = 0.0
        self._next_heartbeat = 0.0
        self._catch_up = SnapshotPacer(gap_wait=GAP_WAIT, first_wait=SNAPSHOT_WAIT)
        self._early = EarlyMirror()  # a joiner's mirror, filled as its table streams in
        self._streams = Streams()  # snapshot transfers this sequencer has under way
        self._pumping = False  # a NextChunk is on its way to us
        self._pumped_at = 0.0
        self._caught_up = False  # told the host the mirror holds a real term's table
        self._takeover_since = 0.0
        self._joining: dict[NodeId, float] = {}  # arrived, asked Collect at our term: since
        self.writable = True  # False while SplitBrainDetector says this side must not write
        # Nodes left the view at this moment and no verdict has come since: claims wait
        # in _held (see _on_writes) until one does, or VERDICT_WAIT has passed.
        self._verdict_asked: float | None = None
        self._held: list[Write] = []
        self._seen_peers: set[str] = set()  # every node this one has had in its view
        self._lost_real_partition = False  # the partition record is a loss of a real partition
        # The partition being healed, as this node saw it (until a merge used it):
        self.partition: tuple[bool, frozenset[str]] | None = None  # (winner?, unreachable)

    # ---- the contract ----------------------------------------------------------------

    def start(self, restarted: bool) -> None:
        entries, members = self.host.mirror.owned_by(self.me.name, self.me.incarnation)
        if entries or members:
            # What this node owns survives our restart: seed the replica with it at a
            # term older than any real one, so a takeover collects it and any real
            # snapshot replaces it.
            self._replica.install(Snapshot(Term(0, self.me), 1, tuple(entries), tuple(members)))
            logger.info("registry dist restarted with {} own global names", len(entries))
        self.host.mirror.replace(self._replica.names(), self._all_members())

    def receive(self, message: Any, sender: Any) -> bool:
        if isinstance(message, Delta | Snapshot | SnapshotChunk) and self._rival(message.term):
            return True
        if isinstance(message, Delta):
            self._on_delta(message)
            if message.term < self._replica.seen and message.term.sequencer != self.me:
                self.host.send(sender, NewerTerm(term=self._replica.seen))
        elif isinstance(message, NewerTerm):
            self._on_newer_term(message)
        elif isinstance(message, Decisions):
            delta = message.delta
            if isinstance(delta, Delta) and not self._rival(delta.term):
                self._on_delta(delta)  # first: the decisions wait for it
            self._on_decisions(message.decisions)
        elif isinstance(message, Writes):
            self._on_writes(message.writes, sender)
        elif isinstance(message, SnapshotChunk):
            self._on_chunk(message)
        elif isinstance(message, NextChunk):
            if sender == self.host.address:
                self._pump()
        elif isinstance(message, Snapshot):
            self._install(message)
        elif isinstance(message, SnapshotRequest):
            self._serve_snapshot(message, sender)
        elif isinstance(message, Collect):
            state = self._replica.owned_state(message)
            self.host.send(sender, state)
            if state.accepted:  # a snapshot of that term comes: asking for one would double it
                self._catch_up.asked(time.monotonic())
        elif isinstance(message, OwnedState):
            self._on_owned_state(message)
        else:
            return False
        return True

    def _rival(self, term: Term) -> bool:
        """A term newer than any this replica was told of (no Collect fenced it there),
        sequenced by a node that does not lead this view: a losing side's sequencer
        still sequencing its own term after a heal, until the leader's merge fences it.
        Followed, it replaced this replica's table with the losing side's, and with it
        the claims this side had granted meanwhile, before the merge could keep them
        (the singleton partition test: the majority's new holder lost its lock).
        Ignored: the leader's merge collects from both sides and decides."""
        sequencer = term.sequencer
        return (
            term > self._replica.seen
            and sequencer != self.me
            and bool(self.leader)
            and sequencer.name != self.leader
        )

    def owner_died(self, address: Any, reason: str) -> None:
        self._on_death(address)

    def view_changed(self, view: ClusterView) -> None:
        self._on_view(view)

    def writability_changed(self, writable: bool, reason: str) -> None:
        self._set_writable(writable, reason)
        self._verdict_asked = None
        self._release_held()

    def partitioned(self, winner: bool, unreachable: frozenset[str]) -> None:
        self._cut_off(winner, unreachable)

    def healed(self, nodes: frozenset[str], resolver: Resolver) -> None:
        # The merge is the takeover that the view change starts, and this backend keeps
        # its own rule for it (_resolver): the union of every node one partition cut off
        # decides the winner side, until all of them are back, however the heal goes.
        pass

    def stop(self) -> None:
        self.pending.clear()  # the host answers every open deferred "unavailable"

    def status(self, request_id: str) -> GlobalStatus:
        replica = self._replica
        return GlobalStatus(
            request_id=request_id,
            node=self.me.name,
            sequencer=replica.term.sequencer.name,
            epoch=replica.term.epoch,
            seq=replica.seq,
            sequencing=self.sequencer is not None,
            names=len(replica.table.names()),
            groups=len(replica.table.groups()),
            pending=self._origin.pending(),
            outcomes=dict(self.outcomes),
        )

    # ---- partitions ----------------------------------------------------------------------

    def _cut_off(self, winner: bool, unreachable: frozenset[str]) -> None:
        """Remember every node this side lost touch with in one partition, until a merge
        has them all back: a partition that grows (n5 cut, then n4 too) or heals a node
        at a time must still be merged by one rule, or the heal takes a node cut off
        for the winner side and may hand it a contested name."""
        seen = self.partition
        if not winner and unreachable & self._seen_peers:
            self._lost_real_partition = True  # lost with nodes it had seen: a real partition
        if seen is not None and seen[0] == winner:
            self.partition = (winner, seen[1] | unreachable)
        elif seen is not None and not seen[0] and self._lost_real_partition:
            # This side lost a real partition (touch with nodes it had seen). A heal
            # that reaches some nodes first can make it a majority for a moment ("a, c
            # win; b unreachable" on a node that was alone): that moment must not give
            # its names the merge over the side that did win. Lost stays lost. (Waiting
            # for expected nodes never seen is no lost partition: that record yields.)
            self.partition = (False, seen[1] | unreachable)
        else:
            self._lost_real_partition = not winner and bool(unreachable & self._seen_peers)
            self.partition = (winner, unreachable)

    def _forget_partition_if_back(self) -> None:
        if self.partition is not None and self.partition[1] <= {n.name for n in self.peers}:
            self.partition = None
            self._lost_real_partition = False

    def _set_writable(self, writable: bool, reason: str) -> None:
        if writable != self.writable:
            self.writable = writable
            logger.warning(
                "registry dist {} global writes: {}", "accepts" if writable else "refuses", reason
            )

    def _resolver(self) -> Resolver | None:
        """The merge rule after a partition: the names of the side that won keep their
        owner, or the user's ``merge_resolver`` decides (decided here, once, by the
        sequencer, and broadcast in its snapshot)."""
        if self.partition is None:
            # A takeover with no partition behind it (the sequencer died): two claims
            # of a name then mean one is stale, and the newer version is the owner.
            return None
        won, unreachable = self.partition
        everyone = {n.name for n in self.peers}
        winners = everyone - unreachable if won else set(unreachable)
        if self._merge_resolver is not None:
            return custom_resolver(self._merge_resolver, winners, _resolver_failed)
        return default_resolver(winners)

    # ---- the cluster view: peers, leader, takeovers, purges ----------------------------

    def _on_view(self, view: ClusterView) -> None:
        if not view.joined:
            return  # a member that has not reached its cluster yet decides nothing
        peers: dict[NodeId, Any] = {}
        for record in view.records:
            node = NodeId(record.name, record.incarnation)
            address = self.host.address if node == self.me else record.agents.get("registry_dist")
            if address is not None:
                peers[node] = address
        gone = [node for node in self.peers if node not in peers]
        arrived = [node for node in peers if node not in self.peers and node != self.me]
        if gone:
            # This side shrank: until the detector says whether it still may write,
            # grant no claims (this node may now lead a side that lost a partition).
            self._verdict_asked = time.monotonic()
            self.host.fetch_verdict()
        self.peers = peers
        self._seen_peers |= {n.name for n in peers if n != self.me}
        self.leader = view.leader
        if self.leader != self.me.name:
            # Everyone cut off back, another node leads the heal's merge: this record
            # is spent (a later partition starts its own).
            self._forget_partition_if_back()
        self.quiet = set(view.suspect)
        self._streams.forget(gone)
        for node in gone:
            self._joining.pop(node, None)
            if self.takeover is not None:
                self.takeover.node_down(node)
            if self.sequencer is not None:
                self._submit_internal(core.PurgeNode(node))
        if arrived and self._sequencing_steadily():
            self._ask_arrivals(arrived)
        else:
            self._lead_if_due(new_nodes=bool(arrived))
        if self.takeover is not None:
            self._maybe_finish_takeover()

    def _lead_if_due(self, new_nodes: bool = False) -> None:
        """Take over when the view names this node leader and it does not sequence the
        newest term — or when nodes arrived: a takeover merges what they own (a node
        that was cut off, another side of a partition) and brings them up to date."""
        if self.leader != self.me.name:
            if self.sequencer is not None or self.takeover is not None:
                logger.info("registry dist stops sequencing: {} leads now", self.leader)
                self.sequencer = None
                self.takeover = None
                self._joining.clear()
            return
        if self.takeover is not None and not new_nodes:
            return
        if not must_take_over(self.sequencer, self._replica, nodes_arrived=new_nodes):
            return
        newest = max(self._replica.seen, self.takeover.term if self.takeover else core.NO_TERM)
        self._start_takeover(newest.epoch)

    def _sequencing_steadily(self) -> bool:
        """Leading our own, newest term with no takeover under way."""
        return (
            self.leader == self.me.name
            and self.takeover is None
            and self.sequencer is not None
            and not must_take_over(self.sequencer, self._replica)
        )

    def _ask_arrivals(self, arrived: Iterable[NodeId]) -> None:
        """Collect from the nodes that arrived at our own term (``joins_without_merge``):
        those that own nothing get the snapshot; any other answer starts a takeover."""
        assert self.sequencer is not None
        collect = Collect(self.sequencer.term)
        now = time.monotonic()
        for node in arrived:
            self._joining[node] = now
            self.host.send(self.peers[node], collect)

    def _on_arrival_state(self, state: OwnedState) -> None:
        sequencer = self.sequencer
        if not (
            isinstance(state.node, NodeId)
            and isinstance(state.term, Term)
            and isinstance(state.seen, Term)
            and isinstance(state.entries, tuple)
            and isinstance(state.members, tuple)
            and isinstance(state.down, frozenset)
        ):
            return  # a peer running other code: decide nothing on fields we cannot read
        if sequencer is None or self._joining.pop(state.node, None) is None:
            return
        if joins_without_merge(sequencer, state):
            address = self.peers.get(state.node)
            if address is not None:
                self._stream({state.node: address}, sequencer.stream_lazily())
            self._release_held()  # the claims held for this answer, if it was the last
            return
        logger.info("registry dist: {} arrived owning names; taking over", state.node.name)
        self._start_takeover(max(self._replica.seen, state.seen).epoch)

    def _on_newer_term(self, notice: NewerTerm) -> None:
        """A replica ignores our deltas: it knows a newer term. Lead above it."""
        term = notice.term
        if not isinstance(term, Term) or self.leader != self.me.name:
            return
        current = self.takeover.term if self.takeover is not None else None
        if self.sequencer is not None and term > self.sequencer.term and current is None:
            logger.info("registry dist: a replica knows term {}; taking over above it", term.epoch)
            self._start_takeover(max(term.epoch, self._replica.seen.epoch))

    def _start_takeover(self, seen_epoch: int) -> None:
        self.sequencer = None
        self._joining.clear()  # a takeover collects from every node, the arrivals too
        self.takeover = Takeover(self.me, self.peers, seen_epoch, self.life)
        self._takeover_since = time.monotonic()
        logger.info("registry dist takes over as sequencer (term {})", self.takeover.term.epoch)
        collect = self.takeover.collect()
        for node, address in self.peers.items():
            if node == self.me:
                self._on_owned_state(self._replica.owned_state(collect))
            else:
                self.host.send(address, collect)

    def _on_owned_state(self, state: OwnedState) -> None:
        if not isinstance(state, OwnedState):
            return
        if self.takeover is None:
            self._on_arrival_state(state)
            return
        self.takeover.add(state)
        self._maybe_finish_takeover()

    def _maybe_finish_takeover(self) -> None:
        takeover = self.takeover
        if takeover is None:
            return
        if takeover.retry_epoch is not None:
            self.takeover = None
            self._start_takeover(takeover.retry_epoch)
            return
        if not takeover.complete:
            return
        self.takeover = None
        resolver = self._resolver()
        sequencer, snapshot, conflicts = takeover.finish(resolver)
        # Forget the partition only once every node cut off is back in this merge: a
        # node that returns later must be merged by the same rule.
        self._forget_partition_if_back()
        if sequencer.down & self.peers.keys():
            # Nodes purged while they were cut off are back, same incarnation: they were
            # never dead, so their writes are welcome again (their names came back with
            # what they own in the merge).
            sequencer.down -= self.peers.keys()
            snapshot = sequencer.snapshot()
        if conflicts:
            logger.warning("registry dist merged {} conflicting name(s)", len(conflicts))
            self.outcomes["conflicts"] += len(conflicts)
        self.sequencer = sequencer
        logger.info(
            "registry dist sequences term {} ({} names)",
            sequencer.term.epoch,
            len(snapshot.entries),
        )
        # One transfer, the same chunks for everyone.
        others = {node: address for node, address in self.peers.items() if node != self.me}
        self._stream(others, sequencer.stream_lazily(snapshot))
        self._install(snapshot)
        self._tell_losers(conflicts)

    def _tell_losers(self, conflicts: Iterable[MergeConflict]) -> None:
        for conflict in conflicts:
            winner = conflict.winner
            self.host.send(
                conflict.loser.address,
                NameConflict(
                    name=winner.name, kind=winner.kind, winner=winner.address, node=winner.node
                ),
            )

    # ---- client writes (origin side) ---------------------------------------------------

    def write(self, request: Request, reply: Deferred) -> None:
        if not self.writable and isinstance(request, CLAIMS):
            self.outcomes[f"{type(request).__name__}:minority_partition"] += 1
            reply.fail(
                ErrorCode.MINORITY_PARTITION,
                "this node is on the losing side of a partition: global claims, joins "
                "and meta updates wait for the heal (reads still work)",
            )
            return
        items = write_items(request)
        if items is None:
            reply.fail(ErrorCode.UNKNOWN_REQUEST, type(request).__name__)
            return
        pending = Gathered(reply, request, [], [])
        writes = []
        for item in items:
            index = len(pending.results)
            checked_item = revalidate(item)  # one bad item of a batch fails alone
            core_request = _to_core(checked_item) if isinstance(checked_item, Request) else None
            if core_request is None:
                pending.items.append(request)
                pending.results.append(
                    checked_item
                    if isinstance(checked_item, RegistryError)
                    else _error(request, ErrorCode.INVALID_REQUEST, "not a request of this batch")
                )
                continue
            assert isinstance(checked_item, Request)
            pending.items.append(checked_item)
            pending.results.append(None)
            write = self._origin.write(core_request, self._replica.term)
            self.pending[write.op_id] = (pending, index)
            pending.waiting += 1
            writes.append(write)
        if pending.waiting == 0:
            reply.resolve(pending.reply())
            return
        ops = [w.op_id for w in writes]
        reply.on_expire(lambda: self._forget(ops))
        self._send_writes(writes)

    def _forget(self, ops: list[int]) -> None:
        """The host answered ``timeout``: stop waiting for (and re-sending) these writes."""
        for op_id in ops:
            if self.pending.pop(op_id, None) is not None:
                self._origin.forget(op_id)

    def _on_death(self, address: Any) -> None:
        """An actor of this node died: purge it if it owns anything."""
        if self._replica.table.owns_anything(address):
            self._submit_internal(core.PurgeAddress(address))

    def _submit_internal(self, request: core.Request) -> None:
        """A write of this node's own (a purge): nobody waits for its answer."""
        self._send_writes([self._origin.write(request, self._replica.term)])

    def _send_writes(self, writes: list[Write]) -> None:
        target = self._sequencer_address()
        if target is None:
            return  # no sequencer yet: the retry timer sends them once there is one
        if target == self.host.address:
            self._on_writes(writes, self.host.address)
        else:
            self.host.send(target, Writes(writes=writes))

    def _sequencer_address(self) -> Any:
        if self.sequencer is not None:
            return self.host.address
        if self.takeover is not None:
            return None
        return self.peers.get(self._replica.term.sequencer)

    def _on_decisions(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, Decision):
                self._origin.decided(decision)
        self._answer_completed()

    def _answer_completed(self) -> None:
        for write, decision in self._origin.completed(self._replica):
            waiting = self.pending.pop(write.op_id, None)
            if waiting is None:
                continue
            pending, index = waiting
            item = pending.items[index]
            pending.results[index] = _reply(item, decision, self.me.name)
            self.outcomes[f"{type(item).__name__}:{decision.outcome}"] += 1
            pending.waiting -= 1
            if pending.waiting == 0:
                pending.reply_to.resolve(pending.reply())

    # ---- the sequencer ---------------------------------------------------------------------

    def _holding_claims(self) -> bool:
        """Claims, meta updates and joins wait (in ``_held``) while this sequencer may not
        know whether it may grant them:

        * nodes just left the view: whether this side still may write is the verdict
          the host is fetching (a side that lost a partition must not grant a claim only
          to lose it at the heal);
        * nodes arrived and were asked what they own at our term: one that answers from
          a newer term (the other side of a healed partition) makes this term stale, and
          a claim granted here meanwhile would contradict that side's table.
        """
        return self._verdict_asked is not None or bool(self._joining)

    def _release_held(self) -> None:
        if self._holding_claims():
            return
        held, self._held = self._held, []
        if held:
            self._on_writes(held, self.host.address)

    def _on_writes(self, writes: list[Write], sender: Any) -> None:
        sequencer = self.sequencer
        if sequencer is None:
            return  # not (yet) the sequencer: the origin re-sends to whoever is
        decisions: dict[NodeId, list[Decision]] = {}
        hold = self._holding_claims()
        held_origins = {w.origin for w in self._held}
        held_ops = {(w.origin, w.op_id) for w in self._held}
        for write in writes:
            if not _valid_write(write):
                logger.warning("registry dist dropped a malformed write from {}", sender)
                continue
            if hold and (isinstance(write.request, CLAIM_WRITES) or write.origin in held_origins):
                # (an origin's later writes wait behind its held ones: its release must
                # not overtake its claim)
                if (write.origin, write.op_id) not in held_ops:  # re-sent: keep one copy
                    held_ops.add((write.origin, write.op_id))
                    self._held.append(write)
                held_origins.add(write.origin)
                continue
            # A losing side's sequencer grants no claims: writes its origins sent while
            # they could write, re-sent to it after the cut, would be lost at the heal.
            decision = sequencer.decide(write, claims_allowed=self.writable)
            if decision is not None:  # None: addressed to another term, re-sent later
                decisions.setdefault(write.origin, []).append(decision)
        # The origins get the delta inside their decisions: one message each, not two.
        delta = self._flush(skip=set(decisions))
        for origin, made in decisions.items():
            if origin == self.me:
                self._on_decisions(made)
            else:
                address = self.peers.get(origin)
                if address is not None:
                    self.host.send(address, Decisions(decisions=made, delta=delta))

    def _flush(self, heartbeat: bool = False, skip: set[NodeId] | None = None) -> Delta | None:
        """Send the pending batch to every node (but ``skip``) and apply it here."""
        sequencer = self.sequencer
        if sequencer is None:
            return None
        delta = sequencer.heartbeat() if heartbeat else sequencer.flush()
        if delta is None:
            return None
        for node, address in self.peers.items():
            # A suspect node gets nothing until it answers heartbeats again: a hung
            # one would hold every delta; it fills the hole from a snapshot later.
            if node != self.me and node.name not in self.quiet and node not in (skip or ()):
                self.host.send(address, delta)
        self._on_delta(delta)
        return delta

    def _serve_snapshot(self, request: SnapshotRequest, sender: Any) -> None:
        if self.sequencer is not None and isinstance(request, SnapshotRequest):
            if not (isinstance(request.term, Term) and type(request.seq) is int):
                return  # a peer running other code
            # A replica that missed a few effects gets them from the log; any other
            # gets the table, streamed: it builds its table as the chunks come.
            delta = self.sequencer.catch_up(request)
            if delta is not None:
                self.host.send(sender, delta)
                return
            snapshot = self.sequencer.serve(request)
            if snapshot is not None and isinstance(request.node, NodeId):
                self._stream({request.node: sender}, self.sequencer.stream_lazily(snapshot))

    def _stream(self, to: dict[NodeId, Any], chunks: Iterable[SnapshotChunk]) -> None:
        """Send a snapshot transfer to ``to``, a chunk per message (see Streams)."""
        assert self.sequencer is not None
        self._streams.start(to, chunks, self.sequencer.term)
        if not self._pumping:
            self._pump()

    def _pump(self) -> None:
        """Send the next chunk of the transfers under way, then ask ourselves for the
        one after (NextChunk): Thespian transmits it meanwhile."""
        self._pumping = False
        step = self._streams.next(self.sequencer.term if self.sequencer is not None else None)
        if step is None:
            return
        addresses, chunk = step
        for address in addresses:
            self.host.send(address, chunk)
        self._pumping = True
        self._pumped_at = time.monotonic()
        self.host.send(self.host.address, NextChunk())

    # ---- the replica -------------------------------------------------------------------

    def _on_delta(self, delta: Delta) -> None:
        changes = self._replica.apply(delta)
        self._changed(changes)
        now = time.monotonic()
        self._catch_up.lagging(now, self._behind())
        if changes.need_snapshot is not None and self._catch_up.due(now, urgent=True):
            self._ask_snapshot(now)
        self._answer_completed()

    def _install(self, snapshot: Snapshot) -> None:
        version = (self._replica.term, self._replica.seq)
        # The difference only: at 100,000 names a catch-up rewrites what changed, not
        # the whole mirror (a restart rewrites it whole, in start).
        self._changed(self._replica.install(snapshot))
        self._installed(version)

    def _on_chunk(self, chunk: SnapshotChunk) -> None:
        """One chunk of a streamed snapshot: built into the replica's next table; the
        last one installs it (the replica re-validates every chunk). A joiner's mirror
        takes each chunk's entries as they come (:class:`EarlyMirror`)."""
        version = (self._replica.term, self._replica.seq)
        was_empty = self._replica.empty_before(chunk.term)
        changes = self._replica.receive(chunk)
        if changes.chunk_taken:
            self._catch_up.progress(time.monotonic())  # the transfer is moving: wait on
        installed = (self._replica.term, self._replica.seq) != version
        self._write_mirror(self._early.chunk(self._replica.table, changes, was_empty, installed))
        self._installed(version)

    def _installed(self, version: tuple[Term, int]) -> None:
        """After an install, or a chunk that may have completed one."""
        before = version[0]
        now = time.monotonic()
        if (self._replica.term, self._replica.seq) != version:
            self._catch_up.installed(now)  # an ignored one (stale, fenced) answers nothing
        self._catch_up.lagging(now, self._behind())
        if self._replica.term != before:
            self._send_writes(self._origin.unacknowledged(self._replica))
        self._answer_completed()

    def _behind(self) -> bool:
        """Lagging, or fenced above our term by a Collect whose snapshot is to come."""
        return self._replica.lagging() or self._replica.fence > self._replica.term

    def _ask_snapshot(self, now: float) -> None:
        self._catch_up.asked(now)
        request = self._replica.need_snapshot() or SnapshotRequest(
            self.me, self._replica.term.sequencer, self._replica.term, self._replica.seq
        )
        leader = next((a for n, a in self.peers.items() if n.name == self.leader), None)
        target = self.peers.get(request.sequencer) or leader
        if target is not None and target != self.host.address:
            self.host.send(target, request)

    def _changed(self, changes: Changes) -> None:
        """Bring the node table's mirror to the replica's end state of every key that
        ``changes`` touched, so that it equals the replica after every apply."""
        if changes:
            self._write_mirror(self._early.other(self._replica.table, changes))

    def _write_mirror(self, update: MirrorUpdate | None) -> None:
        """Write ``update`` into the mirror; None, or a failed commit: rewrite it whole
        from the replica."""
        try:
            if update is not None:
                if update:
                    self._mirror.write_update(update)
                return
        except Exception:  # a failed commit left the mirror behind: make it whole again
            logger.exception("registry dist could not update the mirror; rewriting it whole")
        self._mirror.replace(self._replica.names(), self._all_members())

    # ---- timers ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if not self._caught_up and self._replica.term.epoch > 0 and not self._behind():
            self._caught_up = True  # a real term's table, not our restart's own names
            self.host.caught_up()
        if self.leader == self.me.name:
            if self.takeover is not None and now - self._takeover_since > TAKEOVER_RETRY:
                # A Collect or its answer went missing (a peer restarting): ask again.
                self._start_takeover(self.takeover.term.epoch)
            elif any(now - since > TAKEOVER_RETRY for since in self._joining.values()):
                # An arrival did not say what it owns: merge it the long way.
                self._start_takeover(self._replica.seen.epoch)
            else:
                # A term newer than ours may have been seen since the last view
                # change (a newcomer's brief own term): lead above it.
                self._lead_if_due()
        if self._streams and (not self._pumping or now - self._pumped_at > PUMP_WAIT):
            self._pump()  # our NextChunk went missing: the transfers must not stall
        if self.sequencer is not None and now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT
            self._flush(heartbeat=True)
        if self._catch_up.due(now):
            self._ask_snapshot(now)
        asked = self._verdict_asked
        if asked is not None and now - asked > VERDICT_WAIT:
            logger.warning(
                "registry dist got no split-brain verdict in {} s; deciding", VERDICT_WAIT
            )
            self._verdict_asked = None
        if self._held:
            self._release_held()  # once nothing holds them (the arrivals answered, say)
        if now >= self._next_retry:
            self._next_retry = now + RETRY
            self._send_writes(self._origin.unacknowledged(self._replica))
        if now >= self._next_probe:
            self._next_probe = now + self._settings.liveness_probe_interval
            self._probe_owners()

    def _probe_owners(self) -> None:
        """Probe the ports of this node's global owners: a refused one is dead."""
        # One holding tells whose actor an address is: the node hosting an actor writes
        # all of its claims (core.homes). A dead actor's leftovers on a reused port are
        # its own node's to probe and purge (or the leader's, for a node gone down).
        me = self.me
        watched = [a for a, held in self._replica.table.holders() if core.owned_by(held, me)]
        if not watched:
            return
        batch = self._settings.liveness_probe_batch
        start = self._probe_cursor % len(watched)
        chosen = (watched[start:] + watched[:start])[:batch]
        self._probe_cursor = start + len(chosen)
        for dead in self.host.probe_dead(chosen):
            self._submit_internal(core.PurgeAddress(dead))

    # ---- accessors -----------------------------------------------------------------------

    def _all_members(self) -> list[Any]:
        return self._replica.table.explicit_members()

    @property
    def _replica(self) -> Replica:
        return self.replica

    @property
    def _origin(self) -> Origin:
        return self.origin

    @property
    def _mirror(self) -> GlobalMirror:
        return self.host.mirror

    @property
    def _settings(self) -> ClusterSettings:
        return self.settings


def _to_core(request: Request) -> core.Request | None:
    if isinstance(request, Register):
        return core.Claim(request.kind, request.name, request.address, dict(request.meta))
    if isinstance(request, Unregister):
        return core.Release(request.kind, request.name)
    if isinstance(request, UpdateMeta):
        return core.SetMeta(request.kind, request.name, dict(request.meta))
    if isinstance(request, JoinGroup):
        return core.JoinGroup(request.group, request.address, dict(request.meta))
    if isinstance(request, LeaveGroup):
        return core.LeaveGroup(request.group, request.address)
    return None


def _reply(request: Request, decision: Decision, node: str) -> Reply:
    outcome, rid = decision.outcome, request.request_id
    if outcome == core.NODE_DOWN:
        return _error(request, ErrorCode.UNAVAILABLE, "this node was declared down by the cluster")
    if outcome == core.MINORITY:
        return _error(
            request,
            ErrorCode.MINORITY_PARTITION,
            "the global registry's side lost a partition while this write waited: "
            "claims, joins and meta updates wait for the heal",
        )
    if isinstance(request, Register):
        if outcome == core.ALREADY_REGISTERED and decision.owner is not None:
            owner = decision.owner
            return AlreadyRegistered(
                request_id=rid,
                name=owner.name,
                kind=owner.kind,
                owner=owner.address,
                node=owner.node,
            )
        return Registered(
            request_id=rid, name=request.name, kind=request.kind, address=request.address, node=node
        )
    if isinstance(request, Unregister | UpdateMeta):
        if outcome == core.NOT_REGISTERED:
            return _error(
                request,
                ErrorCode.NOT_REGISTERED,
                f"no {request.kind} is registered as {request.name!r}",
            )
        if outcome == core.NOT_OWNER:
            holder = decision.owner.node if decision.owner is not None else "another node"
            return _error(
                request, ErrorCode.NOT_OWNER, f"{request.name!r} is owned by an actor on {holder}"
            )
        if isinstance(request, Unregister):
            return Unregistered(request_id=rid, name=request.name, kind=request.kind)
        return MetaUpdated(
            request_id=rid, name=request.name, kind=request.kind, meta=dict(request.meta)
        )
    if isinstance(request, JoinGroup):
        return JoinedGroup(request_id=rid, group=request.group)
    if isinstance(request, LeaveGroup):
        return LeftGroup(request_id=rid, group=request.group, was_member=outcome == core.OK)
    return _error(request, ErrorCode.UNKNOWN_REQUEST, type(request).__name__)


def _valid_write(write: Any) -> bool:
    """A peer's write has the shape this code builds (peers may run other code)."""
    if not isinstance(write, Write) or not isinstance(write.origin, NodeId):
        return False
    if not isinstance(write.op_id, int):
        return False
    request = write.request
    if isinstance(request, core.Claim | core.Release | core.SetMeta):
        return isinstance(request.kind, str) and isinstance(request.name, str | tuple)
    if isinstance(request, core.JoinGroup | core.LeaveGroup):
        return isinstance(request.group, str)
    return isinstance(request, core.PurgeAddress | core.PurgeNode)


def _error(request: Request, code: ErrorCode, detail: str) -> RegistryError:
    return RegistryError(request_id=request.request_id, code=code, detail=detail)


def _resolver_failed(why: str) -> None:
    logger.error("{}; the default rule decided that name", why)
