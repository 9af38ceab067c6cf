"""Split-brain decisions: is this side of a partition the one that may keep writing?

Pure: the caller (:class:`~thespian_cluster.actors.split_brain.SplitBrainDetector`)
supplies the expected membership (``cluster_nodes``), this node's name, the strategy
and a view of every node NodeMonitor knows; :func:`decide` returns a
:class:`Verdict` and :func:`minority_plan` what the node must do about it.

What a side is
--------------

This node's *side* is every node it can reach: itself, and every node whose health
is ``up`` or ``suspect`` (suspicion is shown, never acted on). Every other node is

* **dead** — ``down`` for a reason that proves its process is gone: ``refused`` (its
  admin port refused a connection), ``left`` (it said goodbye) or ``restarted`` (a new
  incarnation answers at its address). A dead node is on no side;
* **unreachable** — ``down`` by ``timeout`` (hung, or cut off: it may be alive on the
  other side), or an expected node this node has **never seen** (it may have started
  on the other side). ``partition_detected`` is true when any node is unreachable.

Only the nodes of ``cluster_nodes`` count towards a decision; a node that is not
listed (joined for a rolling rename or a scale-up) is reported but carries no vote
and cannot be the oldest. Every node must have the same ``cluster_nodes`` (and
``master_node``): the rules below are designed so that *at most one side wins* when
each side sees the other as down by timeout, and that argument needs one list.

The strategies
--------------

``winner_takes_all``
    This side wins if it holds a strict majority of ``cluster_nodes``. **Dead nodes
    still count in the denominator** (a static quorum, as in ZooKeeper or Raft): a
    node seen refused here may be restarted on the other side, and a denominator that
    shrank on one side only could let both sides win. **Ties** (exactly half, e.g. 2 |
    2 of 4) go to the side holding the smallest name of ``cluster_nodes`` — the rule
    of Akka's keep-majority (lowest address), which both sides compute alike from
    the configuration alone. A never-seen node counts against this side, so a node
    that starts alone in a 3-node cluster is not a winner until one more joins.

``oldest_node``
    This side wins if it holds the oldest live expected node (earliest ``started_at``
    of its current incarnation, then the smallest name). Dead nodes are not
    candidates: they are on no side. A node down by timeout is a candidate with the
    start time known from before the cut. An expected node never seen has an unknown
    start time and may be older than everyone here, so **while any expected node that
    is not dead has never been seen, this side is not a winner** (a cluster that
    starts during a network cut must not elect two oldest nodes).

``configured_master``
    This side wins if it holds ``master_node`` (whether or not it is listed in
    ``cluster_nodes``). If the master is dead or never seen, no side wins.

Edge cases
----------

* **Empty** ``cluster_nodes``: there is no expected membership, so
  ``winner_takes_all`` and ``oldest_node`` cannot protect anything and every side is
  a winner (the seeds' behaviour); partitions are still detected and reported, with
  every known node treated as expected. ``configured_master`` still needs the master.
* **A single-node cluster** (``cluster_nodes = [me]``): a majority of one, the oldest
  of one; always the winner under ``winner_takes_all`` and ``oldest_node``.
* This node itself is always on its side, even if the view omits it.

What a loser does (:func:`minority_plan`, setting ``split_brain_minority_action``)
-------------------------------------------------------------------------------

``advisory``: nothing but report. ``readonly``: refuse global claims, joins and meta
updates (reads keep working). ``shutdown``: stop the node's cluster supervisor — but
only when this side lost a *partition* (a once-seen expected node is down by
timeout); a node that merely waits for never-seen nodes, or outlived dead ones, has
no other side to make way for and acts as ``readonly`` instead (otherwise a node
starting before its peers would stop its own membership and could never join).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Strategy = Literal["winner_takes_all", "oldest_node", "configured_master"]
MinorityAction = Literal["advisory", "readonly", "shutdown"]
#: What the node does now: ``none`` (a winner) or the minority action it carries out.
Action = Literal["none", "advisory", "readonly", "shutdown"]
NodeHealth = Literal["up", "suspect", "down"]

#: ``down`` reasons that prove the node's process is gone (see the module docstring).
DEAD_REASONS = frozenset({"refused", "left", "restarted"})


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as this node sees it (from NodeMonitor's ``GetNodeStatus``)."""

    name: str
    health: NodeHealth
    reason: str | None = None  # why it is down: timeout, refused, left, restarted
    started_at: float | None = None  # wall clock of its current incarnation

    @property
    def reachable(self) -> bool:
        return self.health != "down"

    @property
    def dead(self) -> bool:
        return self.health == "down" and self.reason in DEAD_REASONS


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`decide` concluded; every list is sorted."""

    node: str
    strategy: Strategy
    master_node: str | None
    expected: tuple[str, ...]
    reachable: tuple[str, ...]  # this side: this node and every node up or suspect
    unreachable: tuple[str, ...]  # down by timeout, or expected and never seen
    never_seen: tuple[str, ...]  # the expected nodes among ``unreachable`` never seen
    dead: tuple[str, ...]  # down as refused, left or restarted
    winner: bool
    reason: str

    @property
    def partition_detected(self) -> bool:
        return bool(self.unreachable)

    @property
    def lost(self) -> tuple[str, ...]:
        """Unreachable nodes that were seen before: the evidence of a real cut."""
        return tuple(n for n in self.unreachable if n not in self.never_seen)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the node must do about a :class:`Verdict` (see :func:`minority_plan`)."""

    action: Action
    writable: bool  # may this node take global claims, joins and meta updates
    stop_cluster: bool  # must it stop its cluster supervisor now
    reason: str = field(default="")


def decide(
    *,
    expected: Sequence[str],
    me: str,
    strategy: Strategy,
    master_node: str | None,
    nodes: Iterable[NodeView],
) -> Verdict:
    """The verdict of node ``me`` from its view ``nodes``; see the module docstring.

    Deterministic: nodes that pass the same ``expected``, ``strategy``,
    ``master_node`` and the same view of every node (their own entries being
    reachable) reach the same ``winner``, whoever ``me`` is among them.
    """
    views = {v.name: v for v in nodes}
    if me not in views or not views[me].reachable:
        views[me] = NodeView(me, "up", None, views[me].started_at if me in views else None)
    wanted = tuple(sorted(set(expected)))
    reachable = tuple(sorted(n for n, v in views.items() if v.reachable))
    dead = tuple(sorted(n for n, v in views.items() if v.dead))
    never_seen = tuple(n for n in wanted if n not in views)
    cut_off = {n for n, v in views.items() if not v.reachable and not v.dead}
    unreachable = tuple(sorted(cut_off | set(never_seen)))
    side = frozenset(reachable)
    if strategy == "configured_master":
        winner, reason = _by_master(master_node, side, views)
    elif not wanted:
        winner, reason = True, "no cluster_nodes configured: every side keeps writing"
    elif strategy == "winner_takes_all":
        winner, reason = _by_majority(wanted, side)
    else:
        winner, reason = _by_age(wanted, side, views)
    return Verdict(
        node=me,
        strategy=strategy,
        master_node=master_node,
        expected=wanted,
        reachable=reachable,
        unreachable=unreachable,
        never_seen=never_seen,
        dead=dead,
        winner=winner,
        reason=reason,
    )


def _by_majority(expected: tuple[str, ...], side: frozenset[str]) -> tuple[bool, str]:
    here = sum(1 for n in expected if n in side)
    total = len(expected)
    counted = f"{here} of {total} expected nodes reachable"
    if 2 * here > total:
        return True, f"majority: {counted}"
    if 2 * here == total:
        tie_breaker = expected[0]
        if tie_breaker in side:
            return True, f"tie: {counted}; this side holds {tie_breaker!r}, the smallest name"
        return False, f"tie: {counted}; the other side holds {tie_breaker!r}, the smallest name"
    return False, f"minority: {counted}"


def _by_age(
    expected: tuple[str, ...], side: frozenset[str], views: dict[str, NodeView]
) -> tuple[bool, str]:
    candidates = [views[n] for n in expected if n in views and not views[n].dead]
    unknown = [n for n in expected if n not in views or views[n].started_at is None]
    unknown = [n for n in unknown if n not in views or not views[n].dead]
    if unknown:
        return False, f"the age of expected node(s) {', '.join(unknown)} is unknown (never seen)"
    if not candidates:  # every expected node is dead (this node is not listed)
        return False, "every expected node is dead"
    oldest = min(candidates, key=lambda v: (v.started_at or 0.0, v.name))
    if oldest.name in side:
        return True, f"this side holds the oldest live node {oldest.name!r}"
    return False, f"the oldest live node {oldest.name!r} is unreachable"


def _by_master(
    master: str | None, side: frozenset[str], views: dict[str, NodeView]
) -> tuple[bool, str]:
    if master is None:
        return False, "configured_master without master_node"
    if master in side:
        return True, f"this side holds the master {master!r}"
    view = views.get(master)
    if view is None:
        return False, f"the master {master!r} was never seen"
    if view.dead:
        return False, f"the master {master!r} is dead ({view.reason}); no side may write"
    return False, f"the master {master!r} is unreachable"


def minority_plan(verdict: Verdict, action: MinorityAction) -> Plan:
    """What ``verdict``'s node must do under ``split_brain_minority_action = action``."""
    if verdict.winner:
        return Plan("none", writable=True, stop_cluster=False, reason=verdict.reason)
    if action == "advisory":
        return Plan("advisory", writable=True, stop_cluster=False, reason=verdict.reason)
    if action == "shutdown" and verdict.lost:
        why = f"lost a partition ({verdict.reason}); unreachable: {', '.join(verdict.lost)}"
        return Plan("shutdown", writable=False, stop_cluster=True, reason=why)
    return Plan("readonly", writable=False, stop_cluster=False, reason=verdict.reason)
