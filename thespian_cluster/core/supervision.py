"""OTP supervision decisions, without actors: which children to stop and start, when.

The rules (Erlang/OTP ``supervisor``):

* Children start in spec order and stop in reverse order.
* When a child exits, its **restart type** says whether it is restarted:
  ``permanent`` always, ``transient`` only after an abnormal exit, ``temporary``
  never (its spec is then dropped).
* If it is restarted, the **strategy** says which others go with it:
  ``one_for_one`` only that child; ``one_for_all`` every child (the others are
  stopped in reverse order first, then all are started in order; temporary
  children stopped this way are dropped); ``rest_for_one`` that child and every
  child after it in start order.
* **Intensity**: if more than ``max_restarts`` restarts happen within
  ``max_seconds``, the supervisor stops all children and exits, leaving the decision
  to its own parent.
* **A failed start** — the child could not be created, died before it was up, refused
  its ``init_message``, or had its registration refused — is decided by *when* it
  happens (OTP ``supervisor.erl``):

  - during the supervisor's **initial start** the supervisor itself fails: it stops the
    children it has started (reverse order) and exits, so its parent sees a child that
    never came up (OTP: ``init`` returns ``{shutdown, {failed_to_start_child, ...}}``);
  - during a **restart** the attempt counts as one more restart against the intensity
    (OTP's ``{try_again_restart, Id}`` goes through ``add_restart``) and the strategy
    is applied again to that child — its own running incarnation and the affected
    siblings are stopped, then all are started in order — after ``retry_delay``
    seconds. A child that can never start therefore escalates after at most
    ``max_restarts`` attempts; one that fails N times then works is up after N
    retries, provided N fits in the intensity.
  - a ``temporary`` child is never retried: it is stopped if it runs, and its spec goes.

An exit is *normal* when the supervisor stopped the child itself, or when the child
said so first (``NormalExit``, see docs/supervision.md); any other exit — a crash,
a SIGKILL, an ``ActorExitRequest`` from someone else — is abnormal.

:class:`SupervisorCore` turns each event into a :class:`Plan` for the actor shell:
stop these (in this order), then start those (in this order), or escalate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
Shutdown = float | Literal["brutal_kill"]
Placement = Literal["node", "cluster"]


class RegisterAs(BaseModel):
    """The registry name a supervised child is registered under on every start."""

    model_config = ConfigDict(frozen=True)
    name: str | tuple[str, ...]
    kind: str = "server"
    scope: Literal["local", "global"] = "local"
    meta: dict[str, Any] = Field(default_factory=dict)


class ChildSpec(BaseModel):
    """How to start, restart and stop one child (OTP's child specification).

    ``actor_class`` is an ``Actor`` subclass or its dotted name. ``init_message``,
    when given, is sent to the child right after every start (Thespian actors get
    their arguments as messages). ``shutdown`` is the seconds a child gets to exit
    after ``ActorExitRequest`` before it is killed, or ``"brutal_kill"``.

    ``placement="cluster"`` makes the child a **cluster singleton**: declared on every
    node, it runs on one node at a time, under its ``register_as`` name (which must be
    global); see :mod:`thespian_cluster.core.singleton`.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    id: str = Field(min_length=1, max_length=255)
    actor_class: Any
    restart: RestartType = "permanent"
    shutdown: Shutdown = 5.0
    register_as: RegisterAs | None = None
    requirements: dict[str, Any] | None = None
    init_message: Any = None
    placement: Placement = "node"

    @model_validator(mode="after")
    def _singleton_has_a_global_name(self) -> ChildSpec:
        if self.placement == "cluster" and (
            self.register_as is None or self.register_as.scope != "global"
        ):
            raise ValueError("placement='cluster' needs register_as with scope='global'")
        return self

    @field_validator("actor_class")
    @classmethod
    def _class_or_name(cls, value: Any) -> Any:
        if (isinstance(value, str) and "." in value) or isinstance(value, type):
            return value
        raise ValueError("actor_class must be an Actor subclass or a dotted 'module.Class' name")

    @field_validator("shutdown")
    @classmethod
    def _positive(cls, value: Shutdown) -> Shutdown:
        if value != "brutal_kill" and not (isinstance(value, int | float) and value > 0):
            raise ValueError("shutdown must be seconds > 0 or 'brutal_kill'")
        return value


@dataclass
class ChildState:
    """A spec and what is known of its current incarnation."""

    spec: ChildSpec
    address: Any = None  # None while not running
    restarts: int = 0
    started_at: float | None = None

    @property
    def running(self) -> bool:
        return self.address is not None


@dataclass(frozen=True)
class Plan:
    """What the shell must do: stop ``stop`` in order, wait ``delay`` seconds, then start
    ``start`` in order.

    With ``escalate`` the shell stops everything and exits instead of starting.
    """

    stop: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    escalate: bool = False
    delay: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.stop or self.start or self.escalate)


@dataclass
class SupervisorCore:
    """Children, restart history and the rules of the module docstring."""

    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    max_seconds: float = 5.0
    #: Seconds between a failed restart and the next attempt (OTP retries at once; a
    #: short pause lets a cause outside the supervisor clear — a name being released, a
    #: port in TIME_WAIT — before the intensity budget is spent).
    retry_delay: float = 0.1
    children: list[ChildState] = field(default_factory=list)
    _restarts: deque[float] = field(default_factory=deque)

    # ---- specs ----

    def child(self, child_id: str) -> ChildState | None:
        return next((c for c in self.children if c.spec.id == child_id), None)

    def add(self, spec: ChildSpec) -> ChildState:
        if self.child(spec.id) is not None:
            raise ValueError(f"a child with id {spec.id!r} already exists")
        state = ChildState(spec)
        self.children.append(state)
        return state

    def delete(self, child_id: str) -> None:
        self.children = [c for c in self.children if c.spec.id != child_id]

    def ids(self) -> list[str]:
        return [c.spec.id for c in self.children]

    # ---- events ----

    def started(self, child_id: str, address: Any, now: float) -> None:
        state = self._get(child_id)
        state.address = address
        state.started_at = now

    def stopped(self, child_id: str) -> None:
        state = self._get(child_id)
        state.address = None
        state.started_at = None

    def exited(self, child_id: str, normal: bool, now: float) -> Plan:
        """A running child exited on its own; decide what happens next."""
        state = self._get(child_id)
        self.stopped(child_id)
        if not self._restarts_after(state, normal):
            if state.spec.restart == "temporary":
                self.delete(child_id)
            return Plan()
        if self._intensity_exceeded(now):
            return Plan(stop=self._running_ids_reversed(), escalate=True)
        return self._restart(child_id, delay=0.0)

    def start_failed(self, child_id: str, now: float, initial: bool) -> Plan:
        """A start of ``child_id`` failed; ``initial`` if the supervisor is still starting.

        The child may still be running (its registration was refused): then it is among
        the stops. See the module docstring for the rules.
        """
        state = self._get(child_id)
        if initial:
            return Plan(stop=self._running_ids_reversed(), escalate=True)
        if state.spec.restart == "temporary":
            if state.running:
                return Plan(stop=(child_id,))  # the shell drops a stopped temporary's spec
            self.delete(child_id)
            return Plan()
        if self._intensity_exceeded(now):
            return Plan(stop=self._running_ids_reversed(), escalate=True)
        return self._restart(child_id, delay=self.retry_delay)

    def shutdown_order(self) -> tuple[str, ...]:
        return self._running_ids_reversed()

    # ---- internals ----

    def _get(self, child_id: str) -> ChildState:
        state = self.child(child_id)
        if state is None:
            raise KeyError(child_id)
        return state

    @staticmethod
    def _restarts_after(state: ChildState, normal: bool) -> bool:
        restart = state.spec.restart
        return restart == "permanent" or (restart == "transient" and not normal)

    def _intensity_exceeded(self, now: float) -> bool:
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > self.max_seconds:
            self._restarts.popleft()
        return len(self._restarts) > self.max_restarts

    def _restart(self, child_id: str, delay: float) -> Plan:
        """The strategy applied to ``child_id``: stop the affected running children in
        reverse order (the child itself too, if it still runs), start them in order."""
        affected = self._affected(child_id)
        stop = tuple(i for i in reversed(affected) if self._get(i).running)
        start = tuple(
            i for i in affected if i == child_id or self._get(i).spec.restart != "temporary"
        )
        for i in start:
            self._get(i).restarts += 1
        return Plan(stop=stop, start=start, delay=delay)

    def _affected(self, child_id: str) -> list[str]:
        ids = self.ids()
        if self.strategy == "one_for_one":
            return [child_id]
        if self.strategy == "one_for_all":
            return ids
        return ids[ids.index(child_id) :]

    def _running_ids_reversed(self) -> tuple[str, ...]:
        return tuple(c.spec.id for c in reversed(self.children) if c.running)
