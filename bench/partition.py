"""Network partitions, for real: five nodes in network namespaces, a 3 | 2 split, the heal.

* cut -> partition seen on both sides: from the split until every node saw every node
  of the other side ``down`` (its SplitBrainDetector decides on that event), with the
  default settings (heartbeat 0.25 s, timeout 2.5 s);
* heal -> converged table: 10,000 global names held (owned across all five nodes),
  the split, then the heal; from the heal until every node's replica holds all of
  them again (the majority purged the minority's names while it was cut off; the
  merge brings them back).

Anchors: Akka's split brain resolver ~5 s detection + stable-after, ~45 s failover
with defaults; Erlang ``global``: none (it disconnects nodes to keep the partition
fully connected).
"""

from __future__ import annotations

import time

from bench.actors import BenchWorker
from bench.common import Context, Figure, Mode, skipped
from thespian_cluster import Register, RegisterMany, lookup
from thespian_cluster.local_cluster import ClusterNode, LocalCluster, wait_for
from thespian_cluster.netns import NetnsLab, measure_partition
from thespian_cluster.netns import available as netns_available

FAMILY = "partition"
TITLE = "network partitions: 5 nodes in namespaces, a 3 | 2 split and the heal"
NAMES = ["n1", "n2", "n3", "n4", "n5"]
SIDES = [NAMES[:3], NAMES[3:]]


def steps(mode: Mode) -> int:
    return 3


def weight(mode: Mode) -> float:
    return 3.0


def run(ctx: Context) -> list[Figure]:
    reason = netns_available()
    if reason:
        return [
            skipped("partition.detect", "cut -> partition seen on both sides", "ms", reason),
            skipped("partition.converge", "heal -> converged table", "ms", reason),
        ]
    samples = {"smoke": 1, "quick": 2}.get(ctx.mode.name, 4)
    total = {"smoke": 500, "quick": 2_000}.get(ctx.mode.name, 10_000)
    with NetnsLab() as lab, LocalCluster(ctx.node_dir("partition"), log_level="WARNING") as cluster:
        settings = {"cluster_nodes": NAMES}
        first = cluster.start(NAMES[0], **lab.place(NAMES[0]), **settings)
        nodes = {NAMES[0]: first}
        for name in NAMES[1:]:
            nodes[name] = cluster.start(name, leader=first, **lab.place(name), **settings)
        cluster.wait_formed(NAMES, timeout=30)
        ctx.step("five nodes in five namespaces")
        downs = []
        logs: dict = {}
        for _ in range(samples):
            timing = measure_partition(lab, nodes, SIDES, logs=logs)
            downs.append(timing.slowest_down_ms)
        ctx.step("cut -> down on both sides")
        converge = [_converge(lab, nodes, total)]
        ctx.step("heal -> converged")
    return [
        Figure(
            "partition.detect",
            "cut -> partition seen on both sides, 3 | 2 (Akka SBR ~5 s + stable-after)",
            "ms",
            downs,
            higher_is_better=False,
            latency=True,
        ),
        Figure(
            "partition.converge",
            f"heal -> every replica holds all {total:,} global names again",
            "ms",
            converge,
            higher_is_better=False,
            latency=True,
        ),
    ]


def _converge(lab: NetnsLab, nodes: dict[str, ClusterNode], total: int) -> float:
    share = total // len(nodes)
    names: list[str] = []
    for node in nodes.values():
        owner = node.client().createActor(BenchWorker)
        mine = [f"p-{node.name}-{i}" for i in range(share)]
        for first in range(0, share, 1000):
            batch = [Register(name=n, address=owner) for n in mine[first : first + 1000]]
            node.ask(RegisterMany(registrations=batch, scope="global"), 120)
        names += mine
    sample = [*names[:: max(1, len(names) // 500)], names[-1]]

    def holds_all(node: ClusterNode) -> bool:
        return all(lookup(n, scope="global", node_dir=node.node_dir) for n in sample)

    for node in nodes.values():
        wait_for(lambda n=node: holds_all(n), 60, f"{node.name} holds every name")
    lab.split(*SIDES)
    majority = nodes[SIDES[0][0]]
    minority = SIDES[1]
    wait_for(lambda: all(majority.health_of(m) == "down" for m in minority), 20, "the split")
    # The majority purges what the cut-off nodes own: the heal has something to merge.
    wait_for(lambda: not holds_all(majority), 20, "the minority's names purged")
    healed = time.perf_counter()
    lab.heal()
    for node in nodes.values():
        wait_for(lambda n=node: holds_all(n), 60, f"{node.name} converged")
    return (time.perf_counter() - healed) * 1000
