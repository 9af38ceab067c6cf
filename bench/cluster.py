"""Multi-node figures: bulk global registration, replication lag, node-death purge.

They need the global registry (RegistryDist, NodeMonitor), which is not built yet:
every function below first asks :func:`cluster_unavailable` — a node started with
``cluster_enabled`` that answers a global ``Whereis`` with ``not_distributed`` — and
reports its figure as ``n/a (needs the cluster issue)``. Each is one function to fill
in when the cluster lands; its docstring says what to measure.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.common import Context, Figure, Mode, not_available
from bench.systems import running_node, settings
from thespian_cluster import RegistryError, Whereis, WhereisReply

FAMILY = "cluster"
TITLE = "cluster: bulk global registration, replication lag, node-death purge"
NEEDS_CLUSTER = "n/a (needs the cluster issue): scope='global' answers not_distributed"


def steps(mode: Mode) -> int:
    return len(BENCHMARKS) + 1


def weight(mode: Mode) -> float:
    return 1.0


def cluster_unavailable(ctx: Context) -> str | None:
    """Why global scope cannot be measured on this build, or None if it can (cached)."""
    if "cluster_unavailable" not in ctx.info:
        reason: str | None
        try:
            config = settings(ctx, "cluster-probe", cluster_enabled=True, cluster_nodes=["probe"])
            with running_node(config) as node:
                reply = node.ask(Whereis(name="probe", scope="global"))
            if isinstance(reply, RegistryError) and reply.code == "not_distributed":
                reason = NEEDS_CLUSTER
            elif isinstance(reply, WhereisReply):
                reason = None
            else:
                reason = f"n/a: a global Whereis answered {reply!r}"
        except Exception as exc:
            reason = f"n/a: a cluster-enabled node did not start: {exc}"
        ctx.info["cluster_unavailable"] = reason
    reason = ctx.info["cluster_unavailable"]
    return reason if isinstance(reason, str) else None


def _not_written(function: str) -> str:
    return f"n/a: the cluster answers, but bench/cluster.py:{function} is not written yet"


def bulk_global_registration(ctx: Context) -> Figure:
    """Goal: above 3,000 names/s.

    Start 3 nodes (``cluster_enabled``, ``cluster_nodes`` = all three, B and C with
    ``convention_leader`` = A); put a :class:`~bench.actors.Loader` on each node
    (``Load(..., scope="global")``) registering 10,000 / 3 distinct names each, all at
    once; time from the first request until every node's ``TableReader`` finds all
    10,000 names. Report names/s (median, min, max over ``mode.runs``).
    """
    figure_id, label, unit = (
        "cluster.bulk_global_register",
        "global registration of 10,000 names across 3 nodes",
        "names/s",
    )
    reason = cluster_unavailable(ctx) or _not_written("bulk_global_registration")
    return not_available(figure_id, label, unit, reason)


def replication_lag(ctx: Context) -> Figure:
    """Report p50 and p99.

    Two or three nodes; register a global name on A and poll B's ``TableReader.lookup``
    (no message) until it finds it; the lag is register-reply -> visible on B. Repeat
    for a few hundred names, also while the Loader of ``bulk_global_registration``
    runs.
    """
    reason = cluster_unavailable(ctx) or _not_written("replication_lag")
    return not_available(
        "cluster.replication_lag",
        "replication lag: Registered on A -> lookup() finds it on B",
        "ms",
        reason,
        higher_is_better=False,
        latency=True,
    )


def node_death_purge(ctx: Context) -> Figure:
    """Node-death detection and purge time.

    Three nodes; register names owned by actors of node C; ``Node.kill()`` C (SIGKILL
    of its process group); time until NodeMonitor on A marks C down (detection) and
    until A's ``TableReader`` no longer finds any of C's names (purge). Report both,
    with the heartbeat interval and timeout used.
    """
    reason = cluster_unavailable(ctx) or _not_written("node_death_purge")
    return not_available(
        "cluster.node_death_purge",
        "node death -> its names purged on the other nodes",
        "ms",
        reason,
        higher_is_better=False,
        latency=True,
    )


BENCHMARKS: list[Callable[[Context], Figure]] = [
    bulk_global_registration,
    replication_lag,
    node_death_purge,
]


def run(ctx: Context) -> list[Figure]:
    figures = []
    cluster_unavailable(ctx)
    ctx.step("probe: is global scope served?")
    for benchmark in BENCHMARKS:
        figures.append(benchmark(ctx))
        ctx.step(benchmark.__name__)
    return figures
