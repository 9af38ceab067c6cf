"""Per-node health from heartbeat evidence: ``up``, ``suspect`` or ``down``.

The rules, for each peer node (one incarnation of it):

* **Evidence of life** is any heartbeat packet from the peer: an answer to our ping
  (which also gives a round-trip time) or a ping of its own. Evidence makes the peer
  ``up`` at once, whatever it was (a hung node that was ``down`` comes back ``up``
  after SIGCONT, with the same incarnation).
* **Silence**: a peer last heard from more than ``suspect_after`` seconds ago is
  ``suspect``; more than ``timeout`` seconds ago, ``down`` (reason ``timeout``).
  Silence is judged only at :meth:`FailureDetector.tick`, never in between, so a
  detector that is not ticked (its process stopped) declares nothing.
* **Refusal**: the peer's admin port refused a TCP connection. Only a dead process
  refuses (a stopped or busy one still accepts in the kernel), so the peer is
  ``down`` at once (reason ``refused``) — the fast path for a SIGKILLed node.
* A peer is never ``down`` while evidence keeps arriving less than ``timeout``
  apart and nothing refused: this is the property the unit tests check.

Times are monotonic seconds supplied by the caller, so the detector is pure and
replayable. :meth:`tick` and the evidence methods return the *transitions* they
caused; the owner turns ``up``/``down`` transitions into events.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Health(StrEnum):
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


class DownReason(StrEnum):
    TIMEOUT = "timeout"  # no heartbeat within the timeout: hung, cut off or dead
    REFUSED = "refused"  # its admin port refused a connection: the process is gone
    RESTARTED = "restarted"  # a new incarnation answers at the same address
    LEFT = "left"  # it said goodbye


@dataclass(slots=True)
class PeerHealth:
    """What the detector knows of one peer."""

    health: Health
    last_seen: float  # monotonic time of the last evidence
    rtt: float | None = None  # seconds, of the last answered ping
    reason: DownReason | None = None  # why it is down, when it is


@dataclass(frozen=True, slots=True)
class Transition:
    """A peer's health changed from ``before`` to ``after``."""

    peer: str
    before: Health
    after: Health
    reason: DownReason | None = None


class FailureDetector:
    """Health of every peer; see the module docstring for the rules."""

    def __init__(self, suspect_after: float, timeout: float) -> None:
        if not 0 < suspect_after <= timeout:
            raise ValueError("need 0 < suspect_after <= timeout")
        self.suspect_after = suspect_after
        self.timeout = timeout
        self._peers: dict[str, PeerHealth] = {}

    # ---- peers ---------------------------------------------------------------

    def add(self, peer: str, now: float) -> None:
        """Start watching ``peer`` as ``up``, as if just heard from (a grace period)."""
        self._peers[peer] = PeerHealth(Health.UP, now)

    def remove(self, peer: str) -> None:
        self._peers.pop(peer, None)

    def get(self, peer: str) -> PeerHealth | None:
        return self._peers.get(peer)

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def peers(self) -> dict[str, PeerHealth]:
        return dict(self._peers)

    # ---- evidence ------------------------------------------------------------

    def heard(self, peer: str, now: float, rtt: float | None = None) -> Transition | None:
        """A heartbeat from ``peer`` arrived at ``now`` (``rtt`` if it answered a ping)."""
        state = self._peers.get(peer)
        if state is None:
            return None
        state.last_seen = max(state.last_seen, now)
        if rtt is not None:
            state.rtt = rtt
        return self._move(peer, state, Health.UP, None)

    def refused(self, peer: str) -> Transition | None:
        """``peer``'s admin port refused a connection: its process is gone."""
        state = self._peers.get(peer)
        if state is None:
            return None
        return self._move(peer, state, Health.DOWN, DownReason.REFUSED)

    def mark_down(self, peer: str, reason: DownReason) -> Transition | None:
        """Declare ``peer`` down for a reason found elsewhere (restarted, left)."""
        state = self._peers.get(peer)
        if state is None:
            return None
        return self._move(peer, state, Health.DOWN, reason)

    def pardon(self, now: float) -> None:
        """This process itself was paused (SIGSTOP, a swap storm): the silence it sees is
        its own, so every peer not down gets a fresh grace period from ``now``."""
        for state in self._peers.values():
            if state.health is not Health.DOWN:
                state.last_seen = max(state.last_seen, now)

    def tick(self, now: float) -> list[Transition]:
        """Judge silence at ``now``: the transitions to ``suspect`` and ``down``."""
        changes = []
        for peer, state in self._peers.items():
            if state.health is Health.DOWN:
                continue
            silent = now - state.last_seen
            if silent > self.timeout:
                change = self._move(peer, state, Health.DOWN, DownReason.TIMEOUT)
            elif silent > self.suspect_after:
                change = self._move(peer, state, Health.SUSPECT, None)
            else:
                change = None
            if change is not None:
                changes.append(change)
        return changes

    @staticmethod
    def _move(
        peer: str, state: PeerHealth, after: Health, reason: DownReason | None
    ) -> Transition | None:
        if state.health is after:
            return None
        before = state.health
        state.health = after
        state.reason = reason if after is Health.DOWN else None
        return Transition(peer, before, after, state.reason)
