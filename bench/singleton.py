"""How fast a cluster singleton moves: SIGKILL of its node, and a network cut.

Run ``python -m bench.singleton [--runs N] [--no-cut]``; prints one JSON object.

Three nodes declare one singleton (the probe of ``thespian_cluster.testing.singletons``).
Each run applies the fault to the node running it and times, from the fault, the
survivors' first ``NodeDown`` (failure detection) and the new instance answering a
message on every survivor (found by ``Whereis``); then it brings the node back (a
restart after a kill, a heal after a cut) and waits until it stands by. The goal
(issue 19): every move within failure detection + 1 s. The cut runs place each node
in its own network namespace (root and iproute2; skipped without them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from thespian_cluster.local_cluster import ClusterNode, LocalCluster, wait_for
from thespian_cluster.netns import NetnsLab
from thespian_cluster.netns import available as netns_available
from thespian_cluster.testing.singletons import (
    Declared,
    declare,
    move,
    one_instance,
    probe_spec,
    runs,
)

NAMES = ["a", "b", "c"]
GOAL_MARGIN = 1.0  # seconds beyond failure detection


def _summary(moves: list[tuple[float, float]]) -> dict[str, Any]:
    answered = [a for a, _ in moves]
    detected = [d for _, d in moves]
    beyond = [a - d for a, d in moves]
    return {
        "runs": len(moves),
        "move_s": {"median": statistics.median(answered), "max": max(answered)},
        "detected_s": {"median": statistics.median(detected), "max": max(detected)},
        "move_beyond_detection_s": {"median": statistics.median(beyond), "max": max(beyond)},
        "goal": f"move <= detection + {GOAL_MARGIN:g} s",
        "met": all(b <= GOAL_MARGIN for b in beyond),
    }


def _runs(
    cluster: LocalCluster,
    place: Callable[[str], dict[str, Any]],
    fault: Callable[[ClusterNode], None],
    recover: Callable[[str, ClusterNode], ClusterNode],
    count: int,
    log: Path,
) -> list[tuple[float, float]]:
    first = cluster.start("a", cluster_nodes=NAMES, log_level="WARNING", **place("a"))
    for name in NAMES[1:]:
        cluster.start(name, leader=first, cluster_nodes=NAMES, log_level="WARNING", **place(name))
    cluster.wait_formed(NAMES, timeout=30)
    nodes = dict(cluster.nodes)
    declared = {n: declare(node, [probe_spec(log)]) for n, node in nodes.items()}
    holder, _ = one_instance(list(nodes.values()))
    moves = []
    for _ in range(count):
        moved = move(nodes, holder, partial(fault, nodes[holder]))
        moves.append((moved.answered, moved.detected))
        back = recover(holder, nodes[moved.to[0]])
        if back is not nodes[holder]:
            nodes[holder] = back
            declared[holder] = declare(back, [probe_spec(log)])
        cluster.wait_formed(NAMES, timeout=30)
        standing_by = declared[holder]
        wait_for(partial(_standing_by, standing_by), 30, f"{holder} to stand by again")
        holder = one_instance(list(nodes.values()))[0]
    return moves


def _standing_by(declared: Declared) -> bool:
    status = declared.status()
    return status is not None and status.role == "standby"


def kill_runs(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-singleton-") as tmp:
        work = Path(tmp)
        with LocalCluster(work) as cluster:

            def restart(name: str, leader: ClusterNode) -> ClusterNode:
                return cluster.start(name, leader=leader, cluster_nodes=NAMES, log_level="WARNING")

            moves = _runs(cluster, lambda _: {}, ClusterNode.kill, restart, count, work / "log")
            instances = len(runs(work / "log"))
    return {**_summary(moves), "instances": instances}


def cut_runs(count: int) -> dict[str, Any]:
    reason = netns_available()
    if reason:
        return {"skipped": reason}
    with tempfile.TemporaryDirectory(prefix="bench-singleton-") as tmp:
        work = Path(tmp)
        with NetnsLab() as lab, LocalCluster(work) as cluster:

            def heal(name: str, _: ClusterNode) -> ClusterNode:
                lab.heal()
                return cluster.nodes[name]

            moves = _runs(
                cluster, lab.place, lambda node: lab.cut(node.name), heal, count, work / "log"
            )
    return _summary(moves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-cut", action="store_true", help="only the SIGKILL runs")
    args = parser.parse_args()
    result = {"sigkill": kill_runs(args.runs)}
    if not args.no_cut:
        result["cut"] = cut_runs(args.runs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
