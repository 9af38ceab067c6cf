"""Membership and node health: how fast nodes find each other and notice a death.

Every node is a real ``thespian-cluster start`` process (:class:`LocalCluster`), with
the default heartbeat settings. Figures:

* start -> known by every node: the last of 3 nodes says it runs; time until every
  node lists all three;
* SIGKILL of a node's process group -> ``down`` on every survivor (each sample is the
  slower survivor), the killed node restarted on its port between samples;
* SIGSTOP of a node's process group -> ``down`` (the heartbeat timeout);
* false downs: ``NodeDown`` events that no kill or stop caused, counted by
  subscribers on every node through the whole family, including a phase with both
  cores kept busy by other processes;
* heartbeat CPU: the NodeMonitor process's CPU time (user + system) per second of an
  idle cluster of 3 and of 5 nodes, per node, and the projection for 50 nodes from
  the straight line through those two (the heartbeat cost is a fixed part plus a
  part per peer).

Anchors for the detection figures (defaults of other systems): Thespian alone ~30
min (convention re-registration), Erlang ``net_ticktime`` 45-75 s, Akka ~5 s
(phi accrual + downing), Ray 15 s.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.common import Context, Figure, Mode
from thespian_cluster.cluster_messages import NodeDown, SubscribeNodeEvents
from thespian_cluster.local_cluster import ClusterNode, EventLog, LocalCluster, wait_for
from thespian_cluster.supervisors.os_process import pid_listening_on

FAMILY = "membership"
TITLE = "membership and node health (defaults: heartbeat 0.25 s, timeout 2.5 s)"
ANCHORS = "Thespian alone ~30 min; Erlang net_ticktime 45-75 s; Akka ~5 s; Ray 15 s"
CPU_WINDOW = {"full": 10.0, "quick": 5.0, "smoke": 1.0}


def steps(mode: Mode) -> int:
    return 6


def weight(mode: Mode) -> float:
    return 2.0


class FalseDowns:
    """Counts NodeDown events that no kill or stop of the benchmark explains."""

    def __init__(self) -> None:
        self.expected: set[tuple[str, str]] = set()  # (node, incarnation) we brought down
        self.logs: list[tuple[ClusterNode, Any]] = []

    def watch(self, node: ClusterNode) -> None:
        log = node.client().createActor(EventLog)
        node.ask_monitor(SubscribeNodeEvents(subscriber=log))
        self.logs.append((node, log))

    def expect(self, node: ClusterNode, observer: ClusterNode) -> None:
        info = observer.status().by_name(node.name)
        if info is not None:
            self.expected.add((node.name, info.incarnation))

    def count(self) -> int:
        false = 0
        for node, log in self.logs:
            with contextlib.suppress(Exception):
                events = node.client().ask(log, "events", 10) or []
                false += sum(
                    1
                    for e in events
                    if isinstance(e, NodeDown) and (e.node, e.incarnation) not in self.expected
                )
        return false


def run(ctx: Context) -> list[Figure]:
    mode = ctx.mode
    figures = []
    with LocalCluster(ctx.node_dir("membership")) as cluster:
        false_downs = FalseDowns()
        figures.append(_known_by_all(ctx, cluster, false_downs))
        ctx.step("start -> known by all")
        a, b, c = (cluster.nodes[n] for n in ("a", "b", "c"))
        figures.append(_sigkill(ctx, cluster, false_downs, a, c))
        ctx.step("SIGKILL -> down")
        figures.append(_sigstop(ctx, cluster, false_downs, a, b, c))
        ctx.step("SIGSTOP -> down")
        busy = _busy_phase(CPU_WINDOW[mode.name] * 2)
        ctx.step("both cores busy")
        cpu3 = _heartbeat_cpu(cluster, ["a", "b", "c"], CPU_WINDOW[mode.name])
        for name in ("d", "e"):
            false_downs.watch(cluster.start(name, leader=a))
        cluster.wait_formed(["a", "b", "c", "d", "e"])
        cpu5 = _heartbeat_cpu(cluster, ["a", "b", "c", "d", "e"], CPU_WINDOW[mode.name])
        ctx.step("heartbeat CPU")
        count = false_downs.count()
    figures.append(
        Figure(
            "membership.false_downs",
            "false downs: NodeDown for a live node, whole family (incl. busy cores)",
            "events",
            [float(count)],
            higher_is_better=False,
            params={"busy_seconds": busy},
        )
    )
    per_peer = (cpu5 - cpu3) / 2
    fixed = cpu3 - 2 * per_peer
    figures += [
        Figure(
            "membership.heartbeat_cpu_3",
            "heartbeat CPU per node (NodeMonitor process), 3 idle nodes",
            "% core",
            [cpu3],
            higher_is_better=False,
        ),
        Figure(
            "membership.heartbeat_cpu_5",
            "heartbeat CPU per node (NodeMonitor process), 5 idle nodes",
            "% core",
            [cpu5],
            higher_is_better=False,
        ),
        Figure(
            "membership.heartbeat_cpu_50",
            f"projected for 50 nodes: {fixed:.3f} + {per_peer:.4f} x (N-1) % core",
            "% core",
            [fixed + 49 * per_peer],
            higher_is_better=False,
            params={"fixed": fixed, "per_peer": per_peer},
        ),
    ]
    ctx.step("false downs")
    return figures


def _known_by_all(ctx: Context, cluster: LocalCluster, false_downs: FalseDowns) -> Figure:
    """Start a, b, c; the sample is last 'running' -> every node lists all three."""
    a = cluster.start("a")
    false_downs.watch(a)
    b = cluster.start("b", leader=a)
    false_downs.watch(b)
    c = cluster.start("c", leader=a, wait=False)
    cluster.wait_ready(c)
    ready = time.monotonic()
    cluster.nodes["c"] = c
    cluster.wait_formed(["a", "b", "c"], timeout=30)
    sample = (time.monotonic() - ready) * 1000
    false_downs.watch(c)
    return Figure(
        "membership.known_by_all",
        "start -> known by every node (3 nodes; after the last start returns)",
        "ms",
        [sample],
        higher_is_better=False,
        latency=True,
    )


def _sigkill(
    ctx: Context, cluster: LocalCluster, false_downs: FalseDowns, a: ClusterNode, c: ClusterNode
) -> Figure:
    samples = []
    victim = cluster.nodes["b"]
    for _ in range(max(2, ctx.mode.deaths)):
        false_downs.expect(victim, a)
        killed = time.monotonic()
        victim.kill()
        for survivor in (a, c):
            wait_for(lambda s=survivor: s.health_of("b") == "down", 10, "b down")
        samples.append((time.monotonic() - killed) * 1000)
        victim = cluster.start("b", leader=a, port=victim.port)
        false_downs.watch(victim)
        cluster.wait_formed(["a", "b", "c"], timeout=30)
    return Figure(
        "membership.sigkill_down",
        f"SIGKILL of a node -> down on every survivor ({ANCHORS})",
        "ms",
        samples,
        higher_is_better=False,
        latency=True,
    )


def _sigstop(
    ctx: Context,
    cluster: LocalCluster,
    false_downs: FalseDowns,
    a: ClusterNode,
    b: ClusterNode,
    c: ClusterNode,
) -> Figure:
    samples = []
    victim = cluster.nodes["b"]
    for _ in range(1 if ctx.mode.name == "smoke" else 3):
        false_downs.expect(victim, a)
        stopped = time.monotonic()
        victim.pause()
        try:
            for survivor in (a, c):
                wait_for(lambda s=survivor: s.health_of("b") == "down", 15, "b down")
            samples.append((time.monotonic() - stopped) * 1000)
        finally:
            victim.resume()
        wait_for(lambda: a.health_of("b") == "up" and c.health_of("b") == "up", 15, "b up")
    return Figure(
        "membership.sigstop_down",
        "SIGSTOP of a node -> down on every survivor",
        "ms",
        samples,
        higher_is_better=False,
        latency=True,
    )


_SPIN = "import time\nend = time.monotonic() + {}\nwhile time.monotonic() < end: pass"


def _busy_phase(seconds: float) -> float:
    """Keep both cores busy with other processes for ``seconds`` (false-down bait)."""
    workers = [subprocess.Popen([sys.executable, "-c", _SPIN.format(seconds)]) for _ in range(2)]
    for worker in workers:
        worker.wait()
    return seconds


def _heartbeat_cpu(cluster: LocalCluster, names: list[str], window: float) -> float:
    """Mean CPU of the NodeMonitor processes over ``window`` seconds, in % of a core."""
    pids = []
    for name in names:
        monitor = cluster.nodes[name].monitor()
        pid = pid_listening_on(monitor.addressDetails.sockname[1])
        if pid is not None:
            pids.append(pid)
    with _cpu_of(pids) as used:
        time.sleep(window)  # the measurement window itself: nothing to wait for
    return 100 * used[0] / window / len(pids)


@contextlib.contextmanager
def _cpu_of(pids: list[int]) -> Iterator[list[float]]:
    before = sum(_cpu_seconds(p) for p in pids)
    holder: list[float] = []
    try:
        yield holder
    finally:
        holder.append(sum(_cpu_seconds(p) for p in pids) - before)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
