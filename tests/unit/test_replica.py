"""The global table's rules, one at a time (replica, origin, sequencer, takeover, merge)."""

from __future__ import annotations

import itertools

from tests.unit.test_table import FakeAddress
from thespian_cluster.core.replica import (
    ALREADY_REGISTERED,
    MINORITY,
    NODE_DOWN,
    NOT_OWNER,
    OK,
    Claim,
    Collect,
    Delta,
    JoinGroup,
    NodeId,
    Origin,
    OwnedState,
    PurgeNode,
    Release,
    Replica,
    SetMeta,
    Term,
    table_state,
)
from thespian_cluster.core.sequencer import (
    MergeConflict,
    Sequencer,
    Takeover,
    joins_without_merge,
    merge,
)
from thespian_cluster.core.table import Entry

A, B, C = NodeId("a", "1"), NodeId("b", "1"), NodeId("c", "1")


def started(me: NodeId = A, *others: NodeId) -> tuple[Sequencer, list[Replica]]:
    """A sequencer of epoch 1 on ``me`` and an installed replica per node."""
    replicas = [Replica(n) for n in (me, *others)]
    takeover = Takeover(me, [r.node for r in replicas], 0)
    for replica in replicas:
        takeover.add(replica.owned_state(takeover.collect()))
    sequencer, snapshot, _ = takeover.finish(clock=itertools.count(1).__next__)
    for replica in replicas:
        replica.install(snapshot)
    return sequencer, replicas


def claim(name: str, port: int, meta: dict | None = None) -> Claim:
    return Claim("server", name, FakeAddress(port), meta or {})


def test_claims_race_one_winner_others_told_the_owner() -> None:
    sequencer, _ = started(A, B)
    first = sequencer.decide(Origin(A).write(claim("x", 1), sequencer.term))
    second = sequencer.decide(Origin(B).write(claim("x", 2), sequencer.term))
    assert first.outcome == OK and first.seq == 1
    assert second.outcome == ALREADY_REGISTERED and second.owner is not None
    assert second.owner.node == "a" and second.seq == 1  # nothing new applied


def test_a_losing_sides_sequencer_grants_no_claims_but_releases_and_purges() -> None:
    """A write sent before the cut and re-sent to this side's new sequencer: granted
    here, it would be lost at the heal's merge (an acknowledged claim gone)."""
    sequencer, (ra, _) = started(A, B)
    origin = Origin(A)
    held = sequencer.decide(origin.write(claim("held", 1), sequencer.term))
    assert held is not None and held.outcome == OK
    refused = [
        sequencer.decide(origin.write(request, sequencer.term), claims_allowed=False)
        for request in (
            claim("new", 2),
            SetMeta("server", "held", {"v": 2}),
            JoinGroup("g", FakeAddress(2), {}),
        )
    ]
    assert [d.outcome if d else None for d in refused] == [MINORITY] * 3
    assert all(d is not None and not d.ok and d.seq == held.seq for d in refused)
    release = sequencer.decide(
        origin.write(Release("server", "held"), sequencer.term), claims_allowed=False
    )
    assert release is not None and release.outcome == OK
    purge = sequencer.decide(Origin(A).write(PurgeNode(B), sequencer.term), claims_allowed=False)
    assert purge is not None and purge.ok
    delta = sequencer.flush()
    assert delta is not None
    ra.apply(delta)
    assert ra.names() == [] and B in ra.down
    # Winning again, the same kind of claim is granted.
    again = sequencer.decide(origin.write(claim("new", 2), sequencer.term))
    assert again is not None and again.outcome == OK
    # A claim the table already grants (its decision lost, sent again) is answered
    # truthfully on a losing side, and a refusal is a refusal.
    same = sequencer.decide(origin.write(claim("new", 2), sequencer.term), claims_allowed=False)
    assert same is not None and same.outcome == OK
    taken = sequencer.decide(Origin(C).write(claim("new", 3), sequencer.term), False)
    assert taken is not None and taken.outcome == ALREADY_REGISTERED


def test_read_your_writes_the_origin_completes_once_its_replica_applied() -> None:
    sequencer, (ra, _) = started(A, B)
    origin = Origin(A)
    write = origin.write(claim("x", 1), sequencer.term)
    origin.decided(sequencer.decide(write))
    assert origin.completed(ra) == []
    delta = sequencer.flush()
    assert delta is not None
    changes = ra.apply(delta)
    assert [e.name for e in changes.registered] == ["x"]
    [(done, decision)] = origin.completed(ra)
    assert done == write and decision.ok and ra.whereis("x", "server") is not None


def test_duplicates_ignored_gaps_buffered_then_filled() -> None:
    sequencer, (_, rb) = started(A, B)
    origin = Origin(A)
    deltas = []
    for port in range(3):
        sequencer.decide(origin.write(claim(f"n{port}", port), sequencer.term))
        deltas.append(sequencer.flush())
    d1, d2, d3 = deltas
    assert d1 and d2 and d3
    rb.apply(d1)
    assert not rb.apply(d1)  # duplicate
    assert not rb.apply(d3)  # hole at 2: buffered
    assert rb.lagging() and rb.seq == 1
    changes = rb.apply(d2)
    assert [e.name for e in changes.registered] == ["n1", "n2"] and rb.seq == 3
    assert not rb.lagging() and rb.need_snapshot() is None


def test_a_lost_tail_is_seen_by_the_heartbeat_and_repaired_by_a_snapshot() -> None:
    sequencer, (_ra, rb) = started(A, B)
    sequencer.decide(Origin(A).write(claim("x", 1), sequencer.term))
    sequencer.flush()  # lost on the way to b
    assert not rb.apply(sequencer.heartbeat())
    request = rb.need_snapshot()
    assert request is not None and request.sequencer == A and request.seq == 0
    snapshot = sequencer.serve(request)
    assert snapshot is not None and snapshot.seq == 1
    changes = rb.install(snapshot)
    assert [e.name for e in changes.registered] == ["x"] and rb.seq == 1
    assert sequencer.serve(rb.need_snapshot() or request) is None or rb.seq == sequencer.seq


def test_too_many_buffered_ops_ask_for_a_snapshot_at_once() -> None:
    sequencer, _ = started(A, B)
    rb = Replica(B, max_buffered_ops=2)
    rb.install(sequencer.snapshot())
    origin = Origin(A)
    sequencer.decide(origin.write(claim("lost", 0), sequencer.term))
    sequencer.flush()
    for port in range(1, 4):
        sequencer.decide(origin.write(claim(f"n{port}", port), sequencer.term))
    delta = sequencer.flush()
    assert delta is not None
    assert rb.apply(delta).need_snapshot is not None


def test_older_terms_ignored_newer_term_asks_for_its_snapshot() -> None:
    old, (ra, rb) = started(A, B)
    takeover = Takeover(B, [A, B], rb.seen.epoch)
    for replica in (ra, rb):
        takeover.add(replica.owned_state(takeover.collect()))
    new, snapshot, _ = takeover.finish()
    old.decide(Origin(A).write(claim("late", 1), old.term))
    stale = old.flush()
    assert stale is not None
    assert not ra.apply(stale)  # fenced: the collection came first
    rb.install(snapshot)
    assert not rb.apply(stale) and rb.whereis("late", "server") is None
    new.decide(Origin(B).write(claim("y", 2), new.term))
    fresh = new.flush()
    assert fresh is not None
    request = ra.apply(fresh).need_snapshot  # a missed snapshot
    assert request is not None and request.sequencer == B


def test_a_snapshot_below_the_fence_is_refused() -> None:
    old, (ra,) = started(A)
    ra.owned_state(Collect(Term(2, B)))
    old.decide(Origin(A).write(claim("x", 1), old.term))
    assert not ra.install(old.snapshot()) and ra.seq == 0


def test_a_collection_for_a_known_term_is_refused_and_the_takeover_retries_higher() -> None:
    _, (ra, rb) = started(A, B)
    rb.owned_state(Collect(Term(5, C)))
    takeover = Takeover(A, [A, B], ra.seen.epoch)
    for replica in (ra, rb):
        takeover.add(replica.owned_state(takeover.collect()))
    assert not takeover.complete and takeover.retry_epoch == 5
    again = Takeover(A, [A, B], takeover.retry_epoch)
    for replica in (ra, rb):
        again.add(replica.owned_state(again.collect()))
    assert again.complete and again.term == Term(6, A)


def test_a_resent_write_gets_the_same_decision_and_one_effect() -> None:
    sequencer, _ = started(A, B)
    origin = Origin(A)
    write = origin.write(claim("x", 1), sequencer.term)
    first = sequencer.decide(write)
    sequencer.decide(origin.write(Release("server", "x"), sequencer.term))
    assert sequencer.decide(write) == first  # not a second registration after the release
    delta = sequencer.flush()
    assert delta is not None and len(delta.ops) == 2


def test_unacknowledged_writes_are_resent_after_a_takeover_and_not_lost() -> None:
    old, (ra, rb) = started(A, B)
    origin = Origin(A)
    write = origin.write(claim("x", 1), old.term)
    decided = old.decide(write)  # decided, but the old sequencer dies before flushing
    assert decided is not None
    origin.decided(decided)
    takeover = Takeover(B, [A, B], rb.seen.epoch)
    for replica in (ra, rb):
        takeover.add(replica.owned_state(takeover.collect()))
    new, snapshot, _ = takeover.finish()
    ra.install(snapshot)
    assert origin.completed(ra) == []
    assert new.decide(write) is None  # a copy addressed to the old term is dropped
    [again] = origin.unacknowledged(ra)
    assert again.op_id == write.op_id and again.term == new.term
    decision = new.decide(again)
    assert decision is not None
    origin.decided(decision)
    delta = new.flush()
    assert delta is not None
    ra.apply(delta)
    [(_, done)] = origin.completed(ra)
    assert done.ok and done.term == new.term


def test_a_stale_copy_of_an_answered_write_cannot_undo_a_later_one() -> None:
    # Found by the state machine: a release answered under term 2 arrived again under
    # term 3 and dropped the claim granted after it.
    old, (ra,) = started(A)
    origin = Origin(A)
    release = origin.write(Release("server", "x"), old.term)
    assert old.decide(release) is not None
    takeover = Takeover(A, [A], ra.seen.epoch)
    takeover.add(ra.owned_state(takeover.collect()))
    new, snapshot, _ = takeover.finish()
    ra.install(snapshot)
    assert new.decide(origin.write(claim("x", 1), new.term)) is not None
    assert new.decide(release) is None
    assert new.table.whereis("x", "server") is not None


def test_an_acknowledged_claim_survives_the_sequencers_death() -> None:
    old, (_ra, rb, rc) = started(A, B, C)
    origin = Origin(B)
    origin.decided(old.decide(origin.write(claim("x", 7, {"v": 1}), old.term)))
    delta = old.flush()
    assert delta is not None
    rb.apply(delta)  # only b got it: acknowledged there
    assert origin.completed(rb)
    takeover = Takeover(C, [B, C], rc.seen.epoch)  # a is dead
    for replica in (rb, rc):
        takeover.add(replica.owned_state(takeover.collect()))
    _new, snapshot, conflicts = takeover.finish()
    assert not conflicts
    rc.install(snapshot)
    entry = rc.whereis("x", "server")
    assert entry is not None and entry.node == "b" and entry.meta == {"v": 1}


def test_release_and_meta_need_the_owners_node_unless_forced() -> None:
    sequencer, _ = started(A, B)
    sequencer.decide(Origin(A).write(claim("x", 1), sequencer.term))
    b = Origin(B)
    assert (
        sequencer.decide(b.write(SetMeta("server", "x", {"v": 2}), sequencer.term)).outcome
        == NOT_OWNER
    )
    assert sequencer.decide(b.write(Release("server", "x"), sequencer.term)).outcome == NOT_OWNER
    assert sequencer.decide(
        b.write(SetMeta("server", "x", {"v": 2}, force=True), sequencer.term)
    ).ok
    entry = sequencer.table.whereis("x", "server")
    assert entry is not None and entry.node == "a" and entry.meta == {"v": 2}
    assert sequencer.decide(b.write(Release("server", "x", force=True), sequencer.term)).ok


def test_purging_an_old_incarnation_spares_the_restarted_node() -> None:
    sequencer, (ra,) = started(A)
    old, new = Origin(NodeId("b", "1")), Origin(NodeId("b", "2"))
    sequencer.decide(old.write(claim("old", 5), sequencer.term))
    sequencer.decide(old.write(JoinGroup("g", FakeAddress(5), {}), sequencer.term))
    # The restarted node reuses the port: its join replaces the old membership.
    sequencer.decide(new.write(claim("new", 5), sequencer.term))
    sequencer.decide(new.write(JoinGroup("g", FakeAddress(5), {}), sequencer.term))
    sequencer.decide(Origin(A).write(PurgeNode(old.node), sequencer.term))
    delta = sequencer.flush()
    assert delta is not None
    changes = ra.apply(delta)
    assert [e.name for e in changes.unregistered] == ["old"]
    assert [e.name for e in ra.names()] == ["new"]
    assert [m.incarnation for m in ra.members("g")] == ["2"]
    # A late write of the purged incarnation is refused, not stored for ever.
    assert sequencer.decide(old.write(claim("late", 6), sequencer.term)).outcome == NODE_DOWN
    assert old.node in ra.down


def entry(node: str, name: str, version: tuple[int, int], port: int) -> Entry:
    return Entry(name, "server", FakeAddress(port), node, {}, 0.0, "1", version)


def owned(node: str, *entries: Entry) -> OwnedState:
    return OwnedState(NodeId(node, "1"), Term(9, A), True, Term(8, A), entries)


def test_merge_is_deterministic_and_reports_each_loser_once() -> None:
    states = [
        owned("a", entry("a", "x", (1, 5), 1)),
        owned("b", entry("b", "x", (1, 12), 2)),  # the newer: a's copy is stale
        owned("c", entry("c", "x", (1, 9), 3), entry("c", "y", (1, 2), 3)),
    ]
    merged, *others = [merge(order) for order in itertools.permutations(states)]
    assert all(other == merged for other in others)
    assert {(e.name, e.node) for e in merged.entries} == {("x", "b"), ("y", "c")}
    assert sorted((c.loser.node, c.winner.node) for c in merged.conflicts) == [
        ("a", "b"),
        ("c", "b"),
    ]
    assert all(isinstance(c, MergeConflict) and c.name == "x" for c in merged.conflicts)


def test_merge_prefers_the_winner_side_then_ties_go_to_the_smaller_node() -> None:
    from thespian_cluster.core.sequencer import default_resolver

    a, b = owned("a", entry("a", "x", (1, 5), 1)), owned("b", entry("b", "x", (1, 12), 2))
    assert merge([a, b], default_resolver(winners={"a"})).entries[0].node == "a"
    tie = owned("b", entry("b", "x", (1, 5), 2))
    assert merge([tie, a]).entries[0].node == "a"


def test_a_custom_resolver_decides_and_a_broken_one_falls_back_to_the_default() -> None:
    from thespian_cluster.core.sequencer import custom_resolver

    older, newer = entry("a", "x", (1, 12), 1), entry("b", "x", (1, 5), 2)
    seen: list[frozenset[str]] = []

    def prefer_a(one: Entry, other: Entry, winners: frozenset[str]) -> Entry:
        seen.append(winners)
        return one if one.node == "a" else other  # the default would keep b's (winners)

    states = [owned("a", older), owned("b", newer)]
    kept = merge(states, custom_resolver(prefer_a, {"b"})).entries[0]
    assert kept.node == "a" and seen and all(w == {"b"} for w in seen)
    errors: list[str] = []

    def broken(one: Entry, other: Entry, winners: frozenset[str]) -> Entry:
        raise KeyError("meta")

    def stranger(one: Entry, other: Entry, winners: frozenset[str]) -> Entry:
        return entry("z", "x", (9, 9), 9)

    for rule in (broken, stranger):  # the default: the winner side, b
        assert merge(states, custom_resolver(rule, {"b"}, errors.append)).entries[0].node == "b"
    assert len(errors) == 2
    assert "raised KeyError" in errors[0] and "neither claim" in errors[1]


def test_install_reports_the_difference() -> None:
    sequencer, (ra,) = started(A)
    a = Origin(A)
    sequencer.decide(a.write(claim("keep", 1), sequencer.term))
    sequencer.decide(a.write(claim("gone", 2), sequencer.term))
    sequencer.decide(a.write(JoinGroup("g", FakeAddress(1), {}), sequencer.term))
    first = sequencer.flush()
    assert first is not None
    ra.apply(first)
    sequencer.decide(a.write(Release("server", "gone"), sequencer.term))
    sequencer.decide(a.write(SetMeta("server", "keep", {"v": 2}), sequencer.term))
    sequencer.decide(a.write(claim("new", 3), sequencer.term))
    changes = ra.install(sequencer.snapshot())
    assert sorted(e.name for e in changes.registered) == ["keep", "new"]
    assert [e.name for e in changes.unregistered] == ["gone"]
    assert not changes.joined and not changes.left
    assert table_state(ra.table) == table_state(sequencer.table)


def test_empty_heartbeat_at_the_tip_is_not_a_gap() -> None:
    sequencer, (ra,) = started(A)
    assert not ra.apply(sequencer.heartbeat()) and not ra.lagging()
    assert ra.apply(Delta(sequencer.term, 1, ())).need_snapshot is None


def test_a_restarted_origin_never_reuses_an_op_id_of_its_previous_life() -> None:
    """A RegistryDist restarted within one node incarnation (a SIGKILL of the actor,
    not of the node) writes as the same NodeId. Op ids counted from 1 again were taken
    by the sequencer for copies of the old writes: the new claim got the old claim's
    decision and was acknowledged without ever being applied."""
    sequencer, _ = started(A)
    before = Origin(A)
    first = before.write(claim("before", 1), sequencer.term)
    assert sequencer.decide(first).outcome == OK
    after = Origin(A)  # the restarted actor: same node, same incarnation
    second = after.write(claim("after", 2), sequencer.term)
    assert second.op_id != first.op_id
    decision = sequencer.decide(second)
    assert decision is not None and decision.outcome == OK
    assert sequencer.table.whereis("after", "server") is not None


def test_an_arrival_that_owns_nothing_joins_by_snapshot_and_is_fenced() -> None:
    sequencer, _ = started(A, B)
    arrival = Replica(C)
    state = arrival.owned_state(Collect(sequencer.term))
    assert joins_without_merge(sequencer, state)
    assert arrival.fence == sequencer.term  # its own older term can acknowledge nothing now
    arrival.install(sequencer.snapshot())
    assert arrival.term == sequencer.term


def test_an_arrival_that_owns_names_or_was_purged_needs_the_takeover() -> None:
    sequencer, (_, rb) = started(A, B)
    # C led its own term before it joined (epoch 1, above A's by node id): refused.
    alone = Sequencer(Term(1, C), (), ())
    rc = Replica(C)
    rc.install(alone.snapshot())
    rc.apply(_decided(alone, Origin(C).write(claim("mine", 7), alone.term)))
    newer = rc.owned_state(Collect(sequencer.term))
    assert not newer.accepted and not joins_without_merge(sequencer, newer)
    older_alone = Sequencer(Term(1, NodeId("0", "1")), (), ())  # a term below A's
    rc2 = Replica(C)
    rc2.install(older_alone.snapshot())
    rc2.apply(_decided(older_alone, Origin(C).write(claim("mine", 7), older_alone.term)))
    owns = rc2.owned_state(Collect(sequencer.term))
    assert owns.accepted and owns.entries and not joins_without_merge(sequencer, owns)
    sequencer.down.add(C)
    assert not joins_without_merge(sequencer, Replica(C).owned_state(Collect(sequencer.term)))
    # A node that knows a newer term refuses the collection.
    assert not rb.owned_state(Collect(Term(0, A))).accepted


def test_an_arrival_already_at_the_current_term_needs_no_takeover() -> None:
    """b left the view for a moment (suspect) and came back: it refuses a Collect of
    the term it holds, and owns nothing the table lacks."""
    sequencer, (_, rb) = started(A, B)
    back = rb.owned_state(Collect(sequencer.term))
    assert not back.accepted and back.seen == sequencer.term
    assert joins_without_merge(sequencer, back)
    sequencer.down.add(B)  # but a purged incarnation must be taken off down
    assert not joins_without_merge(sequencer, back)


def _decided(sequencer: Sequencer, write: object) -> Delta:
    sequencer.decide(write)  # type: ignore[arg-type]
    delta = sequencer.flush()
    assert delta is not None
    return delta


def test_an_arrival_that_has_seen_a_newer_term_needs_the_takeover() -> None:
    """Found in review: an arrival that applied a delta of a newer term accepts a
    Collect of ours, but would install that term's snapshot after ours and drop what it
    was acknowledged under ours; only a takeover above the newer term is safe."""
    sequencer, _ = started(A, B)
    arrival = Replica(C)
    newer = Term(sequencer.term.epoch + 1, B)
    arrival.apply(Delta(newer, 1, ()))  # a heartbeat of a term above ours
    state = arrival.owned_state(Collect(sequencer.term))
    assert state.seen == newer
    assert not joins_without_merge(sequencer, state)
