"""Cluster singleton decisions, without actors: when to claim, start, stop and wait.

A cluster singleton is one child spec declared on every node (``placement="cluster"``)
that runs on exactly one of them. Each node runs a manager for it
(:class:`~thespian_cluster.supervisors.singleton.ClusterSingleton`); this module is the
manager's mind. The rules, written down first:

* **The lock is a global name.** The spec's ``register_as`` name, kind
  :data:`LOCK_KIND`, registered to a *manager* (not to the instance). Global names are
  unique across the cluster and freed when their owner or its node dies, so the lock
  is exactly "who may run it". The manager that holds the lock starts the instance and
  registers it under the spec's own ``register_as`` (kind ``server`` by default), the
  name clients look up. The lock's meta says ``state``: ``running`` or ``finished``.
* **Claim when free.** A manager claims the lock when it learns it is free: in the
  snapshot it subscribes to, or on ``NameUnregistered`` (any reason: the holder died,
  its node went down, it was purged). The cluster orders the claims; one wins, the
  others stand by and watch the lock.
* **Stop when not the holder any more.** A holder that learns the lock is someone
  else's (``NameMoved``, ``NameConflict`` after a heal) or gone (``NameUnregistered``)
  stops its instance at once, and claims again if the lock is free.
* **Fence on the losing side.** A holder whose node can no longer write global names
  (its side lost a partition: ``WritableChanged(False)``) stops its instance: the
  winning side purges this node and starts the singleton there. A holder that notices
  it was paused (its own timer late by more than ``pause_fence`` seconds: SIGSTOP, a
  frozen VM) stops its instance the same way: the others may have declared its node
  down meanwhile. A fenced manager never restarts from what it believed: once writable
  (and ``settle`` seconds later, for the heal's merge to arrive) it claims again, and
  the cluster's answer decides.
* **Restarts as in OTP**, by the spec's ``restart`` type, counted against the
  manager's intensity (:class:`~thespian_cluster.core.supervision.SupervisorCore`
  with the one child): ``permanent`` is restarted after any exit, ``transient`` after
  an abnormal one, ``temporary`` never. A singleton that is not restarted is
  **finished** cluster-wide: its lock stays held with ``state="finished"``, and every
  manager that has seen that keeps it so (one that finds the lock free again claims it
  with ``finished`` and starts nothing). Intensity exceeded: the manager escalates (it
  exits; its node's supervisor decides, and the lock it held goes to another node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from thespian_cluster.core.supervision import ChildSpec, Plan, SupervisorCore

#: The kind of a singleton's lock name (the instance keeps ``register_as.kind``).
LOCK_KIND = "singleton"
RUNNING = "running"
FINISHED = "finished"

Role = Literal["waiting", "standby", "claiming", "running", "fenced", "finished", "escalated"]


# ---- what the manager must do --------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Register the lock to this manager with meta ``{"state": state}``; pass ``attempt``
    back with the reply (a reply to an older claim is stale and ignored)."""

    state: str
    attempt: int = field(default=0, compare=False)


@dataclass(frozen=True)
class StartInstance:
    """Start the instance (after ``delay`` seconds) and register it."""

    delay: float = 0.0


@dataclass(frozen=True)
class StopInstance:
    """Stop the running instance; ``reason`` is logged and kept for status."""

    reason: str


@dataclass(frozen=True)
class MarkFinished:
    """Set the held lock's meta to ``{"state": "finished"}``."""


@dataclass(frozen=True)
class Recheck:
    """Read the lock again (a fresh snapshot) after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class Escalate:
    """Stop the instance if it runs and exit: restart intensity exceeded."""

    why: str


Action = Claim | StartInstance | StopInstance | MarkFinished | Recheck | Escalate


@dataclass(frozen=True)
class LockHolder:
    """Who holds the lock, as the registry reports it."""

    owner: Any  # the holder's key (the shell compares addresses by key)
    node: str
    state: str = RUNNING


@dataclass
class SingletonCore:
    """One singleton's manager state; every method returns the actions to take."""

    me: Any  # this manager's key, comparable with LockHolder.owner
    spec: ChildSpec
    max_restarts: int = 3
    max_seconds: float = 5.0
    retry_delay: float = 0.5  # between a refused or failed claim and the next
    settle: float = 1.0  # after a fence ends, before claiming again
    role: Role = "waiting"
    holder: LockHolder | None = None
    finished: bool = False
    writable: bool = True
    #: Our instance: ``none``; ``pending`` (asked for, not created yet: a delayed
    #: restart); ``up`` (created); ``stopping`` (told to stop, its exit not seen yet).
    instance: Literal["none", "pending", "up", "stopping"] = "none"
    #: The claims made so far; a reply to any but the last is stale.
    attempt: int = 0
    _claimed_as: str = RUNNING  # the state the last claim registered the lock with
    last_stop: str | None = None
    _restarts: SupervisorCore = field(init=False)

    def __post_init__(self) -> None:
        # A failed start is retried after retry_delay too: its usual cause (the name
        # still held by an instance of the last holder) clears at that pace, not OTP's.
        self._restarts = SupervisorCore(
            "one_for_one", self.max_restarts, self.max_seconds, self.retry_delay
        )
        self._restarts.add(self.spec)

    @property
    def restarts(self) -> int:
        state = self._restarts.child(self.spec.id)
        return state.restarts if state is not None else 0

    @property
    def holds(self) -> bool:
        return self.role in ("running", "fenced") or (
            self.role == "finished" and self._mine(self.holder)
        )

    # ---- what the registry says about the lock ----------------------------------------

    def lock_is(self, holder: LockHolder | None) -> list[Action]:
        """The lock as a snapshot shows it (the first one, or a recheck)."""
        if holder is not None and holder.state == FINISHED:
            self.finished = True
        if self.role == "claiming":
            # The claim's reply decides. Not a snapshot showing the lock ours: it may be
            # this node's table from before a heal's merge (an event of our claim being
            # applied is another matter: lock_registered).
            self.holder = holder
            return []
        if holder is None:
            return self._lost("the lock is free") + self._claim()
        if self._mine(holder):
            if self.role == "running" or (self.role == "finished" and self.finished):
                self.holder = holder
                return []
            # Believed, not confirmed (a fence ended, a manager restarted at the same
            # address): the cluster's answer to a claim decides.
            return self._claim()
        return self._taken(holder, "conflict")

    def lock_registered(self, holder: LockHolder, reason: str) -> list[Action]:
        """``NameRegistered`` / ``NameMoved`` / ``MetaChanged`` of the lock."""
        if holder.state == FINISHED:
            self.finished = True
        if self._mine(holder):
            if self.role == "claiming":
                return self.claimed(holder.node)  # our claim applied: its reply may be lost
            self.holder = holder  # the echo of our own claim or meta update
            return []
        if self.role == "claiming":
            self.holder = holder
            return []
        return self._taken(holder, reason)

    def lock_unregistered(self, reason: str) -> list[Action]:
        """``NameUnregistered`` of the lock: whoever held it, it is free now."""
        if self.role == "claiming":
            self.holder = None
            return []
        return self._lost(f"the lock was released ({reason})") + self._claim()

    def claim_unanswered(self, attempt: int) -> list[Action]:
        """Claim ``attempt`` had no answer in time (a reply lost): ask again later."""
        if self.role != "claiming" or attempt != self.attempt:
            return []
        return self.claim_refused(None, attempt)

    def conflict(self, winner: Any, node: str) -> list[Action]:
        """``NameConflict``: a heal's merge gave the lock to ``winner`` on ``node``."""
        return self._taken(LockHolder(winner, node), "conflict")

    # ---- replies to our claims ---------------------------------------------------------

    def claimed(self, node: str, attempt: int | None = None) -> list[Action]:
        """The lock is ours (``Registered``) — if this answers our last claim."""
        if attempt is not None and attempt != self.attempt:
            return []
        self.holder = LockHolder(self.me, node, FINISHED if self.finished else RUNNING)
        if self.finished:
            actions = self._stop("the singleton is finished")
            self.role = "finished"
            # Learnt while a claim as "running" was out: say so in the lock, or a node
            # that never saw it would start the singleton once this one is gone.
            return [*actions, MarkFinished()] if self._claimed_as != FINISHED else actions
        if not self.writable:
            self.role = "fenced"
            return []
        self.role = "running"
        return self._start()

    def claim_refused(self, holder: LockHolder | None, attempt: int | None = None) -> list[Action]:
        """``AlreadyRegistered`` (``holder``) or an error (None) for our last claim: stand
        by (stopping an instance we run: the lock is not ours), or retry later."""
        if attempt is not None and attempt != self.attempt:
            return []
        if holder is not None and holder.state == FINISHED:
            self.finished = True
        if holder is not None and self._mine(holder):
            self._claimed_as = holder.state  # the lock as it is registered
            return self.claimed(holder.node)
        if holder is not None:
            return self._taken(holder, "claimed first")
        actions = self._lost("the claim failed")
        self.role = "waiting"
        return [*actions, Recheck(self.retry_delay)]

    # ---- the node's state -------------------------------------------------------------

    def writable_changed(self, writable: bool) -> list[Action]:
        was, self.writable = self.writable, writable
        if not writable:
            if self.role == "running":
                self.role = "fenced"
                return self._stop("this node's side lost a partition (minority_partition)")
            return []
        if not was and self.role in ("fenced", "waiting", "standby", "finished"):
            # Back from the losing side: what this node saw while it could not write
            # (a purge, its own lock) is not the cluster's word; the heal's merge is.
            return [Recheck(self.settle)]
        return []

    def paused(self, gap: float) -> list[Action]:
        """This manager's timer fired ``gap`` seconds late: the node may have been declared
        down while it was paused, and the singleton started elsewhere."""
        if self.role != "running":
            return []
        self.role = "fenced"
        return [*self._stop(f"this node was paused for {gap:.1f} s"), Recheck(self.settle)]

    # ---- the instance -----------------------------------------------------------------

    def instance_started(self, address: Any, now: float) -> None:
        self.instance = "up"
        self._restarts.started(self.spec.id, address, now)

    def instance_exited(self, normal: bool, now: float) -> list[Action]:
        """The instance exited: after we stopped it, or on its own (a crash, a kill, or
        ``NormalExit`` first)."""
        stopped_by_us = self.instance == "stopping"
        self.instance = "none"
        if self._restarts.child(self.spec.id) is None:
            return []
        if stopped_by_us:
            self._restarts.stopped(self.spec.id)
            # Stopped while the lock was in doubt; it may be ours again already.
            return self._start() if self.role == "running" else []
        plan = self._restarts.exited(self.spec.id, normal, now)
        return self._follow(plan, "exited")

    def instance_failed(self, why: str, now: float) -> list[Action]:
        """A start failed (its registration was refused) and the shell stopped it."""
        self.instance = "none"
        if self._restarts.child(self.spec.id) is None:
            return []
        self._restarts.stopped(self.spec.id)
        self.last_stop = why
        return self._follow(self._restarts.start_failed(self.spec.id, now, initial=False), why)

    # ---- internals --------------------------------------------------------------------

    def _follow(self, plan: Plan, why: str) -> list[Action]:
        if plan.escalate:
            self.role = "escalated"
            return [Escalate(f"{self.max_restarts} restarts in {self.max_seconds} s ({why})")]
        if plan.start:
            return self._start(plan.delay) if self.role == "running" else []
        # Not restarted: the singleton is done, everywhere.
        self.finished = True
        if self.role == "running":
            self.role = "finished"
            return [MarkFinished()]
        return []

    def _start(self, delay: float = 0.0) -> list[Action]:
        if self.instance != "none":
            return []  # asked for or running already, or stopping: its exit starts the next
        self.instance = "pending"
        return [StartInstance(delay)]

    def _mine(self, holder: LockHolder | None) -> bool:
        return holder is not None and holder.owner == self.me

    def _claim(self) -> list[Action]:
        if self.role == "escalated":
            return []
        if not self.writable:
            self.role = "waiting"
            return []
        self.role = "claiming"
        self.attempt += 1
        self._claimed_as = FINISHED if self.finished else RUNNING
        return [Claim(self._claimed_as, self.attempt)]

    def _taken(self, holder: LockHolder, reason: str) -> list[Action]:
        """``holder`` (not us) has the lock."""
        actions = self._lost(f"node {holder.node} holds it ({reason})")
        self.holder = holder
        if self.role != "escalated":
            self.role = "finished" if self.finished else "standby"
        return actions

    def _lost(self, why: str) -> list[Action]:
        """The lock is not (or no longer) ours; stop an instance we run."""
        self.holder = None
        if self.role in ("running", "fenced"):
            self.role = "waiting"
        return self._stop(why)

    def _stop(self, why: str) -> list[Action]:
        if self.instance == "pending":
            self.instance = "none"  # never created: nothing to stop, the start is off
            self.last_stop = why
            return []
        if self.instance != "up":
            return []
        self.instance = "stopping"
        self.last_stop = why
        return [StopInstance(why)]
