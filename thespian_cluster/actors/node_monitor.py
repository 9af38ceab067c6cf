"""NodeMonitor: cluster membership and node health (the seeds' ``erlmcp_node_monitor``).

One per node, under ClusterSupervisor. It

* **joins**: publishes this node's record (name, incarnation, start time, admin
  address, cluster actors) as an actor-system capability, then points the admin at
  ``convention_leader``. Thespian tells the leader's NodeMonitor about the member and
  the member's about the leader (``ActorSystemConventionUpdate``, with the record in
  the capabilities); each then says :class:`Hello` to the other, and a newcomer
  says Hello to every node the leader knows, so every node knows every other
  (Thespian itself never introduces members to each other). Until the leader
  answers, it re-points the admin every second and says so once in the log;
* **watches** every peer with heartbeats (:mod:`.heartbeat`, a UDP thread) and feeds
  what the thread saw to the pure :class:`~thespian_cluster.core.membership.Membership`
  every ``node_check_interval``;
* **answers** the cluster protocol (:mod:`thespian_cluster.cluster_messages`) and
  sends :class:`NodeUp` / :class:`NodeDown` to subscribers;
* **survives its own restart**: the view and the subscribers are saved in the node's
  directory on every change and reloaded by the next NodeMonitor of the same node
  incarnation, which then says Hello to its peers with its new address. No event is
  emitted for nodes it already knew.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import ValidationError
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ActorSystemConventionUpdate,
    WakeupMessage,
)

from thespian_cluster.actors.cluster_members import ConfigureComponent
from thespian_cluster.actors.exit_hook import node_registry
from thespian_cluster.actors.heartbeat import HeartbeatAgent, Observation, Peer, heartbeat_key
from thespian_cluster.actors.liveness import refused
from thespian_cluster.cluster_messages import (
    AwaitJoin,
    ClusterNodes,
    ClusterNodesReply,
    ClusterView,
    ForceNodeCheck,
    GetNodeHealth,
    GetNodeStatus,
    Goodbye,
    Hello,
    JoinOutcome,
    JoinRefused,
    NodeDown,
    NodeHealthInfo,
    NodeHealthReply,
    NodeStatusReply,
    NodeUp,
    SubscribeClusterView,
    Subscribed,
    SubscribeNodeEvents,
    Unsubscribed,
    UnsubscribeNodeEvents,
)
from thespian_cluster.core.addresses import AddressKey, address_key
from thespian_cluster.core.failure_detector import DownReason, FailureDetector, Health
from thespian_cluster.core.membership import Membership, NodeEvent, NodeRecord
from thespian_cluster.global_messages import Forwarded
from thespian_cluster.messages import ErrorCode, RegistryError, Reply, Request, SupervisedBy
from thespian_cluster.node_identity import read_identity
from thespian_cluster.node_table import publish_agent
from thespian_cluster.security import resolve_cookie
from thespian_cluster.settings import ClusterSettings
from thespian_cluster.validation import revalidate

RECORD_CAPABILITY = "thespian_cluster.record"
CONVENTION_CAPABILITY = "Convention Address.IPv4"
STATE_FILE = "monitor.state"
JOIN_RETRY = 1.0  # seconds between attempts to reach an unreachable convention leader
FAST_TICK = 0.01  # while a ForceNodeCheck waits for answers


@dataclass
class _Check:
    """A ForceNodeCheck waiting for every live peer to answer (or its deadline)."""

    to: Any
    request_id: str
    started: float
    deadline: float
    peers: tuple[str, ...]


class Agents(Request):
    """ClusterSupervisor → NodeMonitor: the addresses of this node's cluster actors."""

    agents: dict[str, Any]


class NodeMonitor(Actor):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.settings: ClusterSettings | None = None
        self.membership: Membership | None = None
        self.agent: HeartbeatAgent | None = None
        self.subscribers: dict[AddressKey, Any] = {}
        self.view_subscribers: dict[AddressKey, Any] = {}  # this node's cluster actors
        self._last_view: ClusterView | None = None
        self.joined = False
        self.refusal: str | None = None
        self._early: list[tuple[Any, ActorAddress]] = []
        self._join_waiters: list[tuple[Any, str, float]] = []  # (to, request_id, deadline)
        self._checks: list[_Check] = []
        self._next_join = 0.0
        self._said_waiting = False
        self._parent_pid = os.getppid()
        self._last_tick = time.monotonic()
        self._handlers: dict[type, Callable[[Any, Any], Reply | None]] = {
            ClusterNodes: self._cluster_nodes,
            GetNodeStatus: self._node_status,
            GetNodeHealth: self._node_health,
            ForceNodeCheck: self._force_check,
            SubscribeNodeEvents: self._subscribe,
            UnsubscribeNodeEvents: self._unsubscribe,
            AwaitJoin: self._await_join,
            SubscribeClusterView: self._subscribe_view,
            Agents: self._agents,
        }

    # ---- receive ---------------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ConfigureComponent):
            if self.membership is None:
                self._configure(message.settings)
                early, self._early = self._early, []
                for queued, queued_sender in early:
                    self.receiveMessage(queued, queued_sender)
        elif self.membership is None:
            if not isinstance(message, ActorExitRequest | SupervisedBy):
                self._early.append((message, sender))
        elif isinstance(message, WakeupMessage):
            self._tick()
        elif isinstance(message, Hello):
            self._hello(message)
        elif isinstance(message, ActorSystemConventionUpdate):
            self._convention_update(message)
        elif isinstance(message, JoinRefused):
            self._refused(message)
        elif isinstance(message, Goodbye):
            self._goodbye(message)
        elif isinstance(message, Request):
            self._answer(message, sender)
        elif isinstance(message, Forwarded):
            self._answer(message.request, message.reply_to)
        elif isinstance(message, ActorExitRequest):
            self._exit()
        elif not isinstance(message, SupervisedBy):
            logger.debug("node monitor ignored a {}", type(message).__name__)

    def _answer(self, message: Any, sender: Any) -> None:
        checked = revalidate(message)  # act only on a validated copy
        if not isinstance(checked, Request):
            if isinstance(checked, RegistryError):
                self.send(sender, checked)
            return
        request = checked
        handler = self._handlers.get(type(request))
        if handler is None:
            self.send(sender, _error(request, ErrorCode.UNKNOWN_REQUEST, type(request).__name__))
            return
        reply = handler(request, sender)
        if reply is not None:
            self.send(sender, reply)

    # ---- start and stop ------------------------------------------------------------------

    def _configure(self, settings: ClusterSettings) -> None:
        self.settings = settings
        identity = read_identity(settings.node_dir)
        agents: dict[str, Any] = {"node_monitor": self.myAddress}
        registry = node_registry()
        if registry is not None:
            agents["registry"] = registry
        me = NodeRecord(
            name=settings.node_name,
            incarnation=identity.incarnation,
            started_at=identity.started_at,
            host=settings.host,
            port=settings.admin_port,
            agents=agents,
        )
        timeout = settings.cluster_heartbeat_timeout
        # Suspicion is only shown, never acted on: a few missed beats, not one late one.
        suspect_after = min(timeout, max(4 * settings.cluster_heartbeat_interval, timeout / 2))
        self.membership = Membership(me, FailureDetector(suspect_after, timeout))
        restarted = self._load_state(identity.incarnation)
        self.agent = HeartbeatAgent(
            settings.node_name,
            identity.incarnation,
            (settings.host, settings.admin_port),
            settings.cluster_heartbeat_interval,
            heartbeat_key(resolve_cookie(settings.cluster_cookie)),
        )
        self.agent.start()
        self._sync_agent()
        self.notifyOnSystemRegistrationChanges(True)
        self.updateCapability(RECORD_CAPABILITY, me.model_dump())
        publish_agent(settings.node_dir, "node_monitor", self.myAddress)
        if settings.convention_leader and not self.joined:
            self._join(time.monotonic())
        elif not settings.convention_leader:
            self.joined = True  # the leader of its own convention
        if restarted:
            self._greet_all(answer=True)  # peers learn our new address, we their news
        logger.info(
            "node monitor {} for {} (incarnation {})",
            "restarted" if restarted else "started",
            settings.node_name,
            identity.incarnation[:8],
        )
        self.wakeupAfter(settings.node_check_interval)

    def _exit(self) -> None:
        membership = self.membership
        if membership is not None:
            me = membership.me
            goodbye = Goodbye(node=me.name, incarnation=me.incarnation)
            for peer in membership.live_peers():
                self._tell_peer(peer, goodbye)
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    # ---- joining -------------------------------------------------------------------------

    def _join(self, now: float) -> None:
        """Point the admin at the convention leader (again): Thespian registers with it."""
        assert self.settings is not None and self.settings.convention_leader
        self.updateCapability(CONVENTION_CAPABILITY, self.settings.convention_leader)
        self._next_join = now + JOIN_RETRY

    def _convention_update(self, update: ActorSystemConventionUpdate) -> None:
        if not update.remoteAdded:
            return  # a graceful deregistration; Goodbye and heartbeats tell the rest
        raw = (update.remoteCapabilities or {}).get(RECORD_CAPABILITY)
        if raw is None:
            return  # a Thespian system that runs no thespian-cluster node
        try:
            record = _checked_record(NodeRecord.model_validate(raw))
        except (ValidationError, ValueError) as exc:
            logger.warning(
                "ignored a malformed node record from {}: {}", update.remoteAdminAddress, exc
            )
            return
        self._learn(record, greet=True)

    def _hello(self, hello: Hello) -> None:
        try:
            hello = Hello.model_validate(hello.model_dump())
            for record in (hello.record, *hello.known):
                _checked_record(record)
        except (ValidationError, ValueError) as exc:
            logger.warning("ignored a malformed Hello: {}", exc)
            return
        accepted = self._learn(hello.record, greet=False)
        if self.refusal is None and not self.joined:
            self._joined()  # after learning the sender: the first view holds it
        if accepted and hello.answer:
            self._tell_peer(hello.record, self._hello_message(answer=False))
        for record in hello.known:
            self._learn(record, greet=True)

    def _learn(self, record: NodeRecord, greet: bool) -> bool:
        """Take in ``record``; False if it was refused. Greets a node new to us."""
        membership = self._membership
        learned = membership.learn(record, time.monotonic())
        if learned.outcome == "rejected":
            logger.error(
                "refused node {} at {}: {}", record.name, record.admin_address, learned.reason
            )
            self._tell_peer(record, JoinRefused(reason=learned.reason or "refused"))
            return False
        if learned.outcome in ("new", "updated"):
            if learned.outcome == "new" and greet:
                self._tell_peer(record, self._hello_message(answer=True))
            self._sync_agent()
            self._publish(list(learned.events))
            self._push_view()
        return learned.outcome not in ("stale",)

    def _joined(self) -> None:
        self.joined = True
        if self._said_waiting:
            logger.info("joined the cluster of {}", self._settings.convention_leader)
        self._answer_join_waiters()
        self._save_state()
        self._push_view()

    def _refused(self, message: JoinRefused) -> None:
        try:
            reason = JoinRefused.model_validate(message.model_dump()).reason
        except ValidationError:
            return
        if self.joined and self.refusal is None and self._membership.peers():
            # Already accepted by the cluster: a late refusal (e.g. a stale Hello that
            # reached a node holding our old record) must not cut us off.
            logger.warning("ignored a late join refusal: {}", reason)
            return
        if self.refusal is None:
            logger.error("the cluster refused this node: {}", reason)
        self.refusal = reason
        self.joined = False
        self._answer_join_waiters()

    def _goodbye(self, message: Goodbye) -> None:
        try:
            goodbye = Goodbye.model_validate(message.model_dump())
        except ValidationError:
            return
        events = self._membership.left(goodbye.node, goodbye.incarnation)
        self._sync_agent()
        self._publish(events)

    def _greet_all(self, answer: bool) -> None:
        hello = self._hello_message(answer)
        for peer in self._membership.live_peers():
            self._tell_peer(peer, hello)

    def _hello_message(self, answer: bool) -> Hello:
        membership = self._membership
        return Hello(record=membership.me, known=membership.live_peers(), answer=answer)

    def _tell_peer(self, record: NodeRecord, message: Any) -> None:
        monitor = record.agents.get("node_monitor")
        if monitor is not None:
            self.send(monitor, message)

    # ---- heartbeats and health ---------------------------------------------------------

    def _tick(self) -> None:
        settings = self._settings
        now = time.monotonic()
        if os.getppid() != self._parent_pid:
            # Our supervisor (or the whole admin) is gone: an orphan must not keep
            # answering heartbeats for a node that no longer works, nor hold the port
            # a restarted NodeMonitor needs.
            # No Goodbye: the node itself may live on with a restarted NodeMonitor.
            logger.warning("node monitor orphaned (its supervisor died); exiting")
            if self.agent is not None:
                self.agent.stop()
            os._exit(0)
        paused = now - self._last_tick > settings.cluster_heartbeat_timeout / 2
        self._last_tick = now
        try:
            events: list[NodeEvent] = []
            if paused:
                # We were not running (SIGSTOP, an overloaded host): the peers' silence
                # is ours. Judge them on heartbeats from now on, not on our own gap.
                logger.warning("node monitor was paused; giving every peer a fresh grace")
                self._membership.detector.pardon(now)
            for seen in self._drain():
                events.extend(self._observe(seen))
            events.extend(self._membership.tick(now))
            if events:
                self._sync_agent()
                self._publish(events)
            self._push_view()  # sent only when it changed (e.g. a peer became suspect)
            self._finish_checks(now)
            self._expire_join_waiters(now)
            if (
                settings.convention_leader
                and not self.joined
                and self.refusal is None
                and now >= self._next_join
            ):
                if not self._said_waiting:
                    logger.warning(
                        "convention leader {} not reachable yet; retrying every {} s",
                        settings.convention_leader,
                        JOIN_RETRY,
                    )
                    self._said_waiting = True
                self._join(now)
        finally:  # a failing tick must not stop the heartbeat bookkeeping for good
            self.wakeupAfter(FAST_TICK if self._checks else settings.node_check_interval)

    def _drain(self) -> list[Observation]:
        return self.agent.drain() if self.agent is not None else []

    def _observe(self, seen: Observation) -> list[NodeEvent]:
        membership = self._membership
        if seen.kind == "refused":
            return membership.refused(seen.name, seen.incarnation)
        if seen.rtt is None:
            # A ping from a peer proves life only for the incarnation we know; a
            # stranger pinging under a known name (a refused duplicate) proves nothing.
            record = membership.record(seen.name)
            if record is None or record.incarnation != seen.incarnation:
                return []
        return membership.heard(seen.name, seen.incarnation, seen.at, seen.rtt)

    def _sync_agent(self) -> None:
        """Tell the heartbeat thread whom to ping: every peer that may still answer."""
        if self.agent is None:
            return
        membership = self._membership
        peers = []
        for record in membership.peers():
            state = membership.peer_health(record.name)
            gone = state is not None and state.reason in (
                DownReason.REFUSED,
                DownReason.RESTARTED,
            )
            if not gone:
                peers.append(Peer(record.name, record.incarnation, record.host, record.port))
        self.agent.set_peers(peers)

    def _publish(self, events: list[NodeEvent]) -> None:
        """Log, save and send each event to every live subscriber, in order."""
        if not events:
            return
        for event in events:
            if event.kind == "up":
                logger.info("node {} is up (incarnation {})", event.node, event.incarnation[:8])
            else:
                logger.warning(
                    "node {} is down ({}; incarnation {})",
                    event.node,
                    event.reason,
                    event.incarnation[:8],
                )
        self._drop_dead_subscribers()
        for event in events:
            message: NodeUp | NodeDown = (
                NodeUp(node=event.node, incarnation=event.incarnation)
                if event.kind == "up"
                else NodeDown(
                    node=event.node, incarnation=event.incarnation, reason=event.reason or ""
                )
            )
            for subscriber in self.subscribers.values():
                self.send(subscriber, message)
        self._save_state()
        self._push_view()

    def _drop_dead_subscribers(self) -> None:
        for dead in refused(list(self.subscribers.values())):
            self.subscribers.pop(address_key(dead), None)
            logger.info("dropped dead node-event subscriber {}", dead)

    # ---- requests ------------------------------------------------------------------------

    def _cluster_nodes(self, request: ClusterNodes, _: Any) -> Reply:
        membership = self._membership
        settings = self._settings
        live = sorted([membership.me.name, *(r.name for r in membership.live_peers())])
        return ClusterNodesReply(
            request_id=request.request_id,
            node=membership.me.name,
            nodes=live,
            leader=membership.leader(),
            joined=self.joined,
            expected=list(settings.cluster_nodes),
            refused=self.refusal,
        )

    def _node_status(self, request: Request, _: Any) -> Reply:
        return self._status_reply(request.request_id)

    def _status_reply(self, request_id: str) -> NodeStatusReply:
        membership = self._membership
        now = time.monotonic()
        infos = [self._info(membership.me, now)]
        infos += [self._info(r, now) for r in sorted(membership.peers(), key=lambda r: r.name)]
        return NodeStatusReply(
            request_id=request_id, node=membership.me.name, leader=membership.leader(), nodes=infos
        )

    def _node_health(self, request: GetNodeHealth, _: Any) -> Reply:
        record = self._membership.record(request.node)
        if record is None:
            return _error(
                request, ErrorCode.UNKNOWN_NODE, f"no node {request.node!r} is known here"
            )
        return NodeHealthReply(
            request_id=request.request_id, info=self._info(record, time.monotonic())
        )

    def _info(self, record: NodeRecord, now: float) -> NodeHealthInfo:
        membership = self._membership
        expected = self._settings.cluster_nodes
        state = membership.peer_health(record.name)
        is_self = record.name == membership.me.name
        return NodeHealthInfo(
            name=record.name,
            incarnation=record.incarnation,
            health=(membership.health(record.name) or Health.DOWN).value,
            admin_address=record.admin_address,
            started_at=record.started_at,
            last_seen=None if state is None else max(0.0, now - state.last_seen),
            rtt_ms=None if state is None or state.rtt is None else state.rtt * 1000,
            reason=state.reason.value if state is not None and state.reason else None,
            is_self=is_self,
            expected=not expected or record.name in expected,
        )

    def _force_check(self, request: ForceNodeCheck, sender: Any) -> None:
        settings = self._settings
        now = time.monotonic()
        peers = tuple(r.name for r in self._membership.live_peers())
        wait = min(settings.cluster_heartbeat_timeout, 1.0)
        self._checks.append(_Check(sender, request.request_id, now, now + wait, peers))
        if self.agent is not None:
            self.agent.ping_now()
        self.wakeupAfter(FAST_TICK)
        return None

    def _finish_checks(self, now: float) -> None:
        if not self._checks:
            return
        membership = self._membership
        waiting = []
        for check in self._checks:

            def answered(name: str, check: _Check = check) -> bool:
                state = membership.peer_health(name)
                return (
                    state is None or state.health is Health.DOWN or state.last_seen >= check.started
                )

            if now >= check.deadline or all(answered(name) for name in check.peers):
                self.send(check.to, self._status_reply(check.request_id))
            else:
                waiting.append(check)
        self._checks = waiting

    def _subscribe(self, request: SubscribeNodeEvents, _: Any) -> Reply:
        self.subscribers[address_key(request.subscriber)] = request.subscriber
        self._save_state()
        return Subscribed(request_id=request.request_id)

    def _unsubscribe(self, request: UnsubscribeNodeEvents, _: Any) -> Reply:
        was = self.subscribers.pop(address_key(request.subscriber), None) is not None
        self._save_state()
        return Unsubscribed(request_id=request.request_id, was_subscribed=was)

    def _await_join(self, request: AwaitJoin, sender: Any) -> Reply | None:
        if self.joined or self.refusal is not None:
            return self._join_outcome(request.request_id)
        self._join_waiters.append((sender, request.request_id, time.monotonic() + request.timeout))
        return None

    def _join_outcome(self, request_id: str) -> JoinOutcome:
        return JoinOutcome(request_id=request_id, joined=self.joined, refused=self.refusal)

    def _answer_join_waiters(self) -> None:
        for to, request_id, _ in self._join_waiters:
            self.send(to, self._join_outcome(request_id))
        self._join_waiters = []

    def _expire_join_waiters(self, now: float) -> None:
        expired = [w for w in self._join_waiters if now >= w[2]]
        if expired:
            self._join_waiters = [w for w in self._join_waiters if now < w[2]]
            for to, request_id, _ in expired:
                self.send(to, self._join_outcome(request_id))

    def _agents(self, request: Agents, _: Any) -> None:
        """The cluster supervisor reports where this node's cluster actors are."""
        membership = self._membership
        agents = {**membership.me.agents, **request.agents, "node_monitor": self.myAddress}
        if agents != membership.me.agents:
            me = membership.me.model_copy(update={"agents": agents})
            membership.update_me(me)
            self.updateCapability(RECORD_CAPABILITY, me.model_dump())
            self._greet_all(answer=False)
            self._push_view()
        return None

    def _subscribe_view(self, request: SubscribeClusterView, _: Any) -> Reply:
        self.view_subscribers[address_key(request.subscriber)] = request.subscriber
        self.send(request.subscriber, self._view())
        return Subscribed(request_id=request.request_id)

    def _view(self) -> ClusterView:
        membership = self._membership
        live = membership.live_peers()
        return ClusterView(
            records=[membership.me, *live],
            leader=membership.leader(),
            joined=self.joined,
            suspect=[r.name for r in live if membership.health(r.name) is Health.SUSPECT],
        )

    def _push_view(self) -> None:
        """Send the view to this node's cluster actors when it changed."""
        view = self._view()
        if view == self._last_view:
            return
        self._last_view = view
        for dead in refused(list(self.view_subscribers.values())):
            self.view_subscribers.pop(address_key(dead), None)
        for subscriber in self.view_subscribers.values():
            self.send(subscriber, view)

    # ---- saved state ---------------------------------------------------------------------

    def _state_path(self) -> Path:
        return self._settings.node_dir / STATE_FILE

    def _save_state(self) -> None:
        membership = self._membership
        state = {
            "incarnation": membership.me.incarnation,
            "view": membership.snapshot(),
            "subscribers": list(self.subscribers.values()),
            "joined": self.joined,
        }
        path = self._state_path()
        partial = path.with_name(f".{STATE_FILE}.{os.getpid()}")
        try:
            partial.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            partial.replace(path)
        except OSError as exc:
            logger.warning("could not save the node monitor's state: {}", exc)

    def _load_state(self, incarnation: str) -> bool:
        """Reload what a previous NodeMonitor of this node incarnation saved."""
        path = self._state_path()
        try:
            state = pickle.loads(path.read_bytes())  # our own file, in the node's directory
        except FileNotFoundError:
            return False
        except Exception as exc:  # a torn or foreign file: start afresh, say so
            logger.warning("ignored the node monitor's saved state: {}", exc)
            return False
        if state.get("incarnation") != incarnation:
            return False
        with contextlib.suppress(Exception):
            self._membership.restore(state["view"], time.monotonic())
            self.subscribers = {address_key(a): a for a in state.get("subscribers", [])}
            self.joined = bool(state.get("joined"))
        return True

    # ---- accessors -----------------------------------------------------------------------

    @property
    def _membership(self) -> Membership:
        assert self.membership is not None
        return self.membership

    @property
    def _settings(self) -> ClusterSettings:
        assert self.settings is not None
        return self.settings


def _checked_record(record: NodeRecord) -> NodeRecord:
    for role, address in record.agents.items():
        if not isinstance(address, ActorAddress):
            raise ValueError(f"agent {role!r} of node {record.name!r} is not an actor address")
    try:
        bytes.fromhex(record.incarnation)
    except ValueError:
        raise ValueError(f"incarnation {record.incarnation!r} is not hexadecimal") from None
    return record


def _error(request: Request, code: ErrorCode, detail: str) -> RegistryError:
    return RegistryError(request_id=request.request_id, code=code, detail=detail)
