"""RegistryDist: the host of this node's global backend.

The global scope is served by a :class:`~thespian_cluster.backends.scope.GlobalBackend`:
the built-in sequencer protocol
(:class:`~thespian_cluster.backends.sequenced.SequencedBackend`, ``registry_backend =
"global"``), etcd, or a user's own. This actor only connects it to the node; every
decision is the backend's. It

* **loads** the backend that ``registry_backend`` names, with ``[backend]`` validated
  against the backend's ``config_model`` (the node checked both at start already);
* **answers for it**: a client write arrives from the Registry wrapped in
  :class:`Forwarded` (with the client to answer) and becomes a
  :class:`~thespian_cluster.backends.scope.Deferred`; a deferred still open at
  ``global_request_timeout`` is answered ``RegistryError(timeout)``, and every open one
  ``unavailable`` when this actor stops. No ``ask()`` hangs, whatever the backend does;
* **calls its hooks**: the node monitor's views (and ``node_down`` for each node that
  left), the split-brain detector's verdicts and partitions (and ``healed`` once nodes
  cut off are back), the deaths of this node's actors that the Registry forwards
  (``owner_died``), its timer, and peer messages (``receive``);
* **wakes it from its threads**: :meth:`ScopeHost.wake` writes a byte to a socket pair
  that this actor returns in a ``ThespianWatch``, so Thespian's own select loop calls
  the backend's ``woken`` without polling.

Reads (``Whereis`` and listings of scope global) are answered by the Registry from
the node table's global mirror, which a table-feeding backend writes after every
change, so they cost no extra message. A backend that keeps no mirror
(``feeds_node_table = False``) is declared so in the node table when this actor
starts; the Registry then forwards reads here and they go to the backend's ``read``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from loguru import logger
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from thespian_cluster.actors.cluster_members import ConfigureComponent
from thespian_cluster.actors.event_service import EVENT_REQUESTS, EventService, ObservedMirror
from thespian_cluster.actors.liveness import refused
from thespian_cluster.actors.node_monitor import Agents
from thespian_cluster.actors.peer_links import FLUSH, FLUSH_AFTER, LINKED, PeerLinks
from thespian_cluster.backends.loading import backend_config, scope_backend
from thespian_cluster.backends.reads import READS
from thespian_cluster.backends.scope import Deferred, GlobalBackend, NoBackendConfig, ScopeHost
from thespian_cluster.cluster_messages import (
    ClusterView,
    ForceResolution,
    PartitionDetected,
    PartitionStatus,
    SubscribeClusterView,
    SubscribePartitionEvents,
    WritableChanged,
)
from thespian_cluster.core import replica as core
from thespian_cluster.core.addresses import AddressKey, address_key
from thespian_cluster.core.replica import NodeId
from thespian_cluster.core.sequencer import default_resolver
from thespian_cluster.global_messages import Forwarded, GetGlobalStatus, GlobalStatus, LinkOffer
from thespian_cluster.messages import (
    ActorExiting,
    ErrorCode,
    RegistryError,
    Reply,
    Request,
    SupervisedBy,
)
from thespian_cluster.node_identity import read_identity
from thespian_cluster.node_table import GlobalMirror, TableReader, publish_agent
from thespian_cluster.security import wire_codec
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.validation import revalidate

#: The role under which this actor also publishes its node incarnation: finding its own
#: incarnation there at start means it was restarted within this node's life.
_STARTED_ROLE = "registry_dist_incarnation"


class RegistryDist(Actor, ScopeHost):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.settings: ClusterSettings = None  # type: ignore[assignment]  # set by _configure
        self.node = core.NO_NODE
        self.address = None
        self.backend: GlobalBackend | None = None
        self._mirror: ObservedMirror | None = None
        self.events: EventService | None = None  # subscriptions and waits, scope global
        self._open: dict[int, Deferred] = {}
        self._early: list[tuple[Any, ActorAddress]] = []
        self._parent_pid = os.getppid()
        self._monitor: Any = None
        self._detector: Any = None
        self._members: set[NodeId] = set()
        self._cut_off: tuple[bool, frozenset[str]] | None = None  # (winner?, unreachable)
        self._wake_pair: tuple[socket.socket, socket.socket] | None = None
        self._next_tick = 0.0
        self._links: PeerLinks | None = None
        self._flush_armed = False
        self._peer_dists: dict[AddressKey, Any] = {}  # peers' RegistryDists offered a link

    # ---- ScopeHost -------------------------------------------------------------------

    @property
    def mirror(self) -> GlobalMirror:
        assert self._mirror is not None
        return self._mirror

    def caught_up(self) -> None:
        if self.events is not None and self.backend is not None and self.backend.feeds_node_table:
            self.events.ready()

    def probe_dead(self, addresses: Sequence[Any]) -> list[Any]:
        return refused(addresses)

    def fetch_verdict(self) -> None:
        if self._detector is not None:  # it answers PartitionStatus: see _receive
            self.send(self._detector, ForceResolution())

    def send(self, to: Any, message: Any) -> None:
        """By a peer link when one is up for ``message``'s type, else by Thespian."""
        links = self._links
        if links is not None and isinstance(message, LINKED) and links.send(to, message):
            self._arm_flush()
            return
        Actor.send(self, to, message)

    def wake(self) -> None:
        pair = self._wake_pair
        if pair is None:
            return
        try:
            pair[1].send(b"!")
        except BlockingIOError:
            pass  # the buffer is full of wake-ups already: one is enough
        except OSError:
            pass  # closed: the host is stopping

    # ---- receive ---------------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: ActorAddress) -> ThespianWatch | None:
        if isinstance(message, ConfigureComponent) and self.backend is None:
            # Not caught: a backend that cannot start must fail where the supervisor
            # sees it (the start fails, the restart policy decides), not sit unconfigured.
            self._configure(message.settings)
            early, self._early = self._early, []
            for queued, queued_sender in early:
                self.receiveMessage(queued, queued_sender)
            return self._watch()
        try:
            self._receive(message, sender)
        except Exception:  # logged where operators look; Thespian would only retry it
            logger.exception("registry dist failed on a {}", type(message).__name__)
        return self._watch()

    def _watch(self) -> ThespianWatch | None:
        watched = [] if self._wake_pair is None else [self._wake_pair[0].fileno()]
        if self._links is not None:
            watched += self._links.filenos()
        return ThespianWatch(watched) if watched else None

    def _receive(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ConfigureComponent):
            return  # configured already (see receiveMessage)
        backend = self.backend
        if backend is None:
            if not isinstance(message, ActorExitRequest | SupervisedBy):
                self._early.append((message, sender))
        elif isinstance(message, Forwarded):
            self._on_client(backend, message)
        elif isinstance(message, WatchMessage):
            self._on_ready(backend, message)
        elif isinstance(message, LinkOffer):
            self._on_link_offer(message, sender)
        elif isinstance(message, WakeupMessage):
            if message.payload == FLUSH:
                self._flush_links()
            else:
                self._tick(backend)
        elif isinstance(message, ActorExiting):
            if isinstance(message.address, ActorAddress):
                backend.owner_died(message.address, "died")
                self._event_service.dead(message.address)
        elif isinstance(message, ClusterView):
            self._on_view(backend, message)
        elif isinstance(message, PartitionStatus):
            backend.writability_changed(message.writable, message.reason)
            if message.partition_detected and message.unreachable:
                self._partitioned(backend, message.winner, frozenset(message.unreachable))
        elif isinstance(message, PartitionDetected):
            self._partitioned(backend, message.winner, frozenset(message.unreachable))
        elif isinstance(message, WritableChanged):
            backend.writability_changed(message.writable, message.reason)
        elif isinstance(message, Agents):
            self._on_agents(message)
        elif isinstance(message, ActorExitRequest):
            self._stop(backend)
        elif isinstance(message, SupervisedBy):
            pass
        elif not backend.receive(message, sender):
            logger.debug("registry dist ignored a {}", type(message).__name__)

    # ---- start and stop ------------------------------------------------------------------

    def _configure(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.address = self.myAddress
        identity = read_identity(settings.node_dir)
        self.node = NodeId(settings.node_name, identity.incarnation)
        self._mirror = ObservedMirror(settings.node_dir)
        config = backend_config(settings.registry_backend, settings.backend)
        backend_class: type[GlobalBackend] = (
            _NoGlobalScope if config is None else scope_backend(settings.registry_backend)
        )
        config = config or NoBackendConfig()
        restarted = TableReader(settings.node_dir).agent(_STARTED_ROLE) == identity.incarnation
        self._wake_pair = _socket_pair()
        if settings.global_peer_links:
            try:
                self._links = PeerLinks(settings.host, self.myAddress, wire_codec(), accepts=LINKED)
            except OSError as exc:  # an optimisation only: Thespian carries everything
                logger.warning("registry dist has no peer links ({}): all by Thespian", exc)
        self._mirror.declare(backend_class.feeds_node_table, settings.registry_backend)
        reader = TableReader(settings.node_dir)
        feeds = backend_class.feeds_node_table
        self.events = EventService(
            "global",
            self._mirror,
            self.send,
            records=reader.global_records,
            lookup=lambda key: reader.lookup(key[1], key[0], "global"),
            probe_interval=settings.liveness_probe_interval,
            hold_timeout=settings.global_request_timeout,
            unavailable=None
            if feeds
            else f"{settings.registry_backend} keeps no mirror of the global scope: no events",
        )
        self._mirror.events = self.events
        self.backend = backend_class(self, config)
        self.backend.start(restarted)
        if feeds and not backend_class.catches_up:
            self.events.ready()
        publish_agent(settings.node_dir, _STARTED_ROLE, identity.incarnation)
        publish_agent(settings.node_dir, "registry_dist", self.myAddress)
        self.wakeupAfter(self.backend.tick_interval)

    @property
    def _event_service(self) -> EventService:
        assert self.events is not None
        return self.events

    def _stop(self, backend: GlobalBackend) -> None:
        try:
            backend.stop()
        finally:
            for deferred in list(self._open.values()):
                deferred.fail(ErrorCode.UNAVAILABLE, "stopping")
            self._open.clear()
            if self._wake_pair is not None:
                for end in self._wake_pair:
                    end.close()
                self._wake_pair = None
            if self._links is not None:
                self._links.close()
                self._links = None

    def _on_agents(self, message: Agents) -> None:
        monitor = message.agents.get("node_monitor")
        if monitor is not None and monitor != self._monitor:
            self._monitor = monitor
            self.send(monitor, SubscribeClusterView(subscriber=self.myAddress))
        detector = message.agents.get("split_brain_detector")
        if detector is not None and detector != self._detector:
            self._detector = detector
            self.send(detector, SubscribePartitionEvents(subscriber=self.myAddress))

    # ---- client requests -----------------------------------------------------------------

    def _on_client(self, backend: GlobalBackend, message: Forwarded) -> None:
        to = message.reply_to
        checked = revalidate(message.request)
        if not isinstance(checked, Request):
            if isinstance(checked, RegistryError):
                self.send(to, checked)
            return
        if isinstance(checked, EVENT_REQUESTS):
            self._event_service.handle(checked, to)  # answers itself, maybe much later
            return
        deferred = self._defer(checked, to)
        try:
            if isinstance(checked, GetGlobalStatus):
                status = backend.status(checked.request_id)
                if self._links is not None:
                    status = status.model_copy(update={"peer_links": self._links.stats()})
                deferred.resolve(status)
            elif isinstance(checked, READS):
                backend.read(checked, deferred)
            else:
                backend.write(checked, deferred)
        except Exception as exc:  # a backend bug: answer now, not at the deadline
            logger.exception("global backend failed on {}", type(checked).__name__)
            deferred.fail(ErrorCode.BACKEND_FAILURE, f"{type(exc).__name__}: {exc}")

    def _defer(self, request: Request, to: Any) -> Deferred:
        key = id(request)

        def answer(reply: Reply) -> None:
            self._open.pop(key, None)
            self.send(to, reply)

        deferred = Deferred(
            request, time.monotonic() + self.settings.global_request_timeout, answer
        )
        self._open[key] = deferred
        return deferred

    # ---- the cluster: views and partitions -----------------------------------------------

    def _on_view(self, backend: GlobalBackend, view: ClusterView) -> None:
        if not view.joined:
            return  # a member that has not reached its cluster yet decides nothing
        members = {NodeId(r.name, r.incarnation) for r in view.records}
        gone, self._members = self._members - members, members
        cut_off = self._cut_off
        if cut_off is not None:
            back = cut_off[1] & {n.name for n in members}
            if back:
                won, unreachable = cut_off
                winners = {n.name for n in members} - unreachable if won else set(unreachable)
                remaining = unreachable - back
                self._cut_off = (won, remaining) if remaining else None
                backend.healed(frozenset(back), default_resolver(winners))
        backend.view_changed(view)
        for node in gone:
            backend.node_down(node, "left the view")
        self._offer_links(view)

    # ---- peer links (actors.peer_links) ------------------------------------------------

    def _offer_links(self, view: ClusterView) -> None:
        """Offer a link to every peer RegistryDist new in ``view``; close the links of
        those no longer in it."""
        links = self._links
        if links is None:
            return
        dists = {}
        for record in view.records:
            dist = record.agents.get("registry_dist")
            if isinstance(dist, ActorAddress) and dist != self.myAddress:
                dists[address_key(dist)] = dist
        for key, dist in self._peer_dists.items():
            if key not in dists:
                links.forget(dist)
        for key, dist in dists.items():
            if key not in self._peer_dists:
                self.send(dist, LinkOffer(port=links.port))
        self._peer_dists = dists

    def _on_link_offer(self, offer: LinkOffer, sender: Any) -> None:
        links = self._links
        port = offer.port
        if links is None or not isinstance(sender, ActorAddress):
            return
        if type(port) is not int or not 0 < port < 65536:
            logger.warning("registry dist ignored a link offer of port {!r}", port)
            return
        links.learn(sender, port)
        if offer.answer is not True:  # the peer just met me (or restarted): my port too
            self._peer_dists.setdefault(address_key(sender), sender)
            self.send(sender, LinkOffer(port=links.port, answer=True))

    def _on_ready(self, backend: GlobalBackend, ready: WatchMessage) -> None:
        fds = list(getattr(ready, "ready", ()) or ())
        if self._links is not None:
            for message, sender in self._links.readable(fds):
                try:  # each on its own, as Thespian delivers them
                    self._receive(message, sender)  # only the types the links accept
                except Exception:
                    logger.exception("registry dist failed on a {}", type(message).__name__)
        pair = self._wake_pair
        if pair is not None and pair[0].fileno() in fds:
            self._drain_wakeups()
            backend.woken()

    def _partitioned(
        self, backend: GlobalBackend, winner: bool, unreachable: frozenset[str]
    ) -> None:
        if self._cut_off is not None and self._cut_off[0] == winner:
            unreachable |= self._cut_off[1]
        self._cut_off = (winner, unreachable)
        backend.partitioned(winner, unreachable)

    # ---- timers and wake-ups -------------------------------------------------------------

    def _tick(self, backend: GlobalBackend) -> None:
        try:
            if os.getppid() != self._parent_pid:
                logger.warning("registry dist orphaned (its supervisor died); exiting")
                os._exit(0)
            now = time.monotonic()
            timeout = self.settings.global_request_timeout
            for deferred in [d for d in self._open.values() if now >= d.deadline]:
                deferred.expire(f"the global backend did not answer in {timeout:g} s")
            try:
                backend.tick(now)
                if self._links is not None:
                    self._links.flush()
                    self._arm_flush()
            finally:  # waits expire whatever the backend does
                self._event_service.tick(now, self.probe_dead, self.settings.liveness_probe_batch)
        finally:
            self.wakeupAfter(backend.tick_interval)

    def _flush_links(self) -> None:
        self._flush_armed = False
        if self._links is not None:
            self._links.flush()
            self._arm_flush()

    def _arm_flush(self) -> None:
        """One flush timer while a link holds bytes back (never one per caller)."""
        if self._links is not None and self._links.backlog and not self._flush_armed:
            self._flush_armed = True
            self.wakeupAfter(FLUSH_AFTER, payload=FLUSH)

    def _drain_wakeups(self) -> None:
        pair = self._wake_pair
        if pair is None:
            return
        try:
            while pair[0].recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass


class _NoGlobalScope(GlobalBackend):
    """A cluster node whose ``registry_backend`` serves the local scope only: the
    Registry answers ``not_distributed`` itself, so nothing should reach this."""

    def write(self, request: Request, reply: Deferred) -> None:
        reply.fail(ErrorCode.NOT_DISTRIBUTED, "this node's backend serves the local scope only")

    def status(self, request_id: str) -> GlobalStatus:
        return GlobalStatus(
            request_id=request_id,
            node=self.host.node.name,
            sequencer="",
            epoch=0,
            seq=0,
            sequencing=False,
            names=0,
            groups=0,
            pending=0,
        )


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    """Both ends non-blocking: a wake-up never blocks a thread, a drain never the actor."""
    pair = socket.socketpair()
    for end in pair:
        end.setblocking(False)
    return pair[0], pair[1]
