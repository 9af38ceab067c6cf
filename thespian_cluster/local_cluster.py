"""Clusters on one machine, for tests, benchmarks and the demo: one process per node.

::

    with LocalCluster(tmp_dir) as cluster:
        a = cluster.start("a")
        b = cluster.start("b", leader=a)
        cluster.wait_formed(["a", "b"])
        b.kill()                      # os.killpg(SIGKILL): a crash of b's host

A :class:`LocalCluster` starts each node as ``thespian-cluster start`` in its own OS
process, with its own TOML file, data directory and free port, and talks to it as a
client would (:func:`~thespian_cluster.node.connect`). Killing a node kills its
whole process group; :meth:`ClusterNode.pause` sends SIGSTOP to it (a hung node).
Everything is torn down by :meth:`LocalCluster.close`, whatever happened.

A node may also run elsewhere on the machine: ``start(..., host=, launcher=,
client_address=)`` runs its command behind ``launcher`` (e.g. ``ip netns exec NS``)
listening on ``host``, and this process's client reaches it advertising
``client_address`` as its own. :meth:`thespian_cluster.netns.NetnsLab.place` gives
all three for a node in a network namespace (real partitions).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from thespian.actors import Actor, ActorSystem

from thespian_cluster.cluster_messages import (
    ClusterNodes,
    ClusterNodesReply,
    GetNodeStatus,
    NodeDown,
    NodeStatusReply,
    NodeUp,
    PartitionDetected,
    PartitionHealed,
    WritableChanged,
)
from thespian_cluster.global_messages import NameConflict
from thespian_cluster.node import (
    AskTimeout,
    ask,
    cluster_agent,
    connect,
    disconnect,
    registry_address,
    root_address,
)
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.supervisors.os_process import live_processes_in_group
from thespian_cluster.testing.ports import free_port

T = TypeVar("T")
CLI = [sys.executable, "-m", "thespian_cluster.cli", "start", "--config"]
#: The cookie of clusters that are given none: local clusters are never unprotected.
DEFAULT_COOKIE = "local-cluster-cookie-0123456789"
_READY = re.compile(r"running on (\S+) \(pgid (\d+)\)")


def wait_for(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


@dataclass
class ClusterNode:
    """One node process and a client handle on it."""

    name: str
    port: int
    host: str
    config: Path
    process: subprocess.Popen[bytes]
    output: Path
    cookie: str
    pgid: int = 0
    #: The address this process's client advertises, for a node that is not on this
    #: host's loopback (see :func:`~thespian_cluster.node.connect`'s ``advertise_as``).
    client_address: str | None = None
    _client: ActorSystem | None = field(default=None, repr=False)
    _registry: Any = field(default=None, repr=False)

    @property
    def leader_address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self) -> ActorSystem:
        if self._client is None:
            # The cluster's cookie for this client only: never through this process's
            # environment, which every later test or child process would inherit.
            settings = ClusterSettings.build(cluster_cookie=self.cookie, allow_short_cookie=True)
            self._client = connect(
                self.port, self.host, settings=settings, advertise_as=self.client_address
            )
        return self._client

    @property
    def node_dir(self) -> Path:
        """Where the node keeps its table: ``lookup(..., node_dir=node.node_dir)``."""
        return self.config.parent / "data" / f"{self.name}-{self.port}"

    def registry(self) -> Any:
        if self._registry is None:
            self._registry = registry_address(self.client())
        return self._registry

    def ask(self, request: Any, timeout: float = 10.0) -> Any:
        """Ask the node's Registry (the front door for every request) and return the
        reply to *this* request (:func:`~thespian_cluster.node.ask`).

        Raises:
            AskTimeout: no reply within ``timeout`` (the Registry is looked up again
                next time: it may have been restarted).
        """
        try:
            return ask(self.client(), self.registry(), request, timeout)
        except AskTimeout:
            self._registry = None
            raise

    def monitor(self) -> Any:
        system = self.client()
        return cluster_agent(system, root_address(system), "node_monitor")

    def ask_monitor(self, request: Any, timeout: float = 10.0) -> Any:
        """Ask the node's NodeMonitor; :class:`AskTimeout` if it does not answer."""
        return ask(self.client(), self.monitor(), request, timeout)

    def cluster_nodes(self) -> ClusterNodesReply:
        reply = self.ask_monitor(ClusterNodes())
        if not isinstance(reply, ClusterNodesReply):
            raise RuntimeError(f"node {self.name} answered ClusterNodes with {reply!r}")
        return reply

    def status(self) -> NodeStatusReply:
        reply = self.ask_monitor(GetNodeStatus())
        if not isinstance(reply, NodeStatusReply):
            raise RuntimeError(f"node {self.name} answered GetNodeStatus with {reply!r}")
        return reply

    def health_of(self, other: str) -> str | None:
        info = self.status().by_name(other)
        return info.health if info else None

    def kill(self) -> None:
        """SIGKILL the whole node (its admin and every actor), and the CLI process."""
        self._drop_client()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(10)

    def pause(self) -> None:
        os.killpg(self.pgid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pgid, signal.SIGCONT)

    def stop(self) -> None:
        """Ctrl-C: a graceful stop."""
        self._drop_client()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)

    def gone(self) -> bool:
        return self.process.poll() is not None and not live_processes_in_group(self.pgid)

    def _drop_client(self) -> None:
        self._registry = None
        if self._client is not None:
            disconnect(self._client)
            self._client = None


class LocalCluster:
    """Nodes started by name; see the module docstring."""

    def __init__(
        self, work_dir: Path, host: str = "127.0.0.1", cookie: str = DEFAULT_COOKIE, **settings: Any
    ) -> None:
        self.work_dir = work_dir
        self.host = host
        self.cookie = cookie
        self.settings = settings
        self.nodes: dict[str, ClusterNode] = {}
        self._everything: list[ClusterNode] = []

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(
        self,
        name: str,
        leader: ClusterNode | str | None = None,
        port: int | None = None,
        wait: bool = True,
        host: str | None = None,
        launcher: Sequence[str] = (),
        client_address: str | None = None,
        **settings: Any,
    ) -> ClusterNode:
        """Start node ``name`` (joining ``leader`` if given) and wait until it runs.

        ``host`` (default: the cluster's) is the address it listens on; ``launcher``
        is a command prefix it runs behind, and ``client_address`` what this process's
        client advertises to it — for a node in a network namespace, all three come
        from :meth:`NetnsLab.place <thespian_cluster.netns.NetnsLab.place>`. (A port
        for such a node is picked free on this namespace's loopback: a new namespace
        has every port free.)
        """
        host = host or self.host
        port = port or free_port(self.host if host == self.host else "127.0.0.1")
        values: dict[str, Any] = {
            "node_name": name,
            "host": host,
            "admin_port": port,
            "data_dir": str(self.work_dir / "data"),
            "cluster_enabled": True,
            "log_level": "INFO",
            "liveness_probe_interval": 0.2,
            **self.settings,
            **settings,
        }
        if leader is not None:
            address = leader.leader_address if isinstance(leader, ClusterNode) else leader
            values["convention_leader"] = address
        config = self.work_dir / f"{name}-{port}-{len(self._everything)}.toml"
        config.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in values.items()))
        env = {**os.environ, "THESPIAN_CLUSTER_COOKIE": self.cookie}
        # Output to a file, never a pipe: every actor process inherits it, and a full
        # pipe nobody reads would block them all.
        output = config.with_suffix(".out")
        with output.open("w") as sink:
            process = subprocess.Popen(
                [*launcher, *CLI, str(config)], stdout=sink, stderr=subprocess.STDOUT, env=env
            )
        node = ClusterNode(
            name, port, host, config, process, output, self.cookie, client_address=client_address
        )
        self._everything.append(node)
        if wait:
            self.wait_ready(node)
        self.nodes[name] = node
        return node

    def wait_ready(self, node: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """Wait until the node says it runs; fail with its output if it exits first."""

        def ready() -> bool:
            match = _READY.search(node.output.read_text())
            if match:
                node.pgid = int(match.group(2))
                return True
            if node.process.poll() is not None:
                raise RuntimeError(
                    f"node {node.name} exited ({node.process.returncode}):\n"
                    f"{node.output.read_text()[-3000:]}"
                )
            return False

        wait_for(ready, timeout, f"node {node.name} to start")
        return node

    def all_know(self, names: list[str]) -> bool:
        """Every listed node sees exactly these nodes as live."""
        expected = sorted(names)
        return all(self.nodes[n].cluster_nodes().nodes == expected for n in names)

    def wait_formed(self, names: list[str], timeout: float = 10.0) -> None:
        wait_for(lambda: self.all_know(names), timeout, f"{names} to know each other")

    def close(self) -> None:
        for node in self._everything:
            with contextlib.suppress(Exception):
                if node.pgid:
                    node.resume()
            with contextlib.suppress(Exception):
                node.kill() if node.pgid else node.process.kill()
            with contextlib.suppress(Exception):
                node.process.wait(10)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: backend={"path": p} is [backend] path = p
        return "{" + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


_EVENTS = (NodeUp, NodeDown, PartitionDetected, PartitionHealed, WritableChanged, NameConflict)


class EventLog(Actor):
    """Keeps every event it gets as a subscriber (NodeUp / NodeDown, partition events);
    answers the string ``"events"`` with the list so far."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Any] = []

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if message == "events":
            self.send(sender, list(self.events))
        elif isinstance(message, _EVENTS):
            self.events.append(message)
