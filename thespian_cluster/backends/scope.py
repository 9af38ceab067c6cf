"""``GlobalBackend``: the contract of a backend that serves ``scope="global"``.

A node's names live in two scopes. The *local* scope is a :class:`RegistryBehavior`
inside the Registry actor: plain synchronous calls on one node's data. The *global*
scope is shared by the cluster, so its backend has to talk to something — its peers
on other nodes (the built-in protocol), or a store such as etcd — and it cannot answer
on the spot. This module is its contract, shaped after syn's split of a generic scope
process and data callbacks, and pykka's futures:

* **A host actor runs it.** Each node's RegistryDist actor (a child of the
  ClusterSupervisor) loads the backend that ``registry_backend`` names, builds its
  configuration from the ``[backend]`` table of the settings, and calls it from its one
  thread. The backend never sees Thespian: it gets a :class:`ScopeHost` to send messages,
  feed the node table and wake itself from its own threads.
* **Requests travel whole, scope included**, and are answered through a
  :class:`Deferred`: the backend resolves it now or later (after a peer or the store
  answered); the host sends the reply. The host also guarantees an answer: a deferred
  still open at ``global_request_timeout`` is answered ``RegistryError(timeout)``, and
  one open when the actor stops is answered ``unavailable``. No ``ask()`` hangs, whatever
  a backend does.
* **Hooks with reasons**, called by the host as things happen on this node:
  :meth:`~GlobalBackend.owner_died` (an actor this node hosts died: exit hook, dead
  letter or liveness probe), :meth:`~GlobalBackend.view_changed` (the node monitor's
  view: who is up, who leads), :meth:`~GlobalBackend.node_down` (a node left the view:
  purge it), :meth:`~GlobalBackend.writability_changed` and
  :meth:`~GlobalBackend.partitioned` (the split-brain detector's verdict),
  :meth:`~GlobalBackend.healed` (nodes cut off by a partition are back, with the
  merge resolver to use) and :meth:`~GlobalBackend.start` with ``restarted`` (rebuild
  after a crash of the host actor).
* **Its own configuration.** :attr:`GlobalBackend.config_model` is a pydantic model;
  the node validates ``[backend]`` (and ``THESPIAN_CLUSTER_BACKEND__<KEY>`` variables)
  against it at start, with the same errors as every other setting.
* **Reads stay message-free.** A backend keeps the node table's global mirror
  (:attr:`ScopeHost.mirror`) equal to what it knows, and ``Whereis``, listings and
  :func:`thespian_cluster.lookup` read it without a message. A backend that cannot
  (its store is too big to copy, or reads must be linearizable) sets
  :attr:`GlobalBackend.feeds_node_table` to False and answers reads in
  :meth:`GlobalBackend.read`: the Registry forwards them to it, and ``lookup`` raises
  :class:`~thespian_cluster.node_table.NotMirrored` instead of answering None for a
  name it cannot see.

Writing one: subclass :class:`GlobalBackend`, implement :meth:`~GlobalBackend.write`
(and the hooks your store needs), and name it from a local backend::

    class MyNodeBackend(LocalBackend):
        global_scope = MyGlobalBackend      # registry_backend = "my_pkg.mod:MyNodeBackend"

docs/backends.md walks through a complete one.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from thespian_cluster.core.replica import NodeId
from thespian_cluster.core.sequencer import Resolver
from thespian_cluster.messages import ErrorCode, RegistryError, Reply, Request

if TYPE_CHECKING:
    from thespian_cluster.cluster_messages import ClusterView
    from thespian_cluster.global_messages import GlobalStatus
    from thespian_cluster.node_table import GlobalMirror
    from thespian_cluster.settings import ClusterSettings


class NoBackendConfig(BaseModel):
    """The configuration of a backend that takes none: ``[backend]`` must be empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Deferred:
    """A client request the backend answers now or later; the host sends the answer.

    The first :meth:`resolve` (or :meth:`fail`) wins; later ones are ignored, so a
    backend may race a store's answer against its own timeout without bookkeeping.
    """

    def __init__(self, request: Request, deadline: float, send: Callable[[Reply], None]) -> None:
        self.request = request
        self.deadline = deadline  #: ``time.monotonic()`` by which the host answers ``timeout``
        self._send = send
        self._on_expire: list[Callable[[], None]] = []
        self.done = False

    def resolve(self, reply: Reply) -> None:
        """Answer the client with ``reply`` (its ``request_id`` should be the request's)."""
        if not self.done:
            self.done = True
            self._send(reply)

    def fail(self, code: ErrorCode, detail: str) -> None:
        """Answer the client with ``RegistryError(code, detail)``."""
        self.resolve(RegistryError(request_id=self.request.request_id, code=code, detail=detail))

    def on_expire(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` if the host answers this request ``timeout`` (e.g. to stop
        retrying its write)."""
        self._on_expire.append(callback)

    def expire(self, detail: str) -> None:
        """The host's deadline passed: answer ``timeout`` and run the callbacks."""
        if self.done:
            return
        self.fail(ErrorCode.TIMEOUT, detail)
        for callback in self._on_expire:
            callback()


class ScopeHost(ABC):
    """What the host actor offers its backend. Call it from the actor's thread only,
    except :meth:`wake`, which any thread may call."""

    #: This node (its name and incarnation, as peers see it).
    node: NodeId
    #: The node's settings (the backend's own are its ``config``).
    settings: ClusterSettings
    #: The host actor's address: where peers reach this node's backend.
    address: Any

    @property
    @abstractmethod
    def mirror(self) -> GlobalMirror:
        """The node table's global mirror, which a table-feeding backend keeps current."""

    @abstractmethod
    def send(self, to: Any, message: Any) -> None:
        """Send ``message`` to the actor at ``to`` (a peer backend's host, an owner)."""

    @abstractmethod
    def probe_dead(self, addresses: Sequence[Any]) -> list[Any]:
        """The addresses whose port refuses connections now (their actor is dead)."""

    @abstractmethod
    def caught_up(self) -> None:
        """The mirror holds the whole scope now (for a backend with ``catches_up``):
        name events start from here. Later calls do nothing."""

    def fetch_verdict(self) -> None:
        """Ask this node's split-brain detector for a verdict now: a
        :meth:`GlobalBackend.writability_changed` call follows with it (unless the node
        has no detector). For a backend that must know, at a view change, whether its
        side may still grant claims."""

    @abstractmethod
    def wake(self) -> None:
        """Thread-safe: have the host call :meth:`GlobalBackend.woken` in its thread soon.

        A backend's own threads (a store's watch stream, a lease keepalive) hand their
        results over through a queue of their own and call this; the host actor's event
        loop watches a socket pair for it, so nothing polls.
        """


class GlobalBackend(ABC):
    """Serves ``scope="global"`` on one node; see the module docstring.

    Args:
        host: the actor running this backend.
        config: ``[backend]`` validated against :attr:`config_model`.
    """

    #: The pydantic model of this backend's ``[backend]`` settings table.
    config_model: ClassVar[type[BaseModel]] = NoBackendConfig
    #: Seconds between :meth:`tick` calls.
    tick_interval: ClassVar[float] = 0.1
    #: Does this backend keep :attr:`ScopeHost.mirror`? If not, reads come to :meth:`read`.
    feeds_node_table: ClassVar[bool] = True
    #: Is the mirror still incomplete when :meth:`start` returns (a backend that learns
    #: the scope from its peers or its store)? Then it calls :meth:`ScopeHost.caught_up`
    #: once it holds the whole scope, and name events wait for that.
    catches_up: ClassVar[bool] = False

    def __init__(self, host: ScopeHost, config: BaseModel) -> None:
        self.host = host
        self.config = config

    # ---- life ----------------------------------------------------------------------

    def start(self, restarted: bool) -> None:
        """The host is configured. ``restarted``: the host actor crashed and was started
        again on a running node, so the mirror holds what this node knew (rebuild from
        it, or from the store)."""

    def stop(self) -> None:
        """The host is stopping; open deferreds are answered ``unavailable`` after this."""

    # ---- client requests ----------------------------------------------------------------

    @abstractmethod
    def write(self, request: Request, reply: Deferred) -> None:
        """A validated global write: ``Register``, ``RegisterMany``, ``Unregister``,
        ``UnregisterMany``, ``UpdateMeta``, ``JoinGroup`` or ``LeaveGroup``.

        The Registry routes claims to the node that hosts their actor, so an owner's
        names are written where it can be watched. Resolve ``reply`` with the same reply
        a local write would get (``Registered``, ``AlreadyRegistered`` naming the real
        owner, ``RegistryError`` ...).
        """

    def read(self, request: Request, reply: Deferred) -> None:
        """A validated global read (``Whereis``, ``ListNames``, ``GroupMembers``,
        ``ListGroups``), for a backend with :attr:`feeds_node_table` False; the others
        never get one (the Registry reads their mirror). Resolve ``reply`` with what
        :func:`thespian_cluster.backends.reads.read_reply` gives for your table."""
        reply.fail(
            ErrorCode.UNKNOWN_REQUEST,
            f"{type(self).__name__} keeps no node table mirror and answers no reads",
        )

    @abstractmethod
    def status(self, request_id: str) -> GlobalStatus:
        """How this node's view of the global scope stands (``GetGlobalStatus``)."""

    # ---- hooks ---------------------------------------------------------------------------

    def owner_died(self, address: Any, reason: str) -> None:
        """An actor on this node died (``reason``: how the node noticed): release what it
        owned in the global scope."""

    def view_changed(self, view: ClusterView) -> None:
        """The node monitor's new view (members, their agents, the leader, suspects)."""

    def node_down(self, node: NodeId, reason: str) -> None:
        """``node`` left the view: purge what it owned (its actors died with it)."""

    def writability_changed(self, writable: bool, reason: str) -> None:
        """The split-brain detector's verdict on this side: may it take new claims?"""

    def partitioned(self, winner: bool, unreachable: frozenset[str]) -> None:
        """A partition cut this side off from ``unreachable``; ``winner`` per strategy."""

    def healed(self, nodes: frozenset[str], resolver: Resolver) -> None:
        """``nodes`` cut off by a partition are reachable again; a name claimed on both
        sides keeps the entry ``resolver(a, b)`` returns."""

    def receive(self, message: Any, sender: Any) -> bool:
        """A message for the backend itself (a peer's protocol); False if unknown.
        Peers may run other code: validate before acting."""
        return False

    def tick(self, now: float) -> None:
        """Every :attr:`tick_interval` seconds (``now`` is ``time.monotonic()``)."""

    def woken(self) -> None:
        """After :meth:`ScopeHost.wake`: take what the backend's threads handed over."""


def deadline_after(seconds: float) -> float:
    """The ``time.monotonic()`` value ``seconds`` from now."""
    return time.monotonic() + seconds
