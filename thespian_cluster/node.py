"""Starting, finding and stopping nodes.

::

    from thespian_cluster import ClusterSettings, start_node, Register, Whereis

    node = start_node(ClusterSettings.load("config/single-node.toml"))
    try:
        reply = node.ask(Whereis(name="weather"))
    finally:
        node.stop()

A node is a Thespian ``multiprocTCPBase`` actor system (an admin process and one
process per actor, all in the admin's process group) running the supervision tree
of :mod:`thespian_cluster.supervisors.node`. :func:`start_node` returns a
:class:`Node` handle; :func:`connect` and :func:`registry_address` talk to a node
that another process started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
from loguru import logger
from thespian.actors import ActorAddress, ActorExitRequest, ActorSystem

from thespian_cluster import node_table
from thespian_cluster.actors.exit_hook import NODE_DIR_ENV
from thespian_cluster.backends.loading import backend_class
from thespian_cluster.cluster_messages import AwaitJoin, JoinOutcome
from thespian_cluster.logs import configure_logging, move_thespian_internal_log, thespian_log_defs
from thespian_cluster.messages import ChildrenReply, Request, SupervisorError, WhichChildren
from thespian_cluster.node_identity import new_identity
from thespian_cluster.security import install_from_settings, wire_security_status
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.supervisors.node import (
    CLUSTER_CHILD,
    ROOT_GLOBAL_NAME,
    GetNodeInfo,
    NodeInfo,
    NodeSupervisor,
    StartNode,
)
from thespian_cluster.supervisors.os_process import pid_listening_on
from thespian_cluster.transport import (
    BASE_ADDRESS_ENV,
    BIND_HOST_ENV,
    advertise,
    bind_node_to,
    limit_idle_sockets,
    widen_transmit_limits,
)

SYSTEM_BASE = "multiprocTCPBase"
DEFAULT_TIMEOUT = 10.0
JOIN_WAIT = 2.0  # seconds start_node waits to hear whether the cluster accepts the node


class NodeError(RuntimeError):
    """A node could not be started, reached or asked.

    Its message is one line for a person: what is wrong and what to do about it
    (the CLI prints it as is).
    """


@dataclass
class Node:
    """A running node, as seen from the process that started or connected to it."""

    settings: ClusterSettings
    system: ActorSystem
    root: ActorAddress
    pgid: int
    _registry: Any = field(default=None, repr=False)

    @property
    def registry(self) -> ActorAddress:
        """The node's Registry actor (looked up again if it was restarted)."""
        if self._registry is None:
            self._registry = registry_address(self.system, self.root)
        return self._registry

    def ask(self, request: Request, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Send ``request`` to the Registry and wait for its reply (None on timeout)."""
        reply = self.system.ask(self.registry, request, timeout)
        if reply is None:
            self._registry = None  # perhaps restarted: find it again next time
        return reply

    def ask_root(self, request: Request, timeout: float = DEFAULT_TIMEOUT) -> Any:
        return self.system.ask(self.root, request, timeout)

    def stop(self) -> None:
        """Shut the node down: every actor process and the admin exit."""
        try:
            self.system.shutdown()
        finally:
            # Anything the admin could not reach (a hung actor) dies with its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the whole node (admin and actors) as a crash would."""
        os.killpg(self.pgid, signal.SIGKILL)


def start_node(settings: ClusterSettings, log_to_stderr: bool = True) -> Node:
    """Start a node's actor system and supervision tree; return its handle."""
    backend_class(settings.registry_backend)  # a bad backend is a startup error, here
    # Every check that can fail for a reason outside the program runs here, before the
    # actor system forks, so the caller gets one NodeError and not a half-started node.
    _usable_dir(settings.node_dir, "data_dir", settings.data_dir)
    try:
        configure_logging(
            settings.node_name, settings.log_level, settings.resolved_log_file, log_to_stderr
        )
    except OSError as exc:
        raise NodeError(
            f"log_file {settings.resolved_log_file} cannot be used ({_reason(exc)}); "
            "set log_file to a writable path"
        ) from None
    if port_in_use(settings.host, settings.admin_port):
        raise NodeError(
            f"admin port {settings.admin_port} on {settings.host} is already in use; "
            "stop whatever holds it or choose another admin_port"
        )
    if settings.cluster_enabled and udp_port_in_use(settings.host, settings.admin_port):
        raise NodeError(
            f"UDP port {settings.admin_port} on {settings.host} (heartbeats) is already in use; "
            "stop whatever holds it or choose another admin_port"
        )
    node_table.wipe(settings.node_dir)  # a new incarnation: the old actors are gone
    _check_node_table(settings.node_dir)
    new_identity(settings.node_dir)
    # Everything below is inherited by the admin and every actor process it forks.
    os.environ[NODE_DIR_ENV] = str(settings.node_dir)
    move_thespian_internal_log(settings.node_dir)
    bind_node_to(settings.host)
    limit_idle_sockets()
    widen_transmit_limits()
    install_from_settings(settings)
    if not wire_security_status()["enabled"] and (
        settings.cluster_enabled or not _is_loopback(settings.host)
    ):
        logger.warning(
            "node {} runs without a cluster cookie: anyone who reaches {} can run code in it "
            "(docs/security.md)",
            settings.node_name,
            settings.admin_address,
        )
    try:
        system = ActorSystem(
            SYSTEM_BASE,
            _capabilities(settings),
            logDefs=thespian_log_defs(settings.log_level),
            transientUnique=True,
        )
    except BaseException as exc:
        # Ctrl-C may land after the admin was forked: it must not outlive this start.
        _kill_admin_on(settings.admin_port)
        if not isinstance(exc, Exception):
            raise
        # e.g. the port was taken between the check and the bind
        raise NodeError(
            f"the actor system could not start on {settings.admin_address} ({exc}); "
            "check that admin_port is free"
        ) from None
    pgid: int | None = None
    try:
        root = system.createActor(NodeSupervisor, globalName=ROOT_GLOBAL_NAME)
        # The process group first: a start interrupted half-way (Ctrl-C, a failed
        # child) must not leave the actors created so far running without their admin.
        info = system.ask(root, GetNodeInfo(), DEFAULT_TIMEOUT)
        pgid = info.pgid if isinstance(info, NodeInfo) else None
        started = system.ask(root, StartNode(settings=settings), DEFAULT_TIMEOUT)
        if isinstance(started, SupervisorError):
            raise NodeError(f"node {settings.node_name} could not start: {started.detail}")
        if not isinstance(started, NodeInfo):
            raise NodeError(f"node root did not start: {started!r}")
        if settings.cluster_enabled and settings.convention_leader:
            _await_join(system, root, settings)
    except BaseException:
        try:
            system.shutdown()
        finally:
            if pgid is None:  # interrupted before the root answered: find the admin
                _kill_admin_on(settings.admin_port)
            elif pgid != os.getpgid(0):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        raise
    logger.info(
        "node {} up on {} (pgid {})", settings.node_name, settings.admin_address, started.pgid
    )
    return Node(settings, system, root, started.pgid, started.registry)


def connect(
    port: int,
    host: str = "127.0.0.1",
    settings: ClusterSettings | None = None,
    advertise_as: str | None = None,
) -> ActorSystem:
    """A client handle on the node whose admin listens on ``host:port``.

    Thespian clients always talk to an admin on their own host; ``host`` is the
    address that node listens on (its ``settings.host``). The cluster cookie comes
    from ``settings`` or the environment (``THESPIAN_CLUSTER_CLUSTER_COOKIE`` or
    ``THESPIAN_CLUSTER_COOKIE``). Refuses to go on when nothing listens there:
    Thespian would otherwise start a new, empty actor system on that port.

    ``advertise_as`` is for a node that is *not* local: the client listens on and
    advertises that address of this process (actors reply to it), and talks to the
    admin at ``host:port`` — e.g. a test process reaching a node in a network
    namespace over a bridge (:mod:`thespian_cluster.netns`). See :func:`_remote_admin`.
    """
    install_from_settings(settings or ClusterSettings.build())
    if not port_in_use(host, port):
        raise NodeError(f"no node is listening on {host}:{port}")
    limit_idle_sockets()
    if advertise_as is not None:
        with _remote_admin(host, port, advertise_as):
            return ActorSystem(SYSTEM_BASE, {"Admin Port": port}, transientUnique=True)
    advertise(host)  # Thespian finds "the local admin" at the advertised address
    return ActorSystem(SYSTEM_BASE, {"Admin Port": port}, transientUnique=True)


@contextlib.contextmanager
def _remote_admin(host: str, port: int, own: str) -> Iterator[None]:
    """While a client ``ActorSystem`` is built: its own address is ``own``, its admin's
    is ``host:port``.

    Thespian derives both from one variable (the machine's address) and, finding no
    admin bound to the port *on this machine*, would start a new one; a node in
    another namespace or host is exactly that case. So, for the constructor only:
    the admin address is ``host:port``, the probe for a local admin says "running"
    (the caller has just seen the port accept a connection), and the client's socket
    binds to and advertises ``own``. Everything is put back on the way out; the
    built client keeps its addresses. Not thread-safe (it patches a class).
    """
    from thespian.system.transport.IPBase import TCPv4ActorAddress
    from thespian.system.transport.TCPTransport import TCPTransport

    saved_env = {name: os.environ.get(name) for name in (BASE_ADDRESS_ENV, BIND_HOST_ENV)}
    saved = TCPTransport.__dict__["getAdminAddr"], TCPTransport.__dict__["probeAdmin"]
    admin = ActorAddress(TCPv4ActorAddress(host, port, external=True))
    TCPTransport.getAdminAddr = staticmethod(lambda capabilities: admin)
    TCPTransport.probeAdmin = staticmethod(lambda addr: True)
    bind_node_to(own)
    try:
        yield
    finally:
        TCPTransport.getAdminAddr, TCPTransport.probeAdmin = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def disconnect(system: ActorSystem) -> None:
    """Close a client handle from :func:`connect` without stopping the node.

    (``ActorSystem.shutdown()`` would shut the node itself down, from any client.)
    """
    transport = getattr(getattr(system, "_systemBase", None), "transport", None)
    if transport is not None:
        transport.close()


def root_address(system: ActorSystem) -> ActorAddress:
    return system.createActor(NodeSupervisor, globalName=ROOT_GLOBAL_NAME)


def registry_address(system: ActorSystem, root: ActorAddress | None = None) -> ActorAddress:
    """The Registry of the node ``system`` talks to (one round trip to the root)."""
    root = root or root_address(system)
    info = system.ask(root, GetNodeInfo(), DEFAULT_TIMEOUT)
    if not isinstance(info, NodeInfo):
        raise NodeError("the node's root supervisor did not answer")
    if not info.node:
        system.tell(root, ActorExitRequest())  # the stray root our lookup just created
        raise NodeError("this actor system runs no thespian-cluster node")
    if info.registry is None:
        raise NodeError(f"node {info.node} has no registry running right now")
    return info.registry


def _kill_admin_on(port: int) -> None:
    """SIGKILL the process group of the admin this process started on ``port`` (a start
    that failed half-way); a listener that is not our fork is left alone."""
    admin = pid_listening_on(port)
    if admin is None:
        return
    try:  # a fork keeps our command line; anything else on the port is not ours
        ours = (
            Path(f"/proc/{admin}/cmdline").read_bytes() == Path("/proc/self/cmdline").read_bytes()
        )
    except OSError:
        return
    if not ours:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        pgid = os.getpgid(admin)
        if pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)


def _await_join(system: ActorSystem, root: ActorAddress, settings: ClusterSettings) -> None:
    """Give the join a moment: a refusal (a taken node name) is a startup error.

    A leader that is not reachable yet is no error: the node keeps trying (and logs
    it), so nodes may start in any order.
    """
    monitor = cluster_agent(system, root, "node_monitor")
    outcome = system.ask(monitor, AwaitJoin(timeout=JOIN_WAIT), JOIN_WAIT + DEFAULT_TIMEOUT)
    if isinstance(outcome, JoinOutcome) and outcome.refused:
        raise NodeError(f"the cluster refused node {settings.node_name}: {outcome.refused}")
    if not isinstance(outcome, JoinOutcome) or not outcome.joined:
        logger.warning(
            "node {} has not reached its convention leader {} yet; it keeps trying",
            settings.node_name,
            settings.convention_leader,
        )


def cluster_agent(system: ActorSystem, root: ActorAddress, child_id: str) -> ActorAddress:
    """The address of one of the node's cluster actors (``node_monitor``, ...)."""
    tree = system.ask(root, WhichChildren(), DEFAULT_TIMEOUT)
    if not isinstance(tree, ChildrenReply) or CLUSTER_CHILD not in {c.id for c in tree.children}:
        raise NodeError("this node runs no cluster supervisor (cluster_enabled = false?)")
    cluster = system.ask(tree.by_id(CLUSTER_CHILD).address, WhichChildren(), DEFAULT_TIMEOUT)
    if not isinstance(cluster, ChildrenReply):
        raise NodeError("the node's cluster supervisor did not answer")
    address = cluster.by_id(child_id).address
    if address is None:
        raise NodeError(f"the node's {child_id} is not running right now")
    return address


def _usable_dir(path: Path, key: str, value: Path) -> None:
    """Create ``path`` (under setting ``key`` = ``value``) and prove it writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass  # root passes any mode check, so try the real thing
    except OSError as exc:
        raise NodeError(
            f"{key} {value} cannot be used ({_reason(exc)}); "
            f"set {key} to a directory this user can write"
        ) from None


def _check_node_table(node_dir: Path) -> None:
    """Open and close the node table once here, so a table that cannot be opened is a
    clear start error rather than a Registry failing in its own process. Closed again
    before the fork: an LMDB environment must not be inherited by a child process."""
    path = node_table.table_path(node_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        lmdb.open(str(path), map_size=node_table.MAP_SIZE, max_dbs=0, lock=True).close()
    except (OSError, lmdb.Error) as exc:
        raise NodeError(
            f"the node table at {path} cannot be opened ({_reason(exc)}); "
            "remove it, or set data_dir to another directory"
        ) from None


def _reason(exc: BaseException) -> str:
    """An OSError's own words without Python's decoration; other errors as they are."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def udp_port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _capabilities(settings: ClusterSettings) -> dict[str, Any]:
    capabilities: dict[str, Any] = {
        "Admin Port": settings.admin_port,
        "thespian_cluster.node": settings.node_name,
    }
    # A cluster node joins once its NodeMonitor has published the node's record
    # (actors/node_monitor.py); a plain node joins the convention at once.
    if settings.convention_leader and not settings.cluster_enabled:
        capabilities["Convention Address.IPv4"] = settings.convention_leader
    return capabilities
