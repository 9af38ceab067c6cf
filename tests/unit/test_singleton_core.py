"""SingletonCore's decisions, one rule of its module docstring at a time.

The core is a pure object: every event returns the actions the manager must take. The
tests feed it events as the shell would (the lock as the registry reports it, the
claim's replies, the node's writability, the instance's creation and exits) and check
the actions and the role. A ``StartInstance`` only asks for an instance: it is
``pending`` until the shell creates it and calls ``instance_started`` (at once, or after
the action's delay), so the tests do that where the shell would. The last test drives
the core with random event sequences and checks the invariants every sequence must
keep: never two instances at once, never an instance up without a confirmed lock, never
a start once the singleton is finished, never a state that waits for an event the shell
will not send (a stop of an instance never created, a start nobody carries out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thespian_cluster.core.singleton import (
    FINISHED,
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
from thespian_cluster.core.supervision import ChildSpec, RegisterAs, RestartType

ME = "me"
OTHER = "other"
MY_NODE = "node-a"
OTHER_NODE = "node-b"

MINE = LockHolder(ME, MY_NODE, RUNNING)
THEIRS = LockHolder(OTHER, OTHER_NODE, RUNNING)
THEIRS_FINISHED = LockHolder(OTHER, OTHER_NODE, FINISHED)

#: SupervisorCore's pause between a failed start and the next attempt.
START_RETRY = 0.7  # the manager's retry_delay in core() and running(): failed starts too


def spec(restart: RestartType = "permanent") -> ChildSpec:
    return ChildSpec(
        id="coord",
        actor_class="tests.integration.actors.Worker",
        restart=restart,
        register_as=RegisterAs(name="coord", scope="global"),
        placement="cluster",
    )


def core(
    restart: RestartType = "permanent",
    *,
    max_restarts: int = 3,
    max_seconds: float = 5.0,
    retry_delay: float = 0.7,  # = START_RETRY, distinct from settle
    settle: float = 2.5,
) -> SingletonCore:
    return SingletonCore(
        ME,
        spec(restart),
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        retry_delay=retry_delay,
        settle=settle,
    )


def running(
    restart: RestartType = "permanent",
    *,
    max_restarts: int = 3,
    max_seconds: float = 5.0,
    retry_delay: float = 0.7,
    settle: float = 2.5,
) -> SingletonCore:
    """A manager that claimed the free lock, won it and started its instance."""
    result = core(
        restart,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        retry_delay=retry_delay,
        settle=settle,
    )
    assert result.lock_is(None) == [Claim(RUNNING)]
    assert result.claimed(MY_NODE) == [StartInstance()]
    result.instance_started("instance-1", 0.0)
    return result


def kinds(actions: list[Action]) -> list[type]:
    return [type(action) for action in actions]


def restarting() -> SingletonCore:
    """A running manager whose instance's registration was refused: its next start is
    asked for, ``START_RETRY`` seconds later, and not created yet."""
    c = running()
    assert c.instance_failed("its name is taken", 1.0) == [StartInstance(delay=START_RETRY)]
    assert c.instance == "pending"
    assert c.role == "running"
    return c


# ---- claim when free, stand by when taken ---------------------------------------------


def test_a_fresh_manager_claims_a_free_lock() -> None:
    c = core()
    assert c.role == "waiting"
    assert c.lock_is(None) == [Claim(RUNNING)]
    assert c.role == "claiming"
    assert not c.holds


def test_a_won_claim_starts_the_instance() -> None:
    c = core()
    c.lock_is(None)
    assert c.claimed(MY_NODE) == [StartInstance()]
    assert c.role == "running"
    assert c.instance == "pending"  # asked for; the shell has not created it yet
    assert c.holder == MINE
    assert c.holds
    c.instance_started("instance-1", 0.0)
    assert c.instance == "up"
    assert c.role == "running"


def test_each_claim_carries_a_new_attempt() -> None:
    c = core()
    (first,) = c.lock_is(None)
    assert c.conflict(OTHER, OTHER_NODE) == []
    (second,) = c.lock_unregistered("node_down")
    assert isinstance(first, Claim) and isinstance(second, Claim)
    assert (first.attempt, second.attempt) == (1, 2)
    assert c.attempt == 2


def test_a_fresh_manager_stands_by_when_another_holds_the_lock() -> None:
    c = core()
    assert c.lock_is(THEIRS) == []
    assert c.role == "standby"
    assert c.holder == THEIRS
    assert not c.holds
    assert not c.finished


def test_a_standby_claims_when_the_lock_is_released() -> None:
    c = core()
    c.lock_is(THEIRS)
    assert c.lock_unregistered("node_down") == [Claim(RUNNING)]
    assert c.role == "claiming"
    assert c.claimed(MY_NODE) == [StartInstance()]


def test_a_standby_ignores_the_lock_moving_between_others() -> None:
    c = core()
    c.lock_is(THEIRS)
    third = LockHolder("third", "node-c", RUNNING)
    assert c.lock_registered(third, "moved") == []
    assert c.role == "standby"
    assert c.holder == third


def test_a_lost_claim_stands_by() -> None:
    c = core()
    c.lock_is(None)
    assert c.claim_refused(THEIRS) == []
    assert c.role == "standby"
    assert c.holder == THEIRS
    assert c.instance == "none"


def test_the_echo_of_our_own_claim_changes_nothing() -> None:
    c = running()
    assert c.lock_registered(MINE, "registered") == []
    assert c.lock_is(MINE) == []
    assert c.role == "running"
    assert c.instance == "up"


# ---- stop when not the holder any more -----------------------------------------------


def test_a_holder_stops_its_instance_when_the_lock_moves_to_another() -> None:
    c = running()
    actions = c.lock_registered(THEIRS, "moved")
    assert kinds(actions) == [StopInstance]
    assert c.role == "standby"
    assert c.holder == THEIRS
    assert c.instance == "stopping"
    assert not c.holds
    # The stopped instance's exit starts nothing: the lock is someone else's.
    assert c.instance_exited(False, 1.0) == []
    assert c.instance == "none"


def test_a_conflict_stops_the_instance_and_stands_by() -> None:
    c = running()
    actions = c.conflict(OTHER, OTHER_NODE)
    assert kinds(actions) == [StopInstance]
    assert c.role == "standby"
    assert c.holder == LockHolder(OTHER, OTHER_NODE)
    assert c.instance_exited(True, 1.0) == []
    assert c.role == "standby"


def test_a_snapshot_showing_another_holder_stops_the_instance() -> None:
    c = running()
    assert kinds(c.lock_is(THEIRS)) == [StopInstance]
    assert c.role == "standby"


def test_a_holder_whose_lock_is_released_stops_and_claims_again() -> None:
    c = running()
    actions = c.lock_unregistered("purged")
    assert kinds(actions) == [StopInstance, Claim]
    assert actions[1] == Claim(RUNNING)
    # Won again before the old instance is gone: the next waits for its exit.
    assert c.claimed(MY_NODE) == []
    assert c.role == "running"
    assert c.instance_exited(True, 1.0) == [StartInstance()]
    assert c.instance == "pending"
    c.instance_started("instance-2", 1.0)
    assert c.instance == "up"


def test_an_exit_after_a_stop_is_not_counted_as_a_restart() -> None:
    c = running(max_restarts=0)
    c.lock_unregistered("purged")
    c.claimed(MY_NODE)
    # With no restart allowed at all, a counted exit would escalate.
    assert c.instance_exited(False, 1.0) == [StartInstance()]
    assert c.restarts == 0


# ---- fence on the losing side --------------------------------------------------------


def test_losing_writability_fences_a_running_holder() -> None:
    c = running()
    actions = c.writable_changed(False)
    assert kinds(actions) == [StopInstance]
    assert c.role == "fenced"
    assert c.instance == "stopping"


def test_losing_writability_on_a_standby_does_nothing() -> None:
    c = core()
    c.lock_is(THEIRS)
    assert c.writable_changed(False) == []
    assert c.role == "standby"


def test_a_fenced_holder_rechecks_after_settle_then_claims_through_the_cluster() -> None:
    c = running(settle=2.5)
    c.writable_changed(False)
    assert c.instance_exited(True, 1.0) == []  # fenced: the stopped instance stays down
    assert c.writable_changed(True) == [Recheck(2.5)]
    assert c.role == "fenced"
    # The lock still shows us: a belief, not a confirmation. Claim, do not start.
    assert c.lock_is(MINE) == [Claim(RUNNING)]
    assert c.role == "claiming"
    assert c.instance == "none"
    assert c.claimed(MY_NODE) == [StartInstance()]
    assert c.role == "running"


def test_a_fence_that_ends_before_the_exit_starts_only_after_the_exit() -> None:
    c = running()
    c.writable_changed(False)
    assert c.writable_changed(True) == [Recheck(2.5)]
    assert c.lock_is(MINE) == [Claim(RUNNING)]
    assert c.claimed(MY_NODE) == []  # the fenced instance is still stopping
    assert c.instance == "stopping"
    assert c.instance_exited(True, 3.0) == [StartInstance()]
    assert c.instance == "pending"
    c.instance_started("instance-2", 3.0)
    assert c.instance == "up"


def test_a_fenced_holder_whose_lock_went_elsewhere_stands_by() -> None:
    c = running()
    c.writable_changed(False)
    assert c.lock_registered(THEIRS, "moved") == []  # already stopping
    assert c.role == "standby"
    assert c.instance_exited(True, 1.0) == []
    # Back from the losing side: what it saw meanwhile is rechecked, not believed.
    assert c.writable_changed(True) == [Recheck(2.5)]
    assert c.role == "standby"
    assert c.lock_is(THEIRS) == []
    assert c.role == "standby"
    assert c.instance == "none"


def test_a_claim_won_while_unwritable_is_fenced_until_settled() -> None:
    c = core()
    assert c.lock_is(None) == [Claim(RUNNING)]
    assert c.writable_changed(False) == []
    assert c.claimed(MY_NODE) == []
    assert c.role == "fenced"
    assert c.instance == "none"
    assert c.writable_changed(True) == [Recheck(2.5)]


def test_an_unwritable_manager_does_not_claim_a_free_lock() -> None:
    c = core()
    c.lock_is(THEIRS)
    c.writable_changed(False)
    assert c.lock_unregistered("node_down") == []
    assert c.role == "waiting"


def test_a_waiting_manager_back_from_the_losing_side_rechecks_before_claiming() -> None:
    """The lock went free while this side could not write: that may be the purge of a
    minority, not the cluster's word. Writable again, it rechecks; the snapshot decides."""
    c = core(settle=2.5)
    c.lock_is(THEIRS)
    c.writable_changed(False)
    c.lock_unregistered("node_down")
    assert c.writable_changed(True) == [Recheck(2.5)]
    assert c.role == "waiting"
    # The heal's merge says the lock is held after all: stand by, claim nothing.
    assert c.lock_is(THEIRS) == []
    assert c.role == "standby"


def test_a_waiting_manager_claims_when_the_recheck_shows_the_lock_free() -> None:
    c = core(settle=2.5)
    c.writable_changed(False)
    assert c.lock_is(None) == []
    assert c.writable_changed(True) == [Recheck(2.5)]
    assert c.lock_is(None) == [Claim(RUNNING)]
    assert c.claimed(MY_NODE) == [StartInstance()]


def test_a_standby_back_from_the_losing_side_rechecks() -> None:
    c = core(settle=2.5)
    c.lock_is(THEIRS)
    c.writable_changed(False)
    assert c.writable_changed(True) == [Recheck(2.5)]
    assert c.role == "standby"
    assert c.lock_is(None) == [Claim(RUNNING)]


@pytest.mark.parametrize("setup", ["fresh", "standby", "running", "finished"])
def test_writable_without_having_been_unwritable_changes_nothing(setup: str) -> None:
    """Only a return from the losing side rechecks (a PartitionStatus reply that says
    writable, or a repeated WritableChanged(True), is not one)."""
    c = running("transient") if setup in ("running", "finished") else core()
    if setup == "standby":
        c.lock_is(THEIRS)
    elif setup == "finished":
        c.instance_exited(True, 1.0)
    role, instance = c.role, c.instance
    assert c.writable_changed(True) == []
    assert (c.role, c.instance) == (role, instance)


def test_a_fenced_holder_whose_lock_went_free_still_waits_settle_before_claiming() -> None:
    """The docstring: a fenced manager claims again once writable *and* ``settle``
    seconds later (for the heal's merge to arrive), never from what it believed."""
    c = running(settle=2.5)
    c.writable_changed(False)
    c.instance_exited(True, 1.0)
    # The lock is released while this side cannot write: no claim yet.
    assert c.lock_unregistered("node_down") == []
    actions = c.writable_changed(True)
    assert not any(isinstance(a, Claim) for a in actions), actions
    assert Recheck(2.5) in actions
    # The recheck's snapshot decides: here the lock is still free, so claim.
    assert c.lock_is(None) == [Claim(RUNNING)]
    assert c.claimed(MY_NODE) == [StartInstance()]


def test_a_pause_fences_and_rechecks() -> None:
    c = running(settle=2.5)
    actions = c.paused(4.0)
    assert kinds(actions) == [StopInstance, Recheck]
    assert actions[1] == Recheck(2.5)
    assert c.role == "fenced"
    assert c.instance == "stopping"
    assert c.lock_is(MINE) == [Claim(RUNNING)]
    assert c.claimed(MY_NODE) == []
    assert c.instance_exited(True, 5.0) == [StartInstance()]


def test_a_pause_on_a_standby_does_nothing() -> None:
    c = core()
    c.lock_is(THEIRS)
    assert c.paused(4.0) == []
    assert c.role == "standby"


def test_a_paused_holder_whose_lock_was_taken_stands_by() -> None:
    c = running()
    c.paused(4.0)
    assert c.lock_is(THEIRS) == []
    assert c.role == "standby"
    assert c.instance_exited(True, 5.0) == []


# ---- restarts as in OTP --------------------------------------------------------------


@pytest.mark.parametrize("normal", [True, False])
def test_a_permanent_instance_is_restarted_after_any_exit(normal: bool) -> None:
    c = running("permanent")
    assert c.instance_exited(normal, 1.0) == [StartInstance()]
    assert c.role == "running"
    assert c.instance == "pending"
    assert c.restarts == 1
    c.instance_started("instance-2", 1.0)
    assert c.instance == "up"
    assert not c.finished


def test_a_transient_instance_is_restarted_after_an_abnormal_exit() -> None:
    c = running("transient")
    assert c.instance_exited(False, 1.0) == [StartInstance()]
    assert c.role == "running"
    assert not c.finished


def test_a_transient_instance_that_exits_normally_finishes_the_singleton() -> None:
    c = running("transient")
    assert c.instance_exited(True, 1.0) == [MarkFinished()]
    assert c.role == "finished"
    assert c.finished
    assert c.instance == "none"
    assert c.holds  # the finished lock stays held


def test_a_finished_manager_that_finds_the_lock_free_claims_it_finished() -> None:
    c = running("transient")
    c.instance_exited(True, 1.0)
    assert c.lock_unregistered("purged") == [Claim(FINISHED)]
    assert c.claimed(MY_NODE) == []
    assert c.role == "finished"
    assert c.holder == LockHolder(ME, MY_NODE, FINISHED)
    assert c.claim_refused(LockHolder(ME, MY_NODE, FINISHED)) == []
    assert c.instance == "none"


def test_a_finished_manager_does_not_start_after_a_fence() -> None:
    c = running("transient")
    c.instance_exited(True, 1.0)
    assert c.writable_changed(False) == []
    assert c.writable_changed(True) == [Recheck(2.5)]
    assert c.role == "finished"
    assert c.paused(4.0) == []
    assert c.lock_is(LockHolder(ME, MY_NODE, FINISHED)) == []
    assert c.lock_is(None) == [Claim(FINISHED)]
    assert c.claimed(MY_NODE) == []
    assert c.role == "finished"


@pytest.mark.parametrize("normal", [True, False])
def test_a_temporary_instance_is_never_restarted(normal: bool) -> None:
    c = running("temporary")
    assert c.instance_exited(normal, 1.0) == [MarkFinished()]
    assert c.role == "finished"
    assert c.finished
    assert c.lock_unregistered("purged") == [Claim(FINISHED)]
    assert c.claimed(MY_NODE) == []
    assert c.instance == "none"


def test_a_temporary_instance_whose_start_fails_is_not_retried() -> None:
    c = running("temporary")
    assert c.instance_failed("its name is taken", 1.0) == [MarkFinished()]
    assert c.finished
    assert c.role == "finished"


# ---- intensity -----------------------------------------------------------------------


def test_more_than_max_restarts_within_max_seconds_escalates() -> None:
    c = running(max_restarts=3, max_seconds=5.0)
    for now in (1.0, 2.0, 3.0):
        assert c.instance_exited(False, now) == [StartInstance()]
        c.instance_started(f"instance-{now}", now)
    actions = c.instance_exited(False, 4.0)
    assert kinds(actions) == [Escalate]
    assert c.role == "escalated"
    assert c.instance == "none"


def test_an_escalated_manager_claims_nothing() -> None:
    c = running(max_restarts=0)
    assert kinds(c.instance_exited(False, 1.0)) == [Escalate]
    assert c.lock_unregistered("purged") == []
    assert c.lock_is(None) == []
    assert c.writable_changed(True) == []
    assert c.role == "escalated"


def test_exits_spread_beyond_max_seconds_do_not_escalate() -> None:
    c = running(max_restarts=3, max_seconds=5.0)
    for step in range(1, 11):
        now = 3.0 * step  # at most two exits in any 5 s window
        assert c.instance_exited(False, now) == [StartInstance()], now
        c.instance_started(f"instance-{step}", now)
    assert c.role == "running"
    assert c.restarts == 10


def test_a_failed_start_is_retried_after_the_manager_retry_delay() -> None:
    c = running(retry_delay=0.7)
    assert c.instance_failed("its name is registered to someone else", 1.0) == [
        StartInstance(delay=START_RETRY)
    ]
    assert c.instance == "pending"  # a delayed start: not created yet
    assert c.last_stop == "its name is registered to someone else"
    assert c.restarts == 1
    c.instance_started("instance-2", 1.0 + START_RETRY)
    assert c.instance == "up"
    assert c.role == "running"


# ---- a delayed start called off ------------------------------------------------------


#: Events that make a running manager stop its instance, and the role they leave.
STOPPERS: dict[str, tuple[Callable[[SingletonCore], list[Action]], str]] = {
    "moved": (lambda c: c.lock_registered(THEIRS, "moved"), "standby"),
    "conflict": (lambda c: c.conflict(OTHER, OTHER_NODE), "standby"),
    "snapshot_theirs": (lambda c: c.lock_is(THEIRS), "standby"),
    "unregistered": (lambda c: c.lock_unregistered("purged"), "claiming"),
    "fence": (lambda c: c.writable_changed(False), "fenced"),
    "pause": (lambda c: c.paused(4.0), "fenced"),
}


@pytest.mark.parametrize("event", sorted(STOPPERS))
def test_a_stop_during_a_delayed_start_calls_the_start_off(event: str) -> None:
    """No instance exists yet, so there is nothing to stop and no exit will come: the
    start is off (no StopInstance), and the instance is ``none``, not ``stopping``."""
    c = restarting()
    stop, role = STOPPERS[event]
    actions = stop(c)
    assert StopInstance not in kinds(actions), actions
    assert StartInstance not in kinds(actions), actions
    assert c.instance == "none"
    assert c.role == role
    assert c.last_stop is not None and c.last_stop != "its name is taken"


@pytest.mark.parametrize("event", sorted(STOPPERS))
def test_a_start_called_off_does_not_block_the_next_one(event: str) -> None:
    """The deadlock of a stop that waited for the exit of an instance never created: a
    later won claim must start again at once, with no exit to wait for."""
    c = restarting()
    stop, _ = STOPPERS[event]
    actions = stop(c)
    if event == "fence":
        assert c.writable_changed(True) == [Recheck(2.5)]
    if not any(isinstance(a, Claim) for a in actions):
        assert c.lock_is(None) == [Claim(RUNNING)]  # the recheck, or a later release
    assert c.claimed(MY_NODE) == [StartInstance()]  # a fresh start: no retry delay
    assert c.instance == "pending"
    assert c.role == "running"
    c.instance_started("instance-2", 3.0)
    assert c.instance == "up"


def test_a_pending_start_called_off_is_not_counted_again() -> None:
    """The failed start counted once toward intensity; calling its retry off and
    starting again after a won claim does not count a second time."""
    c = restarting()
    c.lock_unregistered("purged")
    c.claimed(MY_NODE)
    assert c.restarts == 1


def test_failed_starts_count_toward_intensity() -> None:
    c = running(max_restarts=3, max_seconds=5.0)
    for now in (1.0, 1.1, 1.2):
        assert c.instance_failed("refused", now) == [StartInstance(delay=START_RETRY)]
        c.instance_started(f"instance-{now}", now)
    assert kinds(c.instance_failed("refused", 1.3)) == [Escalate]
    assert c.role == "escalated"


def test_failed_starts_and_exits_share_one_intensity() -> None:
    c = running(max_restarts=3, max_seconds=5.0)
    assert c.instance_exited(False, 1.0) == [StartInstance()]
    c.instance_started("instance-2", 1.0)
    assert c.instance_failed("refused", 1.5) == [StartInstance(delay=START_RETRY)]
    c.instance_started("instance-3", 1.6)
    assert c.instance_exited(False, 2.0) == [StartInstance()]
    c.instance_started("instance-4", 2.0)
    assert kinds(c.instance_failed("refused", 2.5)) == [Escalate]


# ---- replies to claims ---------------------------------------------------------------


def test_a_claim_that_errs_rechecks_after_retry_delay() -> None:
    c = core(retry_delay=0.7)
    c.lock_is(None)
    assert c.claim_refused(None) == [Recheck(0.7)]
    assert c.role == "waiting"
    assert c.instance == "none"
    assert c.lock_is(None) == [Claim(RUNNING)]


def test_a_claim_refused_because_we_hold_it_counts_as_won() -> None:
    c = core()
    c.lock_is(None)
    assert c.claim_refused(MINE) == [StartInstance()]
    assert c.role == "running"
    assert c.holder == MINE


def test_a_repeated_claim_reply_does_not_start_a_second_instance() -> None:
    c = running()
    assert c.claimed(MY_NODE) == []
    assert c.claim_refused(MINE) == []
    assert c.instance == "up"


def test_a_repeated_claim_reply_during_a_delayed_start_does_not_start_it_twice() -> None:
    c = restarting()
    assert c.claimed(MY_NODE) == []
    assert c.claim_refused(MINE) == []
    assert c.instance == "pending"


def _two_claims_in_flight() -> SingletonCore:
    """A claim goes out, a heal's conflict gives the lock to another, the lock is
    released, a second claim goes out: attempt 1 is stale, attempt 2 the current one."""
    c = core()
    assert [a.attempt for a in c.lock_is(None) if isinstance(a, Claim)] == [1]
    assert c.conflict(OTHER, OTHER_NODE) == []
    assert c.role == "standby"
    assert [a.attempt for a in c.lock_unregistered("node_down") if isinstance(a, Claim)] == [2]
    assert c.role == "claiming"
    return c


def test_a_stale_claim_success_changes_nothing() -> None:
    c = _two_claims_in_flight()
    assert c.claimed(MY_NODE, attempt=1) == []
    assert c.role == "claiming"
    assert c.instance == "none"
    assert c.holder is None
    # The current claim's reply decides.
    assert c.claimed(MY_NODE, attempt=2) == [StartInstance()]
    assert c.role == "running"


@pytest.mark.parametrize("holder", [THEIRS, THEIRS_FINISHED, None])
def test_a_stale_claim_refusal_changes_nothing(holder: LockHolder | None) -> None:
    c = _two_claims_in_flight()
    assert c.claim_refused(holder, attempt=1) == []
    assert c.role == "claiming"
    assert not c.finished
    assert c.claimed(MY_NODE, attempt=2) == [StartInstance()]
    c.instance_started("instance-1", 1.0)
    # ... and once running on the current claim's word, a stale refusal still changes
    # nothing: no stop, no standby.
    assert c.claim_refused(holder, attempt=1) == []
    assert c.role == "running"
    assert c.instance == "up"
    assert c.holder == MINE
    assert not c.finished


def test_a_stale_claim_refused_by_ourselves_finished_does_not_finish() -> None:
    c = _two_claims_in_flight()
    assert c.claim_refused(LockHolder(ME, MY_NODE, FINISHED), attempt=1) == []
    assert not c.finished
    assert c.role == "claiming"


def test_the_current_claim_refused_by_another_stands_by_and_its_exit_starts_nothing() -> None:
    """A holder whose lock was released stops and claims again; the claim is refused:
    another node took the lock first. The old instance, still stopping, stays down."""
    c = running()
    (stop, claim) = c.lock_unregistered("purged")
    assert isinstance(stop, StopInstance) and isinstance(claim, Claim)
    assert c.claim_refused(THEIRS, attempt=claim.attempt) == []
    assert c.role == "standby"
    assert c.holder == THEIRS
    assert c.instance == "stopping"
    assert c.instance_exited(True, 1.0) == []
    assert c.instance == "none"
    assert c.role == "standby"


def _running_with_replies_in_flight() -> SingletonCore:
    """Two claims in flight and a reply without an attempt number (None: the current
    claim's) says won: the manager runs, and a second such reply is still taken as the
    current claim's."""
    c = _two_claims_in_flight()
    assert c.claimed(MY_NODE) == [StartInstance()]
    c.instance_started("instance-1", 1.0)
    return c


def test_the_last_claims_refusal_by_another_stops_the_instance_and_stands_by() -> None:
    """The docstring: a holder that learns the lock is someone else's stops its instance
    at once."""
    c = _running_with_replies_in_flight()
    actions = c.claim_refused(THEIRS)
    assert kinds(actions) == [StopInstance]
    assert c.role == "standby"
    assert c.holder == THEIRS
    assert c.instance == "stopping"
    assert not c.holds
    assert c.instance_exited(True, 2.0) == []


def test_the_last_claims_refusal_by_another_finished_holder_finishes() -> None:
    c = _running_with_replies_in_flight()
    assert kinds(c.claim_refused(THEIRS_FINISHED, attempt=2)) == [StopInstance]
    assert c.finished
    assert c.role == "finished"
    assert c.instance_exited(True, 2.0) == []
    assert c.lock_unregistered("node_down") == [Claim(FINISHED)]


def test_the_last_claims_error_stops_the_instance_and_waits() -> None:
    """An error answers the claim: the lock is not confirmed ours. The instance stops,
    and a recheck reads the lock again; it must not stay up in a role that neither owns
    nor restarts it."""
    c = _running_with_replies_in_flight()
    actions = c.claim_refused(None)
    assert kinds(actions) == [StopInstance, Recheck]
    assert actions[1] == Recheck(0.7)
    assert c.role == "waiting"
    assert c.holder is None
    assert c.instance == "stopping"
    assert c.instance_exited(True, 2.0) == []  # waiting: the recheck decides
    assert c.lock_is(MINE) == [Claim(RUNNING)]


def test_a_claim_refused_by_another_while_finished_keeps_the_manager_finished() -> None:
    """A refusal by a holder whose meta does not say finished: the manager has seen the
    lock finished already, so it stays finished (not standby)."""
    c = core()
    c.lock_is(THEIRS_FINISHED)
    assert c.lock_unregistered("node_down") == [Claim(FINISHED)]
    assert c.claim_refused(THEIRS) == []
    assert c.role == "finished"
    assert c.finished
    assert c.holder == THEIRS


def test_a_claim_refused_by_ourselves_with_a_finished_lock_starts_nothing() -> None:
    """The docstring: every manager that has seen the lock held ``finished`` keeps it
    so. A refusal that reports our own finished lock is such a sighting."""
    c = core()
    c.lock_is(None)
    assert c.claim_refused(LockHolder(ME, MY_NODE, FINISHED)) == []
    assert c.finished
    assert c.role == "finished"
    assert c.instance == "none"
    assert c.holder == LockHolder(ME, MY_NODE, FINISHED)
    assert c.holds


# ---- finished cluster-wide -----------------------------------------------------------


def test_a_snapshot_of_a_finished_lock_held_by_another_marks_the_manager_finished() -> None:
    c = core()
    assert c.lock_is(THEIRS_FINISHED) == []
    assert c.finished
    assert c.role == "finished"
    assert not c.holds
    assert c.lock_unregistered("node_down") == [Claim(FINISHED)]
    assert c.claimed(MY_NODE) == []
    assert c.role == "finished"
    assert c.instance == "none"


def test_a_standby_that_sees_the_lock_marked_finished_keeps_it_finished() -> None:
    c = core()
    c.lock_is(THEIRS)
    assert c.lock_registered(THEIRS_FINISHED, "meta_changed") == []
    assert c.finished
    # Even a later snapshot that has it running again does not unfinish it.
    c.lock_is(THEIRS)
    assert c.finished
    assert c.lock_unregistered("node_down") == [Claim(FINISHED)]
    assert c.claimed(MY_NODE) == []


def test_a_finished_lock_seen_while_claiming_makes_the_won_claim_start_nothing() -> None:
    c = core()
    assert c.lock_is(None) == [Claim(RUNNING)]
    assert c.lock_is(THEIRS_FINISHED) == []  # the claim is still out
    assert c.finished
    # Won as "running", known finished: the lock is marked finished, nothing starts.
    assert c.claimed(MY_NODE) == [MarkFinished()]
    assert c.role == "finished"
    assert c.instance == "none"


def test_a_claim_refused_by_a_finished_holder_marks_the_manager_finished() -> None:
    c = core()
    c.lock_is(None)
    assert c.claim_refused(THEIRS_FINISHED) == []
    assert c.finished
    assert c.lock_unregistered("node_down") == [Claim(FINISHED)]


def test_a_running_holder_that_sees_the_lock_finished_elsewhere_stops() -> None:
    c = running()
    assert kinds(c.lock_registered(THEIRS_FINISHED, "moved")) == [StopInstance]
    assert c.finished
    assert c.role == "finished"
    assert c.instance_exited(True, 1.0) == []


# ---- random sequences: the invariants -------------------------------------------------


#: Events about the lock and the node, deliverable at any time.
LOCK_EVENTS: dict[str, Callable[[SingletonCore], list[Action]]] = {
    "lock_is_free": lambda c: c.lock_is(None),
    "lock_is_mine": lambda c: c.lock_is(MINE),
    "lock_is_theirs": lambda c: c.lock_is(THEIRS),
    "lock_is_theirs_finished": lambda c: c.lock_is(THEIRS_FINISHED),
    "registered_mine": lambda c: c.lock_registered(MINE, "registered"),
    "registered_theirs": lambda c: c.lock_registered(THEIRS, "moved"),
    "registered_theirs_finished": lambda c: c.lock_registered(THEIRS_FINISHED, "meta"),
    "unregistered": lambda c: c.lock_unregistered("node_down"),
    "conflict": lambda c: c.conflict(OTHER, OTHER_NODE),
    "writable": lambda c: c.writable_changed(True),
    "unwritable": lambda c: c.writable_changed(False),
    "paused": lambda c: c.paused(4.0),
}

#: The registry's replies to the oldest claim in flight (it answers in order).
REPLIES: dict[str, Callable[[SingletonCore, int], list[Action]]] = {
    "claimed": lambda c, attempt: c.claimed(MY_NODE, attempt),
    "refused_error": lambda c, attempt: c.claim_refused(None, attempt),
    "refused_mine": lambda c, attempt: c.claim_refused(MINE, attempt),
    "refused_mine_finished": lambda c, attempt: c.claim_refused(
        LockHolder(ME, MY_NODE, FINISHED), attempt
    ),
    "refused_theirs": lambda c, attempt: c.claim_refused(THEIRS, attempt),
    "refused_theirs_finished": lambda c, attempt: c.claim_refused(THEIRS_FINISHED, attempt),
}

#: What the shell does with a start asked for (at once, or when its delay's timer
#: fires), and what the instance does once created.
INSTANCE_EVENTS = ["created", "create_failed", "exited_normal", "exited_abnormal", "failed"]

EVENTS = st.sampled_from([*LOCK_EVENTS, *REPLIES, *INSTANCE_EVENTS])


@dataclass
class Shell:
    """What the shell knows: the claims in flight (their attempts, oldest first), the
    starts asked for and not carried out yet, and the instance as it really is."""

    claims: list[int] = field(default_factory=list)
    starts: int = 0  # StartInstance actions whose creation is still due
    alive: bool = False  # an instance was created and has not exited
    stopping: bool = False  # ... and was told to stop
    escalated: bool = False
    now: float = 0.0


def _deliver(c: SingletonCore, shell: Shell, event: str) -> None:
    """Deliver ``event`` if it can happen now, carry out the actions as the shell does,
    and check the invariants."""
    shell.now += 0.4
    before = (c.role, c.instance, c.finished, c.holder, c.attempt)
    role_before, instance_before, finished_before, _, attempt_before = before
    stale = False
    if event in LOCK_EVENTS:
        actions = LOCK_EVENTS[event](c)
    elif event in REPLIES:
        if not shell.claims:
            return
        attempt = shell.claims.pop(0)
        stale = attempt != c.attempt
        actions = REPLIES[event](c, attempt)
    elif event in ("created", "create_failed"):
        if not shell.starts:
            return
        shell.starts -= 1
        if c.instance != "pending" or shell.alive:
            actions = []  # called off meanwhile (or a stale timer): nothing to create
        elif event == "created":
            c.instance_started(f"instance-{shell.now}", shell.now)
            shell.alive, shell.stopping = True, False
            actions = []
        else:
            actions = c.instance_failed("could not be created", shell.now)
    else:
        if not shell.alive:
            return
        shell.alive = shell.stopping = False
        if event == "failed":  # its registration was refused; the shell killed it
            actions = c.instance_failed("refused", shell.now)
        else:
            actions = c.instance_exited(event == "exited_normal", shell.now)

    if stale:
        assert actions == [], f"a stale reply acted ({event}): {actions}"
        assert (c.role, c.instance, c.finished, c.holder, c.attempt) == before, event
    for action in actions:
        if isinstance(action, StartInstance):
            assert not shell.alive, f"a second instance started ({event})"
            assert c.role == "running", f"started while {c.role} ({event})"
            assert not finished_before, f"a finished singleton restarted ({event})"
            assert instance_before != "pending" or event == "create_failed", event
            assert c.instance == "pending"
            shell.starts += 1
        elif isinstance(action, StopInstance):
            assert shell.alive and not shell.stopping, f"a stop of nothing ({event})"
            shell.stopping = True
        elif isinstance(action, Claim):
            assert action.attempt == attempt_before + 1 == c.attempt, (event, action)
            assert action.state == (FINISHED if c.finished else RUNNING)
            shell.claims.append(action.attempt)
        elif isinstance(action, Escalate):
            shell.escalated = True
    if shell.escalated:
        assert c.role == "escalated"
        assert not shell.alive
        return  # the manager exits
    if c.role == "running" and role_before != "running":
        # Running only on the cluster's word: the reply to the current claim
        # (or our claim's event while it is out: its reply may be lost; never a
        # snapshot, which may be this node's table from before a heal's merge)
        by_reply = event in ("claimed", "refused_mine") and not stale
        by_table = event == "registered_mine" and role_before == "claiming"
        assert by_reply or by_table, f"running after {event}"
    if shell.alive and not shell.stopping:
        # An instance that nobody told to stop runs only where the lock is ours.
        assert c.role == "running", f"instance left up while {c.role} ({event})"
    if shell.alive:
        assert c.instance == ("stopping" if shell.stopping else "up"), (event, c.instance)
    else:
        # "stopping" would wait for an exit that cannot come (nothing was created).
        assert c.instance in ("none", "pending"), (event, c.instance)
    if c.instance == "pending":
        # A start asked for is carried out by the shell, and only while running.
        assert shell.starts > 0, f"a pending start nobody will carry out ({event})"
        assert c.role == "running", f"a start pending while {c.role} ({event})"
    if finished_before:
        assert c.finished


def _quiesce(c: SingletonCore, shell: Shell) -> None:
    """Everything in flight lands: each claim gets an error, each start due is carried
    out, each instance told to stop exits."""
    while not shell.escalated:
        if shell.claims:
            _deliver(c, shell, "refused_error")
        elif shell.starts:
            _deliver(c, shell, "created")
        elif shell.alive and shell.stopping:
            _deliver(c, shell, "exited_normal")
        else:
            return


@settings(max_examples=500, deadline=None)
@given(
    restart=st.sampled_from(["permanent", "transient", "temporary"]),
    events=st.lists(EVENTS, max_size=50),
)
def test_random_sequences_keep_the_invariants(restart: RestartType, events: list[str]) -> None:
    c = core(restart, max_restarts=3, max_seconds=5.0)
    shell = Shell()
    for event in events:
        _deliver(c, shell, event)
        if shell.escalated:
            return
    # Then the cluster settles: the node can write, nothing is in flight any more, and
    # the lock is free. The manager must not be stuck: it claims, and a won claim ends
    # with its instance up, or with nothing started if the singleton is finished.
    _deliver(c, shell, "writable")
    _quiesce(c, shell)
    if shell.escalated:
        return
    assert c.role != "claiming", "claiming with no claim in flight"
    if c.role != "running":
        _deliver(c, shell, "lock_is_free")  # the recheck's snapshot, or a later one
        assert c.role == "claiming", c.role
        _deliver(c, shell, "claimed")
        _quiesce(c, shell)
    assert c.role in ("running", "finished"), c.role
    if c.role == "running":
        assert c.instance == "up" and shell.alive and not shell.stopping
        assert not c.finished
    else:
        assert c.instance == "none" and not shell.alive
        assert c.finished


def test_a_snapshot_showing_our_lock_while_claiming_is_not_a_win() -> None:
    """After a heal, this node's table may still hold the lock it had before the cut:
    only the claim's reply, or the event of the claim being applied, says it is ours."""
    c = running()
    c.writable_changed(False)  # fenced: the instance is stopped
    c.instance_exited(False, 1.0)
    assert c.writable_changed(True) == [Recheck(c.settle)]
    assert c.lock_is(MINE) == [Claim(RUNNING)]  # believed: confirm through the cluster
    assert c.lock_is(MINE) == []  # the periodic reading, stale table: still waiting
    assert c.role == "claiming" and c.instance == "none"
    assert c.lock_registered(MINE, "registered") == [StartInstance()]  # our claim applied
    assert c.role == "running"
