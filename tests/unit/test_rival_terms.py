"""SequencedBackend follows no rival term: after a heal, a losing side's sequencer still
sequencing its own term must not replace the winning side's table before the merge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thespian_cluster.backends.scope import ScopeHost
from thespian_cluster.backends.sequenced import SequencedBackend, SequencedConfig
from thespian_cluster.cluster_messages import ClusterView, NodeRecord
from thespian_cluster.core.replica import Delta, NodeId, PutName, Term
from thespian_cluster.global_messages import Decisions
from thespian_cluster.settings import ClusterSettings

A, B, C = NodeId("a", "ia"), NodeId("b", "ib"), NodeId("c", "ic")


class _Mirror:
    """The node table's mirror, as far as these deltas need one: it takes anything."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _Host(ScopeHost):
    def __init__(self) -> None:
        self.node = C
        self.settings = ClusterSettings.build(node_name="c", cluster_enabled=True)
        self.address = "c's RegistryDist"
        self.sent: list[tuple[Any, Any]] = []

    @property
    def mirror(self) -> Any:
        return _Mirror()

    def send(self, to: Any, message: Any) -> None:
        self.sent.append((to, message))

    def probe_dead(self, addresses: Sequence[Any]) -> list[Any]:
        return []

    def caught_up(self) -> None:
        pass

    def wake(self) -> None:
        pass


def _record(node: NodeId) -> Any:
    return NodeRecord.model_construct(
        name=node.name, incarnation=node.incarnation, agents={"registry_dist": node.name}
    )


def _backend_led_by(leader: str) -> SequencedBackend:
    backend = SequencedBackend(_Host(), SequencedConfig())
    view = ClusterView.model_construct(
        records=[_record(n) for n in (A, B, C)], leader=leader, joined=True, suspect=[]
    )
    backend.view_changed(view)
    return backend


def _delta(sequencer: NodeId) -> Delta:
    return Delta(Term(7, sequencer), 1, (PutName("name", "lock", "an actor", B, {}, 1.0),))


def test_a_newer_term_of_a_node_that_does_not_lead_is_ignored() -> None:
    backend = _backend_led_by("a")
    assert backend.receive(_delta(B), "b's RegistryDist")
    assert backend.replica.seen < Term(7, B)
    assert backend.replica.whereis("lock", "name") is None


def test_a_newer_term_of_the_leader_is_followed() -> None:
    backend = _backend_led_by("a")
    assert backend.receive(_delta(A), "a's RegistryDist")
    assert backend.replica.seen == Term(7, A)  # a newer term: asked for, not ignored


def test_a_rival_that_leads_now_is_followed() -> None:
    backend = _backend_led_by("b")
    assert backend.receive(_delta(B), "b's RegistryDist")
    assert backend.replica.seen == Term(7, B)


def test_a_rival_delta_carried_by_decisions_is_ignored_too() -> None:
    backend = _backend_led_by("a")
    assert backend.receive(Decisions(decisions=[], delta=_delta(B)), "b's RegistryDist")
    assert backend.replica.seen < Term(7, B)
    assert backend.replica.whereis("lock", "name") is None
