"""SplitBrainDetector: is this side of a partition the one that may keep writing?

One per node, under ClusterSupervisor, next to NodeMonitor. A receive-call-send shell
around the pure :mod:`thespian_cluster.core.partition`. It

* **watches** NodeMonitor: subscribes to its ``NodeUp`` / ``NodeDown`` events and asks
  it for ``GetNodeStatus`` on every event, every ``split_brain_check_interval`` and on
  every :class:`ForceResolution`. ClusterSupervisor tells it where NodeMonitor is
  (:class:`~thespian_cluster.actors.node_monitor.Agents`, after every child start), so
  a restarted NodeMonitor is found again;
* **decides** with :func:`~thespian_cluster.core.partition.decide` and
  :func:`~thespian_cluster.core.partition.minority_plan`, and logs each detection,
  decision and heal once;
* **tells** subscribers :class:`PartitionDetected` / :class:`PartitionHealed` when
  ``partition_detected`` flips, and :class:`WritableChanged` when ``writable`` flips.
  A subscriber's reply is the current :class:`PartitionStatus`, so a registry that
  subscribes (again, e.g. after its own restart) knows ``writable`` at once;
* **acts** under ``split_brain_minority_action = "shutdown"``: a node that lost a
  partition, and still has lost it ``cluster_heartbeat_timeout`` later, asks the root
  NodeSupervisor to ``TerminateChild("cluster")`` and logs why;
* **survives its own restart**: the last verdict and the subscribers are saved in the
  node's directory (``partition.state``) on every change and reloaded by the next
  detector of the same node incarnation, so a verdict that did not change while it was
  down causes no event.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from thespian.actors import Actor, ActorAddress, ActorExitRequest, WakeupMessage

from thespian_cluster.actors.liveness import refused
from thespian_cluster.actors.node_monitor import Agents
from thespian_cluster.actors.shell import (
    ConfiguredFirst,
    Handler,
    answer,
    load_state,
    save_state,
)
from thespian_cluster.cluster_messages import (
    ForceResolution,
    GetNodeStatus,
    GetPartitionStatus,
    NodeDown,
    NodeStatusReply,
    NodeUp,
    PartitionAction,
    PartitionDetected,
    PartitionHealed,
    PartitionStatus,
    SubscribeNodeEvents,
    SubscribePartitionEvents,
    Unsubscribed,
    UnsubscribePartitionEvents,
    WritableChanged,
)
from thespian_cluster.core.addresses import AddressKey, address_key
from thespian_cluster.core.partition import NodeView, Plan, Verdict, decide, minority_plan
from thespian_cluster.global_messages import Forwarded
from thespian_cluster.messages import (
    RegistryError,
    Reply,
    Request,
    SupervisedBy,
    TerminateChild,
)
from thespian_cluster.node_identity import read_identity
from thespian_cluster.node_table import publish_agent
from thespian_cluster.settings import ClusterSettings

STATE_FILE = "partition.state"
WHAT = "split-brain detector"
#: The root supervisor, by Thespian global name (see supervisors/node.py; named here
#: rather than imported, as actors do not import supervisors).
ROOT_GLOBAL_NAME = "thespian_cluster.node"
ROOT_CLASS = "thespian_cluster.supervisors.node.NodeSupervisor"
CLUSTER_CHILD = "cluster"
#: How long a request waits for NodeMonitor's view before it is answered with the last
#: verdict (NodeMonitor restarting, say).
VIEW_TIMEOUT = 2.0
CHECK = "check"
DEADLINE = "deadline"
CONFIRM = "confirm"


@dataclass
class _Summary:
    """The part of a verdict that events are about; saved across restarts."""

    partition_detected: bool = False
    winner: bool = True
    writable: bool = True
    action: PartitionAction = "none"
    unreachable: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()  # the unreachable nodes seen before (not never-seen ones)
    reason: str = "not decided yet"
    last_check: float | None = None
    reachable: tuple[str, ...] = ()
    dead: tuple[str, ...] = ()
    decided: bool = False

    def gist(self) -> tuple[Any, ...]:
        """What is logged when it changes."""
        return (self.partition_detected, self.winner, self.action, self.unreachable)


@dataclass
class _Waiting:
    """A request answered with the verdict that follows NodeMonitor's next view."""

    to: Any
    request_id: str
    deadline: float
    after: int = 0  # answered by the view of poll number ``after`` or a later one


class SplitBrainDetector(ConfiguredFirst, Actor):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.settings: ClusterSettings | None = None
        self.incarnation = ""
        self.monitor: Any = None
        self.summary = _Summary()
        self.subscribers: dict[AddressKey, Any] = {}
        self.waiting: list[_Waiting] = []
        self.polling: float | None = None  # monotonic time of the outstanding GetNodeStatus
        self.polls = 0  # GetNodeStatus requests sent so far
        self.poll_ids: dict[str, int] = {}  # request_id -> poll number, until answered
        self.again = False  # a node event arrived while a view was on its way
        self.stopping = False
        self.losing_since: float | None = None  # a shutdown verdict waiting to be stable
        self._handlers: dict[type, Handler] = {
            GetPartitionStatus: self._get_status,
            ForceResolution: self._force,
            SubscribePartitionEvents: self._subscribe,
            UnsubscribePartitionEvents: self._unsubscribe,
        }

    # ---- receive ---------------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if self.held(message, sender):
            return
        if isinstance(message, WakeupMessage):
            self._wakeup(message.payload)
        elif isinstance(message, Agents):
            self._agents(message)
        elif isinstance(message, NodeUp | NodeDown):
            self._poll(event=True)
        elif isinstance(message, NodeStatusReply):
            self._view(message)
        elif isinstance(message, Request):
            self._answer(message, sender)
        elif isinstance(message, Forwarded):  # from the Registry, the node's front door
            self._answer(message.request, message.reply_to)
        elif isinstance(message, RegistryError):
            logger.warning("split-brain detector: {} ({})", message.code, message.detail)
        elif not isinstance(message, Reply | ActorExitRequest | SupervisedBy):
            logger.debug("split-brain detector ignored a {}", type(message).__name__)

    def _answer(self, request: Request, sender: Any) -> None:
        reply = answer(self._handlers, request, sender)
        if reply is not None:
            self.send(sender, reply)

    # ---- start -------------------------------------------------------------------------

    def configure(self, settings: ClusterSettings) -> None:
        self.settings = settings
        publish_agent(settings.node_dir, "split_brain_detector", self.myAddress)
        try:
            self.incarnation = read_identity(settings.node_dir).incarnation
        except (OSError, ValueError):
            self.incarnation = ""  # no identity (a bare test): nothing is reloaded
        restarted = self._load_state()
        if not settings.cluster_nodes and settings.split_brain_strategy != "configured_master":
            logger.warning(
                "cluster_nodes is empty: partitions are reported but every side keeps "
                "writing (list the expected nodes to protect against split brain)"
            )
        logger.info(
            "split-brain detector {} for {} ({}, minority action {})",
            "restarted" if restarted else "started",
            settings.node_name,
            settings.split_brain_strategy,
            settings.split_brain_minority_action,
        )
        self.wakeupAfter(settings.split_brain_check_interval, payload=CHECK)

    def _agents(self, message: Agents) -> None:
        """ClusterSupervisor says where the cluster actors are: (re)subscribe to a new
        NodeMonitor and decide from its view."""
        monitor = message.agents.get("node_monitor")
        if monitor is None or monitor == self.monitor:
            return
        self.monitor = monitor
        self.send(monitor, SubscribeNodeEvents(subscriber=self.myAddress))
        self.polling = None
        self._poll(event=False)

    # ---- views and verdicts --------------------------------------------------------------

    def _wakeup(self, payload: Any) -> None:
        if payload == CHECK:
            self._poll(event=False)
            self.wakeupAfter(self._settings.split_brain_check_interval, payload=CHECK)
        elif payload == DEADLINE:
            self._expire(time.monotonic())
        elif payload == CONFIRM and self.losing_since is not None:
            self.polling = None  # a fresh view decides
            self._poll(event=False)

    def _poll(self, event: bool) -> None:
        """Ask NodeMonitor for its view (once at a time; again after it if an event came
        in meanwhile, as that view may predate it)."""
        now = time.monotonic()
        if self.polling is not None and now - self.polling < VIEW_TIMEOUT:
            self.again = self.again or event
            return
        if self.monitor is None:
            return
        self.polling = now
        self.again = False
        self.polls += 1
        request = GetNodeStatus()
        # An answer to an older poll still decides, but serves no ForceResolution sent since.
        self.poll_ids = {request.request_id: self.polls}
        self.send(self.monitor, request)
        self.wakeupAfter(VIEW_TIMEOUT, payload=DEADLINE)

    def _view(self, reply: NodeStatusReply) -> None:
        number = self.poll_ids.pop(reply.request_id, 0)
        if number:
            self.polling = None
        settings = self._settings
        nodes = [NodeView(n.name, n.health, n.reason, n.started_at) for n in reply.nodes]
        verdict = decide(
            expected=settings.cluster_nodes,
            me=settings.node_name,
            strategy=settings.split_brain_strategy,
            master_node=settings.master_node,
            nodes=nodes,
        )
        self._apply(verdict, minority_plan(verdict, settings.split_brain_minority_action), number)
        if self.again:
            self._poll(event=False)

    def _apply(self, verdict: Verdict, plan: Plan, number: int) -> None:
        before = self.summary
        after = _Summary(
            partition_detected=verdict.partition_detected,
            winner=verdict.winner,
            writable=plan.writable,
            action=plan.action,
            unreachable=verdict.unreachable,
            lost=verdict.lost,
            reason=plan.reason,
            last_check=time.time(),
            reachable=verdict.reachable,
            dead=verdict.dead,
            decided=True,
        )
        self.summary = after
        if after.gist() != before.gist() or not before.decided:
            self._log(verdict, plan, before)
        events: list[Any] = []
        node = self._settings.node_name
        # A partition that changes (another node cut off) is told again: RegistryDist
        # merges the heal by who was on which side.
        if after.partition_detected and (
            not before.partition_detected
            or (after.winner, set(after.unreachable)) != (before.winner, set(before.unreachable))
        ):
            events.append(
                PartitionDetected(
                    node=node,
                    unreachable=list(after.unreachable),
                    winner=after.winner,
                    action=after.action,
                    reason=after.reason,
                )
            )
        elif before.partition_detected and not after.partition_detected:
            events.append(
                PartitionHealed(
                    node=node, reachable=list(after.reachable), was_winner=before.winner
                )
            )
        if after.writable != before.writable:
            events.append(
                WritableChanged(
                    node=node, writable=after.writable, action=after.action, reason=after.reason
                )
            )
        self._publish(events)
        if (after.gist(), after.writable) != (before.gist(), before.writable) or events:
            self._save_state()
        self._answer_waiting(number)
        self._shutdown_when_stable(plan)

    def _shutdown_when_stable(self, plan: Plan) -> None:
        """Stop the cluster supervisor only if the losing verdict still holds after
        ``cluster_heartbeat_timeout``: a node resumed after a pause (SIGSTOP, a frozen
        VM) sees every peer silent until their next heartbeats arrive, and must not
        take that for a lost partition. Going readonly needs no such wait: it is undone
        by the next verdict."""
        if not plan.stop_cluster:
            if self.losing_since is not None:
                logger.info("the losing verdict did not hold; the cluster supervisor stays")
            self.losing_since = None
            return
        now = time.monotonic()
        stable = self._settings.cluster_heartbeat_timeout
        if self.losing_since is None:
            self.losing_since = now
            logger.warning(
                "this side lost; the cluster supervisor stops in {} s if it holds", stable
            )
            self.wakeupAfter(stable, payload=CONFIRM)
        elif now - self.losing_since >= stable:
            self._stop_cluster(plan.reason)

    def _log(self, verdict: Verdict, plan: Plan, before: _Summary) -> None:
        side = f"this side ({', '.join(verdict.reachable)})"
        verdict_words = "wins" if verdict.winner else "loses"
        doing = {
            "none": "keeps writing",
            "advisory": "keeps writing (advisory only)",
            "readonly": "refuses global writes (readonly)",
            "shutdown": "stops its cluster supervisor",
        }[plan.action]
        decision = f"{side} {verdict_words} under {verdict.strategy} ({verdict.reason}) and {doing}"
        if verdict.lost:
            head = "partition changed" if before.lost else "partition detected"
            logger.warning("{}: {} unreachable; {}", head, ", ".join(verdict.unreachable), decision)
        elif verdict.unreachable:
            logger.info(
                "expected node(s) {} not seen yet; {}", ", ".join(verdict.never_seen), decision
            )
        elif before.lost:
            logger.info("partition healed: every node is reachable again; {} {}", side, doing)
        elif before.partition_detected:
            logger.info("every expected node is reachable now; {} {}", side, doing)
        elif not before.decided or before.action != plan.action:
            logger.info("no partition: {} {} ({})", side, doing, verdict.reason)

    def _publish(self, events: list[Any]) -> None:
        if not events or not self.subscribers:
            return
        for dead in refused(list(self.subscribers.values())):
            self.subscribers.pop(address_key(dead), None)
            logger.info("dropped dead partition-event subscriber {}", dead)
        for event in events:
            for subscriber in self.subscribers.values():
                self.send(subscriber, event)

    def _stop_cluster(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        logger.error(
            "node {} stops its cluster supervisor (split_brain_minority_action = shutdown): "
            "{}; restart the node once the partition has healed",
            self._settings.node_name,
            why,
        )
        # A lookup by global name creates a root where none runs; here one always does
        # (it is this actor's ancestor). The root cannot publish itself in the node
        # table instead: an LMDB environment it opened would be inherited by every
        # child it forks, which py-lmdb refuses.
        root = self.createActor(ROOT_CLASS, globalName=ROOT_GLOBAL_NAME)
        self.send(root, TerminateChild(child_id=CLUSTER_CHILD))

    # ---- requests ------------------------------------------------------------------------

    def _status(self, request_id: str) -> PartitionStatus:
        settings = self._settings
        summary = self.summary
        return PartitionStatus(
            request_id=request_id,
            node=settings.node_name,
            partition_detected=summary.partition_detected,
            strategy=settings.split_brain_strategy,
            master_node=settings.master_node,
            last_check=summary.last_check,
            reachable=list(summary.reachable),
            unreachable=list(summary.unreachable),
            dead=list(summary.dead),
            winner=summary.winner,
            action=summary.action,
            writable=summary.writable,
            reason=summary.reason,
        )

    def _get_status(self, request: GetPartitionStatus, sender: Any) -> Reply | None:
        if self.summary.decided:
            return self._status(request.request_id)
        self._wait(sender, request.request_id)  # the first verdict is on its way
        return None

    def _force(self, request: ForceResolution, sender: Any) -> Reply | None:
        self.polling = None  # a fresh view, even if one is on its way
        self._poll(event=False)
        self._wait(sender, request.request_id, after=self.polls)
        return None

    def _wait(self, sender: Any, request_id: str, after: int = 0) -> None:
        deadline = time.monotonic() + VIEW_TIMEOUT
        self.waiting.append(_Waiting(sender, request_id, deadline, after))
        self.wakeupAfter(VIEW_TIMEOUT, payload=DEADLINE)

    def _answer_waiting(self, number: int) -> None:
        """Answer every request that this view (poll ``number``, 0 if unsolicited) serves."""
        due = [w for w in self.waiting if w.after <= number]
        if due:
            self.waiting = [w for w in self.waiting if w.after > number]
            for wait in due:
                self.send(wait.to, self._status(wait.request_id))

    def _expire(self, now: float) -> None:
        """NodeMonitor did not answer in time: answer with the last verdict."""
        if self.polling is not None and now - self.polling >= VIEW_TIMEOUT:
            logger.warning("split-brain detector: no view from NodeMonitor in {} s", VIEW_TIMEOUT)
            self.polling = None
        due = [w for w in self.waiting if now >= w.deadline]
        if due:
            self.waiting = [w for w in self.waiting if now < w.deadline]
            for wait in due:
                self.send(wait.to, self._status(wait.request_id))

    def _subscribe(self, request: SubscribePartitionEvents, sender: Any) -> Reply | None:
        self.subscribers[address_key(request.subscriber)] = request.subscriber
        self._save_state()
        return self._get_status(GetPartitionStatus(request_id=request.request_id), sender)

    def _unsubscribe(self, request: UnsubscribePartitionEvents, _: Any) -> Reply:
        was = self.subscribers.pop(address_key(request.subscriber), None) is not None
        self._save_state()
        return Unsubscribed(request_id=request.request_id, was_subscribed=was)

    # ---- saved state ---------------------------------------------------------------------

    def _state_path(self) -> Path:
        return self._settings.node_dir / STATE_FILE

    def _save_state(self) -> None:
        if self.incarnation:
            state = {
                "summary": asdict(self.summary),
                "subscribers": list(self.subscribers.values()),
            }
            save_state(self._state_path(), self.incarnation, state, WHAT)

    def _load_state(self) -> bool:
        """Reload what a previous detector of this node incarnation saved."""
        state = load_state(self._state_path(), self.incarnation, WHAT) if self.incarnation else None
        if state is None:
            return False
        with contextlib.suppress(Exception):
            saved = state["summary"]
            for key in ("unreachable", "lost", "reachable", "dead"):
                saved[key] = tuple(saved.get(key, ()))
            self.summary = _Summary(**saved)
            self.subscribers = {address_key(a): a for a in state.get("subscribers", [])}
        return True

    @property
    def _settings(self) -> ClusterSettings:
        assert self.settings is not None
        return self.settings
