"""The failure detector's rules, on generated heartbeat arrival and loss sequences."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from thespian_cluster.core.failure_detector import DownReason, FailureDetector, Health

TIMEOUT = 2.5
SUSPECT = 1.0

# A sequence of steps: (seconds that pass, whether a heartbeat arrives after them).
steps = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=4.0), st.booleans()), min_size=1, max_size=60
)


def detector() -> FailureDetector:
    fd = FailureDetector(SUSPECT, TIMEOUT)
    fd.add("b", 0.0)
    return fd


@given(steps)
def test_never_down_while_heartbeats_arrive_within_the_timeout(sequence: list) -> None:
    fd = detector()
    now = last = 0.0
    for passed, beat in sequence:
        now += passed
        fd.tick(now)
        state = fd.get("b")
        assert state is not None
        if now - last <= TIMEOUT:
            assert state.health is not Health.DOWN, (now, last)
        if beat:
            fd.heard("b", now)
            last = now
            assert fd.get("b").health is Health.UP  # type: ignore[union-attr]


@given(steps)
def test_always_down_once_the_timeout_passes_without_one(sequence: list) -> None:
    fd = detector()
    now = last = 0.0
    for passed, beat in sequence:
        now += passed
        fd.tick(now)
        state = fd.get("b")
        assert state is not None
        if now - last > TIMEOUT:
            assert state.health is Health.DOWN and state.reason is DownReason.TIMEOUT
        elif now - last > SUSPECT:
            assert state.health is Health.SUSPECT
        if beat:
            fd.heard("b", now)
            last = now


@given(steps)
def test_transitions_are_reported_once_each_and_in_order(sequence: list) -> None:
    fd = detector()
    now = 0.0
    health = Health.UP
    for passed, beat in sequence:
        now += passed
        for change in fd.tick(now):
            assert change.before is health and change.after is not health
            health = change.after
        if beat:
            change = fd.heard("b", now)
            if change is not None:
                assert change.before is health and change.after is Health.UP
                health = Health.UP
        assert fd.get("b").health is health  # type: ignore[union-attr]


def test_a_refusal_is_down_at_once_and_a_later_heartbeat_brings_it_back() -> None:
    fd = detector()
    change = fd.refused("b")
    assert change is not None and change.after is Health.DOWN
    assert change.reason is DownReason.REFUSED
    assert fd.refused("b") is None  # once
    back = fd.heard("b", 0.1, rtt=0.001)
    assert back is not None and back.before is Health.DOWN and back.after is Health.UP
    assert fd.get("b").rtt == 0.001  # type: ignore[union-attr]


def test_an_unknown_peer_is_ignored() -> None:
    fd = detector()
    assert fd.heard("nobody", 1.0) is None
    assert fd.refused("nobody") is None
    assert "nobody" not in fd
