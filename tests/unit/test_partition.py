"""Split-brain decisions (core/partition.py): the documented answers, and over
generated membership views the two properties the strategies exist for:

* every node of one connected side reaches the same verdict from the same view;
* at most one side of a split wins, for each strategy, when each side sees the other
  as down by timeout (or never saw it), whatever the dead nodes look like.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thespian_cluster.actors import split_brain
from thespian_cluster.core.partition import (
    NodeView,
    Strategy,
    Verdict,
    decide,
    minority_plan,
)
from thespian_cluster.supervisors import node as node_supervisor

STRATEGIES: tuple[Strategy, ...] = ("winner_takes_all", "oldest_node", "configured_master")


def up(name: str, started: float = 0.0) -> NodeView:
    return NodeView(name, "up", None, started)


def down(name: str, reason: str = "timeout", started: float = 0.0) -> NodeView:
    return NodeView(name, "down", reason, started)


def verdict(
    me: str,
    nodes: list[NodeView],
    expected: tuple[str, ...] = ("a", "b", "c"),
    strategy: Strategy = "winner_takes_all",
    master: str | None = None,
) -> Verdict:
    return decide(expected=expected, me=me, strategy=strategy, master_node=master, nodes=nodes)


# ---- the documented answers ------------------------------------------------------------


def test_a_majority_wins_and_the_minority_loses() -> None:
    majority = verdict("a", [up("a"), up("b"), down("c")])
    assert majority.winner and majority.partition_detected
    assert majority.reachable == ("a", "b") and majority.unreachable == ("c",)
    minority = verdict("c", [down("a"), down("b"), up("c")])
    assert not minority.winner and minority.unreachable == ("a", "b")
    assert "minority: 1 of 3" in minority.reason


def test_a_tie_goes_to_the_side_holding_the_smallest_expected_name() -> None:
    expected = ("a", "b", "c", "d")
    left = verdict("b", [up("a"), up("b"), down("c"), down("d")], expected)
    right = verdict("d", [down("a"), down("b"), up("c"), up("d")], expected)
    assert left.winner and not right.winner
    assert "'a', the smallest name" in left.reason and "'a'" in right.reason


def test_a_never_seen_expected_node_counts_as_unreachable() -> None:
    alone = verdict("a", [up("a")])
    assert alone.never_seen == ("b", "c") and alone.unreachable == ("b", "c")
    assert alone.partition_detected and not alone.winner and not alone.lost
    assert verdict("a", [up("a"), up("b")]).winner  # 2 of 3: enough, c still unseen


def test_a_single_node_cluster_and_an_empty_cluster_nodes_win() -> None:
    for strategy in ("winner_takes_all", "oldest_node"):
        single = verdict("a", [up("a", 5.0)], ("a",), strategy)  # type: ignore[arg-type]
        assert single.winner and not single.partition_detected
        empty = verdict("a", [up("a"), down("b")], (), strategy)  # type: ignore[arg-type]
        assert empty.winner and empty.unreachable == ("b",)  # still reported
    lone = verdict("a", [up("a")], (), "configured_master", master="b")
    assert not lone.winner  # the master rule does not need cluster_nodes


def test_nodes_not_in_cluster_nodes_carry_no_vote() -> None:
    crowd = verdict("c", [up("c"), up("x"), up("y"), down("a"), down("b")])
    assert crowd.reachable == ("c", "x", "y") and not crowd.winner
    outsider = verdict("x", [up("x"), up("a"), up("b"), down("c")])
    assert outsider.winner  # x follows its side: a and b are a majority


def test_dead_nodes_are_on_no_side_but_keep_their_place_in_the_quorum() -> None:
    survivor = verdict("a", [up("a"), down("b", "refused"), down("c", "left")])
    assert survivor.dead == ("b", "c") and not survivor.partition_detected
    assert not survivor.winner  # static quorum: 1 of 3, a dead node may come back elsewhere


def test_oldest_node_ignores_dead_nodes_and_needs_every_age() -> None:
    ages = {"a": 1.0, "b": 2.0, "c": 3.0}

    def views(**health: str) -> list[NodeView]:
        return [
            NodeView(n, "down" if h != "up" else "up", None if h == "up" else h, ages[n])
            for n, h in health.items()
        ]

    # a, the oldest, was killed (refused): dead, not on the other side.
    assert verdict("b", views(a="refused", b="up", c="up"), strategy="oldest_node").winner
    # a cut off (timeout) may be alive on the other side: it holds the oldest node.
    cut = verdict("b", views(a="timeout", b="up", c="up"), strategy="oldest_node")
    assert not cut.winner and "'a' is unreachable" in cut.reason
    assert verdict("a", views(a="up", b="timeout", c="timeout"), strategy="oldest_node").winner
    unseen = verdict("a", views(a="up", b="up"), strategy="oldest_node")
    assert not unseen.winner and "unknown" in unseen.reason


def test_configured_master_follows_the_master() -> None:
    assert verdict("b", [up("a"), up("b"), down("c")], strategy="configured_master", master="c")
    with_master = verdict("c", [down("a"), down("b"), up("c")], "abc", "configured_master", "c")
    assert with_master.winner
    without = verdict("a", [up("a"), up("b"), down("c")], strategy="configured_master", master="c")
    assert not without.winner
    dead = verdict("a", [up("a"), up("b"), down("c", "refused")], "abc", "configured_master", "c")
    assert not dead.winner and "dead" in dead.reason


def test_this_node_is_always_on_its_side() -> None:
    assert verdict("a", [down("a"), up("b")]).reachable == ("a", "b")
    assert verdict("a", [up("b")]).reachable == ("a", "b")


def test_minority_plans() -> None:
    lost = verdict("c", [down("a"), down("b"), up("c")])
    waiting = verdict("a", [up("a")])  # b and c never seen: no other side to make way for
    won = verdict("a", [up("a"), up("b"), down("c")])
    assert minority_plan(won, "shutdown").action == "none"
    assert minority_plan(won, "readonly").writable
    assert minority_plan(lost, "advisory").writable
    assert minority_plan(lost, "advisory").action == "advisory"
    readonly = minority_plan(lost, "readonly")
    assert (readonly.action, readonly.writable, readonly.stop_cluster) == ("readonly", False, False)
    shutdown = minority_plan(lost, "shutdown")
    assert (shutdown.action, shutdown.writable, shutdown.stop_cluster) == ("shutdown", False, True)
    assert "a, b" in shutdown.reason
    degraded = minority_plan(waiting, "shutdown")
    assert (degraded.action, degraded.stop_cluster) == ("readonly", False)


def test_the_detector_names_the_root_as_the_root_does() -> None:
    assert split_brain.ROOT_GLOBAL_NAME == node_supervisor.ROOT_GLOBAL_NAME
    assert split_brain.CLUSTER_CHILD == node_supervisor.CLUSTER_CHILD
    cls = node_supervisor.NodeSupervisor
    assert f"{cls.__module__}.{cls.__qualname__}" == split_brain.ROOT_CLASS


# ---- generated splits --------------------------------------------------------------------

NAMES = [f"n{i}" for i in range(7)]


@dataclass
class Split:
    """Nodes on side A, on side B and dead; who of them is expected; each side's view."""

    expected: tuple[str, ...]
    sides: tuple[tuple[str, ...], tuple[str, ...]]
    views: tuple[list[NodeView], list[NodeView]]
    master: str


@st.composite
def splits(draw: st.DrawFn) -> Split:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=7, unique=True))
    place = {n: draw(st.sampled_from(["A", "B", "dead"])) for n in names}
    side_a = tuple(n for n in names if place[n] == "A")
    side_b = tuple(n for n in names if place[n] == "B")
    if not side_a or not side_b:  # two sides, always
        place.update({names[0]: "A", names[1]: "B"})
        side_a = tuple(n for n in names if place[n] == "A")
        side_b = tuple(n for n in names if place[n] == "B")
    expected = tuple(n for n in names if draw(st.booleans()))
    if not expected:
        expected = (names[0],)
    # started_at is a property of the incarnation: both sides know the same one.
    ages = {n: draw(st.sampled_from([1.0, 2.0, 3.0, 4.0])) for n in names}

    def view_from(own: str) -> list[NodeView]:
        view = []
        for n in names:
            where = place[n]
            if where == own:
                health = draw(st.sampled_from(["up", "suspect"]))
                view.append(NodeView(n, health, None, ages[n]))
                continue
            choices = ["timeout", "unseen"]
            if where == "dead":
                choices += ["refused", "left", "restarted"]
            seen = draw(st.sampled_from(choices))
            if seen == "unseen":
                continue  # never seen: absent from the view
            view.append(NodeView(n, "down", seen, ages[n]))
        return view

    master = draw(st.sampled_from([*names, "nobody"]))
    return Split(expected, (side_a, side_b), (view_from("A"), view_from("B")), master)


def _decide(split: Split, side: int, me: str, strategy: Strategy) -> Verdict:
    return decide(
        expected=split.expected,
        me=me,
        strategy=strategy,
        master_node=split.master,
        nodes=split.views[side],
    )


@settings(max_examples=400, deadline=None)
@given(splits(), st.sampled_from(STRATEGIES))
def test_every_node_of_a_side_reaches_the_same_verdict(split: Split, strategy: Strategy) -> None:
    for side, members in enumerate(split.sides):
        verdicts = [_decide(split, side, me, strategy) for me in members]
        first = verdicts[0]
        for other in verdicts[1:]:
            assert (other.winner, other.reachable, other.unreachable, other.dead) == (
                first.winner,
                first.reachable,
                first.unreachable,
                first.dead,
            )
        assert first.reachable == tuple(sorted(members))
        seen_dead = {v.name for v in split.views[side] if v.dead}
        missing = set(split.expected) - set(members) - seen_dead
        if missing:  # an expected node that is neither here nor known dead
            assert first.partition_detected and missing <= set(first.unreachable)


@settings(max_examples=1000, deadline=None)
@given(splits(), st.sampled_from(STRATEGIES))
def test_at_most_one_side_of_a_split_wins(split: Split, strategy: Strategy) -> None:
    winners = [
        _decide(split, side, members[0], strategy).winner
        for side, members in enumerate(split.sides)
    ]
    assert winners.count(True) <= 1, (split, strategy)


@settings(max_examples=300, deadline=None)
@given(splits())
def test_a_side_with_a_strict_majority_of_expected_nodes_wins(split: Split) -> None:
    for side, members in enumerate(split.sides):
        held = len(set(members) & set(split.expected))
        won = _decide(split, side, members[0], "winner_takes_all").winner
        if 2 * held > len(split.expected):
            assert won
        elif 2 * held < len(split.expected):
            assert not won
        else:
            assert won == (min(split.expected) in members)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_whole_cluster_in_view_has_no_partition(strategy: Strategy) -> None:
    nodes = [up("a", 1.0), up("b", 2.0), up("c", 3.0)]
    result = verdict("b", nodes, strategy=strategy, master="a")
    assert result.winner and not result.partition_detected and result.unreachable == ()
