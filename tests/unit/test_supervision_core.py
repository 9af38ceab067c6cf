"""SupervisorCore's decisions, one rule at a time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from thespian_cluster.core.supervision import ChildSpec, Plan, SupervisorCore


def core(strategy: str, *restarts: str, max_restarts: int = 3) -> SupervisorCore:
    result = SupervisorCore(strategy, max_restarts, 5.0)  # type: ignore[arg-type]
    for index, restart in enumerate(restarts or ("permanent",) * 3):
        result.add(ChildSpec(id="abcd"[index], actor_class="m.C", restart=restart))  # type: ignore[arg-type]
        result.started("abcd"[index], f"addr-{index}", 0.0)
    return result


def test_one_for_one_restarts_only_the_child() -> None:
    assert core("one_for_one").exited("b", False, 1.0) == Plan(start=("b",))


def test_one_for_all_stops_others_in_reverse_then_starts_all_in_order() -> None:
    assert core("one_for_all").exited("b", False, 1.0) == Plan(
        stop=("c", "a"), start=("a", "b", "c")
    )


def test_rest_for_one_takes_the_later_children() -> None:
    assert core("rest_for_one").exited("a", False, 1.0) == Plan(
        stop=("c", "b"), start=("a", "b", "c")
    )


@pytest.mark.parametrize(
    ("restart", "normal", "restarted"),
    [
        ("permanent", True, True),
        ("permanent", False, True),
        ("transient", True, False),
        ("transient", False, True),
        ("temporary", True, False),
        ("temporary", False, False),
    ],
)
def test_restart_types(restart: str, normal: bool, restarted: bool) -> None:
    c = core("one_for_one", restart, "permanent")
    plan = c.exited("a", normal, 1.0)
    assert bool(plan.start) == restarted
    assert ("a" in c.ids()) == (restart != "temporary")


def test_temporary_children_are_not_restarted_by_one_for_all() -> None:
    c = core("one_for_all", "permanent", "temporary", "permanent")
    plan = c.exited("a", False, 1.0)
    assert plan == Plan(stop=("c", "b"), start=("a", "c"))


def test_intensity_exceeded_escalates() -> None:
    c = core("one_for_one", max_restarts=2)
    for now in (1.0, 2.0):
        assert not c.exited("a", False, now).escalate
        c.started("a", "again", now)
    plan = c.exited("a", False, 3.0)
    assert plan.escalate and plan.stop == ("c", "b")


def test_restarts_outside_the_window_do_not_count() -> None:
    c = core("one_for_one", max_restarts=1)
    assert not c.exited("a", False, 0.0).escalate
    c.started("a", "again", 0.0)
    assert not c.exited("a", False, 10.0).escalate  # 10 s later, window is 5 s


def test_restart_counts_and_shutdown_order() -> None:
    c = core("rest_for_one")
    c.exited("b", False, 1.0)
    assert [s.restarts for s in c.children] == [0, 1, 1]
    assert c.shutdown_order() == ("c", "a")  # b is down


def test_child_spec_validation() -> None:
    with pytest.raises(ValidationError):
        ChildSpec(id="", actor_class="m.C")
    with pytest.raises(ValidationError):
        ChildSpec(id="x", actor_class="nodots")
    with pytest.raises(ValidationError):
        ChildSpec(id="x", actor_class="m.C", restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ChildSpec(id="x", actor_class="m.C", shutdown=0)
    with pytest.raises(ValueError, match="already exists"):
        core("one_for_one").add(ChildSpec(id="a", actor_class="m.C"))


# ---- a model of the rules, checked against the core on random exit sequences ------------


RESTARTS = st.sampled_from(["permanent", "transient", "temporary"])
STRATEGIES = st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"])


@given(
    strategy=STRATEGIES,
    restarts=st.lists(RESTARTS, min_size=1, max_size=4),
    events=st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.floats(0, 3)), max_size=12),
    max_restarts=st.integers(0, 4),
)
def test_core_follows_the_model(
    strategy: str, restarts: list[str], events: list[tuple[int, bool, float]], max_restarts: int
) -> None:
    c = SupervisorCore(strategy, max_restarts, 5.0)  # type: ignore[arg-type]
    for index, restart in enumerate(restarts):
        c.add(ChildSpec(id=f"c{index}", actor_class="m.C", restart=restart))  # type: ignore[arg-type]
        c.started(f"c{index}", object(), 0.0)
    now, history = 0.0, []  # times of restarts the model has seen
    for which, normal, step in events:
        running = [s.spec.id for s in c.children if s.running]
        if not running:
            break
        child = running[which % len(running)]
        order = c.ids()
        restart_type = c.child(child).spec.restart  # type: ignore[union-attr]
        now += step
        plan = c.exited(child, normal, now)
        restarts_it = restart_type == "permanent" or (restart_type == "transient" and not normal)
        if not restarts_it:
            assert plan == Plan()
            assert (child in c.ids()) == (restart_type != "temporary")
            continue
        history = [t for t in history if now - t <= 5.0] + [now]
        if len(history) > max_restarts:
            assert plan.escalate and not plan.start
            assert list(plan.stop) == [i for i in reversed(c.ids()) if c.child(i).running]  # type: ignore[union-attr]
            break
        position = order.index(child)
        affected = {
            "one_for_one": [child],
            "one_for_all": order,
            "rest_for_one": order[position:],
        }[strategy]
        # stops: the affected running others, in reverse start order
        assert list(plan.stop) == [
            i for i in reversed(affected) if i != child and c.child(i).running
        ]  # type: ignore[union-attr]
        # starts: the affected in start order, temporaries left out (except none: the
        # dead child itself is never temporary here)
        expected_start = [
            i
            for i in affected
            if i == child or c.child(i).spec.restart != "temporary"  # type: ignore[union-attr]
        ]
        assert list(plan.start) == expected_start
        # carry the plan out as the shell would
        for i in plan.stop:
            c.stopped(i)
            if c.child(i).spec.restart == "temporary":  # type: ignore[union-attr]
                c.delete(i)
        for i in plan.start:
            c.started(i, object(), now)


# ---- failed starts ------------------------------------------------------------------------


def test_a_failed_initial_start_fails_the_supervisor() -> None:
    c = core("one_for_one")
    c.stopped("c")  # c never came up
    assert c.start_failed("c", 0.0, initial=True) == Plan(stop=("b", "a"), escalate=True)


def test_a_refused_child_still_running_is_stopped_before_the_retry() -> None:
    c = core("one_for_all")
    plan = c.start_failed("b", 1.0, initial=False)  # b runs: its registration was refused
    assert plan == Plan(stop=("c", "b", "a"), start=("a", "b", "c"), delay=c.retry_delay)


def test_a_failed_restart_is_retried_after_the_delay_per_strategy() -> None:
    c = core("rest_for_one")
    c.stopped("b")  # died before it was up
    assert c.start_failed("b", 1.0, initial=False) == Plan(
        stop=("c",), start=("b", "c"), delay=c.retry_delay
    )


def test_a_temporary_child_is_never_retried() -> None:
    c = core("one_for_one", "temporary", "temporary")
    assert c.start_failed("a", 1.0, initial=False) == Plan(stop=("a",))  # runs: stop it
    c.stopped("b")  # died before it was up: nothing to stop, the spec goes at once
    assert c.start_failed("b", 1.0, initial=False) == Plan()
    assert "b" not in c.ids()


@given(
    strategy=STRATEGIES,
    max_restarts=st.integers(0, 6),
    steps=st.lists(st.floats(0, 0.5), min_size=8, max_size=8),
)
def test_a_child_that_never_starts_escalates_after_max_restarts_attempts(
    strategy: str, max_restarts: int, steps: list[float]
) -> None:
    """The exit counts once and every failed attempt once more (OTP's try_again_restart
    goes through add_restart), all within the window: the supervisor gives up after
    exactly ``max_restarts`` attempts."""
    c = SupervisorCore(strategy, max_restarts, 5.0)  # type: ignore[arg-type]
    for i in "ab":
        c.add(ChildSpec(id=i, actor_class="m.C"))
        c.started(i, object(), 0.0)
    now = 0.0
    plan = c.exited("a", False, now)
    attempts = 0
    while not plan.escalate:
        assert "a" in plan.start
        for i in plan.stop:
            c.stopped(i)
        for i in plan.start:
            c.started(i, object(), now)
        c.stopped("a")  # its start failed: it never came up
        now += steps[attempts % len(steps)]
        attempts += 1
        plan = c.start_failed("a", now, initial=False)
        if not plan.escalate:
            assert plan.delay == c.retry_delay
    assert attempts == max_restarts
    assert plan.stop == tuple(i for i in ("b",) if c.child(i).running)  # type: ignore[union-attr]


@given(
    fails=st.integers(0, 5),
    max_restarts=st.integers(1, 6),
)
def test_a_child_that_fails_n_times_comes_up_if_n_fits_the_intensity(
    fails: int, max_restarts: int
) -> None:
    c = SupervisorCore("one_for_one", max_restarts, 5.0)
    c.add(ChildSpec(id="a", actor_class="m.C"))
    c.started("a", object(), 0.0)
    plan = c.exited("a", False, 0.0)
    for attempt in range(fails):
        if plan.escalate:
            break
        c.started("a", object(), 0.0)
        c.stopped("a")
        plan = c.start_failed("a", 0.1 * (attempt + 1), initial=False)
    # 1 (the exit) + fails restarts: fine while they stay within max_restarts
    assert plan.escalate == (1 + fails > max_restarts)
    if not plan.escalate:
        assert plan.start == ("a",) and c.child("a").restarts == 1 + fails  # type: ignore[union-attr]
