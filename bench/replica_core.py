"""The pure global-table core alone: how fast it decides and applies, how much a name costs.

Run ``python -m bench.replica_core [--names N] [--batch B]``; prints one JSON object:

* ``sequencer_ops_per_s``: ``Sequencer.decide`` + ``flush`` (every ``batch`` writes) for
  N claims of distinct names by one origin, each by its own actor (the worst case for
  address interning).
* ``replica_apply_ops_per_s``: ``Replica.apply`` of those deltas (what every node pays).
* ``install_names_per_s``: ``Replica.install`` of the N-name snapshot (a join's catch-up).
* ``delta_bytes_per_op``: pickled size of one delta, per write (what goes on the wire).
* ``replica_bytes_per_name``: tracemalloc's growth of a replica holding N names (goal
  ≤ 1,024 bytes), beside ``name_table_bytes_per_name``, a plain NameTable of the same
  entries. Address objects are not counted: one per actor, shared by its names.

No Thespian: these are ceilings for the RegistryDist actor, not cluster figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from thespian_cluster.core.replica import (
    Claim,
    Delta,
    NodeId,
    Origin,
    PutName,
    Replica,
    Snapshot,
    Term,
)
from thespian_cluster.core.sequencer import Sequencer, Takeover
from thespian_cluster.core.table import NameTable


@dataclass(frozen=True)
class Details:
    sockname: tuple[str, int]


class Address:
    """Shaped like a Thespian ActorAddress for address_key(); pickles small."""

    __slots__ = ("addressDetails",)

    def __init__(self, port: int) -> None:
        self.addressDetails = Details(("10.0.0.1", port))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Address) and other.addressDetails == self.addressDetails

    __hash__ = None  # type: ignore[assignment]  # unhashable, like ActorAddress

    def __getstate__(self) -> Details:
        return self.addressDetails

    def __setstate__(self, state: Details) -> None:
        self.addressDetails = state


def new_sequencer(me: NodeId) -> Sequencer:
    takeover = Takeover(me, [me], 0)
    takeover.add(Replica(me).owned_state(takeover.collect()))
    return takeover.finish()[0]


def filled_replica(term: Term, deltas: list[Delta]) -> Replica:
    replica = Replica(NodeId("reader", "i1"))
    replica.install(Snapshot(term, 0, (), ()))
    for delta in deltas:
        replica.apply(delta)
    return replica


def filled_table(deltas: list[Delta]) -> NameTable:
    table = NameTable()
    for delta in deltas:
        for op in delta.ops:
            assert isinstance(op, PutName)
            table.register(op.name, op.kind, op.address, op.node.name, op.meta)
    return table


def measured(build: Callable[[], object]) -> int:
    """Bytes still held by what ``build`` returns."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del kept
    return held


def run(names: int, batch: int) -> dict[str, float | int]:
    seq_node, origin_node = NodeId("seq", "i1"), NodeId("origin", "i1")
    sequencer = new_sequencer(seq_node)
    origin = Origin(origin_node)
    meta = {"capabilities": ["tools"]}
    writes = [
        origin.write(Claim("server", f"server-{i}", Address(20_000 + i), meta), sequencer.term)
        for i in range(names)
    ]
    # The wire copies: every delta a replica applies arrives unpickled.
    deltas: list[Delta] = []
    started = time.perf_counter()
    for start in range(0, names, batch):
        for write in writes[start : start + batch]:
            sequencer.decide(write)
        delta = sequencer.flush()
        assert delta is not None
        deltas.append(delta)
    sequencer_s = time.perf_counter() - started
    wire = [pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL) for d in deltas]
    received = [pickle.loads(blob) for blob in wire]
    del writes, deltas

    replica = Replica(NodeId("reader", "i1"))
    replica.install(Snapshot(sequencer.term, 0, (), ()))  # the takeover's empty table
    started = time.perf_counter()
    for delta in received:
        replica.apply(delta)
    apply_s = time.perf_counter() - started
    assert replica.seq == names and len(replica.names()) == names
    del replica

    # Memory: a second replica applies the same deltas under tracemalloc. The address
    # objects were unpickled before, so they are not counted (one per actor, shared by
    # all its names); the plain NameTable with the same entries is the reference.
    held = measured(lambda: filled_replica(sequencer.term, received))
    plain = measured(lambda: filled_table(received))
    snapshot = sequencer.snapshot()
    joiner = Replica(NodeId("joiner", "i1"))
    started = time.perf_counter()
    joiner.install(snapshot)
    install_s = time.perf_counter() - started
    assert len(joiner.names()) == names

    return {
        "names": names,
        "batch": batch,
        "sequencer_ops_per_s": round(names / sequencer_s),
        "replica_apply_ops_per_s": round(names / apply_s),
        "install_names_per_s": round(names / install_s),
        "delta_bytes_per_op": round(sum(len(b) for b in wire) / names, 1),
        "replica_bytes_per_name": round(held / names, 1),
        "name_table_bytes_per_name": round(plain / names, 1),
        "replica_bytes_per_name_goal": 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()
    print(json.dumps(run(args.names, args.batch), indent=2))


if __name__ == "__main__":
    main()
