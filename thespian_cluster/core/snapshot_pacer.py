"""When a lagging replica asks the sequencer for a snapshot, and when it asks again.

A replica that has a hole in its deltas, or has seen a newer term, can only be repaired
by a :class:`~thespian_cluster.core.replica.Snapshot`: the whole table. At 100,000 names
one takes seconds to build, send and install, and every request is served with a new
one. A replica that asked again on every timer round while the first was on its way had
the sequencer build a snapshot per round, each of them sent, unpickled and ignored: the
join catch-up of a 100,000-name table did not finish in two minutes on a slow machine.

The rules, in order:

* A hole may be a delta still on its way: ask only once the replica has lagged for
  ``gap_wait``. A newer term or a full buffer is no such doubt: ask at once (``urgent``).
* At most one request is outstanding. Ask again only when it has had ``wait`` to be
  answered; each unanswered request doubles ``wait`` (up to ``max_wait``): a request or
  its answer can be lost with a peer that restarts, and a lost one must not stall the
  replica for long, but a slow one must not be doubled.
* A snapshot streams in chunks (``core/replica.py`` :class:`SnapshotChunk`): each chunk
  taken is :meth:`progress`, and the request is repeated only once the chunks have
  stopped coming for ``wait`` (a lost chunk stalls the transfer; asking again starts a
  new one, which the replica prefers).
* An answer (a snapshot that changed the replica) measures the round trip: the next request waits
  ``max(first_wait, 3 x round trip)`` before it is repeated, so the pace follows the
  table's size rather than a constant tuned for small ones.

Pure: the caller passes the clock. ``RegistryDist``'s backend (``backends/sequenced.py``)
calls :meth:`lagging` after every delta and snapshot, :meth:`due` on its timer and on
urgent need, and :meth:`asked` when it sends a request.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SnapshotPacer:
    gap_wait: float = 0.05  # seconds a hole may stay open before it is worth a snapshot
    first_wait: float = 0.5  # the least time a request has before it is repeated
    max_wait: float = 10.0  # the most an unanswered request's doubling reaches (or the base)

    def __post_init__(self) -> None:
        self._lagging_since: float | None = None
        self._asked_at: float | None = None  # the outstanding request's time
        self._heard_at: float | None = None  # the last chunk of its answer, if any
        self._base = self.first_wait  # from the last round trip measured
        self._wait = self._base  # the base, doubled per unanswered request

    @property
    def outstanding(self) -> bool:
        return self._asked_at is not None

    def lagging(self, now: float, lagging: bool) -> None:
        """The replica's state after a delta or a snapshot: is it (still) behind?"""
        if not lagging:
            self._lagging_since = None
            self._asked_at = None
            self._heard_at = None
            self._wait = self._base
            return
        if self._lagging_since is None:
            self._lagging_since = now

    def installed(self, now: float) -> None:
        """A snapshot came: the outstanding request is answered (whichever it was)."""
        if self._asked_at is not None:
            round_trip = now - self._asked_at
            # Not capped: a table that takes 20 s to come must not be asked for every 10 s.
            self._base = max(self.first_wait, 3 * round_trip)
            self._asked_at = None
            self._heard_at = None
        self._wait = self._base
        self._lagging_since = None

    def due(self, now: float, urgent: bool = False) -> bool:
        """Should a request go now? ``urgent``: the replica knows it needs one."""
        if self._asked_at is not None:
            return now - max(self._asked_at, self._heard_at or self._asked_at) >= self._wait
        if urgent:
            return True
        return self._lagging_since is not None and now - self._lagging_since > self.gap_wait

    def progress(self, now: float) -> None:
        """A chunk of a streamed snapshot came: the outstanding request is being
        answered, so it is repeated only once the chunks stop for ``wait``."""
        if self._asked_at is not None:
            self._heard_at = now

    def asked(self, now: float) -> None:
        if self._asked_at is not None:  # the previous one went unanswered
            self._wait = min(max(self.max_wait, self._base), 2 * self._wait)
        self._asked_at = now
        self._heard_at = None
