"""``Supervisor``: an OTP supervisor as a Thespian actor.

Subclass it and say what to supervise::

    class Workers(Supervisor):
        strategy = "one_for_one"
        max_restarts = 3
        max_seconds = 5.0

        def child_specs(self) -> list[ChildSpec]:
            return [
                ChildSpec(id="cache", actor_class=Cache),
                ChildSpec(id="weather", actor_class=Weather,
                          register_as=RegisterAs(name="weather")),
            ]

    workers = asys.createActor(Workers)
    asys.ask(workers, WhichChildren(), 5)   # the first message starts the children

or, without a subclass, make :class:`ConfigureSupervisor` the first message::

    sup = asys.createActor(Supervisor)
    asys.tell(sup, ConfigureSupervisor(strategy="rest_for_one", children=[...]))

The rules live in :mod:`thespian_cluster.core.supervision`; this class only turns
Thespian events into calls on :class:`SupervisorCore` and carries out its plans:

* stops are sequential, in the order the plan gives (reverse start order): a child
  gets ``ActorExitRequest`` and ``shutdown`` seconds, then SIGKILL;
* starts follow once every stop is done (after the plan's ``delay``, for a retry); each
  start sends the spec's ``init_message``, :class:`SupervisedBy` and, with ``register_as``,
  a ``Register`` to the node's Registry (after an ``ActorExiting`` for the previous
  incarnation, so the name moves to the new child without waiting for death detection);
* a child is **up** once it answers a status probe (a child supervisor: once its own
  children are up) *and*, with ``register_as``, the Registry has acknowledged its
  ``Register`` (matched by ``request_id``: Thespian's replies carry no correlation of
  their own). Only then does the next child start;
* a **failed start** — ``createActor`` raised, the child exited before it was up, it
  could not take its ``init_message`` (``PoisonMessage``), or its registration was
  refused — goes to :meth:`SupervisorCore.start_failed`: at the supervisor's own start
  it fails the supervisor, on a restart it is retried by a plan like any other,
  through ``wakeupAfter`` (nothing here ever blocks);
* escalation stops everything and exits; the parent gets ``ChildActorExited``.
"""

from __future__ import annotations

import importlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from loguru import logger
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)
from thespian.system.messages.status import Thespian_ActorStatus, Thespian_StatusReq

from thespian_cluster.actors.exit_hook import node_registry
from thespian_cluster.core.supervision import (
    ChildSpec,
    ChildState,
    Plan,
    Strategy,
    SupervisorCore,
)
from thespian_cluster.messages import (
    ActorExiting,
    AlreadyRegistered,
    ChildCount,
    ChildDeleted,
    ChildInfo,
    ChildrenReply,
    ChildStarted,
    ChildTerminated,
    ConfigureSupervisor,
    CountChildren,
    DeleteChild,
    NormalExit,
    Register,
    Registered,
    RegistryError,
    Request,
    RestartChild,
    ShutdownSupervisor,
    StartChild,
    StartSupervisor,
    SupervisedBy,
    SupervisorError,
    SupervisorErrorCode,
    SupervisorStopped,
    TerminateChild,
    WhichChildren,
)
from thespian_cluster.singleton_messages import ConfigureSingleton
from thespian_cluster.supervisors.os_process import child_pid, kill
from thespian_cluster.supervisors.singleton import ClusterSingleton


class _Stop:
    """A stop under way: which child, at which address."""

    def __init__(self, child_id: str, address: Any) -> None:
        self.child_id = child_id
        self.address = address


class _Start:
    """A start under way: the child is up once probed and (if it registers) registered."""

    def __init__(self, child_id: str, address: Any, registration: str | None) -> None:
        self.child_id = child_id
        self.address = address
        self.probed = False
        self.registration = registration  # the Register's request_id until acknowledged

    @property
    def up(self) -> bool:
        return self.probed and self.registration is None


class Supervisor(Actor):
    """An OTP supervisor; override :meth:`child_specs` and the class attributes."""

    strategy: ClassVar[Strategy] = "one_for_one"
    max_restarts: ClassVar[int] = 3
    max_seconds: ClassVar[float] = 5.0
    #: Seconds a starting child has to answer its first status probe before the
    #: supervisor moves on to the next one.
    start_timeout: ClassVar[float] = 10.0
    #: Seconds between a failed restart and the next attempt (see core.supervision).
    retry_delay: ClassVar[float] = 0.1

    def child_specs(self) -> list[ChildSpec]:
        """The static children, in start order."""
        return []

    # ---- lifecycle ---------------------------------------------------------------

    def __init__(self) -> None:
        super().__init__()
        self.core = SupervisorCore(
            self.strategy, self.max_restarts, self.max_seconds, self.retry_delay
        )
        self._initialised = False
        self._stash: list[tuple[Any, ActorAddress]] = []  # requests before the start
        self._configured_children: list[ChildSpec] = []
        self._plans: deque[Plan] = deque()  # plans waiting for the current one
        self._stop_queue: deque[str] = deque()  # the current plan's remaining stops
        self._start_queue: deque[str] = deque()  # then these, one at a time
        self._escalating = False
        self._delay = 0.0  # the current plan's pause between its stops and its starts
        self._delaying = False  # that pause is under way
        self._stopping: _Stop | None = None
        self._starting: _Start | None = None  # the child being started, not yet up
        self._registrations: dict[str, tuple[str, Any]] = {}  # request_id -> (child, address)
        self._start_failure: str | None = None  # why our own start failed
        self._normal: set[str] = set()  # children that announced a normal exit
        self._exits: deque[tuple[str, bool]] = deque()  # exits seen during a plan
        self._pending_replies: list[tuple[Any, str, str]] = []  # (to, request_id, child_id)
        self._shutdown_reply: tuple[Any, str] | None = None
        self._up = False  # every static child has started once
        self._when_up: list[tuple[Callable[[], None], Callable[[str], None] | None]] = []

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if not self._initialised:
            self._before_start(message, sender)
        elif (
            not self._up
            and isinstance(message, Request)
            and not isinstance(message, StartSupervisor)
        ):
            self._stash.append((message, sender))  # answered once every child is up
        elif isinstance(message, ChildActorExited):
            self._child_exited(message.childAddress)
        elif isinstance(message, Thespian_ActorStatus):
            self._child_up(message.actorAddress)
        elif isinstance(message, ChildrenReply):
            self._child_up(sender)  # a child supervisor has started all of its children
        elif isinstance(message, WakeupMessage):
            self._timeout(message.payload)
        elif isinstance(message, NormalExit):
            self._normal.add(message.child_id)
        elif isinstance(message, ActorExitRequest):
            self._exit_now()
        elif isinstance(message, Registered | AlreadyRegistered | RegistryError):
            self._registration_reply(message)
        elif isinstance(message, PoisonMessage):
            self._poisoned(message, sender)
        elif isinstance(message, StartSupervisor):
            self._reply_when_up(sender, message.request_id)
        else:
            self._request(message, sender)

    def _before_start(self, message: Any, sender: ActorAddress) -> None:
        """Until it is started, a supervisor keeps requests for later.

        It starts on :class:`ConfigureSupervisor`, on :class:`StartSupervisor`, or on
        the :class:`SupervisedBy` that its parent supervisor sends after the child's
        ``init_message`` — so a nested supervisor never starts before its
        configuration has arrived, whoever else talks to it first.
        """
        if isinstance(message, ConfigureSupervisor):
            self.core = SupervisorCore(
                message.strategy, message.max_restarts, message.max_seconds, message.retry_delay
            )
            self._configured_children = list(message.children)
        elif isinstance(message, ActorExitRequest):
            return
        elif not isinstance(message, SupervisedBy | StartSupervisor):
            if self.configure(message):
                return
            self._stash.append((message, sender))
            return
        if isinstance(message, StartSupervisor):
            self._reply_when_up(sender, message.request_id)
        self.when_up(self._replay_stash)
        self.start_children()

    def _reply_when_up(self, to: ActorAddress, request_id: str) -> None:
        """Answer StartSupervisor once every static child is up (a parent waits on it),
        or with ``start_failed`` if this supervisor cannot start."""
        self.when_up(
            lambda: self.send(to, self._which_children(request_id)),
            lambda why: self.send(to, _error(request_id, SupervisorErrorCode.START_FAILED, why)),
        )

    def _replay_stash(self) -> None:
        stashed, self._stash = self._stash, []
        for early, early_sender in stashed:
            self.receiveMessage(early, early_sender)

    def configure(self, message: Any) -> bool:
        """Take a subclass's own configuration message before the start; True if it was one."""
        return False

    def when_up(
        self, action: Callable[[], None], failed: Callable[[str], None] | None = None
    ) -> None:
        """Run ``action`` once every static child has started (now, if they have).

        If a static child cannot start, the supervisor exits instead and calls
        ``failed`` with the reason, just before it goes.
        """
        if self._up:
            action()
        else:
            self._when_up.append((action, failed))

    def start_children(self) -> None:
        """Start the static children in order (once)."""
        if self._initialised:
            return
        self._initialised = True
        for spec in self._configured_children or self.child_specs():
            self.core.add(spec)
        self._run(Plan(start=tuple(self.core.ids())))

    def _request(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, WhichChildren):
            self.send(sender, self._which_children(message.request_id))
        elif isinstance(message, CountChildren):
            self.send(sender, self._count_children(message.request_id))
        elif isinstance(message, StartChild):
            self.send(sender, self._start_child(message.request_id, message.spec))
        elif isinstance(message, RestartChild):
            self.send(sender, self._restart_child(message.request_id, message.child_id))
        elif isinstance(message, DeleteChild):
            self.send(sender, self._delete_child(message.request_id, message.child_id))
        elif isinstance(message, TerminateChild):
            self._terminate_child(sender, message.request_id, message.child_id)
        elif isinstance(message, ShutdownSupervisor):
            self._shutdown_reply = (sender, message.request_id)
            self._run(Plan(stop=self.core.shutdown_order(), escalate=True))
        else:
            self.handle_other(message, sender)

    def handle_other(self, message: Any, sender: ActorAddress) -> None:
        """Messages that are not supervision's; override to give a supervisor more to do."""
        if isinstance(message, SupervisedBy):
            return  # our own parent saying hello
        logger.debug("supervisor ignored a {}", type(message).__name__)

    # ---- dynamic children --------------------------------------------------------

    def _start_child(self, request_id: str, spec: ChildSpec) -> Any:
        if self.core.child(spec.id) is not None:
            return _error(request_id, SupervisorErrorCode.ALREADY_PRESENT, spec.id)
        self.core.add(spec)
        try:
            address = self._start(spec.id)
        except Exception as exc:
            self.core.delete(spec.id)
            return _error(request_id, SupervisorErrorCode.START_FAILED, f"{spec.id}: {exc}")
        return ChildStarted(request_id=request_id, child_id=spec.id, address=address)

    def _restart_child(self, request_id: str, child_id: str) -> Any:
        state = self.core.child(child_id)
        if state is None:
            return _error(request_id, SupervisorErrorCode.NOT_FOUND, child_id)
        if state.running or (self._stopping is not None and self._stopping.child_id == child_id):
            return _error(request_id, SupervisorErrorCode.RUNNING, child_id)
        try:
            address = self._start(child_id)
        except Exception as exc:
            return _error(request_id, SupervisorErrorCode.START_FAILED, f"{child_id}: {exc}")
        return ChildStarted(request_id=request_id, child_id=child_id, address=address)

    def _delete_child(self, request_id: str, child_id: str) -> Any:
        state = self.core.child(child_id)
        if state is None:
            return _error(request_id, SupervisorErrorCode.NOT_FOUND, child_id)
        if state.running:
            return _error(request_id, SupervisorErrorCode.RUNNING, child_id)
        self.core.delete(child_id)
        return ChildDeleted(request_id=request_id, child_id=child_id)

    def _terminate_child(self, sender: Any, request_id: str, child_id: str) -> None:
        state = self.core.child(child_id)
        if state is None:
            self.send(sender, _error(request_id, SupervisorErrorCode.NOT_FOUND, child_id))
        elif not state.running:
            self.send(sender, ChildTerminated(request_id=request_id, child_id=child_id))
        else:
            self._pending_replies.append((sender, request_id, child_id))
            self._run(Plan(stop=(child_id,)))

    def _which_children(self, request_id: str) -> ChildrenReply:
        now = time.time()
        return ChildrenReply(
            request_id=request_id,
            children=[_info(state, now, self._starting) for state in self.core.children],
        )

    def _count_children(self, request_id: str) -> ChildCount:
        children = self.core.children
        supervisors = sum(1 for c in children if _is_supervisor(c.spec))
        return ChildCount(
            request_id=request_id,
            specs=len(children),
            active=sum(1 for c in children if c.running),
            supervisors=supervisors,
            workers=len(children) - supervisors,
        )

    # ---- plans: stop one at a time, then start one at a time ---------------------

    def _run(self, plan: Plan) -> None:
        if self._busy():
            self._plans.append(plan)
            return
        self._stop_queue = deque(plan.stop)
        self._start_queue = deque(plan.start)
        self._escalating = plan.escalate
        self._delay = plan.delay
        self._next_step()

    def _busy(self) -> bool:
        return bool(
            self._stop_queue
            or self._start_queue
            or self._stopping is not None
            or self._starting is not None
            or self._delaying
        )

    def _next_step(self) -> None:
        """Advance the current plan by one step, or start the next plan."""
        if self._stopping is not None or self._starting is not None or self._delaying:
            return  # waiting for an exit, a child coming up, or a retry's pause
        while self._stop_queue:
            state = self.core.child(self._stop_queue.popleft())
            if state is not None and state.running:
                self._begin_stop(state)
                return
        if self._escalating:
            self._escalate()
            return
        if self._delay > 0 and self._start_queue:
            # A retry: pause without blocking, then carry on (see _timeout).
            self._delaying, self._delay = True, 0.0
            self.wakeupAfter(self.core.retry_delay, payload=("retry", "", None))
            return
        while self._start_queue:
            state = self.core.child(self._start_queue.popleft())
            if state is not None and not state.running:
                self._begin_start(state)
                return
        if not self._up:
            self._up = True
            waiting, self._when_up = self._when_up, []
            for action, _ in waiting:
                action()
        if self._exits:
            child_id, normal = self._exits.popleft()
            self._run(self.core.exited(child_id, normal, time.monotonic()))
        elif self._plans:
            self._run(self._plans.popleft())

    def _begin_start(self, state: ChildState) -> None:
        child_id = state.spec.id
        try:
            address = self._start(child_id)
        except Exception as exc:
            self._start_failed(child_id, f"could not be created: {exc}")
            return
        registration = next((r for r, (_, a) in self._registrations.items() if a == address), None)
        self._starting = _Start(child_id, address, registration)
        # Children start in order: the next waits until this one is up. A worker
        # answers a status probe once its __init__ has run (Thespian answers it, not
        # the actor); a supervisor answers StartSupervisor once its children are up.
        probe = StartSupervisor() if _is_supervisor(state.spec) else Thespian_StatusReq()
        self.send(address, probe)
        self.wakeupAfter(self.start_timeout, payload=("start", child_id, state.started_at))

    def _child_up(self, address: Any) -> None:
        start = self._starting
        if start is not None and start.address == address:
            start.probed = True
            self._maybe_up()

    def _maybe_up(self) -> None:
        if self._starting is not None and self._starting.up:
            self._starting = None
            self._next_step()

    def _registration_reply(self, reply: Registered | AlreadyRegistered | RegistryError) -> None:
        """The Registry's answer to a child's ``Register``, matched by ``request_id``."""
        child = self._registrations.pop(reply.request_id, None)
        if child is None:
            logger.debug("supervisor ignored a registry reply it did not ask for: {}", reply)
            return
        child_id, address = child
        state = self.core.child(child_id)
        if state is None or state.address != address:
            return  # that incarnation is gone already
        start = self._starting
        if isinstance(reply, Registered):
            if start is not None and start.registration == reply.request_id:
                start.registration = None
                self._maybe_up()
            return
        if isinstance(reply, AlreadyRegistered):
            why = f"could not register as {reply.name!r}: already registered to {reply.owner}"
        else:
            why = f"could not register: {reply.code}: {reply.detail}"
        self._start_failed(child_id, why)

    def _poisoned(self, message: PoisonMessage, sender: Any) -> None:
        """A message to a child failed twice. During its start, the child is unusable."""
        start = self._starting
        if start is not None and start.address == sender:
            what = type(message.poisonMessage).__name__
            last = str(message.details).strip().splitlines()[-1:] or ["?"]
            self._start_failed(start.child_id, f"could not take its {what}: {last[0]}")
        else:
            logger.warning("a message to a child failed twice: {}", message.poisonMessage)

    def _start_failed(self, child_id: str, why: str) -> None:
        """Carry out the core's decision on a failed start (see the module docstring)."""
        start = self._starting
        if start is not None and start.child_id == child_id:
            self._starting = None
            # OTP aborts the rest of the round; the retry applies the strategy again.
            self._start_queue.clear()
        self._registrations = {
            r: (c, a) for r, (c, a) in self._registrations.items() if c != child_id
        }
        initial = not self._up
        logger.warning(
            "{}: child {} {}{}",
            type(self).__name__,
            child_id,
            why,
            "" if initial else "; the restart policy decides",
        )
        plan = self.core.start_failed(child_id, time.monotonic(), initial)
        if plan.escalate and initial:
            self._start_failure = f"child {child_id} {why}"
        self._run(plan)

    def _begin_stop(self, state: ChildState) -> None:
        self._stopping = _Stop(state.spec.id, state.address)
        if _killed_outright(state.spec):
            self._kill(state.address)
        else:
            self.send(state.address, ActorExitRequest())
            self.wakeupAfter(
                _grace(state.spec), payload=("shutdown", state.spec.id, state.started_at)
            )

    def _timeout(self, payload: Any) -> None:
        if not isinstance(payload, tuple) or len(payload) != 3:
            return
        what, child_id, started_at = payload
        if what == "retry":
            self._delaying = False
            self._next_step()
            return
        state = self.core.child(child_id)
        if state is None or state.started_at != started_at:
            return  # that incarnation is long gone
        stop = self._stopping
        if what == "shutdown" and stop is not None and stop.child_id == child_id:
            logger.warning("child {} ignored its shutdown; killing it", child_id)
            self._kill(stop.address)
        elif what == "start" and self._starting is not None and self._starting.child_id == child_id:
            logger.warning(
                "child {} did not come up in {} s; going on", child_id, self.start_timeout
            )
            self._starting = None
            self._next_step()

    def _kill(self, address: Any) -> None:
        pid = child_pid(self, address)
        if pid is None or not kill(pid):
            # Unknown pid: ask politely; ChildActorExited ends the stop either way.
            self.send(address, ActorExitRequest())

    def _escalate(self) -> None:
        self._escalating = False
        if self._shutdown_reply is not None:
            to, request_id = self._shutdown_reply
            self.send(to, SupervisorStopped(request_id=request_id))
        elif self._start_failure is not None:
            logger.error(
                "supervisor {} could not start: {}", type(self).__name__, self._start_failure
            )
            waiting, self._when_up = self._when_up, []
            for _, failed in waiting:
                if failed is not None:
                    failed(self._start_failure)
        else:
            logger.error(
                "supervisor {} exceeded {} restarts in {} s; exiting",
                type(self).__name__,
                self.core.max_restarts,
                self.core.max_seconds,
            )
        self.send(self.myAddress, ActorExitRequest())

    # ---- child events ------------------------------------------------------------

    def _start(self, child_id: str) -> Any:
        state = self.core.child(child_id)
        assert state is not None
        spec = state.spec
        if spec.placement == "cluster":
            return self._start_singleton_manager(spec)
        address = self.createActor(spec.actor_class, targetActorRequirements=spec.requirements)
        self.core.started(child_id, address, time.time())
        self._normal.discard(child_id)
        # init_message first: a child supervisor needs its configuration before the
        # SupervisedBy that starts its own children.
        if spec.init_message is not None:
            self.send(address, spec.init_message)
        self.send(address, SupervisedBy(supervisor=self.myAddress, child_id=child_id))
        if spec.register_as is not None:
            self._register(spec, address)
        return address

    def _start_singleton_manager(self, spec: ChildSpec) -> Any:
        """A cluster singleton's child here is its manager: it claims the lock and runs
        the instance if it wins (the manager registers the names, not this supervisor)."""
        address = self.createActor(ClusterSingleton)
        self.core.started(spec.id, address, time.time())
        self._normal.discard(spec.id)
        config = ConfigureSingleton(
            spec=spec, max_restarts=self.core.max_restarts, max_seconds=self.core.max_seconds
        )
        self.send(address, config)
        self.send(address, SupervisedBy(supervisor=self.myAddress, child_id=spec.id))
        return address

    def _register(self, spec: ChildSpec, address: Any) -> None:
        registry = node_registry()
        if registry is None or spec.register_as is None:
            logger.warning("no node registry here; child {} is not registered", spec.id)
            return
        how = spec.register_as
        request = Register(
            name=how.name, address=address, kind=how.kind, scope=how.scope, meta=how.meta
        )
        self._registrations[request.request_id] = (spec.id, address)
        self.send(registry, request)

    def _child_exited(self, address: Any) -> None:
        state = next((c for c in self.core.children if c.address == address), None)
        if state is None:
            return  # already forgotten (e.g. a temporary child that was deleted)
        child_id = state.spec.id
        if state.spec.register_as is not None:
            registry = node_registry()
            if registry is not None:
                self.send(registry, ActorExiting(address=address))
        start = self._starting
        if start is not None and start.child_id == child_id:
            self.core.stopped(child_id)
            self._start_failed(child_id, "exited before it was up")
            return
        stop = self._stopping
        if stop is not None and stop.child_id == child_id:
            self.core.stopped(child_id)
            self._stopping = None
            self._answer_terminations(child_id)
        else:
            self.core.stopped(child_id)
            if child_id not in self._stop_queue:
                self._exits.append((child_id, child_id in self._normal))
        self._next_step()

    def _answer_terminations(self, child_id: str) -> None:
        state = self.core.child(child_id)
        if state is not None and state.spec.restart == "temporary":
            self.core.delete(child_id)
        remaining = []
        for to, request_id, waited_for in self._pending_replies:
            if waited_for == child_id:
                self.send(to, ChildTerminated(request_id=request_id, child_id=child_id))
            else:
                remaining.append((to, request_id, waited_for))
        self._pending_replies = remaining

    def _exit_now(self) -> None:
        """Someone else asked us to exit: stop children in reverse order, best effort.

        Thespian exits this actor as soon as this returns, so there is no waiting for
        shutdown timeouts here; :class:`ShutdownSupervisor` is the graceful way.
        """
        for child_id in self.core.shutdown_order():
            state = self.core.child(child_id)
            assert state is not None
            if _killed_outright(state.spec):
                self._kill(state.address)
            else:
                self.send(state.address, ActorExitRequest())


#: Seconds a cluster singleton's manager gets beyond the spec's shutdown: it stops the
#: instance first (by that shutdown), then frees the lock and exits.
MANAGER_GRACE = 2.0


def _killed_outright(spec: ChildSpec) -> bool:
    """A ``brutal_kill`` child is SIGKILLed — but never a singleton's manager: Thespian
    stops an actor's children only when it exits, so its instance would live on, an
    orphan beside the one the next holder starts. The manager kills the instance."""
    return spec.shutdown == "brutal_kill" and spec.placement != "cluster"


def _grace(spec: ChildSpec) -> float:
    """Seconds a child asked to exit gets before it is SIGKILLed."""
    own = 0.0 if spec.shutdown == "brutal_kill" else spec.shutdown
    return own + (MANAGER_GRACE if spec.placement == "cluster" else 0.0)


def _is_supervisor(spec: ChildSpec) -> bool:
    cls = spec.actor_class
    if isinstance(cls, str):
        module, _, name = cls.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return False  # createActor will report the bad name
    return isinstance(cls, type) and issubclass(cls, Supervisor)


def _info(state: ChildState, now: float, starting: _Start | None) -> ChildInfo:
    in_start = starting is not None and starting.child_id == state.spec.id
    return ChildInfo(
        id=state.spec.id,
        address=state.address,
        restart=state.spec.restart,
        restart_count=state.restarts,
        uptime=None if state.started_at is None else now - state.started_at,
        running=state.running,
        type="supervisor" if _is_supervisor(state.spec) else "worker",
        up=state.running and not in_start,
        placement=state.spec.placement,
    )


def _error(request_id: str, code: SupervisorErrorCode, detail: str) -> SupervisorError:
    return SupervisorError(request_id=request_id, code=code, detail=detail)
