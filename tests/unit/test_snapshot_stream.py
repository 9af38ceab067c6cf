"""Streamed snapshots: the compact columns, and a replica building its table chunk by chunk.

A snapshot travels as the chunks of one transfer (``core/replica.py``
:class:`SnapshotChunk`), their records as columns (``core/columns.py``). The rules
checked here: the columns give back exactly the records packed, pickled or not; a
malformed body installs nothing and changes nothing; a replica installs only once it
holds every chunk of one transfer, in whatever order and however often they came, and
keeps its old table, term and seq until then; a chunk of an older transfer, of a
snapshot the replica may not install, or below the fence is dropped; a newer transfer
starts over. A replica that missed only the last few effects of its term gets them from
the sequencer's log instead (:meth:`Sequencer.catch_up`).
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from tests.unit.test_replica_machine import Mirror
from thespian_cluster.core.columns import Columns, pack, problem, unpack
from thespian_cluster.core.replica import (
    Claim,
    Collect,
    EarlyMirror,
    JoinGroup,
    MirrorUpdate,
    NodeId,
    Origin,
    Replica,
    SnapshotChunk,
    SnapshotRequest,
    Term,
    snapshot_chunks,
    table_state,
)
from thespian_cluster.core.sequencer import Sequencer, Streams
from thespian_cluster.core.snapshot_pacer import SnapshotPacer
from thespian_cluster.core.table import Entry, Member

A, B, C = NodeId("a", "1"), NodeId("b", "1"), NodeId("c", "1")
TERM = Term(1, A, 7)


def _address(port: int) -> ActorAddress:
    return ActorAddress(TCPv4ActorAddress("127.0.0.1", port, external=True))


ADDRESSES = [_address(40000 + i) for i in range(4)]
names = st.one_of(st.text(max_size=8), st.tuples(st.text(max_size=3), st.text(max_size=3)))
metas = st.sampled_from([{}, {"capabilities": ["tools"]}, {"v": 2}, {"url": "x"}])
owners = st.sampled_from([("a", "1"), ("b", "2"), ("c", "3")])
entries = st.builds(
    lambda name, kind, port, owner, meta, stamp, epoch, seq: Entry(
        name, kind, ADDRESSES[port], owner[0], meta, stamp, owner[1], (epoch, seq)
    ),
    names,
    st.sampled_from(["server", "transport", "custom"]),
    st.integers(0, 3),
    owners,
    metas,
    st.floats(0, 2e9),
    st.integers(0, 5),
    st.integers(0, 10**6),
)
members = st.builds(
    lambda group, port, owner, meta: Member(group, ADDRESSES[port], owner[0], meta, owner[1]),
    st.sampled_from(["g1", "g2", "g3"]),
    st.integers(0, 3),
    owners,
    metas,
)


@settings(max_examples=200)
@given(st.lists(entries, max_size=30), st.lists(members, max_size=10))
def test_columns_give_back_the_records_packed_through_pickle(
    records: list[Entry], joined: list[Member]
) -> None:
    columns = pickle.loads(pickle.dumps(pack(records, joined), pickle.HIGHEST_PROTOCOL))
    assert problem(columns) is None
    assert unpack(columns) == (records, joined)


def test_shared_values_are_listed_once_and_interned_through_the_table() -> None:
    meta = {"capabilities": ["tools"]}
    records = [
        Entry(f"n{i}", "server", ADDRESSES[0], "b", meta, 1.0, "2", (1, i)) for i in range(50)
    ]
    columns = pickle.loads(pickle.dumps(pack(records)))
    assert len(columns.addresses) == len(columns.owners) == len(columns.metas) == 1
    seen: list[object] = []
    got, _ = unpack(columns, lambda a: seen.append(a) or ADDRESSES[0], lambda m: meta)
    assert len(seen) == 1  # once per distinct address, not per record
    assert all(e.address is ADDRESSES[0] and e.meta is meta for e in got)


def _good() -> Columns:
    return pack(
        [Entry("x", "server", ADDRESSES[0], "b", {}, 1.0, "2", (1, 1))],
        [Member("g", ADDRESSES[1], "b", {}, "2")],
    )


@pytest.mark.parametrize(
    "broken",
    [
        {"address_of": (2,)},  # out of the table
        {"address_of": (-1,)},
        {"owner_of": (0, 0)},  # one index too many
        {"kind_of": ("0",)},
        {"names": (3,)},
        {"names": (("t", 1),)},
        {"owners": (("b",),)},
        {"owners": (("b", 2),)},
        {"metas": ([],)},
        {"metas": ({1: 2},)},
        {"kinds": (None,)},
        {"stamps": ("1",)},
        {"epochs": (1.5,)},
        {"seqs": ()},
        {"groups": (1,)},
        {"member_meta_of": (5,)},
        {"addresses": [ADDRESSES[0], ADDRESSES[1]]},  # not a tuple
    ],
)
def test_a_malformed_column_is_refused_and_installs_nothing(broken: dict) -> None:
    columns = replace(_good(), **broken)
    assert problem(columns) is not None
    with pytest.raises(ValueError):
        unpack(columns)
    replica = Replica(C)
    chunk = SnapshotChunk(TERM, 1, 1, 0, 1, columns)
    changes = replica.receive(chunk)
    assert not changes and not changes.chunk_taken
    assert replica.term != TERM and not replica.names() and not replica.receiving


def test_a_chunk_that_is_no_chunk_is_refused() -> None:
    replica = Replica(C)
    good = SnapshotChunk(TERM, 1, 1, 0, 1, _good())
    for bad in (
        replace(good, index=1),
        replace(good, count=0),
        replace(good, seq="1"),
        replace(good, term=(1, A)),
        replace(good, down=frozenset({"b"})),
        replace(good, term=Term(1, NodeId(1, "1"))),  # type: ignore[arg-type]
        replace(good, down=frozenset({NodeId("b", None)})),  # type: ignore[arg-type]
        replace(good, body=None),
    ):
        assert not replica.receive(bad).chunk_taken  # type: ignore[arg-type]
    assert replica.receive(good).chunk_taken and replica.term == TERM


def _sequencer(count: int = 23) -> Sequencer:
    sequencer = Sequencer(TERM, clock=lambda: 1.0)  # equal claims are equal entries
    origin = Origin(B)
    for i in range(count):
        address = ADDRESSES[i % 3]
        sequencer.decide(origin.write(Claim("server", f"n{i}", address, {"i": i % 2}), TERM))
        if i % 5 == 0:
            sequencer.decide(origin.write(JoinGroup(f"g{i % 2}", address, {}), TERM))
    sequencer.flush()
    sequencer.chunk_records = 4
    return sequencer


@settings(max_examples=100)
@given(st.randoms(use_true_random=False), st.integers(0, 3))
def test_any_order_and_duplicates_install_the_sequencers_table_at_the_last_chunk(
    rnd: object, duplicates: int
) -> None:
    sequencer = _sequencer()
    chunks = sequencer.stream()
    assert len(chunks) > 3
    mail = chunks + [chunks[i % len(chunks)] for i in range(duplicates)]
    rnd.shuffle(mail)  # type: ignore[attr-defined]
    replica = Replica(C)
    seen: set[int] = set()
    for chunk in mail:
        complete = seen | {chunk.index} == set(range(len(chunks)))
        was_complete = seen == set(range(len(chunks)))
        changes = replica.receive(chunk)
        seen.add(chunk.index)
        if not complete or was_complete:
            # Nothing is installed before the last chunk, nor again after it.
            assert replica.term == TERM if was_complete else replica.term != TERM
            assert not changes
    assert (replica.term, replica.seq) == (sequencer.term, sequencer.seq)
    assert table_state(replica.table) == table_state(sequencer.table)
    # The sequencer's order too (listings, a group's join order).
    assert replica.names() == sequencer.table.names()
    assert replica.table.explicit_members() == sequencer.table.explicit_members()
    assert not replica.receiving


def test_until_the_last_chunk_the_old_table_answers() -> None:
    old = _sequencer(3)
    replica = Replica(C)
    for chunk in old.stream():
        replica.receive(chunk)
    sequencer = _sequencer(20)
    sequencer.term = TERM  # the same term, further along
    chunks = sequencer.stream()
    for chunk in chunks[:-1]:
        assert replica.receive(chunk).chunk_taken
        assert replica.seq == old.seq and len(replica.names()) == 3 and replica.receiving
    changes = replica.receive(chunks[-1])
    assert replica.seq == sequencer.seq and len(replica.names()) == 20
    assert {e.name for e in changes.registered} == {f"n{i}" for i in range(3, 20)}


def test_a_newer_transfer_starts_over_and_an_older_ones_chunks_are_dropped() -> None:
    sequencer = _sequencer()
    first, second = sequencer.stream(), sequencer.stream()
    replica = Replica(C)
    replica.receive(first[0])
    replica.receive(second[1])  # a newer transfer: the first one is dropped
    for chunk in first:
        assert not replica.receive(chunk).chunk_taken
    assert replica.term != TERM
    for chunk in second:
        replica.receive(chunk)
    assert replica.term == TERM
    assert table_state(replica.table) == table_state(sequencer.table)


def test_a_newer_snapshot_supersedes_the_one_under_way_and_an_older_one_is_dropped() -> None:
    sequencer = _sequencer()
    older = sequencer.stream()
    sequencer.decide(Origin(C).write(Claim("server", "late", ADDRESSES[3], {}), TERM))
    sequencer.flush()
    newer = sequencer.stream()
    replica = Replica(C)
    replica.receive(newer[0])
    assert not any(replica.receive(chunk).chunk_taken for chunk in older)
    for chunk in newer[1:]:
        replica.receive(chunk)
    assert replica.seq == sequencer.seq and replica.whereis("late", "server") is not None


def test_a_fence_raised_during_a_transfer_drops_it() -> None:
    """A Collect of a newer term answered half-way: the older snapshot may never be
    installed (the promise to the new sequencer), however many chunks still come."""
    sequencer = _sequencer()
    chunks = sequencer.stream()
    replica = Replica(C)
    replica.receive(chunks[0])
    assert replica.owned_state(Collect(Term(2, B))).accepted
    assert not replica.receiving  # its table freed
    assert not any(replica.receive(chunk).chunk_taken for chunk in chunks)
    assert replica.term != TERM and not replica.names()


def test_a_transfer_the_deltas_carry_the_replica_up_to_is_dropped() -> None:
    sequencer = _sequencer(3)
    replica = Replica(C)
    for chunk in sequencer.stream():
        replica.receive(chunk)
    sequencer.decide(Origin(B).write(Claim("server", "x", ADDRESSES[0], {}), TERM))
    delta = sequencer.flush()
    stale = sequencer.stream()  # the table after ``delta``
    assert len(stale) > 1 and replica.receive(stale[0]).chunk_taken and replica.receiving
    assert delta is not None
    replica.apply(delta)  # the replica holds that table now: the transfer is spent
    assert not replica.receiving
    assert replica.seq == sequencer.seq and replica.whereis("x", "server") is not None
    assert not any(replica.receive(chunk).chunk_taken for chunk in stale[1:])


def test_a_chunk_that_disagrees_with_its_transfer_on_the_nodes_down_is_dropped() -> None:
    sequencer = _sequencer()
    chunks = sequencer.stream()
    replica = Replica(C)
    assert replica.receive(chunks[0]).chunk_taken
    odd = replace(chunks[1], down=frozenset({B}))
    assert not replica.receive(odd).chunk_taken
    assert replica.receive(chunks[1]).chunk_taken


def test_a_snapshot_the_replica_already_has_is_dropped() -> None:
    sequencer = _sequencer()
    replica = Replica(C)
    for chunk in sequencer.stream():
        replica.receive(chunk)
    assert not any(replica.receive(chunk).chunk_taken for chunk in sequencer.stream())


def test_an_empty_table_is_one_chunk() -> None:
    sequencer = Sequencer(TERM)
    chunks = sequencer.stream()
    assert len(chunks) == 1
    replica = Replica(C)
    replica.receive(chunks[0])
    assert replica.term == TERM and not replica.names()


def test_chunks_hold_at_most_chunk_records_records() -> None:
    sequencer = _sequencer()
    snapshot = sequencer.snapshot()
    chunks = snapshot_chunks(snapshot, 1, 4)
    assert all(len(c.body) <= 4 for c in chunks)
    assert sum(len(c.body) for c in chunks) == len(snapshot.entries) + len(snapshot.members)
    assert {c.count for c in chunks} == {len(chunks)}


def test_chunks_keep_a_transfer_from_being_asked_again() -> None:
    pacer = SnapshotPacer(first_wait=0.5)
    pacer.lagging(0.0, True)
    pacer.asked(0.0)
    for now in (0.4, 0.8, 1.2, 1.6):  # a chunk every 0.4 s: a slow transfer, moving
        pacer.progress(now)
        assert not pacer.due(now + 0.45)
    assert pacer.due(1.6 + 0.5)  # the chunks stopped: ask again


def test_progress_without_a_request_changes_nothing() -> None:
    pacer = SnapshotPacer(gap_wait=0.05)
    pacer.lagging(0.0, True)
    pacer.progress(0.01)
    assert pacer.due(0.06)


# ---- catching up from the sequencer's log ----------------------------------------------


def test_a_replica_that_missed_a_few_effects_gets_them_from_the_log() -> None:
    sequencer = _sequencer(5)
    replica = Replica(C)
    for chunk in sequencer.stream():
        replica.receive(chunk)
    at, origin = replica.seq, Origin(B)
    for i in range(3):  # deltas the replica never gets
        sequencer.decide(origin.write(Claim("server", f"m{i}", ADDRESSES[0], {}), TERM))
    sequencer.flush()
    request = replica.need_snapshot() or SnapshotRequest(C, A, replica.term, replica.seq)
    delta = sequencer.catch_up(request)
    assert delta is not None and (delta.first_seq, delta.last_seq) == (at + 1, sequencer.seq)
    replica.apply(delta)
    assert replica.seq == sequencer.seq
    assert table_state(replica.table) == table_state(sequencer.table)


def test_the_log_is_bounded_and_a_replica_behind_it_gets_the_table() -> None:
    sequencer = Sequencer(TERM, clock=lambda: 1.0, log_ops=4)
    origin = Origin(B)
    for i in range(10):
        sequencer.decide(origin.write(Claim("server", f"n{i}", ADDRESSES[0], {}), TERM))
    assert sequencer.catch_up(SnapshotRequest(C, A, TERM, 5)) is None  # 6 is gone
    delta = sequencer.catch_up(SnapshotRequest(C, A, TERM, 6))
    assert delta is not None and [op.name for op in delta.ops] == ["n6", "n7", "n8", "n9"]
    assert sequencer.catch_up(SnapshotRequest(C, A, TERM, 10)) is None  # has everything
    # Another term's replica holds another table: only the table helps.
    assert sequencer.catch_up(SnapshotRequest(C, A, Term(1, B), 8)) is None
    assert sequencer.catch_up(SnapshotRequest(C, A, Term(0, A), 0)) is None


# ---- a joiner's mirror, filled as the chunks come (EarlyMirror) ------------------------


class _Mirror(Mirror):
    """The mirror as RegistryDist keeps it: an update, or (None) a rewrite from the replica."""

    def write(self, update: MirrorUpdate | None, replica: Replica) -> None:  # type: ignore[override]
        if update is None:
            self.names, self.members = table_state(replica.table)
        else:
            super().write(update)

    def is_replica(self, replica: Replica) -> bool:
        return (self.names, self.members) == table_state(replica.table)


@settings(max_examples=200)
@given(
    st.randoms(use_true_random=False),
    st.integers(0, 4),
    st.booleans(),
    st.sampled_from(["none", "fence", "lost", "snapshot"]),
)
def test_a_joiners_mirror_is_its_replica_after_every_install(
    rnd: object, duplicates: int, two_transfers: bool, meanwhile: str
) -> None:
    """Chunks of one or two transfers (of two versions), in any order and repeated,
    perhaps with something else happening to the replica half-way: after every install
    the mirror equals the replica, and until then it holds only entries of the
    snapshots sent (never a name nobody had)."""
    sequencer = _sequencer(12)
    mail = list(sequencer.stream())
    sent = {e.key: [e] for e in sequencer.table.names()}
    if two_transfers:
        sequencer.decide(Origin(B).write(Claim("server", "n1", ADDRESSES[0], {"x": 1}), TERM))
        sequencer.decide(Origin(C).write(Claim("server", "late", ADDRESSES[3], {}), TERM))
        sequencer.flush()
        for e in sequencer.table.names():
            sent.setdefault(e.key, []).append(e)
        mail += sequencer.stream()
    mail += [mail[i % len(mail)] for i in range(duplicates)]
    rnd.shuffle(mail)  # type: ignore[attr-defined]
    replica, mirror, early = Replica(C), _Mirror(), EarlyMirror()
    for step, chunk in enumerate(mail):
        if step == len(mail) // 2 and meanwhile != "none":
            if meanwhile == "fence":
                replica.owned_state(Collect(Term(2, B)))
            elif meanwhile == "lost":  # a chunk that never comes
                continue
            else:  # a whole snapshot of another term installed here
                other = Sequencer(Term(1, B, 1), clock=lambda: 1.0)
                other.decide(Origin(B).write(Claim("server", "own", ADDRESSES[1], {}), other.term))
                changes = replica.install(other.snapshot())
                mirror.write(
                    early.other(replica.table, changes) if changes else MirrorUpdate(), replica
                )
                assert mirror.is_replica(replica)
        version = (replica.term, replica.seq)
        was_empty = replica.empty_before(chunk.term)
        changes = replica.receive(chunk)
        installed = (replica.term, replica.seq) != version
        mirror.write(early.chunk(replica.table, changes, was_empty, installed), replica)
        if installed:
            assert mirror.is_replica(replica)
        else:
            held = table_state(replica.table)[0]
            assert all(e in sent.get(k, []) or held.get(k) == e for k, e in mirror.names.items())
    if replica.term == TERM:
        assert mirror.is_replica(replica)


def test_a_joiners_mirror_fills_chunk_by_chunk_and_the_last_writes_only_its_own() -> None:
    sequencer = _sequencer(12)
    chunks = sequencer.stream()
    replica, mirror, early = Replica(C), _Mirror(), EarlyMirror()
    for count, chunk in enumerate(chunks[:-1], start=1):
        was_empty = replica.empty_before(chunk.term)
        changes = replica.receive(chunk)
        update = early.chunk(replica.table, changes, was_empty, False)
        assert update is not None and len(update.entries) == min(4, 12 - 4 * (count - 1))
        mirror.write(update, replica)
        assert not replica.names() and replica.term != TERM  # nothing installed yet
    was_empty = replica.empty_before(chunks[-1].term)
    changes = replica.receive(chunks[-1])
    update = early.chunk(replica.table, changes, was_empty, True)
    assert update is not None and not update.dropped_names
    assert len(update.entries) < len(replica.names())  # the earlier chunks are not written again
    mirror.write(update, replica)
    assert mirror.is_replica(replica)


# ---- the sequencer's transfers under way (Streams) -------------------------------------


def test_streams_send_every_chunk_of_a_transfer_and_take_turns() -> None:
    sequencer = _sequencer()
    streams = Streams()
    streams.start({B: "b"}, sequencer.stream_lazily(), TERM)
    streams.start({C: "c"}, sequencer.stream_lazily(), TERM)
    sent: list[tuple[list[object], SnapshotChunk]] = []
    while (step := streams.next(TERM)) is not None:
        sent.append(step)
    count = sent[0][1].count
    assert [to for to, _ in sent] == [["b"], ["c"]] * count  # in turns
    assert [c.index for to, c in sent if to == ["b"]] == list(range(count))
    assert not streams


def test_a_new_transfer_to_a_node_replaces_its_older_one() -> None:
    sequencer = _sequencer()
    streams = Streams()
    streams.start({B: "b", C: "c"}, sequencer.stream_lazily(), TERM)  # a takeover's, to both
    _, first = streams.next(TERM) or ([], None)
    streams.start({B: "b"}, sequencer.stream_lazily(), TERM)  # b asked again
    seen: dict[int, list[object]] = {}
    while (step := streams.next(TERM)) is not None:
        to, chunk = step
        seen.setdefault(chunk.transfer, []).extend(to)
    assert first is not None
    assert set(seen[first.transfer]) == {"c"}  # b gets only its newer transfer now
    assert set(seen[first.transfer + 1]) == {"b"}


def test_a_transfer_of_a_term_no_longer_sequenced_is_dropped() -> None:
    sequencer = _sequencer()
    streams = Streams()
    streams.start({B: "b"}, sequencer.stream_lazily(), TERM)
    assert streams.next(TERM) is not None
    assert streams.next(Term(2, B)) is None and not streams


def test_a_node_that_left_gets_no_more_chunks() -> None:
    sequencer = _sequencer()
    streams = Streams()
    streams.start({B: "b", C: "c"}, sequencer.stream_lazily(), TERM)
    streams.forget([B])
    to = set()
    while (step := streams.next(TERM)) is not None:
        to.update(step[0])
    assert to == {"c"}
