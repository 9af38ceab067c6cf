"""``ClusterSingleton``: the manager, on every node, of one cluster singleton.

A :class:`~thespian_cluster.supervisors.supervisor.Supervisor` starts one for each
child spec with ``placement="cluster"``; it is a child of that supervisor with the
spec's restart type, so the node's tree shows it. The rules it
follows are in :mod:`thespian_cluster.core.singleton`; this actor turns the
registry's answers and events into calls on :class:`SingletonCore` and carries out
the actions:

* it subscribes to the lock (``SubscribeNames``, kind ``singleton``, global) and to
  its node's partition verdict (``SubscribePartitionEvents``), both through the node's
  Registry;
* a claim is a global ``Register`` of the lock to this manager; the instance is this
  manager's child, created only once the lock is acknowledged, then sent its
  ``init_message`` and :class:`SupervisedBy`, and registered under ``register_as``
  (as a supervisor does: the lock already makes it the only one);
* a stop frees the instance's name first (``ActorExiting``), then gives the instance
  ``ActorExitRequest`` and the spec's ``shutdown`` seconds before SIGKILL;
* its timer ticks every ``tick`` seconds; a tick that comes ``pause_fence`` late means
  the node was paused (SIGSTOP) and is fenced.
"""

from __future__ import annotations

import os
import time
from typing import Any

from loguru import logger
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)

from thespian_cluster.actors.exit_hook import node_registry
from thespian_cluster.cluster_messages import (
    PartitionStatus,
    SubscribePartitionEvents,
    WritableChanged,
)
from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.singleton import (
    FINISHED,
    LOCK_KIND,
    RUNNING,
    Action,
    Claim,
    Escalate,
    LockHolder,
    MarkFinished,
    Recheck,
    SingletonCore,
    StartInstance,
    StopInstance,
)
from thespian_cluster.core.supervision import ChildSpec
from thespian_cluster.event_messages import (
    NameEvent,
    NamesSnapshot,
    NameUnregistered,
    Resync,
    SubscribeNames,
)
from thespian_cluster.global_messages import NameConflict
from thespian_cluster.messages import (
    RECEIVED,
    ActorExiting,
    AlreadyRegistered,
    ErrorCode,
    Message,
    MetaUpdated,
    NormalExit,
    Register,
    Registered,
    RegistryError,
    SupervisedBy,
    UpdateMeta,
)
from thespian_cluster.singleton_messages import (
    ConfigureSingleton,
    GetSingletonStatus,
    SingletonStatus,
)
from thespian_cluster.supervisors.os_process import child_pid, kill

#: Set by ``start_node`` for every process of a node: its name, and the seconds after
#: which a silent node may be declared down by its peers (the pause fence's default).
#: (Not ``..._NODE_NAME``: that one is the ``node_name`` setting, which every node
#: started from a process that ran ``start_node`` would inherit.)
NODE_NAME_ENV = "THESPIAN_CLUSTER_THIS_NODE"
PAUSE_FENCE_ENV = "THESPIAN_CLUSTER_PAUSE_FENCE"
#: Seconds between the manager's own ticks (the pause check).
TICK = 0.2
#: Seconds between attempts to reach a registry or detector that is not up yet.
RETRY = 0.5
#: The pause fence without the node's setting (the default heartbeat timeout less two
#: intervals).
PAUSE_FENCE = 2.0
#: Seconds between two readings of the lock with nothing to prompt them (a lost event
#: or reply is found by the next one), and after a refusal other than "not up yet".
RECHECK = 5.0
#: Seconds a claim may go unanswered before it counts as failed (and is made again).
CLAIM_TIMEOUT = 10.0


class ClusterSingleton(Actor):
    """The manager of one singleton on this node; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.core: SingletonCore | None = None
        self.node = os.environ.get(NODE_NAME_ENV, "?")
        self.config: ConfigureSingleton | None = None
        self.instance: ActorAddress | None = None
        self._requests: dict[str, str] = {}  # request_id -> what it was for
        self._claims: dict[str, int] = {}  # a claim's request_id -> its attempt
        self._registering: dict[str, Any] = {}  # an instance Register -> that instance
        self._seq = 0  # the last event's seq: a jump means events were lost
        self._exit_asked = False  # ActorExitRequest came: only the instance's exit is left
        self._complained: set[str] = set()  # errors logged once
        self._normal = False  # the instance said NormalExit
        self._failing: str | None = None  # the instance is being stopped after a failed start
        self._stop_started: float | None = None  # a stop under way (its shutdown timer)
        self._instance_started: float | None = None
        self._tick_due = 0.0
        self._pause_fence = PAUSE_FENCE

    # ---- receiving --------------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        checked = _checked(message)
        if checked is None:
            logger.debug("singleton manager dropped a malformed {}", type(message).__name__)
            return
        try:
            self._receive(checked, sender)
        except Exception:  # last resort: Thespian would retry the message, then drop it
            logger.exception("singleton manager failed on a {}", type(message).__name__)

    def _receive(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ConfigureSingleton):
            self._configure(message)
        elif self.core is None:
            if isinstance(message, GetSingletonStatus):
                self.send(sender, _error(message.request_id, "not configured yet"))
            return  # nothing else means anything before the configuration
        elif self._exit_asked:
            if isinstance(message, ChildActorExited) and message.childAddress == self.instance:
                self._gone()
        elif isinstance(message, NameEvent):
            self._lock_event(message)
        elif isinstance(message, NamesSnapshot):
            self._seq = message.seq
            self._snapshot(message)
        elif isinstance(message, Resync) and isinstance(message.snapshot, NamesSnapshot):
            self._seq = message.seq
            self._snapshot(message.snapshot)
        elif isinstance(message, Registered | AlreadyRegistered | RegistryError | MetaUpdated):
            self._reply(message)
        elif isinstance(message, PoisonMessage):
            self._poisoned(message)
        elif isinstance(message, PartitionStatus | WritableChanged):
            self._requests.pop(getattr(message, "request_id", ""), None)
            self._do(self.core.writable_changed(message.writable))
        elif isinstance(message, NameConflict):
            if message.kind == LOCK_KIND and message.name == self._name:
                self._do(self.core.conflict(address_key(message.winner), message.node))
        elif isinstance(message, ChildActorExited):
            if self.instance is not None and message.childAddress == self.instance:
                self._instance_exited()
        elif isinstance(message, NormalExit):
            self._normal = sender == self.instance
        elif isinstance(message, WakeupMessage):
            self._wakeup(message.payload)
        elif isinstance(message, GetSingletonStatus):
            self.send(sender, self._status(message.request_id))
        elif isinstance(message, ActorExitRequest):
            self._exiting()

    def _configure(self, config: ConfigureSingleton) -> None:
        if self.core is not None:
            return
        self.config = config
        self.core = SingletonCore(
            address_key(self.myAddress),
            config.spec,
            max_restarts=config.max_restarts,
            max_seconds=config.max_seconds,
            retry_delay=config.retry_delay,
            settle=config.settle,
        )
        fence = config.pause_fence or _float_env(PAUSE_FENCE_ENV, PAUSE_FENCE)
        self._pause_fence = fence
        self._subscribe_partition()
        self._subscribe_lock()
        self._tick_due = time.monotonic() + TICK
        self.wakeupAfter(TICK, payload=("tick",))
        self.wakeupAfter(RECHECK, payload=("recheck",))

    @property
    def _name(self) -> Any:
        assert self.config is not None and self.config.spec.register_as is not None
        return self.config.spec.register_as.name

    @property
    def _spec(self) -> ChildSpec:
        assert self.config is not None
        return self.config.spec

    # ---- the lock ---------------------------------------------------------------------

    def _subscribe_lock(self) -> None:
        name = self._name
        prefix = name if isinstance(name, str) else name[0]
        request = SubscribeNames(
            subscriber=self.myAddress, scope="global", kind=LOCK_KIND, prefix=prefix
        )
        self._ask(request, "subscribe")

    def _subscribe_partition(self) -> None:
        self._ask(SubscribePartitionEvents(subscriber=self.myAddress), "partition")

    def _snapshot(self, snapshot: NamesSnapshot) -> None:
        self._requests.pop(snapshot.request_id, None)
        entry = next(
            (i for i in snapshot.names if i.kind == LOCK_KIND and i.name == self._name), None
        )
        holder = None if entry is None else _holder(entry.address, entry.node, entry.meta)
        assert self.core is not None
        before = self.core.role
        self._do(self.core.lock_is(holder))
        self._log_claim_outcome(before, "a snapshot")

    def _lock_event(self, event: NameEvent) -> None:
        lost = bool(event.seq) and event.seq != self._seq + 1
        self._seq = event.seq
        if lost:
            # Thespian dropped events (a transmit timed out): the snapshot decides.
            logger.warning("singleton {}: lock events were lost; reading it again", self._name)
            self._subscribe_lock()
            return
        if event.kind != LOCK_KIND or event.name != self._name:
            return
        assert self.core is not None
        if isinstance(event, NameUnregistered):
            self._do(self.core.lock_unregistered(event.reason))
        else:
            holder = _holder(event.address, event.node, event.meta)
            before = self.core.role
            self._do(self.core.lock_registered(holder, event.reason))
            self._log_claim_outcome(before, f"a {type(event).__name__}")

    def _log_claim_outcome(self, before: str, how: str) -> None:
        if before == "claiming" and self.core is not None and self.core.role != "claiming":
            holder = self.core.holder
            logger.debug(
                "singleton {}: {} shows the lock held by {} ({})",
                self._name,
                how,
                "us" if self.core.holds else (holder.node if holder else "nobody"),
                self.core.role,
            )

    def _reply(self, reply: Registered | AlreadyRegistered | RegistryError | MetaUpdated) -> None:
        what = self._requests.pop(reply.request_id, None)
        assert self.core is not None
        if isinstance(reply, MetaUpdated):
            return  # the lock says finished now
        if what == "claim":
            attempt = self._claims.pop(reply.request_id, None)
            if isinstance(reply, Registered):
                self.node = reply.node
                if attempt == self.core.attempt:
                    logger.debug("singleton {}: claim {} won the lock", self._name, attempt)
                self._do(self.core.claimed(reply.node, attempt))
            elif isinstance(reply, AlreadyRegistered):
                holder = _holder(reply.owner, reply.node, {})
                self._do(self.core.claim_refused(holder, attempt))
            else:
                logger.info("singleton {}: claim refused: {}", self._name, reply.detail)
                self._do(self.core.claim_refused(None, attempt))
        elif what == "instance":
            self._instance_registered(reply, self._registering.pop(reply.request_id, None))
        elif what in ("subscribe", "partition") and isinstance(reply, RegistryError):
            if reply.code == ErrorCode.NOT_DISTRIBUTED:
                if what == "subscribe":
                    self._complain(
                        "not_distributed",
                        "a cluster singleton needs a cluster node (cluster_enabled = true); "
                        "it will not run here",
                    )
                return  # (for the partition verdict: a node without a cluster writes)
            if reply.code != ErrorCode.UNAVAILABLE:
                self._complain(reply.code, f"{what}: {reply.code}: {reply.detail}")
            self.wakeupAfter(RETRY if reply.code == ErrorCode.UNAVAILABLE else RECHECK, (what,))
        elif what == "finish" and isinstance(reply, RegistryError):
            # The lock must say finished, or another node restarts the singleton later.
            logger.warning("singleton {}: marking it finished failed: {}", self._name, reply.detail)
            assert self.config is not None
            self.wakeupAfter(self.config.retry_delay, ("finish",))
        elif isinstance(reply, RegistryError):
            logger.warning("singleton {}: {} failed: {}", self._name, what, reply.detail)

    def _poisoned(self, message: PoisonMessage) -> None:
        """A request of ours failed twice in the Registry: take it as an error reply."""
        request = message.poisonMessage
        request_id = getattr(request, "request_id", None)
        if isinstance(request_id, str) and request_id in self._requests:
            why = f"the node could not take our {type(request).__name__}"
            self._reply(
                RegistryError(request_id=request_id, code=ErrorCode.UNAVAILABLE, detail=why)
            )

    def _complain(self, key: str, text: str) -> None:
        if key not in self._complained:
            self._complained.add(key)
            logger.error("singleton {}: {}", self._name, text)

    # ---- carrying out the core's actions ----------------------------------------------

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Claim):
                self._claim(action.state, action.attempt)
            elif isinstance(action, StartInstance):
                if action.delay > 0:
                    self.wakeupAfter(action.delay, payload=("start",))
                else:
                    self._start_instance()
            elif isinstance(action, StopInstance):
                self._stop_instance(action.reason)
            elif isinstance(action, MarkFinished):
                self._mark_finished()
                logger.info("singleton {} finished; no node starts it again", self._name)
            elif isinstance(action, Recheck):
                self.wakeupAfter(action.delay, payload=("subscribe",))
            elif isinstance(action, Escalate):
                logger.error(
                    "singleton {} escalates: {}; its manager exits", self._name, action.why
                )
                if self.instance is not None:
                    self._kill(self.instance)
                self.send(self.myAddress, ActorExitRequest())

    def _mark_finished(self) -> None:
        meta = {"state": FINISHED}
        self._ask(UpdateMeta(name=self._name, kind=LOCK_KIND, scope="global", meta=meta), "finish")

    def _claim(self, state: str, attempt: int) -> None:
        request = Register(
            name=self._name,
            address=self.myAddress,
            kind=LOCK_KIND,
            scope="global",
            meta={"state": state},
        )
        self._claims[request.request_id] = attempt
        self._ask(request, "claim")
        # A lost reply must not leave the claim open forever (the table's own word, an
        # event showing the lock ours, ends it sooner).
        self.wakeupAfter(CLAIM_TIMEOUT, payload=("claim", attempt))

    def _start_instance(self) -> None:
        assert self.core is not None
        if self.core.instance != "pending" or self.instance is not None:
            return  # a delayed start called off (the lock went meanwhile), or a stale timer
        spec = self._spec
        try:
            address = self.createActor(spec.actor_class, targetActorRequirements=spec.requirements)
        except Exception as exc:
            self._do(self.core.instance_failed(f"could not be created: {exc}", time.monotonic()))
            return
        self.instance = address
        self._normal = False
        self._instance_started = time.monotonic()
        self.core.instance_started(address, time.time())
        if spec.init_message is not None:
            self.send(address, spec.init_message)
        self.send(address, SupervisedBy(supervisor=self.myAddress, child_id=spec.id))
        how = spec.register_as
        assert how is not None
        request = Register(
            name=how.name, address=address, kind=how.kind, scope="global", meta=how.meta
        )
        self._registering[request.request_id] = address
        self._ask(request, "instance")

    def _instance_registered(
        self, reply: Registered | AlreadyRegistered | RegistryError, instance: Any
    ) -> None:
        if self.instance is None or self._failing is not None or instance != self.instance:
            return  # about an instance that is gone already
        if isinstance(reply, Registered) and reply.address == self.instance:
            took = time.monotonic() - (self._instance_started or time.monotonic())
            logger.info(
                "singleton {} runs on node {} ({:.0f} ms from start to registered)",
                self._name,
                reply.node,
                took * 1000,
            )
            return
        if isinstance(reply, AlreadyRegistered):
            why = f"its name is registered to {reply.owner} on {reply.node}"
            # We hold the lock, so that owner is a stale instance: one whose manager
            # was killed before it (Thespian stops children only on a graceful exit).
            # Ask it to go; the retry finds the name free.
            self.send(reply.owner, ActorExitRequest())
        else:
            why = f"its registration failed: {getattr(reply, 'detail', reply)}"
        logger.warning("singleton {}: the instance could not start: {}", self._name, why)
        self._failing = why
        self._kill(self.instance)

    def _stop_instance(self, reason: str) -> None:
        if self.instance is None:
            return
        logger.warning(
            "singleton {}: stopping the instance on {}: {}", self._name, self.node, reason
        )
        registry = node_registry()
        if registry is not None:
            self.send(registry, ActorExiting(address=self.instance))
        shutdown = self._spec.shutdown
        if shutdown == "brutal_kill":
            self._kill(self.instance)
            return
        self.send(self.instance, ActorExitRequest())
        self._stop_started = time.monotonic()
        self.wakeupAfter(shutdown, payload=("shutdown", self._stop_started))

    def _instance_exited(self) -> None:
        assert self.core is not None
        address, self.instance = self.instance, None
        self._stop_started = None
        failing, self._failing = self._failing, None
        if failing is not None:
            self._do(self.core.instance_failed(failing, time.monotonic()))
            return
        registry = node_registry()
        if registry is not None and self.core.instance == "up":
            # Died on its own: free its name now, not at the next liveness probe.
            self.send(registry, ActorExiting(address=address))
        normal, self._normal = self._normal, False
        self._do(self.core.instance_exited(normal, time.monotonic()))

    def _kill(self, address: Any) -> None:
        pid = child_pid(self, address)
        if pid is None or not kill(pid):
            self.send(address, ActorExitRequest())

    # ---- timers -----------------------------------------------------------------------

    def _wakeup(self, payload: Any) -> None:
        if not isinstance(payload, tuple) or not payload:
            return
        what = payload[0]
        if what == "tick":
            now = time.monotonic()
            late = now - self._tick_due
            self._tick_due = now + TICK
            self.wakeupAfter(TICK, payload=("tick",))
            if late > self._pause_fence and self.core is not None:
                self._do(self.core.paused(late + TICK))
        elif what == "subscribe":
            self._subscribe_lock()
        elif what == "recheck":
            # Lost replies and events leave nothing behind: read the lock now and then.
            self._subscribe_lock()
            self.wakeupAfter(RECHECK, payload=("recheck",))
        elif what == "claim" and len(payload) == 2 and self.core is not None:
            self._do(self.core.claim_unanswered(payload[1]))
        elif what == "finish" and self.core is not None and self.core.role == "finished":
            self._mark_finished()
        elif what == "partition":
            self._subscribe_partition()
        elif what == "start":
            self._start_instance()
        elif (
            what == "shutdown"
            and len(payload) == 2
            and payload[1] == self._stop_started
            and self.instance is not None
        ):
            logger.warning(
                "singleton {}: the instance ignored its shutdown; killing it", self._name
            )
            self._kill(self.instance)

    # ---- the rest ---------------------------------------------------------------------

    def _ask(self, request: Any, what: str) -> None:
        registry = node_registry()
        if registry is None:
            logger.warning("singleton {}: no node registry here; retrying", self._name)
            if what in ("subscribe", "partition"):
                self.wakeupAfter(RETRY, payload=(what,))
            return
        self._requests[request.request_id] = what
        self.send(registry, request)

    def _exiting(self) -> None:
        """Asked to exit (its supervisor stops it, or the node stops): stop the instance,
        and free the lock only once it has exited (Thespian keeps this actor until its
        children are gone), so no other node starts one beside it."""
        self._exit_asked = True
        if self.instance is None:
            self._gone()
            return
        registry = node_registry()
        if registry is not None:
            self.send(registry, ActorExiting(address=self.instance))
        if self._spec.shutdown == "brutal_kill":
            self._kill(self.instance)
        else:
            self.send(self.instance, ActorExitRequest())

    def _gone(self) -> None:
        """The instance is gone and this manager exits: the lock is free for another."""
        self.instance = None
        registry = node_registry()
        if registry is not None:
            self.send(registry, ActorExiting(address=self.myAddress))

    def _status(self, request_id: str) -> SingletonStatus:
        assert self.core is not None
        holder = self.core.holder
        return SingletonStatus(
            request_id=request_id,
            name=self._name,
            role=self.core.role,
            node=self.node,
            holder_node=holder.node if holder is not None else None,
            instance=self.instance,
            restarts=self.core.restarts,
            finished=self.core.finished,
            last_stop=self.core.last_stop,
        )


def _checked(message: Any) -> Any:
    """A fresh, validated copy of a protocol message (its sender may run other code), the
    message itself if it is Thespian's own, or None if it does not validate."""
    if not isinstance(message, Message):
        return message
    try:
        return type(message).__pydantic_validator__.validate_python(
            dict(message.__dict__), context=RECEIVED
        )
    except Exception:  # any failure: the fields are not what the type promises
        return None


def _holder(address: Any, node: str, meta: dict[str, Any]) -> LockHolder:
    state = meta.get("state") if isinstance(meta, dict) else None
    return LockHolder(address_key(address), node, FINISHED if state == FINISHED else RUNNING)


def _float_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def _error(request_id: str, detail: str) -> RegistryError:
    return RegistryError(request_id=request_id, code=ErrorCode.UNAVAILABLE, detail=detail)
