"""The node table's global mirror equals the replica after every apply and install.

RegistryDist writes ``mirror_update(replica.table, changes)`` into the real LMDB mirror
after each apply or install; read back, the mirror must hold exactly the replica's
names and memberships. The cases are the ones where a fixed-order replay of the
changes ("drops, then puts") left a released name or a left membership behind: one
delta that puts and drops the same name, and a late delta that fills a hole and drains
the buffered deltas behind it.
"""

from __future__ import annotations

from pathlib import Path

from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.replica import (
    Changes,
    Claim,
    Delta,
    JoinGroup,
    LeaveGroup,
    NodeId,
    Release,
    Replica,
    Request,
    Term,
    Write,
    mirror_update,
    table_state,
)
from thespian_cluster.core.sequencer import Sequencer
from thespian_cluster.core.table import Entry
from thespian_cluster.node_table import GlobalMirror, TableReader, _encode_global, lookup

LEADER = NodeId("a", "1")
ORIGIN = NodeId("b", "1")
TERM = Term(1, LEADER)


def _address(port: int) -> ActorAddress:
    return ActorAddress(TCPv4ActorAddress("127.0.0.1", port, external=True))


class Node:
    """A replica and its mirror, written as RegistryDist writes it."""

    def __init__(self, node_dir: Path) -> None:
        self.replica = Replica(ORIGIN)
        self.mirror = GlobalMirror(node_dir)
        self.reader = TableReader(node_dir)

    def changed(self, changes: Changes) -> None:
        self.mirror.write_update(mirror_update(self.replica.table, changes))

    def assert_mirror_is_replica(self) -> None:
        entries, members = self.reader.global_records()
        names, explicit = table_state(self.replica.table)
        assert {e.key: e for e in entries} == names
        assert {(m.group, address_key(m.address)): m for m in members} == explicit


def _decide(sequencer: Sequencer, *requests: Request) -> Delta:
    for op_id, request in enumerate(requests, start=sequencer.seq * 100 + 1):
        decision = sequencer.decide(Write(ORIGIN, op_id, request, TERM))
        assert decision is not None and decision.ok, decision
    delta = sequencer.flush()
    assert delta is not None
    return delta


def _started(tmp_path: Path) -> tuple[Sequencer, Node]:
    sequencer = Sequencer(TERM)
    node = Node(tmp_path)
    node.changed(node.replica.install(sequencer.snapshot()))
    return sequencer, node


def test_a_delta_that_puts_and_drops_a_name_leaves_no_record(tmp_path: Path) -> None:
    sequencer, node = _started(tmp_path)
    owner = _address(40001)
    delta = _decide(
        sequencer,
        Claim("server", "kept", owner, {}),
        Claim("server", "brief", owner, {}),
        Release("server", "brief"),
        JoinGroup("workers", owner, {}),
        LeaveGroup("workers", owner),
        JoinGroup("stay", owner, {}),
    )
    node.changed(node.replica.apply(delta))
    assert [e.name for e in node.reader.global_records()[0]] == ["kept"]
    node.assert_mirror_is_replica()


def test_a_late_delta_that_drains_the_buffered_ones_leaves_no_record(tmp_path: Path) -> None:
    sequencer, node = _started(tmp_path)
    owner = _address(40002)
    first = _decide(sequencer, Claim("server", "x", owner, {}), JoinGroup("g", owner, {}))
    second = _decide(sequencer, Release("server", "x"), LeaveGroup("g", owner))
    third = _decide(sequencer, Claim("server", "y", owner, {}))
    node.changed(node.replica.apply(third))  # out of order: buffered behind a hole
    node.changed(node.replica.apply(second))
    node.assert_mirror_is_replica()
    node.changed(node.replica.apply(first))  # fills the hole: all three in one Changes
    assert node.replica.seq == sequencer.seq
    assert [e.name for e in node.reader.global_records()[0]] == ["y"]
    node.assert_mirror_is_replica()


def test_a_snapshot_install_brings_the_mirror_to_the_new_table(tmp_path: Path) -> None:
    sequencer, node = _started(tmp_path)
    owner, other = _address(40003), _address(40004)
    node.changed(node.replica.apply(_decide(sequencer, Claim("server", "old", owner, {}))))
    node.changed(node.replica.apply(_decide(sequencer, JoinGroup("g", owner, {}))))
    # A delta lost on the way: the replica catches up from a snapshot.
    _decide(sequencer, Release("server", "old"), Claim("server", "new", other, {}))
    _decide(sequencer, LeaveGroup("g", owner), JoinGroup("g", other, {}))
    node.changed(node.replica.install(sequencer.snapshot()))
    assert node.replica.seq == sequencer.seq
    assert [e.name for e in node.reader.global_records()[0]] == ["new"]
    node.assert_mirror_is_replica()


def test_a_streamed_install_brings_the_mirror_to_the_new_table(tmp_path: Path) -> None:
    """A joiner's first table (everything new) and a catch-up of a table it holds part
    of, both streamed in chunks: the mirror is the replica after the last one."""
    sequencer = Sequencer(TERM)
    sequencer.chunk_records = 3
    owner, other = _address(40005), _address(40006)
    _decide(sequencer, *(Claim("server", f"n{i}", owner, {"i": i}) for i in range(10)))
    _decide(sequencer, JoinGroup("g", owner, {}), JoinGroup("h", other, {}))
    node = Node(tmp_path)
    for chunk in sequencer.stream():
        node.changed(node.replica.receive(chunk))
    assert node.replica.seq == sequencer.seq
    node.assert_mirror_is_replica()
    _decide(sequencer, Release("server", "n3"), Claim("server", "n3", other, {}))
    _decide(sequencer, LeaveGroup("g", owner), Claim("server", "n11", other, {"x": [1]}))
    for chunk in reversed(sequencer.stream()):
        node.changed(node.replica.receive(chunk))
    assert node.replica.seq == sequencer.seq
    node.assert_mirror_is_replica()


def test_global_values_are_compact_and_read_back_equal(tmp_path: Path) -> None:
    """A TCP owner's entry is stored in its compact form; any other is pickled whole."""
    mirror = GlobalMirror(tmp_path)
    entry = Entry("x", "server", _address(40007), "b", {"v": 2}, 12.5, "inc", (3, 9))
    odd = Entry(("t", "1"), "custom", "not-an-actor-address", "b", {}, 1.0, "inc", (1, 1))
    assert len(_encode_global(entry)) < 80
    mirror.replace([entry, odd], [])
    assert lookup("x", "server", "global", tmp_path) == entry
    assert lookup(("t", "1"), "custom", "global", tmp_path) == odd
    assert sorted(TableReader(tmp_path).global_records()[0], key=repr) == sorted(
        [entry, odd], key=repr
    )
    assert sorted(mirror.owned_by("b", "inc")[0], key=repr) == sorted([entry, odd], key=repr)
