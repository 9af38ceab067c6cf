"""SupervisorCore's decisions, one rule at a time."""

from __future__ import annotations

import pytest
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
