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
that another process started, and :func:`wait_ready` waits for one to come up.

Finding a node creates and stops nothing: the root publishes its own and its
Registry's address as an admin capability once the node is ready, and a client
reads it from the admin's status answer (:func:`node_entry`). So a client may poll
a node from the first millisecond of its start, and a lookup against an actor
system that runs no thespian-cluster node says so and leaves nothing behind.

Every client ask goes through :func:`ask`: it returns the reply to *its own*
request (a late answer to an earlier, timed-out request is skipped by its
``request_id``) and raises :class:`AskTimeout` when none comes in time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
from loguru import logger
from thespian.actors import ActorAddress, ActorSystem, ActorSystemException
from thespian.system.messages.status import Thespian_StatusReq, Thespian_SystemStatus

from thespian_cluster import node_table
from thespian_cluster.actors.exit_hook import NODE_DIR_ENV
from thespian_cluster.backends.loading import backend_config
from thespian_cluster.cluster_messages import AwaitJoin, JoinOutcome
from thespian_cluster.logs import configure_logging, move_thespian_internal_log, thespian_log_defs
from thespian_cluster.messages import ChildrenReply, Request, SupervisorError, WhichChildren
from thespian_cluster.node_identity import new_identity
from thespian_cluster.security import install_from_settings, wire_security_status
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.supervisors.node import (
    CLUSTER_CHILD,
    DIRECTORY_CAPABILITY,
    NODE_CAPABILITY,
    ROOT_GLOBAL_NAME,
    GetNodeInfo,
    NodeInfo,
    NodeSupervisor,
    StartNode,
)
from thespian_cluster.supervisors.os_process import is_dead, pid_listening_on
from thespian_cluster.supervisors.singleton import NODE_NAME_ENV, PAUSE_FENCE_ENV
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
READY_POLL = 0.02  # seconds between wait_ready's looks (each is one round trip to the admin)


class NodeError(RuntimeError):
    """A node could not be started, reached or asked.

    Its message is one line for a person: what is wrong and what to do about it
    (the CLI prints it as is).
    """


class AskTimeout(NodeError):
    """No reply to a request came within its timeout."""


class NodeNotReady(NodeError):
    """The node runs but is not ready yet (starting), or not ready any more."""


class NodeRefused(NodeError):
    """The node's admin refused our packets: it has another cluster cookie (or we none)."""


def ask(
    system: ActorSystem,
    address: ActorAddress,
    request: Any,
    timeout: float = DEFAULT_TIMEOUT,
    expect: type | tuple[type, ...] | None = None,
) -> Any:
    """Send ``request`` to ``address`` and return the reply to it.

    Thespian's ``ask()`` returns whatever message arrives first; a late answer to an
    earlier request that timed out would pass for this one's. So for a request with
    a ``request_id``, a reply that carries another one or none (a late ``"pid"``
    answer, say) is skipped — only Thespian's ``PoisonMessage`` about the request
    itself passes — and so is, with ``expect``, a reply not of that type; the wait
    goes on until ``timeout``.

    Args:
        system: the client handle (:func:`connect`) or the node's own system.
        address: the actor to ask.
        request: any message; one with a ``request_id`` is matched by it.
        timeout: seconds to wait in all.
        expect: for a request without ``request_id``: the reply's type(s).

    Returns:
        The reply (an error reply such as ``RegistryError`` is a reply too).

    Raises:
        AskTimeout: no matching reply within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    wanted = getattr(request, "request_id", None)
    reply = system.ask(address, request, timeout)
    while reply is not None and not _answers(reply, wanted, expect):
        remaining = deadline - time.monotonic()
        reply = system.listen(remaining) if remaining > 0 else None
    if reply is None:
        raise AskTimeout(
            f"no answer to {type(request).__name__} from {address} within {timeout:g} s"
        )
    return reply


def _answers(reply: Any, wanted: str | None, expect: type | tuple[type, ...] | None) -> bool:
    if expect is not None and not isinstance(reply, expect):
        return False
    if wanted is None:
        return True
    got = getattr(reply, "request_id", None)
    if got is not None:
        return bool(got == wanted)
    # No request_id: Thespian's word about this very request (a PoisonMessage), never
    # a stray late answer to some other ask of this client (a "pid", a tuple).
    return getattr(getattr(reply, "poisonMessage", None), "request_id", None) == wanted


@dataclass(frozen=True)
class NodeEntry:
    """What a ready node publishes about itself (see :func:`node_entry`)."""

    node: str
    root: ActorAddress
    registry: ActorAddress | None
    pgid: int
    admin_pid: int
    backend: str
    cluster: bool


def node_entry(system: ActorSystem, timeout: float = DEFAULT_TIMEOUT) -> NodeEntry:
    """Where the node ``system`` talks to keeps its root and Registry; creates nothing.

    One round trip to the node's admin (``Thespian_StatusReq``, which every
    Thespian admin answers), reading the capabilities the node publishes.

    Raises:
        NodeError: the actor system there runs no thespian-cluster node.
        NodeNotReady: it runs one that is still starting.
        AskTimeout: the admin did not answer.
    """
    admin = system._systemBase.adminAddr
    status = ask(system, admin, Thespian_StatusReq(), timeout, expect=Thespian_SystemStatus)
    capabilities = status.capabilities or {}
    name = capabilities.get(NODE_CAPABILITY)
    if not name:
        raise NodeError(f"the actor system at {admin} runs no thespian-cluster node")
    directory = capabilities.get(DIRECTORY_CAPABILITY)
    if not isinstance(directory, dict):
        raise NodeNotReady(f"node {name} at {admin} is starting, not ready yet")
    return NodeEntry(**directory)


def wait_ready(
    port: int,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    settings: ClusterSettings | None = None,
) -> NodeEntry:
    """Wait until the node on ``host:port`` is ready: its tree is up, its Registry answers.

    Safe from the first millisecond of a start (nothing listening yet, an admin
    without its node yet): it only connects and reads what the node publishes, and
    never creates or stops an actor. Ready means the node's own tree; a cluster
    node may still be joining its cluster (ask ``ClusterNodes`` for that).

    Args:
        port: the node's admin port.
        host: the address the node listens on.
        timeout: seconds to wait in all.
        settings: for the cluster cookie (else the environment's).

    Returns:
        The node's :class:`NodeEntry`.

    Raises:
        NodeError: an actor system that runs no thespian-cluster node holds the port
            (it will never become ready), or the node was not ready within
            ``timeout`` (a :class:`NodeNotReady`).
    """
    deadline = time.monotonic() + timeout
    why = f"nothing listens on {host}:{port}"
    system: ActorSystem | None = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            try:
                if system is None:
                    system = connect(port, host, settings)
                return node_entry(system, max(remaining, READY_POLL))
            except (NodeNotReady, AskTimeout) as exc:
                why = str(exc)
            except NodeRefused:
                raise  # another cookie: no wait changes that
            except NodeError as exc:
                if system is not None:
                    raise  # an actor system that is no thespian-cluster node
                why = str(exc)  # nothing listening yet
            except ActorSystemException:
                # An admin that does not answer yet, or drops our packets for good
                # (another cookie): Thespian cannot tell them apart, nor can we.
                why = f"the admin on {host}:{port} does not answer (check the cluster cookie)"
            if time.monotonic() >= deadline:
                raise NodeNotReady(f"not ready within {timeout:g} s: {why}")
            time.sleep(READY_POLL)  # the next look; the node gives no event to wait on
    finally:
        if system is not None:
            disconnect(system)


@dataclass
class Node:
    """A running node, as seen from the process that started or connected to it."""

    settings: ClusterSettings
    system: ActorSystem
    root: ActorAddress
    pgid: int
    _registry: Any = field(default=None, repr=False)
    admin_pid: int = 0

    @property
    def registry(self) -> ActorAddress:
        """The node's Registry actor (looked up again if it was restarted)."""
        if self._registry is None:
            self._registry = registry_address(self.system)
        return self._registry

    def ask(self, request: Request, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Send ``request`` to the node's Registry and return the reply to it.

        Raises:
            AskTimeout: no reply within ``timeout`` (the Registry is looked up
                again next time: it may have been restarted).
        """
        try:
            return ask(self.system, self.registry, request, timeout)
        except AskTimeout:
            self._registry = None
            raise

    def ask_root(self, request: Request, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Send ``request`` to the node's root supervisor; :class:`AskTimeout` if silent."""
        return ask(self.system, self.root, request, timeout)

    def admin_alive(self) -> bool:
        """False once the node's admin process has exited (the node is gone with it)."""
        return not self.admin_pid or not is_dead(self.admin_pid)

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

    def discard(self) -> None:
        """After the admin died: kill what is left of the node and close our handle.

        (:meth:`stop` would ask the dead admin to shut down and wait for it.) Actors
        that outlived their admin are orphans nobody can reach: they die with the group.
        """
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        disconnect(self.system)


def start_node(settings: ClusterSettings, log_to_stderr: bool = True) -> Node:
    """Start a node's actor system and supervision tree; return its handle.

    Raises:
        BackendLoadError: ``registry_backend`` names nothing usable.
        NodeError: the node cannot start for another reason; the message (one line)
            says why.
    """
    # A bad backend, or [backend] settings it cannot take, is a startup error, here.
    backend_config(settings.registry_backend, settings.backend)
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
    os.environ[NODE_NAME_ENV] = settings.node_name
    # A singleton manager silent this long may have been declared down by its peers.
    os.environ[PAUSE_FENCE_ENV] = str(
        max(
            settings.cluster_heartbeat_interval,
            settings.cluster_heartbeat_timeout - 2 * settings.cluster_heartbeat_interval,
        )
    )
    move_thespian_internal_log(settings.node_dir)
    bind_node_to(settings.host)
    limit_idle_sockets()
    widen_transmit_limits()
    _wait_for_the_admin_patiently()
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
        if pgid is not None:
            _reap_daemon_parent(pgid)
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
    security = wire_security_status()
    logger.info(
        "node {} up on {} (pgid {}); registry backend {}; wire security {}",
        settings.node_name,
        settings.admin_address,
        started.pgid,
        settings.registry_backend,
        f"on ({security['mac']})" if security["enabled"] else "off",
    )
    return Node(settings, system, root, started.pgid, started.registry, started.admin_pid)


def _reap_daemon_parent(pgid: int) -> None:
    """Reap the admin's launcher, which would stay a zombie child of this process.

    Thespian starts the admin as a ``multiprocessing.Process`` that calls ``setsid``
    (so its pid is the node's process group id), forks the real admin and exits; it
    is detached from ``multiprocessing``, so nobody ever waits for it.
    """
    with contextlib.suppress(ChildProcessError):  # not our child (another starter)
        os.waitpid(pgid, 0)  # it exits right after its fork, before the admin answers


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
    with _no_admin_start(host, port):
        if advertise_as is not None:
            with _remote_admin(host, port, advertise_as):
                return ActorSystem(SYSTEM_BASE, {"Admin Port": port}, transientUnique=True)
        advertise(host)  # Thespian finds "the local admin" at the advertised address
        return ActorSystem(SYSTEM_BASE, {"Admin Port": port}, transientUnique=True)


_client_building = threading.local()


@contextlib.contextmanager
def _no_admin_start(host: str, port: int) -> Iterator[None]:
    """While this thread builds a client ``ActorSystem``, it must never start an admin.

    Thespian's constructor starts a new admin on the port when it finds none there
    (or none answering yet): a node that stopped between our check and the
    constructor would get a second, empty actor system of the client's making. So
    Thespian's ``_startAdmin`` is wrapped, once: in a thread that is building a
    client it refuses, anywhere else (``start_node``) it starts the admin as before.
    """
    from thespian.system.multiprocCommon import multiprocessCommon

    original = multiprocessCommon.__dict__["_startAdmin"]
    if not getattr(original, "_thespian_cluster_guard", False):

        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            refusal = getattr(_client_building, "refusal", None)
            if refusal is not None:
                raise NodeError(refusal)
            return original(self, *args, **kwargs)

        guarded._thespian_cluster_guard = True  # type: ignore[attr-defined]
        multiprocessCommon._startAdmin = guarded
    _refusals_end_the_wait()
    _client_building.refusal = f"no node is listening on {host}:{port}"
    _client_building.rejected = f"the node at {host}:{port} refused us (check the cluster cookie)"
    _client_building.bad_packet = False
    try:
        yield
    finally:
        _client_building.refusal = None
        _client_building.rejected = None


def _refusals_end_the_wait() -> None:
    """A client's first packet refused by the admin ends the constructor's wait at once.

    Thespian's constructor asks the admin ``QueryExists`` and, without an answer, tries
    again for ~11 s. An admin with another cookie answers every packet of ours with a
    rejection (``ACK+DATAERR``: a ``BadPacket`` send status), which no retry changes;
    so while this thread builds a client, that rejection raises :class:`NodeRefused`.
    Patched once, like ``_startAdmin`` above; outside a client build it changes nothing.
    """
    from thespian.system.systemBase import TransmitTrack, systemBase
    from thespian.system.transport import SendStatus

    failed = TransmitTrack.__dict__["transmit_failed"]
    verify = systemBase.__dict__["_verifyAdminRunning"]
    if getattr(verify, "_thespian_cluster_guard", False):
        return

    def noted(self: Any, result: Any, intent: Any) -> Any:
        if result == SendStatus.BadPacket and getattr(_client_building, "rejected", None):
            _client_building.bad_packet = True
        return failed(self, result, intent)

    def verified(self: Any) -> bool:
        running = bool(verify(self))
        rejected = getattr(_client_building, "rejected", None)
        if not running and rejected and getattr(_client_building, "bad_packet", False):
            raise NodeRefused(rejected)
        return running

    verified._thespian_cluster_guard = True  # type: ignore[attr-defined]
    TransmitTrack.transmit_failed = noted
    systemBase._verifyAdminRunning = verified


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
    """The root supervisor of the node ``system`` talks to (see :func:`node_entry`).

    Raises:
        NodeError: no ready thespian-cluster node there.
    """
    return node_entry(system).root


def registry_address(system: ActorSystem, root: ActorAddress | None = None) -> ActorAddress:
    """The Registry of the node ``system`` talks to (see :func:`node_entry`).

    ``root`` is accepted for compatibility and not needed.

    Raises:
        NodeError: no ready thespian-cluster node there, or its Registry is
            restarting right now.
    """
    entry = node_entry(system)
    if entry.registry is None:
        raise NodeNotReady(f"node {entry.node} has no registry running right now")
    return entry.registry


#: Seconds ``start_node`` waits for its new admin's first sign of life. Thespian's own
#: 5 s was missed on a loaded 2-core machine (the admin is a fork that binds, builds
#: its transport and only then says it is there). The admin always sends that sign,
#: also when it cannot bind, so the wait ends at the event; the bound only matters
#: for an admin that dies first.
ADMIN_START_WAIT = 30.0


def _wait_for_the_admin_patiently() -> None:
    """Let Thespian wait :data:`ADMIN_START_WAIT` for a starting admin (module global,
    read at each start)."""
    from datetime import timedelta

    from thespian.system import multiprocCommon

    multiprocCommon.MAX_ADMIN_STARTUP_DELAY = timedelta(seconds=ADMIN_START_WAIT)


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
    tree = ask(system, root, WhichChildren(), DEFAULT_TIMEOUT)
    if not isinstance(tree, ChildrenReply) or CLUSTER_CHILD not in {c.id for c in tree.children}:
        raise NodeError("this node runs no cluster supervisor (cluster_enabled = false?)")
    cluster = ask(system, tree.by_id(CLUSTER_CHILD).address, WhichChildren(), DEFAULT_TIMEOUT)
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
        NODE_CAPABILITY: settings.node_name,
    }
    # A cluster node joins once its NodeMonitor has published the node's record
    # (actors/node_monitor.py); a plain node joins the convention at once.
    if settings.convention_leader and not settings.cluster_enabled:
        capabilities["Convention Address.IPv4"] = settings.convention_leader
    return capabilities
