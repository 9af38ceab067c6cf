"""SnapshotPacer: when a lagging replica asks for a snapshot, and when it asks again."""

from __future__ import annotations

from itertools import pairwise

from thespian_cluster.core.snapshot_pacer import SnapshotPacer


def test_a_hole_waits_gap_wait_before_the_first_request() -> None:
    pacer = SnapshotPacer(gap_wait=0.05)
    assert not pacer.due(0.0)
    pacer.lagging(10.0, True)
    assert not pacer.due(10.04)
    assert pacer.due(10.06)


def test_an_urgent_need_asks_at_once_but_not_beside_an_outstanding_request() -> None:
    pacer = SnapshotPacer(first_wait=0.5)
    pacer.lagging(0.0, True)
    assert pacer.due(0.0, urgent=True)
    pacer.asked(0.0)
    # Every delta of a newer term says "urgent": none of them may add a request.
    assert not pacer.due(0.1, urgent=True)
    assert not pacer.due(0.49)
    assert pacer.due(0.5)


def test_unanswered_requests_back_off_to_max_wait() -> None:
    pacer = SnapshotPacer(first_wait=0.5, max_wait=3.0)
    pacer.lagging(0.0, True)
    now, asked_at = 0.0, []
    for _ in range(6):
        while not pacer.due(now):
            now += 0.125  # exact in binary: no drift in the sums
        asked_at.append(now)
        pacer.asked(now)
    waits = [b - a for a, b in pairwise(asked_at)]
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_next_wait_follows_the_measured_round_trip() -> None:
    """A 100,000-name snapshot that took 4 s to come is not asked for again after 0.5 s."""
    pacer = SnapshotPacer(first_wait=0.5, max_wait=20.0)
    pacer.lagging(0.0, True)
    pacer.asked(0.0)
    pacer.installed(4.0)
    pacer.lagging(4.0, True)  # the sequencer moved on meanwhile: still behind
    assert pacer.due(4.0, urgent=True)
    pacer.asked(4.0)
    assert not pacer.due(4.0 + 11.9)
    assert pacer.due(4.0 + 12.0)


def test_catching_up_by_deltas_ends_the_request_and_its_backoff() -> None:
    pacer = SnapshotPacer(gap_wait=0.05, first_wait=0.5)
    pacer.lagging(0.0, True)
    pacer.asked(0.1)
    pacer.asked(0.6)  # unanswered: the wait doubled
    pacer.lagging(0.7, False)  # the late delta filled the hole
    assert not pacer.outstanding and not pacer.due(5.0)
    pacer.lagging(6.0, True)
    pacer.asked(6.1)
    assert pacer.due(6.6)  # the base wait again, not the doubled one


def test_a_slow_table_is_not_asked_for_again_before_its_round_trip() -> None:
    """The measured base is not capped by max_wait: 20 s tables are not asked every 10 s."""
    pacer = SnapshotPacer(first_wait=2.0, max_wait=10.0)
    pacer.lagging(0.0, True)
    pacer.asked(0.0)
    pacer.installed(20.0)
    pacer.lagging(20.0, True)
    pacer.asked(20.0)
    assert not pacer.due(20.0 + 59.0)
    assert pacer.due(20.0 + 60.0)
