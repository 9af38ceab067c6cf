"""core.records: the global scope's messages pickle by their fields and log by name."""

from __future__ import annotations

import importlib
import pickle
import sys
from dataclasses import dataclass, field

import pytest
from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import TCPv4ActorAddress

from thespian_cluster.core import replica as core
from thespian_cluster.core.records import Record, WireMessage
from thespian_cluster.core.table import Entry, Member
from thespian_cluster.global_messages import Decisions, Forwarded, NewerTerm, Writes
from thespian_cluster.messages import Register
from thespian_cluster.security import WireSerializer

ADDRESS = ActorAddress(TCPv4ActorAddress("127.0.0.1", 40001))
TERM = core.Term(3, core.NodeId("a", "inc-a"), life=2)
B = core.NodeId("b", "inc-b")
ENTRY = Entry("n1", "server", ADDRESS, "b", {"capabilities": {"tools": {}}}, 1.5, "inc-b", (3, 7))


def _messages() -> list[object]:
    claim = core.Claim("name", "n1", ADDRESS, {"k": [1, 2]})
    delta = core.Delta(
        TERM,
        7,
        (
            core.PutName("name", "n1", ADDRESS, B, {}, 1.0),
            core.DropName("name", "n0"),
            core.PutMember("g", ADDRESS, B, {}),
            core.DropMember("g", ADDRESS),
            core.PurgeAddress(ADDRESS),
            core.PurgeNode(B),
        ),
    )
    return [
        Writes(
            writes=[core.Write(B, 11, claim, TERM), core.Write(B, 12, core.Release("k", "n"), TERM)]
        ),
        Decisions(decisions=[core.Decision(11, TERM, 7, core.OK, ENTRY)], delta=delta),
        core.Snapshot(
            TERM, 9, (ENTRY,), (Member("g", ADDRESS, "b", {"m": 1}, "inc-b"),), frozenset({B})
        ),
        core.SnapshotRequest(B, TERM.sequencer, TERM, 4),
        NewerTerm(term=TERM),
        Forwarded(request=Register(name="x", address=ADDRESS, scope="global"), reply_to=ADDRESS),
    ]


@pytest.mark.parametrize("message", _messages(), ids=lambda m: type(m).__name__)
def test_a_message_survives_pickle_and_the_sealed_wire_unchanged(message: object) -> None:
    assert pickle.loads(pickle.dumps(message)) == message
    wire = WireSerializer("a cookie")
    assert wire.loads(wire.dumps(message)) == message


@pytest.mark.parametrize("message", _messages(), ids=lambda m: type(m).__name__)
def test_a_message_is_summed_up_by_its_class_and_repr_keeps_every_field(message: object) -> None:
    assert str(message).startswith(type(message).__name__)
    assert len(str(message)) < 120  # a summary, not the fields
    assert repr(message).startswith(type(message).__name__ + "(")
    assert len(repr(message)) > len(str(message))


def test_a_huge_snapshot_is_named_without_formatting_its_entries() -> None:
    entries = tuple(Entry(f"n{i}", "name", ADDRESS, "b") for i in range(20_000))
    assert len(str(core.Snapshot(TERM, 1, entries, ()))) < 120


def test_records_keep_str_of_their_fields_for_log_lines() -> None:
    assert "inc-a" in str(TERM)  # a Term in a log line still says which
    assert "n1" in str(ENTRY)


def test_an_inherited_dataclass_pickles_every_field_of_its_bases() -> None:
    @dataclass(frozen=True, slots=True)
    class Base(Record):
        a: int
        b: str = "b"

    @dataclass(frozen=True, slots=True)
    class Child(Base):
        c: tuple[int, ...] = field(default=())

    globals().update(Base=Base, Child=Child)  # pickle finds classes by module name
    Base.__qualname__, Child.__qualname__ = "Base", "Child"
    child = Child(1, "x", (2, 3))
    assert pickle.loads(pickle.dumps(child)) == child


def test_a_record_with_a_keyword_only_field_is_refused_where_it_is_declared() -> None:
    with pytest.raises(TypeError, match="positional"):

        @dataclass(frozen=True, slots=True, kw_only=True)
        class Bad(WireMessage):
            a: int


def _records(cls: type = Record) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_records(sub)]
    return found


def test_every_record_of_the_package_pickles_by_its_own_fields() -> None:
    importlib.import_module("thespian_cluster.backends.sequenced")  # defines NextChunk
    # (the classes modules define: @dataclass(slots=True) leaves its first build behind)
    ours = [
        c
        for c in _records()
        if c.__module__.startswith("thespian_cluster.")
        and getattr(sys.modules[c.__module__], c.__qualname__, None) is c
    ]
    assert len(ours) > 25
    for cls in ours:
        assert "_fields_of" in cls.__dict__ or cls.__dict__.get("__slots__") == (), cls


def test_a_plain_subclass_of_a_record_refuses_to_pickle_rather_than_lose_a_field() -> None:
    class Wider(core.Term):  # no @dataclass: its extra attribute would not travel
        pass

    with pytest.raises(TypeError, match="slots=True"):
        pickle.dumps(Wider(1, core.NodeId("a", "i")))
