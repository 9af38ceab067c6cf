"""The etcd backend's view of the prefix: newest wins per key, whatever order the
write answers, the watch and the listings arrive in (read your writes on the origin)."""

from __future__ import annotations

from thespian_cluster.backends.etcd.view import (
    Change,
    EtcdView,
    entry_value,
    member_key,
    member_value,
    name_key,
)
from thespian_cluster.core.table import Entry, Member
from thespian_cluster.node_table import address_at

PREFIX = "/p/"
A, B = address_at("127.0.0.1", 1001), address_at("127.0.0.1", 1002)


def _entry(name: object, address: object, meta: dict[str, object] | None = None) -> Entry:
    return Entry(name, "server", address, "n1", meta or {}, 1.0, "inc")  # type: ignore[arg-type]


def _put(name: object, address: object, revision: int, **meta: object) -> Change:
    key = name_key(PREFIX, "server", name)  # type: ignore[arg-type]
    return Change(key, revision, entry_value(_entry(name, address, dict(meta))), 7)


def test_an_older_event_never_overwrites_a_newer_record() -> None:
    view = EtcdView(PREFIX, address_at)
    view.apply([_put("x", A, 10, v=2)])  # the write's own answer, first
    applied = view.apply([_put("x", A, 9, v=1)], watched_to=9)  # the watch, late
    assert not applied.update
    record = view.entry("server", "x")
    assert record is not None and record.entry is not None
    assert record.entry.meta == {"v": 2}


def test_a_deletion_is_not_undone_by_a_late_put() -> None:
    view = EtcdView(PREFIX, address_at)
    view.apply([_put("x", A, 5)])
    key = name_key(PREFIX, "server", "x")
    removed = view.apply([Change(key, 8)])
    assert [e.name for e in removed.removed_entries] == ["x"]
    assert removed.update.dropped_names == (("server", "x"),)
    assert not view.apply([_put("x", A, 6)]).update  # older than the deletion
    assert view.entry("server", "x") is None
    assert view.apply([_put("x", B, 9)]).update  # a newer claim is a claim
    record = view.entry("server", "x")
    assert record is not None and record.entry is not None and record.entry.address == B


def test_a_listing_drops_what_is_gone_but_keeps_what_is_newer() -> None:
    view = EtcdView(PREFIX, address_at)
    view.apply([_put("old", A, 3), _put("fresh", B, 12)])
    listed = view.replace([_put("new", A, 10)], revision=10)
    assert {n for _, n in listed.update.dropped_names} == {"old"}
    assert {e.name for e in view.entries()} == {"new", "fresh"}  # 12 > the listing's 10
    assert view.revision == 10


def test_names_tuples_groups_and_foreign_keys() -> None:
    view = EtcdView(PREFIX, address_at)
    member = Member("tools", A, "n1", {"k": 1}, "inc")
    changes = [
        _put(("svc", "eu"), A, 2),
        _put("[not a tuple]", B, 3),
        Change(member_key(PREFIX, "tools", A), 4, member_value(member), 7),
        Change(PREFIX + "n/server/unencoded", 5, b"{}", 0),  # another tool's key: skipped
        Change(PREFIX + "x/noise", 6, b"hello", 0),
    ]
    applied = view.apply(changes)
    assert {e.name for e in applied.update.entries} == {("svc", "eu"), "[not a tuple]"}
    assert [m.group for m in view.members()] == ["tools"]
    assert view.owned_by_address(A) and len(view.owned_by_address(A)) == 2
