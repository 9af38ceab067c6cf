"""RegistryDist: this node's replica of the global table, and the sequencer when it leads.

The rules live in :mod:`thespian_cluster.core.replica` and
:mod:`thespian_cluster.core.sequencer` (docs/global-protocol.md is the map); this
actor only moves their messages:

* **client writes** (``Register`` / ``Unregister`` / ``UpdateMeta`` / ``JoinGroup`` /
  ``LeaveGroup`` with ``scope="global"``) arrive from the node's Registry wrapped in
  :class:`Forwarded` (with the client to answer). Each becomes a write of this
  node's :class:`~thespian_cluster.core.replica.Origin`, sent to the sequencer; the
  client is answered once this node's replica has applied the decision (read your
  writes), or with ``RegistryError(timeout)`` when its deadline passes, or
  ``RegistryError(unavailable)`` if this actor stops first. No ``ask()`` ever hangs.
* **the sequencer** is the leader NodeMonitor names (the oldest live node). When that
  is this node and it does not sequence the newest term, it takes over: collects
  what every live node owns, merges, broadcasts the snapshot, and only then decides.
  It decides every write it receives, flushes the batch as one delta to every node
  after each message, and sends an empty delta every :data:`HEARTBEAT` so replicas see
  holes and new terms.
* **deaths**: a node that leaves the view is purged by the sequencer
  (``PurgeNode``); an actor of this node that dies (the Registry forwards exit hooks
  and dead letters; this actor also probes the ports of its node's global owners)
  is purged with ``PurgeAddress``.
* **restarts**: a restarted RegistryDist reloads the entries its node owns from the
  node table's global mirror (they are authoritative: the node hosts those actors),
  and gets everything else from the sequencer's snapshot.

Reads (``Whereis`` and listings of scope global) are answered by the Registry from
the node table's global mirror, which this actor writes after every change, so they
cost no extra message.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from thespian.actors import Actor, ActorAddress, ActorExitRequest, WakeupMessage

from thespian_cluster.actors.cluster_members import ConfigureComponent
from thespian_cluster.actors.liveness import refused
from thespian_cluster.actors.node_monitor import Agents
from thespian_cluster.cluster_messages import (
    ClusterView,
    PartitionDetected,
    PartitionStatus,
    SubscribeClusterView,
    SubscribePartitionEvents,
    WritableChanged,
)
from thespian_cluster.core import replica as core
from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.replica import (
    Changes,
    Collect,
    Decision,
    Delta,
    NodeId,
    Origin,
    OwnedState,
    Replica,
    Snapshot,
    SnapshotRequest,
    Term,
    Write,
    mirror_update,
)
from thespian_cluster.core.sequencer import (
    MergeConflict,
    Resolver,
    Sequencer,
    Takeover,
    default_resolver,
    must_take_over,
)
from thespian_cluster.global_messages import (
    Decisions,
    Forwarded,
    GetGlobalStatus,
    GlobalStatus,
    NameConflict,
    NewerTerm,
    Writes,
)
from thespian_cluster.messages import (
    ActorExiting,
    AlreadyRegistered,
    ErrorCode,
    JoinedGroup,
    JoinGroup,
    LeaveGroup,
    LeftGroup,
    MetaUpdated,
    Register,
    Registered,
    RegisteredMany,
    RegisterMany,
    RegistryError,
    Reply,
    Request,
    SupervisedBy,
    Unregister,
    Unregistered,
    UnregisteredMany,
    UnregisterMany,
    UpdateMeta,
)
from thespian_cluster.node_identity import read_identity
from thespian_cluster.node_table import GlobalMirror, publish_agent
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.validation import revalidate

#: Requests refused on the losing side of a partition (releases and leaves still work).
CLAIMS = (Register, RegisterMany, JoinGroup, UpdateMeta)
HEARTBEAT = 0.5  # seconds between the sequencer's empty deltas when idle
TICK = 0.1  # seconds between timer rounds (retries, deadlines, probes, gaps)
TAKEOVER_RETRY = 3.0  # seconds a takeover may wait for owned states before it asks again
RETRY = 0.5  # seconds between re-sends of writes that have no decision yet
GAP_WAIT = 0.05  # seconds a hole may stay open before a snapshot is asked for
REQUEST_DEADLINE = 5.0  # seconds a client write may wait for its decision


@dataclass
class _Pending:
    """A client waiting for the writes of one request (one, or a RegisterMany's)."""

    to: Any
    request: Request
    items: list[Request]  # the write requests, in order
    results: list[Reply | None]  # filled in as decisions are applied here
    deadline: float
    waiting: int = 0

    def reply(self) -> Reply:
        if isinstance(self.request, RegisterMany):
            return RegisteredMany(request_id=self.request.request_id, results=self.results)
        if isinstance(self.request, UnregisterMany):
            return UnregisteredMany(request_id=self.request.request_id, results=self.results)
        result = self.results[0]
        assert result is not None
        return result


class RegistryDist(Actor):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.settings: ClusterSettings | None = None
        self.me = core.NO_NODE
        self.replica: Replica | None = None
        self.origin: Origin | None = None
        self.sequencer: Sequencer | None = None
        self.takeover: Takeover | None = None
        self.mirror: GlobalMirror | None = None
        self.monitor: Any = None
        self.peers: dict[NodeId, Any] = {}  # live nodes (this one too) -> their RegistryDist
        self.quiet: set[str] = set()  # suspect nodes: no deltas until they answer again
        self.outcomes: Counter[str] = Counter()  # answered writes, for GetGlobalStatus
        self.leader = ""
        self.pending: dict[int, tuple[_Pending, int]] = {}  # op id -> (its request, item)
        self._early: list[tuple[Any, ActorAddress]] = []
        self._parent_pid = os.getppid()
        self._probe_cursor = 0
        self._next_probe = 0.0
        self._next_retry = 0.0
        self._next_heartbeat = 0.0
        self._gap_since: float | None = None
        self._takeover_since = 0.0
        self.detector: Any = None
        self.writable = True  # False while SplitBrainDetector says this side must not write
        # The partition being healed, as this node saw it (until a merge used it):
        self.partition: tuple[bool, frozenset[str]] | None = None  # (winner?, unreachable)

    # ---- receive ---------------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        try:
            self._receive(message, sender)
        except Exception:  # logged where operators look; Thespian would only retry it
            logger.exception("registry dist failed on a {}", type(message).__name__)

    def _receive(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ConfigureComponent):
            if self.settings is None:
                self._configure(message.settings)
                early, self._early = self._early, []
                for queued, queued_sender in early:
                    self._receive(queued, queued_sender)
        elif self.settings is None:
            if not isinstance(message, ActorExitRequest | SupervisedBy):
                self._early.append((message, sender))
        elif isinstance(message, Delta):
            self._on_delta(message)
            if message.term < self._replica.seen and message.term.sequencer != self.me:
                self.send(sender, NewerTerm(term=self._replica.seen))
        elif isinstance(message, NewerTerm):
            self._on_newer_term(message)
        elif isinstance(message, Decisions):
            if isinstance(message.delta, Delta):
                self._on_delta(message.delta)  # first: the decisions wait for it
            self._on_decisions(message.decisions)
        elif isinstance(message, Writes):
            self._on_writes(message.writes, sender)
        elif isinstance(message, Forwarded):
            self._on_client(message)
        elif isinstance(message, ActorExiting):
            self._on_death(message.address)
        elif isinstance(message, WakeupMessage):
            self._tick()
        elif isinstance(message, ClusterView):
            self._on_view(message)
        elif isinstance(message, Snapshot):
            self._install(message)
        elif isinstance(message, SnapshotRequest):
            self._serve_snapshot(message, sender)
        elif isinstance(message, Collect):
            self.send(sender, self._replica.owned_state(message))
        elif isinstance(message, OwnedState):
            self._on_owned_state(message)
        elif isinstance(message, Agents):
            self._on_agents(message)
        elif isinstance(message, PartitionStatus):
            self._on_verdict(message)
        elif isinstance(message, PartitionDetected):
            self._on_partition(message)
        elif isinstance(message, WritableChanged):
            self._set_writable(message.writable, message.reason)
        elif isinstance(message, ActorExitRequest):
            self._stop()
        elif not isinstance(message, SupervisedBy):
            logger.debug("registry dist ignored a {}", type(message).__name__)

    # ---- start and stop ------------------------------------------------------------------

    def _configure(self, settings: ClusterSettings) -> None:
        self.settings = settings
        identity = read_identity(settings.node_dir)
        self.me = NodeId(settings.node_name, identity.incarnation)
        self.replica = Replica(self.me)
        # A random start: op ids of this actor's earlier lives (same node incarnation)
        # are still in the sequencer's memory of recent decisions.
        self.origin = Origin(self.me, first_op=secrets.randbits(62))
        self.mirror = GlobalMirror(settings.node_dir)
        entries, members = self.mirror.owned_by(self.me.name, self.me.incarnation)
        if entries or members:
            # What this node owns survives our restart: seed the replica with it at a
            # term older than any real one, so a takeover collects it and any real
            # snapshot replaces it.
            self._replica.install(Snapshot(Term(0, self.me), 1, tuple(entries), tuple(members)))
            logger.info("registry dist restarted with {} own global names", len(entries))
        self.mirror.replace(self._replica.names(), self._all_members())
        publish_agent(settings.node_dir, "registry_dist", self.myAddress)
        self.wakeupAfter(TICK)

    def _stop(self) -> None:
        for pending in {id(p): p for p, _ in self.pending.values()}.values():
            self.send(pending.to, _error(pending.request, ErrorCode.UNAVAILABLE, "stopping"))
        self.pending.clear()

    def _on_agents(self, message: Agents) -> None:
        monitor = message.agents.get("node_monitor")
        if monitor is not None and monitor != self.monitor:
            self.monitor = monitor
            self.send(monitor, SubscribeClusterView(subscriber=self.myAddress))
        detector = message.agents.get("split_brain_detector")
        if detector is not None and detector != self.detector:
            self.detector = detector
            self.send(detector, SubscribePartitionEvents(subscriber=self.myAddress))

    # ---- partitions ----------------------------------------------------------------------

    def _on_verdict(self, status: PartitionStatus) -> None:
        self._set_writable(status.writable, status.reason)
        if status.partition_detected and status.unreachable:
            self._cut_off(status.winner, frozenset(status.unreachable))

    def _on_partition(self, event: PartitionDetected) -> None:
        self._cut_off(event.winner, frozenset(event.unreachable))

    def _cut_off(self, winner: bool, unreachable: frozenset[str]) -> None:
        """Remember every node this side lost touch with in one partition, until a merge
        has them all back: a partition that grows (n5 cut, then n4 too) or heals a node
        at a time must still be merged by one rule, or the heal takes a node cut off
        for the winner side and may hand it a contested name."""
        if self.partition is not None and self.partition[0] == winner:
            unreachable |= self.partition[1]
        self.partition = (winner, unreachable)

    def _set_writable(self, writable: bool, reason: str) -> None:
        if writable != self.writable:
            self.writable = writable
            logger.warning(
                "registry dist {} global writes: {}", "accepts" if writable else "refuses", reason
            )

    def _resolver(self) -> Resolver | None:
        """The merge rule after a partition: the names of the side that won keep their
        owner (decided here, once, by the sequencer, and broadcast in its snapshot)."""
        if self.partition is None:
            return None
        won, unreachable = self.partition
        everyone = {n.name for n in self.peers}
        winners = everyone - unreachable if won else set(unreachable)
        return default_resolver(winners)

    # ---- the cluster view: peers, leader, takeovers, purges ----------------------------

    def _on_view(self, view: ClusterView) -> None:
        if not view.joined:
            return  # a member that has not reached its cluster yet decides nothing
        peers: dict[NodeId, Any] = {}
        for record in view.records:
            node = NodeId(record.name, record.incarnation)
            address = self.myAddress if node == self.me else record.agents.get("registry_dist")
            if address is not None:
                peers[node] = address
        gone = [node for node in self.peers if node not in peers]
        arrived = [node for node in peers if node not in self.peers and node != self.me]
        self.peers = peers
        self.leader = view.leader
        self.quiet = set(view.suspect)
        for node in gone:
            if self.takeover is not None:
                self.takeover.node_down(node)
            if self.sequencer is not None:
                self._submit_internal(core.PurgeNode(node))
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
            return
        if self.takeover is not None and not new_nodes:
            return
        if not must_take_over(self.sequencer, self._replica, nodes_arrived=new_nodes):
            return
        newest = max(self._replica.seen, self.takeover.term if self.takeover else core.NO_TERM)
        self._start_takeover(newest.epoch)

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
        self.takeover = Takeover(self.me, self.peers, seen_epoch)
        self._takeover_since = time.monotonic()
        logger.info("registry dist takes over as sequencer (term {})", self.takeover.term.epoch)
        collect = self.takeover.collect()
        for node, address in self.peers.items():
            if node == self.me:
                self._on_owned_state(self._replica.owned_state(collect))
            else:
                self.send(address, collect)

    def _on_owned_state(self, state: OwnedState) -> None:
        if self.takeover is None or not isinstance(state, OwnedState):
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
        if self.partition is not None and self.partition[1] <= {n.name for n in self.peers}:
            self.partition = None
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
        for node, address in self.peers.items():
            if node != self.me:
                self.send(address, snapshot)
        self._install(snapshot)
        self._tell_losers(conflicts)

    def _tell_losers(self, conflicts: Iterable[MergeConflict]) -> None:
        for conflict in conflicts:
            winner = conflict.winner
            self.send(
                conflict.loser.address,
                NameConflict(
                    name=winner.name, kind=winner.kind, winner=winner.address, node=winner.node
                ),
            )

    # ---- client writes (origin side) ---------------------------------------------------

    def _on_client(self, message: Forwarded) -> None:
        to = message.reply_to
        checked = revalidate(message.request)
        if not isinstance(checked, Request):
            if isinstance(checked, RegistryError):
                self.send(to, checked)
            return
        request = checked
        if isinstance(request, GetGlobalStatus):
            self.send(to, self._status(request))
            return
        if not self.writable and isinstance(request, CLAIMS):
            self.outcomes[f"{type(request).__name__}:minority_partition"] += 1
            self.send(
                to,
                _error(
                    request,
                    ErrorCode.MINORITY_PARTITION,
                    "this node is on the losing side of a partition: global claims, joins "
                    "and meta updates wait for the heal (reads still work)",
                ),
            )
            return
        items = _items(request)
        if items is None:
            self.send(to, _error(request, ErrorCode.UNKNOWN_REQUEST, type(request).__name__))
            return
        pending = _Pending(to, request, [], [], time.monotonic() + REQUEST_DEADLINE)
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
            self.send(to, pending.reply())
        else:
            self._send_writes(writes)

    def _status(self, request: GetGlobalStatus) -> GlobalStatus:
        replica = self._replica
        return GlobalStatus(
            request_id=request.request_id,
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

    def _on_death(self, address: Any) -> None:
        """The Registry saw one of this node's actors die: purge it if it owns anything."""
        if not isinstance(address, ActorAddress):
            return
        key = address_key(address)
        owns = any(address_key(e.address) == key for e in self._replica.names()) or any(
            address_key(m.address) == key for m in self._all_members()
        )
        if owns:
            self._submit_internal(core.PurgeAddress(address))

    def _submit_internal(self, request: core.Request) -> None:
        """A write of this node's own (a purge): nobody waits for its answer."""
        self._send_writes([self._origin.write(request, self._replica.term)])

    def _send_writes(self, writes: list[Write]) -> None:
        target = self._sequencer_address()
        if target is None:
            return  # no sequencer yet: the retry timer sends them once there is one
        if target == self.myAddress:
            self._on_writes(writes, self.myAddress)
        else:
            self.send(target, Writes(writes=writes))

    def _sequencer_address(self) -> Any:
        if self.sequencer is not None:
            return self.myAddress
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
                self.send(pending.to, pending.reply())

    # ---- the sequencer ---------------------------------------------------------------------

    def _on_writes(self, writes: list[Write], sender: Any) -> None:
        sequencer = self.sequencer
        if sequencer is None:
            return  # not (yet) the sequencer: the origin re-sends to whoever is
        decisions: dict[NodeId, list[Decision]] = {}
        for write in writes:
            if not _valid_write(write):
                logger.warning("registry dist dropped a malformed write from {}", sender)
                continue
            decision = sequencer.decide(write)
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
                    self.send(address, Decisions(decisions=made, delta=delta))

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
                self.send(address, delta)
        self._on_delta(delta)
        return delta

    def _serve_snapshot(self, request: SnapshotRequest, sender: Any) -> None:
        if self.sequencer is not None and isinstance(request, SnapshotRequest):
            snapshot = self.sequencer.serve(request)
            if snapshot is not None:
                self.send(sender, snapshot)

    # ---- the replica -------------------------------------------------------------------

    def _on_delta(self, delta: Delta) -> None:
        changes = self._replica.apply(delta)
        self._changed(changes)
        if changes.need_snapshot is not None:
            self._ask_snapshot()
        self._gap_since = (self._gap_since or time.monotonic()) if self._replica.lagging() else None
        self._answer_completed()

    def _install(self, snapshot: Snapshot) -> None:
        before = self._replica.term
        changes = self._replica.install(snapshot)
        # The difference only: at 100,000 names a catch-up rewrites what changed, not
        # the whole mirror (a restart rewrites it whole, in _configure).
        self._changed(changes)
        if self._replica.term != before:
            self._gap_since = None
            self._send_writes(self._origin.unacknowledged(self._replica))
        self._answer_completed()

    def _ask_snapshot(self) -> None:
        request = self._replica.need_snapshot() or SnapshotRequest(
            self.me, self._replica.term.sequencer, self._replica.term, self._replica.seq
        )
        leader = next((a for n, a in self.peers.items() if n.name == self.leader), None)
        target = self.peers.get(request.sequencer) or leader
        if target is not None and target != self.myAddress:
            self.send(target, request)

    def _changed(self, changes: Changes) -> None:
        """Bring the node table's mirror to the replica's end state of every key that
        ``changes`` touched, so that it equals the replica after every apply."""
        if not changes:
            return
        try:
            self._mirror.write_update(mirror_update(self._replica.table, changes))
        except Exception:  # a failed commit left the mirror behind: make it whole again
            logger.exception("registry dist could not update the mirror; rewriting it whole")
            self._mirror.replace(self._replica.names(), self._all_members())

    # ---- timers ------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        try:
            if os.getppid() != self._parent_pid:
                logger.warning("registry dist orphaned (its supervisor died); exiting")
                os._exit(0)
            if self.leader == self.me.name:
                if self.takeover is not None and now - self._takeover_since > TAKEOVER_RETRY:
                    # A Collect or its answer went missing (a peer restarting): ask again.
                    self._start_takeover(self.takeover.term.epoch)
                else:
                    # A term newer than ours may have been seen since the last view
                    # change (a newcomer's brief own term): lead above it.
                    self._lead_if_due()
            if self.sequencer is not None and now >= self._next_heartbeat:
                self._next_heartbeat = now + HEARTBEAT
                self._flush(heartbeat=True)
            if self._gap_since is not None and now - self._gap_since > GAP_WAIT:
                self._gap_since = now
                self._ask_snapshot()
            if now >= self._next_retry:
                self._next_retry = now + RETRY
                self._send_writes(self._origin.unacknowledged(self._replica))
            self._expire(now)
            if now >= self._next_probe:
                self._next_probe = now + self._settings.liveness_probe_interval
                self._probe_owners()
        finally:
            self.wakeupAfter(TICK)

    def _expire(self, now: float) -> None:
        expired: dict[int, _Pending] = {}
        for op_id in [op for op, (p, _) in self.pending.items() if now >= p.deadline]:
            pending, _ = self.pending.pop(op_id)
            self._origin.forget(op_id)
            expired[id(pending)] = pending
        for pending in expired.values():
            self.send(
                pending.to,
                _error(pending.request, ErrorCode.TIMEOUT, "no sequencer decided in time"),
            )

    def _probe_owners(self) -> None:
        """Probe the ports of this node's global owners: a refused one is dead."""
        owners: dict[Any, Any] = {}
        for entry in self._replica.names():
            if entry.node == self.me.name and entry.incarnation == self.me.incarnation:
                owners.setdefault(address_key(entry.address), entry.address)
        for member in self._all_members():
            if member.node == self.me.name and member.incarnation == self.me.incarnation:
                owners.setdefault(address_key(member.address), member.address)
        watched = list(owners.values())
        if not watched:
            return
        batch = self._settings.liveness_probe_batch
        start = self._probe_cursor % len(watched)
        chosen = (watched[start:] + watched[:start])[:batch]
        self._probe_cursor = start + len(chosen)
        for dead in refused(chosen):
            self._submit_internal(core.PurgeAddress(dead))

    # ---- accessors -----------------------------------------------------------------------

    def _all_members(self) -> list[Any]:
        return self._replica.table.explicit_members()

    @property
    def _replica(self) -> Replica:
        assert self.replica is not None
        return self.replica

    @property
    def _origin(self) -> Origin:
        assert self.origin is not None
        return self.origin

    @property
    def _mirror(self) -> GlobalMirror:
        assert self.mirror is not None
        return self.mirror

    @property
    def _settings(self) -> ClusterSettings:
        assert self.settings is not None
        return self.settings


def _items(request: Request) -> list[Any] | None:
    """The write requests a client request stands for (None: not a write)."""
    if isinstance(request, RegisterMany):
        return list(request.registrations)
    if isinstance(request, UnregisterMany):
        return list(request.names)
    if isinstance(request, Register | Unregister | UpdateMeta | JoinGroup | LeaveGroup):
        return [request]
    return None


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
