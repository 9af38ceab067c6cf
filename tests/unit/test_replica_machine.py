"""The replicated global table under a hostile network (hypothesis state machine).

N simulated nodes, each with a Replica and an Origin, one of them with the Sequencer,
exchange messages through a bag: any message may be delivered in any order, twice, or
never (snapshots travel as streams of small chunks, each of them subject to the same;
a drop is repaired by the heartbeat → hole → snapshot path, and by origins
sending unacknowledged writes again). Nodes race for a few names, release them, lose
actors, die, restart with a new incarnation (or restart only their RegistryDist, in the
same incarnation), and hand the sequencer over (collect, merge, snapshot) at any moment.

Checked at every step: replicas at the same version hold the same table (and the
sequencer's, when it is there too); every node's mirror (the node table's copy, kept by
the actor's rule: :func:`mirror_update` after every apply and install) equals its
replica; no name is ever acknowledged to two live owners.
Checked at quiescence (every message delivered, every write answered): every replica
equals the sequencer's table, and every acknowledged registration is there unless it was
released, or its actor or node died, since.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.unit.test_table import FakeAddress
from thespian_cluster.core.addresses import AddressKey, address_key
from thespian_cluster.core.replica import (
    Changes,
    Claim,
    Collect,
    Decision,
    Delta,
    JoinGroup,
    LeaveGroup,
    MirrorUpdate,
    NodeId,
    Origin,
    OwnedState,
    PurgeAddress,
    PurgeNode,
    Release,
    Replica,
    Request,
    SetMeta,
    Snapshot,
    SnapshotChunk,
    SnapshotRequest,
    Term,
    Write,
    mirror_update,
    owned_by,
    table_state,
)
from thespian_cluster.core.sequencer import (
    Sequencer,
    Takeover,
    joins_without_merge,
    must_take_over,
)
from thespian_cluster.core.table import Entry, Member, NameKey
from thespian_cluster.global_messages import NewerTerm

NODES = 4
SLOTS = 2
nodes = st.integers(0, NODES - 1)
slots = st.integers(0, SLOTS - 1)
names = st.sampled_from(["a", "b", "c"])
kinds = st.sampled_from(["server", "transport"])
groups = st.sampled_from(["g1", "g2"])
metas = st.sampled_from([{}, {"capabilities": ["tools"]}, {"v": 2}])
picks = st.integers(0, 10_000)
CHUNK_RECORDS = 2  # records per snapshot chunk here
LOG_OPS = 3  # effects the sequencer keeps for catching up from its log here


def address(node: int, slot: int) -> FakeAddress:
    # The same ports in every incarnation: a restarted node reuses them, as real ones can.
    return FakeAddress(100 * node + slot)


@dataclass
class Mirror:
    """The node table's global mirror, as a dict: GlobalMirror.write_update's rule."""

    names: dict[NameKey, Entry] = field(default_factory=dict)
    members: dict[tuple[str, AddressKey], Member] = field(default_factory=dict)

    def write(self, update: MirrorUpdate) -> None:
        for key in update.dropped_names:
            self.names.pop(key, None)
        for entry in update.entries:
            self.names[entry.key] = entry
        for group, where in update.dropped_members:
            self.members.pop((group, address_key(where)), None)
        for member in update.members:
            self.members[(member.group, address_key(member.address))] = member


@dataclass
class SimNode:
    id: NodeId
    replica: Replica
    origin: Origin
    alive: bool = True
    life: int = 0  # of its RegistryDist: a restart leads terms of its own (Term.life)
    sequencer: Sequencer | None = None
    mirror: Mirror = field(default_factory=Mirror)


class GlobalTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = 0.0
        self.incarnations = 0
        self.nodes = [self._fresh(i) for i in range(NODES)]
        self.net: list[tuple[NodeId, Any]] = []
        self.tick = 0
        self.submitted: dict[tuple[NodeId, int], int] = {}
        # what a removal submitted at tick t makes uncertain
        self.removed_key: dict[NameKey, int] = {}
        self.removed_address: dict[AddressKey, int] = {}
        self.removed_node: dict[NodeId, int] = {}
        self.acked: dict[NameKey, tuple[AddressKey, NodeId]] = {}
        # removals not yet acknowledged: a claim acknowledged meanwhile may be undone
        self.removing: dict[tuple[NodeId, int], tuple[Any, Any, Any]] = {}
        # acknowledged removals and their versions: one ordered after a claim undoes it,
        # even if its origin heard of it before the claim's origin did
        self.removed: list[tuple[tuple[int, int], tuple[Any, Any, Any]]] = []
        self._takeover(0)
        self._settle()

    # ---- the simulated nodes ---------------------------------------------------------

    def _fresh(self, index: int) -> SimNode:
        self.incarnations += 1
        node = NodeId(f"n{index}", f"i{self.incarnations}")
        return SimNode(node, Replica(node, max_buffered_ops=20), Origin(node))

    def _now(self) -> float:
        self.clock += 1.0
        return self.clock

    def _by_id(self, node: NodeId) -> SimNode | None:
        for sim in self.nodes:
            if sim.id == node and sim.alive:
                return sim
        return None

    def _sequencer(self) -> SimNode | None:
        for sim in self.nodes:
            if sim.alive and sim.sequencer is not None:
                return sim
        return None

    def _send(self, to: NodeId, message: Any) -> None:
        self.net.append((to, message))

    def _broadcast(self, message: Any) -> None:
        for sim in self.nodes:
            if sim.alive:
                self._send(sim.id, message)

    def _submit(self, index: int, request: Request) -> None:
        sim = self.nodes[index]
        write = sim.origin.write(request, sim.replica.term)
        self.tick += 1
        self.submitted[(sim.id, write.op_id)] = self.tick
        if isinstance(request, Release):
            self.removing[(sim.id, write.op_id)] = ((request.kind, request.name), None, None)
        elif isinstance(request, PurgeAddress):
            self.removing[(sim.id, write.op_id)] = (None, address_key(request.address), None)
        elif isinstance(request, PurgeNode):
            self.removing[(sim.id, write.op_id)] = (None, None, request.node)
        sequencer = self._sequencer()
        if sequencer is not None:
            self._send(sequencer.id, write)

    def _handle(self, to: NodeId, message: Any) -> None:
        sim = self._by_id(to)
        if sim is None:
            return  # dead, or an older incarnation's mail
        if isinstance(message, Write):
            decision = sim.sequencer.decide(message) if sim.sequencer is not None else None
            if decision is not None:
                self._send(message.origin, decision)
        elif isinstance(message, Decision):
            sim.origin.decided(message)
            self._acknowledge(sim)
        elif isinstance(message, Delta):
            self._changed(sim, sim.replica.apply(message))
            if message.term < sim.replica.seen and message.term.sequencer != sim.id:
                # RegistryDist's answer to a delta older than what its replica has seen.
                self._send(message.term.sequencer, NewerTerm(term=sim.replica.seen))
        elif isinstance(message, NewerTerm):
            # RegistryDist._on_newer_term: the sequencer leads above the newer term.
            if sim.sequencer is not None and message.term > sim.sequencer.term:
                self._takeover(self.nodes.index(sim), above=message.term.epoch)
        elif isinstance(message, Snapshot):
            before = sim.replica.term
            self._changed(sim, sim.replica.install(message))
            if sim.replica.term != before:
                self._resend(sim)  # a new sequencer: what it never applied goes again
        elif isinstance(message, SnapshotChunk):
            before = sim.replica.term
            self._changed(sim, sim.replica.receive(message))
            if sim.replica.term != before:
                self._resend(sim)
        elif isinstance(message, SnapshotRequest) and sim.sequencer is not None:
            # Streamed, as RegistryDist sends it: chunks that may come in any order,
            # twice, or never (a lost one is asked for again by the retry timer).
            delta = sim.sequencer.catch_up(message)  # from the log, when it covers it
            if delta is not None:
                self._send(message.node, delta)
            for chunk in [] if delta is not None else sim.sequencer.serve_chunks(message):
                self._send(message.node, chunk)
        elif isinstance(message, tuple) and isinstance(message[1], Collect):
            # An arrival asked at the current term (SequencedBackend._ask_arrivals).
            self._send(message[0], sim.replica.owned_state(message[1]))
        elif isinstance(message, OwnedState) and sim.sequencer is not None:
            # SequencedBackend._on_arrival_state: a snapshot, or the long way.
            if joins_without_merge(sim.sequencer, message):
                for chunk in sim.sequencer.stream():
                    self._send(message.node, chunk)
            elif message.term == sim.sequencer.term:
                self._takeover(self.nodes.index(sim), above=message.seen.epoch)

    def _changed(self, sim: SimNode, changes: Changes) -> None:
        if changes:
            sim.mirror.write(mirror_update(sim.replica.table, changes))
        if changes.need_snapshot is not None:
            self._send(changes.need_snapshot.sequencer, changes.need_snapshot)
        self._acknowledge(sim)

    def _resend(self, sim: SimNode) -> None:
        sequencer = self._sequencer()
        if sequencer is not None:
            for write in sim.origin.unacknowledged(sim.replica):
                self._send(sequencer.id, write)

    def _acknowledge(self, sim: SimNode) -> None:
        for write, decision in sim.origin.completed(sim.replica):
            assert sim.replica.applied(decision.term, decision.seq)
            removal = self.removing.pop((write.origin, write.op_id), None)
            version = (decision.term.epoch, decision.seq)
            if removal is not None:
                self.removed.append((version, removal))
            request = write.request
            if not (isinstance(request, Claim) and decision.ok):
                continue
            key = (request.kind, request.name)
            akey = address_key(request.address)
            at = self.submitted[(write.origin, write.op_id)]
            if (
                at <= self.removed_key.get(key, 0)
                or at <= self.removed_address.get(akey, 0)
                or at <= self.removed_node.get(write.origin, 0)
                or any(
                    (key, None, None) == r
                    or (None, akey, None) == r
                    or (None, None, write.origin) == r
                    for r in [
                        *self.removing.values(),
                        *(r for v, r in self.removed if v > version),
                    ]
                )
            ):
                continue  # released (or its actor died) since: no longer promised
            # Read your writes: the origin's replica shows it at once.
            entry = sim.replica.whereis(request.name, request.kind)
            assert entry is not None and address_key(entry.address) == akey
            owner = self.acked.get(key)
            assert owner is None or owner == (akey, write.origin), (key, owner, write.origin)
            self.acked[key] = (akey, write.origin)

    def _forget(self, key: NameKey | None = None, akey: Any = None, node: Any = None) -> None:
        self.tick += 1
        if key is not None:
            self.removed_key[key] = self.tick
        if akey is not None:
            self.removed_address[akey] = self.tick
        if node is not None:
            self.removed_node[node] = self.tick
        for name_key, (owner_akey, owner) in list(self.acked.items()):
            if name_key == key or owner_akey == akey or owner == node:
                del self.acked[name_key]

    def _takeover(self, index: int, above: int = 0) -> None:
        new = self.nodes[index]
        live = [sim for sim in self.nodes if sim.alive]
        seen = max(new.replica.seen.epoch, above)
        while True:
            takeover = Takeover(new.id, [sim.id for sim in live], seen, new.life)
            for sim in live:
                takeover.add(sim.replica.owned_state(takeover.collect()))
            if takeover.retry_epoch is None:
                break
            seen = takeover.retry_epoch
        for sim in live:
            sim.sequencer = None  # fenced by the collection: the old one retires
        # A short log: replicas catch up from it or, further behind, from a snapshot.
        sequencer, snapshot, conflicts = takeover.finish(clock=self._now, log_ops=LOG_OPS)
        sequencer.chunk_records = CHUNK_RECORDS  # a few records a chunk: many chunks
        new.sequencer = sequencer
        for conflict in conflicts:
            # Merging never takes a name from an owner that still holds an acknowledgement.
            loser = (
                address_key(conflict.loser.address),
                NodeId(conflict.loser.node, conflict.loser.incarnation),
            )
            assert self.acked.get((conflict.kind, conflict.name)) != loser  # type: ignore[arg-type]
        assert len({(c.kind, c.name, c.loser.node) for c in conflicts}) == len(conflicts)
        for chunk in sequencer.stream(snapshot):
            self._broadcast(chunk)

    def _settle(self) -> None:
        """Repair everything: a live sequencer, every message delivered, every write done."""
        for _ in range(20):
            sequencer = self._sequencer()
            if sequencer is None:
                self._takeover(min(i for i, sim in enumerate(self.nodes) if sim.alive))
            else:
                self._lead_if_due(sequencer)
            sequencer = self._sequencer()
            assert sequencer is not None and sequencer.sequencer is not None
            for sim in self.nodes:
                if sim.alive:
                    self._resend(sim)
            self._broadcast(sequencer.sequencer.heartbeat())
            for sim in self.nodes:
                if sim.alive:
                    request = sim.replica.need_snapshot()
                    if request is not None:
                        self._send(request.sequencer, request)
            while self.net:
                while self.net:
                    self._handle(*self.net.pop(0))
                delta = sequencer.sequencer.flush()
                if delta is not None:
                    self._broadcast(delta)
            done = all(
                sim.replica.applied(sequencer.sequencer.term, sequencer.sequencer.seq)
                and sim.origin.pending() == 0
                for sim in self.nodes
                if sim.alive
            )
            if done:
                # Mail of the dead is delivered or refused by now: nothing more can undo.
                alive = {sim.id for sim in self.nodes if sim.alive}
                self.removing = {k: r for k, r in self.removing.items() if k[0] in alive}
                return
        raise AssertionError("the cluster did not settle")

    # ---- writes ----------------------------------------------------------------------

    @rule(node=nodes, slot=slots, name=names, kind=kinds, meta=metas)
    def claim(self, node: int, slot: int, name: str, kind: str, meta: dict) -> None:
        if self.nodes[node].alive:
            self._submit(node, Claim(kind, name, address(node, slot), meta))

    @rule(node=nodes, name=names, kind=kinds, force=st.booleans())
    def release(self, node: int, name: str, kind: str, force: bool) -> None:
        if self.nodes[node].alive:
            self._forget(key=(kind, name))
            self._submit(node, Release(kind, name, force))

    @rule(node=nodes, name=names, kind=kinds, meta=metas)
    def set_meta(self, node: int, name: str, kind: str, meta: dict) -> None:
        if self.nodes[node].alive:
            self._submit(node, SetMeta(kind, name, meta))

    @rule(node=nodes, slot=slots, group=groups, leave=st.booleans())
    def join_or_leave(self, node: int, slot: int, group: str, leave: bool) -> None:
        if self.nodes[node].alive:
            where = address(node, slot)
            self._submit(node, LeaveGroup(group, where) if leave else JoinGroup(group, where, {}))

    @rule(node=nodes, slot=slots)
    def actor_dies(self, node: int, slot: int) -> None:
        if self.nodes[node].alive:
            self._forget(akey=address_key(address(node, slot)))
            self._submit(node, PurgeAddress(address(node, slot)))

    # ---- nodes -----------------------------------------------------------------------

    @precondition(lambda self: sum(sim.alive for sim in self.nodes) > 1)
    @rule(node=nodes)
    def node_dies(self, node: int) -> None:
        sim = self.nodes[node]
        if not sim.alive:
            return
        sim.alive, sim.sequencer = False, None
        self._forget(node=sim.id)
        # NodeMonitor on a survivor reports it; the purge goes through the sequencer.
        self._submit(next(i for i, s in enumerate(self.nodes) if s.alive), PurgeNode(sim.id))

    @rule(node=nodes, collected=st.booleans())
    def node_restarts(self, node: int, collected: bool = False) -> None:
        """A new incarnation joins: it asks for a snapshot itself, or the sequencer asks
        it what it owns at the current term first (the leader's arrival path)."""
        if self.nodes[node].alive:
            return
        sim = self.nodes[node] = self._fresh(node)
        sequencer = self._sequencer()
        if sequencer is not None and sequencer.sequencer is not None:
            if collected:
                self._send(sim.id, (sequencer.id, Collect(sequencer.sequencer.term)))
                return
            request = SnapshotRequest(sim.id, sequencer.id, sim.replica.term, sim.replica.seq)
            self._send(sequencer.id, request)

    @rule(node=nodes)
    def registry_dist_restarts(self, node: int) -> None:
        """The node's RegistryDist alone is killed and restarted (RegistryDist._configure):
        the same node incarnation, a new origin (unanswered writes are lost with their
        clients), a replica seeded with what the mirror says the node owns, and no
        sequencer here until a takeover."""
        sim = self.nodes[node]
        if not sim.alive:
            return
        entries = tuple(e for e in sim.mirror.names.values() if owned_by(e, sim.id))
        members = tuple(m for m in sim.mirror.members.values() if owned_by(m, sim.id))
        sim.sequencer = None
        sim.life += 1
        sim.origin = Origin(sim.id)
        sim.replica = Replica(sim.id, max_buffered_ops=20)
        if entries or members:
            sim.replica.install(Snapshot(Term(0, sim.id), 1, entries, members))
        names, explicit = table_state(sim.replica.table)
        sim.mirror = Mirror(names, explicit)

    @rule(node=nodes)
    def sequencer_changes(self, node: int) -> None:
        if self.nodes[node].alive:
            self._takeover(node)

    # ---- the sequencer's timers ------------------------------------------------------

    @rule(heartbeat=st.booleans())
    def flush(self, heartbeat: bool) -> None:
        sim = self._sequencer()
        if sim is not None and sim.sequencer is not None:
            delta = sim.sequencer.heartbeat() if heartbeat else sim.sequencer.flush()
            if delta is not None:
                self._broadcast(delta)

    @rule()
    def leader_timer(self) -> None:
        sim = self._sequencer()
        if sim is not None:
            self._lead_if_due(sim)

    def _lead_if_due(self, sim: SimNode) -> None:
        """The leader's timer (RegistryDist._lead_if_due): lead above a newer term."""
        if must_take_over(sim.sequencer, sim.replica):
            self._takeover(self.nodes.index(sim))

    @rule(node=nodes)
    def retry_timer(self, node: int) -> None:
        sim = self.nodes[node]
        if sim.alive:
            self._resend(sim)
            request = sim.replica.need_snapshot()
            if request is not None:
                self._send(request.sequencer, request)

    # ---- the network -----------------------------------------------------------------

    @precondition(lambda self: bool(self.net))
    @rule(pick=picks)
    def deliver(self, pick: int) -> None:
        self._handle(*self.net.pop(pick % len(self.net)))

    @precondition(lambda self: bool(self.net))
    @rule(pick=picks)
    def deliver_all(self, pick: int) -> None:
        for _ in range(len(self.net)):
            self._handle(*self.net.pop(pick % len(self.net)))

    @precondition(lambda self: bool(self.net))
    @rule(pick=picks)
    def duplicate(self, pick: int) -> None:
        self.net.append(self.net[pick % len(self.net)])

    @precondition(lambda self: bool(self.net))
    @rule(pick=picks)
    def drop(self, pick: int) -> None:
        self.net.pop(pick % len(self.net))

    # ---- invariants ------------------------------------------------------------------

    @invariant()
    def same_version_same_table(self) -> None:
        by_version: dict[Any, Any] = {}
        sequencer = self._sequencer()
        if sequencer is not None and sequencer.sequencer is not None:
            s = sequencer.sequencer
            by_version[(s.term, s.seq)] = table_state(s.table)
        for sim in self.nodes:
            if sim.alive:
                state = table_state(sim.replica.table)
                version = (sim.replica.term, sim.replica.seq)
                assert by_version.setdefault(version, state) == state, sim.id

    @invariant()
    def mirror_equals_replica(self) -> None:
        for sim in self.nodes:
            if sim.alive:
                assert (sim.mirror.names, sim.mirror.members) == table_state(sim.replica.table), (
                    sim.id
                )

    def teardown(self) -> None:
        self._settle()
        sequencer = self._sequencer()
        assert sequencer is not None and sequencer.sequencer is not None
        expected = table_state(sequencer.sequencer.table)
        for sim in self.nodes:
            if sim.alive:
                assert table_state(sim.replica.table) == expected, sim.id
        names = expected[0]
        for key, (akey, owner) in self.acked.items():
            entry = names.get(key)
            assert entry is not None, f"acknowledged {key} of {owner} lost"
            assert address_key(entry.address) == akey
            assert (entry.node, entry.incarnation) == (owner.name, owner.incarnation)


GlobalTableMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)
test_global_table = GlobalTableMachine.TestCase


def test_the_next_leader_leads_above_a_snapshot_still_on_its_way() -> None:
    """Found by the machine: n3 takes over alone and its snapshot is on its way to a
    restarted n0 when n3 dies; n0 takes over at epoch 1, then installs n3's epoch-2
    snapshot and ignores its own deltas. Only leading again, above epoch 2
    (``must_take_over``, RegistryDist's leader timer), lets the cluster settle."""
    state = GlobalTableMachine()
    for node in (0, 1, 2):
        state.node_dies(node=node)
    state.sequencer_changes(node=3)
    state.node_restarts(node=0)
    state.deliver(pick=0)  # n3 installs its own snapshot
    state.deliver(pick=0)  # n3 answers n0's snapshot request: the snapshot is on its way
    state.node_dies(node=3)
    state.teardown()


def test_a_restarted_registry_dist_takes_no_decision_of_its_previous_life() -> None:
    """Found by the machine with op ids counted from 1 in every life: n1 sequences
    term 2, then its RegistryDist restarts; its first write (n2's purge) had op id 1,
    took the previous life's decision of term 2 for it, and was never sent again."""
    state = GlobalTableMachine()
    state.node_dies(node=0)
    state.node_dies(node=3)
    state.sequencer_changes(node=1)
    state.deliver_all(pick=238)
    state.registry_dist_restarts(node=1)
    state.node_dies(node=2)
    state.teardown()


def test_a_leader_whose_registry_dist_restarted_leads_above_its_previous_life() -> None:
    """Found by the machine: n0 sequences epoch 2 and its snapshot is still on its way
    to n3 when n0's RegistryDist restarts (same node incarnation, a replica that has
    forgotten epoch 2). n0 takes over again at epoch 1; n3 then installs the old
    epoch-2 snapshot and ignores every epoch-1 delta. Only n3's NewerTerm (as
    RegistryDist sends it) makes n0 lead above epoch 2."""
    state = GlobalTableMachine()
    state.node_dies(node=2)
    state.deliver(pick=0)
    state.deliver(pick=0)
    state.sequencer_changes(node=0)
    state.deliver(pick=0)
    state.node_dies(node=1)
    state.registry_dist_restarts(node=0)
    state.registry_dist_restarts(node=3)
    state.teardown()


def test_a_restarted_registry_dist_does_not_lead_its_previous_lifes_term() -> None:
    """Found by the machine: n0 sequences term (1, n0) and its snapshot is on its way to
    a restarted n3 when n0's RegistryDist restarts. The new life, knowing no epoch, led
    (1, n0) again; n3 then installed the old life's snapshot (seq 3) as a catch-up of
    the new term (seq 2) and kept a table the sequencer never had. Term.life keeps the
    two terms apart: the old snapshot is below n3's fence."""
    state = GlobalTableMachine()
    state.node_dies(node=1)
    state.join_or_leave(group="g1", leave=False, node=0, slot=0)
    state.actor_dies(node=0, slot=0)
    state.deliver_all(pick=0)
    state.deliver_all(pick=0)
    state.registry_dist_restarts(node=3)
    state.flush(heartbeat=False)
    state.drop(pick=0)  # n0's own copy of the delta
    state.deliver_all(pick=0)  # n3 asks for a snapshot
    state.deliver_all(pick=0)  # n0 serves it: on its way
    state.node_dies(node=2)
    state.registry_dist_restarts(node=0)
    state.join_or_leave(group="g1", leave=False, node=0, slot=0)
    state.teardown()
