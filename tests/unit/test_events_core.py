"""core.events: snapshots, diffed changes with reasons, group rows, waiters (no actors)."""

from __future__ import annotations

from thespian_cluster.core import reasons as why
from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.events import (
    GroupTopic,
    MemberChange,
    NameChange,
    NamesTopic,
    ScopeEvents,
    Waiter,
)
from thespian_cluster.core.replica import MirrorUpdate
from thespian_cluster.core.table import Entry, Member

A, B, SUB, SUB2 = "addr-a", "addr-b", "subscriber", "other-subscriber"


def _entry(name: str, address: str = A, meta: dict | None = None, kind: str = "server") -> Entry:
    return Entry(name, kind, address, "n1", meta or {})


def _events(scope: ScopeEvents, update: MirrorUpdate) -> list[tuple[list, object]]:
    return scope.apply(update).events


def test_a_subscription_gets_a_snapshot_then_each_change_once_in_order() -> None:
    scope = ScopeEvents()
    scope.load([_entry("old")], [])
    assert scope.subscribe(SUB, NamesTopic()) == [_entry("old")]
    assert scope.subscribe(SUB, NamesTopic()) == [_entry("old")]  # the same subscription
    new = _entry("new")
    events = _events(scope, MirrorUpdate(entries=(new,)))
    assert events == [([SUB], NameChange("registered", new))]
    assert _events(scope, MirrorUpdate(entries=(new,))) == []  # put again, unchanged
    meta = _entry("new", meta={"v": 2})
    assert _events(scope, MirrorUpdate(entries=(meta,))) == [([SUB], NameChange("meta", meta))]
    moved = _entry("new", address=B, meta={"v": 2})
    reasons = {moved.key: why.CONFLICT}
    events = _events(scope, MirrorUpdate(entries=(moved,), reasons=reasons))
    assert events == [([SUB], NameChange("moved", moved, why.CONFLICT, previous=meta))]
    dropped = MirrorUpdate(dropped_names=(moved.key,), reasons={moved.key: why.OWNER_DIED})
    assert _events(scope, dropped) == [([SUB], NameChange("unregistered", moved, why.OWNER_DIED))]
    assert _events(scope, dropped) == []  # nothing left to drop


def test_topics_filter_by_kind_and_prefix() -> None:
    scope = ScopeEvents()
    scope.load([], [])
    scope.subscribe(SUB, NamesTopic(kind="transport"))
    scope.subscribe(SUB2, NamesTopic(prefix="tool."))
    tool, transport = _entry("tool.x"), _entry("tool.y", kind="transport")
    tuple_name = Entry(("tool.z", "v1"), "server", A, "n1")
    events = _events(scope, MirrorUpdate(entries=(tool, transport, tuple_name)))
    assert [(r, c.entry.name) for r, c in events] == [  # type: ignore[union-attr]
        ([SUB2], "tool.x"),
        ([SUB, SUB2], "tool.y"),
        ([SUB2], ("tool.z", "v1")),
    ]


def test_automatic_groups_follow_capabilities_one_row_per_address() -> None:
    scope = ScopeEvents()
    scope.load([], [])
    assert scope.subscribe(SUB, GroupTopic("tool_servers")) == []
    tools = _entry("s", meta={"capabilities": {"tools": {}}})
    events = _events(scope, MirrorUpdate(entries=(tools,)))
    joined = MemberChange("joined", Member("tool_servers", A, "n1", tools.meta))
    assert events == [([SUB], joined)]
    # a second name with tools on the same actor: the actor is one row, already in
    second = _entry("s2", meta={"capabilities": ["tools"]})
    assert _events(scope, MirrorUpdate(entries=(second,))) == []
    # the first loses its tools: the second still holds the actor in the group
    plain = _entry("s")
    assert _events(scope, MirrorUpdate(entries=(plain,))) == []
    # the actor dies: it leaves, with the reason of its names' removal
    dead = MirrorUpdate(
        dropped_names=(plain.key, second.key),
        reasons={plain.key: why.OWNER_DIED, second.key: why.OWNER_DIED},
    )
    events = _events(scope, dead)
    assert [(r, c) for r, c in events if isinstance(c, MemberChange)] == [
        ([SUB], MemberChange("left", Member("tool_servers", A, "n1", second.meta), why.OWNER_DIED))
    ]


def test_explicit_groups_and_node_down_reasons() -> None:
    scope = ScopeEvents()
    member = Member("workers", A, "n1", {})
    scope.load([], [member])
    assert scope.subscribe(SUB, GroupTopic("workers")) == [member]
    other = Member("workers", B, "n2", {})
    assert _events(scope, MirrorUpdate(members=(other,))) == [
        ([SUB], MemberChange("joined", other))
    ]
    purge = MirrorUpdate(
        dropped_members=(("workers", B),), reasons={("workers", address_key(B)): why.NODE_DOWN}
    )
    assert _events(scope, purge) == [([SUB], MemberChange("left", other, why.NODE_DOWN))]


def test_unsubscribe_is_idempotent_and_the_copy_goes_with_the_last_subscriber() -> None:
    scope = ScopeEvents()
    scope.load([], [])
    scope.subscribe(SUB, NamesTopic())
    assert scope.unsubscribe(SUB, NamesTopic()) is True
    assert scope.unsubscribe(SUB, NamesTopic()) is False
    assert not scope.has_copy
    assert _events(scope, MirrorUpdate(entries=(_entry("x"),))) == []


def test_a_dead_subscriber_is_dropped_with_its_waits() -> None:
    scope = ScopeEvents()
    scope.load([], [])
    scope.subscribe(SUB, NamesTopic())
    scope.subscribe(SUB, GroupTopic("g"))
    scope.subscribe(SUB2, NamesTopic())
    scope.wait(Waiter(("server", "later"), SUB, "request", deadline=10.0))
    assert sorted(scope.subscribers()) == [SUB2, SUB]
    topics, waits = scope.drop(SUB)
    assert set(topics) == {NamesTopic(), GroupTopic("g")} and [w.request for w in waits] == [
        "request"
    ]
    assert scope.waiting() == 0
    events = _events(scope, MirrorUpdate(entries=(_entry("later"),)))
    assert [r for r, _ in events] == [[SUB2]]


def test_waiters_are_answered_by_the_first_put_or_expire() -> None:
    scope = ScopeEvents()  # no subscription: waiters need no copy
    first = Waiter(("server", "svc"), SUB, "r1", deadline=5.0)
    second = Waiter(("server", "svc"), SUB2, "r2", deadline=50.0)
    late = Waiter(("server", "never"), SUB, "r3", deadline=5.0)
    for waiter in (first, second, late):
        scope.wait(waiter)
    assert scope.expired(now=1.0) == []
    entry = _entry("svc")
    applied = scope.apply(MirrorUpdate(entries=(entry,)))
    assert applied.answered == [(first, entry), (second, entry)] and applied.events == []
    assert scope.expired(now=6.0) == [late]
    assert scope.waiting() == 0


def test_the_steps_of_one_delta_are_reported_in_order_each_with_its_reason() -> None:
    """A delta that purges a dead owner and gives its name to another, then registers
    and drops a name: four events in that order (the end state alone would say one
    NameMoved and nothing about the short-lived name)."""
    from thespian_cluster.core.replica import (
        Changes,
        DropName,
        NodeId,
        PurgeAddress,
        PutName,
        apply_effect,
        mirror_update,
    )
    from thespian_cluster.core.table import NameTable

    node = NodeId("n1", "i1")
    table = NameTable()
    table.register("x", "server", A, "n1", {}, incarnation="i1")
    scope = ScopeEvents()
    scope.load(table.names(), [])
    scope.subscribe(SUB, NamesTopic())
    changes = Changes()
    effects = [
        PurgeAddress(A),
        PutName("server", "x", B, node, {}, 1.0),
        PutName("server", "brief", B, node, {}, 1.0),
        DropName("server", "brief"),
    ]
    for seq, effect in enumerate(effects, 1):
        apply_effect(table, effect, (1, seq), changes)
    events = [c for _, c in scope.apply(mirror_update(table, changes)).events]
    assert [(c.kind, c.entry.name, c.reason) for c in events] == [  # type: ignore[union-attr]
        ("unregistered", "x", why.OWNER_DIED),
        ("registered", "x", why.NORMAL),
        ("registered", "brief", why.NORMAL),
        ("unregistered", "brief", why.NORMAL),
    ]
    assert scope.snapshot(NamesTopic()) == [table.whereis("x", "server")]


def test_a_batch_compares_group_rows_once_so_an_actor_that_stays_is_not_reported() -> None:
    """A snapshot that drops n1 and puts n2, both on A: A stays in ``servers``
    throughout, so ``servers`` subscribers hear nothing (the names' subscribers do)."""
    scope = ScopeEvents()
    n1, n2 = _entry("n1"), _entry("n2")
    scope.load([n1], [])
    scope.subscribe(SUB, GroupTopic("servers"))
    scope.subscribe(SUB2, NamesTopic())
    batch = ("batch", (("drop", n1.key, why.PURGED), ("put", n2, why.NORMAL)), why.NORMAL)
    events = _events(scope, MirrorUpdate(steps=(batch,)))
    assert events == [
        ([SUB2], NameChange("unregistered", n1, why.PURGED)),
        ([SUB2], NameChange("registered", n2)),
    ]
    # the same two as ordered steps: A is out of the group between them
    scope.load([n1], [])
    ordered = (("drop", n1.key, why.NORMAL), ("put", n2, why.NORMAL))
    kinds = [c.kind for _, c in _events(scope, MirrorUpdate(steps=ordered))]
    assert kinds == ["unregistered", "left", "registered", "joined"]


def test_a_copy_left_without_subscribers_is_not_used_again() -> None:
    """A subscribe that failed after loading the copy leaves it behind: the next
    change drops it, so a later subscribe reloads the scope instead of trusting it."""
    scope = ScopeEvents()
    scope.load([], [])  # loaded, then the subscribe's record write failed
    scope.apply(MirrorUpdate(entries=(_entry("missed"),)))
    assert not scope.has_copy
