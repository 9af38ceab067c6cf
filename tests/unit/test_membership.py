"""Membership rules: unique names, incarnations, stale records, the leader."""

from __future__ import annotations

from thespian_cluster.core.failure_detector import FailureDetector, Health
from thespian_cluster.core.membership import Membership, NodeEvent, NodeRecord


def record(name: str, incarnation: str, started: float, port: int, **agents: object) -> NodeRecord:
    return NodeRecord(
        name=name,
        incarnation=incarnation,
        started_at=started,
        host="10.0.0.1",
        port=port,
        agents=dict(agents),
    )


def view() -> Membership:
    return Membership(record("a", "a1", 100.0, 1900), FailureDetector(1.0, 2.5))


def test_a_new_node_is_up_once_and_a_repeat_changes_nothing() -> None:
    m = view()
    b = record("b", "b1", 101.0, 1901)
    learned = m.learn(b, 0.0)
    assert learned.outcome == "new" and learned.events == (NodeEvent("up", "b", "b1"),)
    assert m.learn(b, 0.1).outcome == "known"
    moved = b.model_copy(update={"agents": {"node_monitor": "x"}})
    assert m.learn(moved, 0.2).outcome == "updated"
    assert m.record("b") == moved


def test_a_taken_name_at_another_address_is_rejected_while_its_holder_lives() -> None:
    m = view()
    m.learn(record("b", "b1", 101.0, 1901), 0.0)
    impostor = m.learn(record("b", "b2", 102.0, 1999), 0.1)
    assert impostor.outcome == "rejected" and "already in the cluster" in (impostor.reason or "")
    assert m.record("b").incarnation == "b1"  # type: ignore[union-attr]
    assert m.learn(record("a", "a2", 103.0, 1902), 0.1).outcome == "rejected"  # our own name
    # once the holder is down, the name is free for another address
    m.refused("b", "b1")
    taken_over = m.learn(record("b", "b3", 104.0, 1999), 0.2)
    assert taken_over.outcome == "new"
    assert taken_over.events == (NodeEvent("up", "b", "b3"),)


def test_a_restart_at_the_same_address_is_old_down_then_new_up() -> None:
    m = view()
    m.learn(record("b", "b1", 101.0, 1901), 0.0)
    restarted = m.learn(record("b", "b2", 105.0, 1901), 0.1)
    assert restarted.events == (
        NodeEvent("down", "b", "b1", "restarted"),
        NodeEvent("up", "b", "b2"),
    )
    # gossip of the previous life cannot bring it back
    assert m.learn(record("b", "b1", 101.0, 1901), 0.2).outcome == "stale"
    assert m.record("b").incarnation == "b2"  # type: ignore[union-attr]


def test_an_answer_from_another_incarnation_marks_the_old_one_down() -> None:
    m = view()
    m.learn(record("b", "b1", 101.0, 1901), 0.0)
    assert m.heard("b", "b2", 0.5, rtt=0.001) == [NodeEvent("down", "b", "b1", "restarted")]
    assert m.heard("b", "b2", 0.6, rtt=0.001) == []  # nothing twice
    assert m.refused("b", "b2") == []  # a refusal for an incarnation we do not hold


def test_events_follow_health_and_carry_the_incarnation() -> None:
    m = view()
    m.learn(record("b", "b1", 101.0, 1901), 0.0)
    assert m.tick(1.5) == []  # suspect is a health state, not an event
    assert m.health("b") is Health.SUSPECT
    assert m.tick(3.0) == [NodeEvent("down", "b", "b1", "timeout")]
    assert m.heard("b", "b1", 3.1, None) == [NodeEvent("up", "b", "b1")]
    assert m.left("b", "b1") == [NodeEvent("down", "b", "b1", "left")]


def test_the_leader_is_the_oldest_node_that_is_not_down() -> None:
    m = view()
    m.learn(record("z", "z1", 50.0, 1901), 0.0)
    m.learn(record("b", "b1", 100.0, 1902), 0.0)
    assert m.leader() == "z"
    m.refused("z", "z1")
    assert m.leader() == "a"  # a and b started at the same time: the name decides
    m.tick(1.5)  # suspects still count: leadership does not churn on suspicion
    assert m.leader() == "a"


def test_a_snapshot_restores_the_view_without_events() -> None:
    m = view()
    m.learn(record("b", "b1", 101.0, 1901), 0.0)
    m.learn(record("c", "c1", 102.0, 1902), 0.0)
    m.refused("c", "c1")
    again = view()
    again.restore(m.snapshot(), 10.0)
    assert again.health("b") is Health.UP and again.health("c") is Health.DOWN
    assert again.tick(10.5) == []
    assert again.learn(record("b", "b1", 101.0, 1901), 11.0).outcome == "known"
