"""Prometheus metrics and health checks for a node, on one HTTP port.

With ``metrics_port`` set, ``thespian-cluster start`` serves, on ``host:metrics_port``:

* ``/metrics`` — the Prometheus text format (``prometheus-client``);
* ``/healthz`` — liveness: 200 when the node's root supervisor answers, else 503;
* ``/readyz`` — readiness: 200 when the node is joined and its global replica is
  caught up (it follows a sequencer and has no write waiting), else 503 with the reason.

Nothing is counted inside the actors for this: at every scrape the server asks the
node, as ``thespian-cluster status`` does (``GetNodeInfo``, ``WhichChildren``,
``GetNodeStatus``, ``GetGlobalStatus``, ``ListNames``, ``ListGroups`` and, when the
build has one, ``GetPartitionStatus``). A scrape therefore costs the node a few
dozen messages (~1 ms of CPU each): scrape every 10-15 s, not every 100 ms. Scrapes
are serialised; a node that does not answer within ``ASK_TIMEOUT`` gives a scrape
with ``thespian_cluster_up 0`` and nothing else.

Every metric is documented in docs/operations.md ("Metrics"); :data:`METRICS` is the
list that page is checked against.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from thespian.actors import ActorSystem

from thespian_cluster.cluster_messages import (
    ClusterNodes,
    ClusterNodesReply,
    GetNodeStatus,
    NodeStatusReply,
)
from thespian_cluster.global_messages import GetGlobalStatus, GlobalStatus
from thespian_cluster.messages import (
    ChildrenReply,
    GroupList,
    ListGroups,
    ListNames,
    NameList,
    WhichChildren,
)
from thespian_cluster.node import NodeError, connect, disconnect, root_address
from thespian_cluster.partition_view import partition_status
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.supervisors.node import GetNodeInfo, NodeInfo

ASK_TIMEOUT = 3.0
PREFIX = "thespian_cluster_"
HEALTH = ("up", "suspect", "down")

#: Every metric this module exports: name (without the prefix) -> (labels, help).
METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "up": ((), "1 when the node answered this scrape, 0 when it did not"),
    "names": (("scope", "kind"), "registered names, by scope (local, global) and kind"),
    "groups": (("scope",), "process groups with at least one member, by scope"),
    "node_health": (
        ("node", "health"),
        "1 for the health (up, suspect, down) this node sees each known node in, else 0",
    ),
    "heartbeat_rtt_seconds": (("node",), "round trip of the last answered heartbeat to node"),
    "node_last_seen_seconds": (("node",), "seconds since node last answered a heartbeat"),
    "cluster_joined": ((), "1 once this node has joined its convention leader"),
    "global_epoch": ((), "epoch (term) of the global table's sequencer as this replica sees it"),
    "global_seq": (
        (),
        "writes of the current epoch applied by this replica; the sequencer's value minus "
        "this one is the replication lag in writes",
    ),
    "global_sequencing": ((), "1 when this node sequences global writes"),
    "global_pending_writes": ((), "this node's global writes waiting for the sequencer"),
    "global_writes": (
        ("request", "outcome"),
        "global writes this node answered since its RegistryDist started, by outcome",
    ),
    "global_merge_conflicts": ((), "names lost in merges decided by this node (heals)"),
    "partition_detected": ((), "1 while some expected node is unreachable (SplitBrainDetector)"),
    "partition_winner": ((), "1 when this node's side may keep writing under the strategy"),
    "partition_writable": ((), "1 when global claims, joins and meta updates are allowed here"),
    "supervisor_child_restarts": (
        ("supervisor", "child"),
        "restarts of each child of the node's supervision tree since its supervisor started",
    ),
    "supervisor_child_running": (("supervisor", "child"), "1 when the child is running"),
}


@dataclass
class Snapshot:
    """What one scrape learned from the node (every field optional: a node may not say)."""

    node: str = ""
    tree: list[tuple[str, str, int, bool]] = field(default_factory=list)
    names: dict[tuple[str, str], int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    health: NodeStatusReply | None = None
    cluster: ClusterNodesReply | None = None
    glob: GlobalStatus | None = None
    partition: Any = None


def gather(system: ActorSystem) -> Snapshot | None:
    """Ask the node everything a scrape reports; None when its root does not answer."""
    root = root_address(system)
    info = system.ask(root, GetNodeInfo(), ASK_TIMEOUT)
    if not isinstance(info, NodeInfo) or not info.node:
        return None
    snap = Snapshot(node=info.node)
    _walk(system, root, "node", snap.tree)
    registry = info.registry
    if registry is None:
        return snap
    for scope in ("local", "global"):
        names = system.ask(registry, ListNames(scope=scope), ASK_TIMEOUT)
        if isinstance(names, NameList):
            for entry in names.names:
                key = (scope, entry.kind)
                snap.names[key] = snap.names.get(key, 0) + 1
            for kind in ("server", "transport"):
                snap.names.setdefault((scope, kind), 0)
        groups = system.ask(registry, ListGroups(scope=scope), ASK_TIMEOUT)
        if isinstance(groups, GroupList):
            snap.groups[scope] = len(groups.groups)
    health = system.ask(registry, GetNodeStatus(), ASK_TIMEOUT)
    snap.health = health if isinstance(health, NodeStatusReply) else None
    cluster = system.ask(registry, ClusterNodes(), ASK_TIMEOUT)
    snap.cluster = cluster if isinstance(cluster, ClusterNodesReply) else None
    glob = system.ask(registry, GetGlobalStatus(), ASK_TIMEOUT)
    snap.glob = glob if isinstance(glob, GlobalStatus) else None
    if snap.cluster is not None:
        snap.partition = partition_status(system, ASK_TIMEOUT)
    return snap


def _walk(system: ActorSystem, supervisor: Any, name: str, out: list[Any]) -> None:
    reply = system.ask(supervisor, WhichChildren(), ASK_TIMEOUT)
    if not isinstance(reply, ChildrenReply):
        return
    for child in reply.children:
        out.append((name, child.id, child.restart_count, child.running))
        if child.type == "supervisor" and child.running:
            _walk(system, child.address, child.id, out)


def families(snap: Snapshot | None) -> Iterator[Metric]:
    """The metric families of one snapshot (``up`` 0 alone when there is none)."""

    def gauge(name: str) -> GaugeMetricFamily:
        labels, text = METRICS[name]
        return GaugeMetricFamily(PREFIX + name, text, labels=list(labels))

    up = gauge("up")
    up.add_metric([], 0 if snap is None else 1)
    yield up
    if snap is None:
        return
    names, groups = gauge("names"), gauge("groups")
    for (scope, kind), count in sorted(snap.names.items()):
        names.add_metric([scope, kind], count)
    for scope, count in sorted(snap.groups.items()):
        groups.add_metric([scope], count)
    yield from (names, groups)
    restarts, running = gauge("supervisor_child_restarts"), gauge("supervisor_child_running")
    for parent, child, count, is_running in snap.tree:
        restarts.add_metric([parent, child], count)
        running.add_metric([parent, child], 1 if is_running else 0)
    yield from (restarts, running)
    if snap.health is not None:
        health, rtt, seen = (
            gauge("node_health"),
            gauge("heartbeat_rtt_seconds"),
            gauge("node_last_seen_seconds"),
        )
        for node in snap.health.nodes:
            for state in HEALTH:
                health.add_metric([node.name, state], 1 if node.health == state else 0)
            if node.rtt_ms is not None:
                rtt.add_metric([node.name], node.rtt_ms / 1000)
            if node.last_seen is not None:
                seen.add_metric([node.name], node.last_seen)
        yield from (health, rtt, seen)
    if snap.cluster is not None:
        joined = gauge("cluster_joined")
        joined.add_metric([], 1 if snap.cluster.joined else 0)
        yield joined
    if snap.glob is not None:
        for name, value in (
            ("global_epoch", snap.glob.epoch),
            ("global_seq", snap.glob.seq),
            ("global_sequencing", int(snap.glob.sequencing)),
            ("global_pending_writes", snap.glob.pending),
        ):
            family = gauge(name)
            family.add_metric([], value)
            yield family
        writes = gauge("global_writes")
        for key, count in sorted(snap.glob.outcomes.items()):
            request, _, outcome = key.partition(":")
            if outcome:
                writes.add_metric([request, outcome], count)
        yield writes
        conflicts = gauge("global_merge_conflicts")
        conflicts.add_metric([], snap.glob.outcomes.get("conflicts", 0))
        yield conflicts
    if snap.partition is not None:
        for name, value in (
            ("partition_detected", snap.partition.partition_detected),
            ("partition_winner", snap.partition.winner),
            ("partition_writable", snap.partition.writable),
        ):
            family = gauge(name)
            family.add_metric([], int(bool(value)))
            yield family


def readiness(snap: Snapshot | None) -> str | None:
    """Why the node is not ready, or None when it is (joined and caught up)."""
    if snap is None:
        return "the node does not answer"
    if snap.cluster is None:
        return None if snap.glob is None else "NodeMonitor does not answer"
    if not snap.cluster.joined:
        return "not joined to the cluster yet"
    if snap.glob is None:
        return "RegistryDist does not answer"
    if not snap.glob.sequencer:
        return "the global replica follows no sequencer yet"
    if snap.glob.pending:
        return f"{snap.glob.pending} global writes are waiting for the sequencer"
    return None


class _NodeCollector:
    """A prometheus-client collector that asks the node at every scrape."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterable[Metric]:
        return list(families(self.server.snapshot()))


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` for the node at ``settings``.

    ::

        server = MetricsServer(settings).start()   # a daemon thread
        ...
        server.stop()
    """

    def __init__(self, settings: ClusterSettings, port: int | None = None) -> None:
        self.settings = settings
        chosen = port if port is not None else settings.metrics_port
        if chosen is None:
            raise ValueError("MetricsServer needs metrics_port")
        self.port: int = chosen
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(self))
        self._lock = threading.Lock()
        self._system: ActorSystem | None = None
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def snapshot(self) -> Snapshot | None:
        """Ask the node now (one scrape at a time); None when it does not answer."""
        with self._lock:
            try:
                if self._system is None:
                    self._system = connect(
                        self.settings.admin_port, self.settings.host, self.settings
                    )
                return gather(self._system)
            except (NodeError, OSError, Exception):
                self._drop()
                return None

    def start(self) -> MetricsServer:
        handler = _handler(self)
        self._http = ThreadingHTTPServer((self.settings.host, self.port), handler)
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._system is not None:
            disconnect(self._system)
            self._system = None


def _handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                alive = server.snapshot() is not None
                self._send(200 if alive else 503, b"ok\n" if alive else b"not answering\n")
            elif path == "/readyz":
                why = readiness(server.snapshot())
                self._send(200 if why is None else 503, f"{why or 'ready'}\n".encode())
            else:
                self._send(404, b"try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes are not news

    return Handler
