"""Which node hosts an actor (core.homes), and the restart rule of op ids it relies on."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_replica import claim, started
from tests.unit.test_table import FakeDetails
from thespian_cluster.core.homes import Home, Homeless, Homes, Host, Probe, Waiting, route
from thespian_cluster.core.replica import OK, NodeId, Origin


class Addr:
    """Duck-types an ActorAddress at ``(ip, port)``."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, ip: str, port: int) -> None:
        self.addressDetails = FakeDetails((ip, port))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Addr) and other.addressDetails == self.addressDetails

    def __repr__(self) -> str:
        return f"Addr{self.addressDetails.sockname}"


A = Host("a", "10.0.0.1", 1900, "dist-a")
B = Host("b", "10.0.0.2", 1900, "dist-b")
B_SHARED = Host("b", "10.0.0.1", 1901, "dist-b")  # b on a's host


def homes_of_a(*others: Host, remember: float = 1.0) -> Homes:
    homes = Homes("a", A.ip, A.port, remember)
    homes.set_view([A, *others])
    return homes


def test_one_node_per_ip_places_by_ip_without_a_probe() -> None:
    homes = homes_of_a(B)
    assert homes.place(Addr("10.0.0.1", 40000), 0.0) == Home(A, here=True)
    assert homes.place(Addr("10.0.0.2", 40000), 0.0) == Home(B, here=False)
    # an IP no node listens on: the actor system there may be anyone's
    assert homes.place(Addr("10.0.0.9", 40000), 0.0) == Probe(Addr("10.0.0.9", 40000))


def test_nodes_sharing_an_ip_need_a_probe_whose_admin_names_the_node() -> None:
    homes = homes_of_a(B_SHARED)
    actor = Addr("10.0.0.1", 40000)
    assert homes.place(actor, 0.0) == Probe(actor)
    assert homes.probed(actor, Addr("10.0.0.1", 1901), 0.0) == Home(B_SHARED, here=False)
    assert homes.place(actor, 0.5) == Home(B_SHARED, here=False)  # remembered: no new probe
    assert homes.place(actor, 1.5) == Probe(actor)  # not for longer than ``remember``


def test_a_node_whose_ip_is_unknown_rules_out_placing_by_ip() -> None:
    homes = homes_of_a(Host("b", "0.0.0.0", 1900), Host("c", "node-c.example", 1900))
    assert isinstance(homes.place(Addr("10.0.0.1", 40000), 0.0), Probe)


def test_an_admin_of_no_node_or_silence_makes_the_actor_homeless() -> None:
    homes = homes_of_a(B_SHARED)
    stranger, mute = Addr("10.0.0.1", 40000), Addr("10.0.0.1", 40001)
    assert homes.probed(stranger, Addr("10.0.0.1", 5555), 0.0) is None  # waits for a view
    assert homes.set_view([A, B_SHARED]) == []  # still no node at 5555
    homeless = homes.silent(stranger, 0.1, "no answer to a status probe in time")
    assert "10.0.0.1:5555, no node of this cluster" in homeless.detail
    assert isinstance(homes.place(stranger, 0.1), Homeless)
    assert isinstance(homes.silent(mute, 0.0, "dead"), Homeless)
    homes.forget(mute)  # a death seen: nothing kept about it
    assert isinstance(homes.place(mute, 0.1), Probe)
    assert isinstance(homes.place(object(), 0.0), Homeless)  # not a TCP address


def test_a_node_leaving_the_view_takes_its_remembered_homes() -> None:
    c_shared = Host("c", "10.0.0.1", 1902)
    homes = homes_of_a(B_SHARED, c_shared)
    actor = Addr("10.0.0.1", 40000)
    homes.probed(actor, Addr("10.0.0.1", 1901), 0.0)
    homes.set_view([A, c_shared])
    assert homes.place(actor, 0.1) == Probe(actor)
    assert homes.probed(actor, Addr("10.0.0.1", 1901), 0.1) is None  # b is not in the view


def test_an_admin_the_view_shows_later_is_placed_by_that_view() -> None:
    """A node that has just joined: its actor answers a probe before this node's view
    shows the node; the next view settles the home."""
    homes = homes_of_a()
    actor = Addr("10.0.0.1", 40000)
    assert homes.probed(actor, Addr("10.0.0.1", 1901), 0.0) is None
    assert homes.set_view([A, B_SHARED], now=0.2) == [actor]
    assert homes.place(actor, 0.3) == Home(B_SHARED, here=False)
    assert homes.set_view([A, B_SHARED]) == []  # settled once


def test_this_node_is_known_before_any_view_but_its_ip_proves_nothing_yet() -> None:
    homes = Homes("a", "10.0.0.1", 1900, 1.0)
    actor = Addr("10.0.0.1", 40000)
    assert homes.place(actor, 0.0) == Probe(actor)  # another node may share the IP, unseen
    homes.set_view([A], complete=False)  # not joined yet: still unseen
    assert homes.place(actor, 0.0) == Probe(actor)
    assert homes.probed(actor, Addr("10.0.0.1", 1900), 0.0).here  # type: ignore[union-attr]
    homes.set_view([A, B])
    assert homes.place(Addr("10.0.0.2", 1), 0.0) == Home(B, here=False)


def test_route_groups_items_by_node_and_probes_come_first() -> None:
    x = Addr("10.0.0.1", 40000)
    plan = route([Home(A, True), Home(B, False), Homeless("why"), Home(B, False)])
    assert plan.probes == [] and plan.refused == [(2, "why")]
    assert plan.parts == {"a": (A, [0]), "b": (B, [1, 3])}
    assert not plan.only_here("a") and route([Home(A, True)]).only_here("a")
    assert route([Probe(x), Home(A, True), Probe(x)]).probes == [x]


def test_waiting_requests_resume_once_every_address_they_need_is_answered() -> None:
    waiting: Waiting[str] = Waiting(limit=2)
    x, y = Addr("10.0.0.1", 1), Addr("10.0.0.1", 2)
    assert waiting.add("both", [x, y], deadline=5.0) == [x, y]
    assert waiting.add("x only", [x], deadline=9.0) == []  # x is probed already
    assert waiting.add("over the limit", [y], deadline=9.0) is None
    assert waiting.answered(x) == ["x only"]
    assert waiting.next_deadline() == 5.0 and waiting.overdue(4.0) == []
    assert waiting.overdue(5.0) == [y]
    assert waiting.answered(y) == ["both"] and len(waiting) == 0
    assert waiting.answered(y) == []  # a late answer to a probe given up
    waiting.add("left over", [x], deadline=9.0)
    assert waiting.drain() == ["left over"] and not waiting.probing(x)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=30))
def test_every_parked_request_resumes_exactly_once(needs: list[tuple[int, int]]) -> None:
    waiting: Waiting[int] = Waiting()
    addresses = [Addr("10.0.0.1", p) for p in range(4)]
    for index, (first, second) in enumerate(needs):
        waiting.add(index, [addresses[first], addresses[second]], deadline=1.0)
    resumed: list[Any] = []
    for address in addresses:
        resumed += waiting.answered(address)
    assert sorted(resumed) == list(range(len(needs))) and len(waiting) == 0


def test_a_restarted_origin_is_not_answered_with_its_previous_lifes_decisions() -> None:
    sequencer, _ = started(NodeId("a", "1"))
    me = NodeId("a", "1")
    first = Origin(me, first_op=1).write(claim("x", 1), sequencer.term)
    assert sequencer.decide(first).outcome == OK
    # Same node incarnation, restarted actor: ids from 1 again get the old decision.
    stale = sequencer.decide(Origin(me, first_op=1).write(claim("y", 2), sequencer.term))
    assert stale.seq == 1  # nothing applied: "y" acknowledged and lost
    fresh = sequencer.decide(Origin(me, first_op=2**40).write(claim("y", 2), sequencer.term))
    assert fresh.outcome == OK and fresh.seq == 2
    assert sequencer.table.whereis("y", "server") is not None
