"""Where a global name or membership lives: on the node that hosts its actor.

Each node is the authority for the actors it hosts: it sees them die (supervisor
exits, dead letters, liveness probes, the exit hook), and the leader purges a dead
node's names and memberships. So a global claim (``Register``, ``JoinGroup``) must be
written by the node that hosts the actor, whichever node's Registry received it.
Recorded under the receiving node instead, the claim would be purged when *that*
node dies, although its actor lives on, and kept when the actor's own node dies.
This is what OTP's ``global`` and syn do: a name is registered with ``node(Pid)``,
and syn hands a registration to the scope process of the pid's node.

:class:`Homes` decides, for an actor address, which node hosts it:

* **by its IP**, with no message, when exactly one node of the cluster listens on
  that IP and every node's IP is known (the view is whole: this node has joined, and
  no node listens on a host name or a wildcard): the common deployment (one node per
  host) never pays for homing. An actor system outside the cluster on a node's own
  IP would be taken for that node's; that node then watches it like its own (its
  port probes free the name when it dies), so nothing outlives the actor;
* otherwise **by asking the actor**: the caller sends it ``Thespian_StatusReq``, which
  every Thespian actor answers without user code, and hands the answer's admin
  address to :meth:`Homes.probed`, which maps it to the node whose admin that is;
* **homeless** when neither can tell: the actor does not answer (dead), answers with
  an admin that is no node of the cluster, or its address is not a TCP one. The
  claim is then refused, never recorded under a guess.

An answer is remembered for ``remember`` seconds (positive or negative), so a batch
of claims for one actor, or the retry of a refused one, costs one probe, not one
each. It is not kept longer: a dead actor's port may be reused by an actor of
another node. :class:`Waiting` keeps the requests that wait for probes, each until
every address it needs is placed or its deadline passes.

Pure: addresses are duck-typed (``addressDetails.sockname``) and times are supplied
by the caller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from thespian_cluster.core.addresses import AddressKey, address_key

T = TypeVar("T")
_WILDCARDS = {"0.0.0.0", "::", ""}  # listen-everywhere hosts: no IP to compare with
_MAX_REMEMBERED = 10_000  # a flood of distinct addresses must not grow the cache forever


@dataclass(frozen=True, slots=True)
class Host:
    """A live node as homing needs it: its admin's ``(ip, port)`` and its RegistryDist."""

    name: str
    ip: str
    port: int
    registry_dist: Any = None


@dataclass(frozen=True, slots=True)
class Home:
    """The actor is hosted by ``host`` (``here``: by this node)."""

    host: Host
    here: bool


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask the actor at ``address`` for its admin (``Thespian_StatusReq``)."""

    address: Any


@dataclass(frozen=True, slots=True)
class Homeless:
    """No node of the cluster can be named as the actor's host; ``detail`` says why."""

    detail: str


Placement = Home | Probe | Homeless


def sockname(address: Any) -> tuple[str, int] | None:
    """The ``(ip, port)`` an actor address listens on, or None if it is not TCP."""
    details = getattr(getattr(address, "addressDetails", None), "sockname", None)
    if not isinstance(details, tuple) or len(details) < 2:
        return None
    ip, port = details[0], details[1]
    return (ip, port) if isinstance(ip, str) and isinstance(port, int) else None


def _literal_ip(host: str) -> str | None:
    """``host`` as an IP literal, or None when it names no one IP (a host name, a wildcard)."""
    if host in _WILDCARDS:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


class Homes:
    """This node's answer to "which node hosts this actor?"; see the module docstring.

    Args:
        me: this node's name.
        ip: the host this node's admin listens on (as configured).
        port: this node's admin port.
        remember: seconds a probe's answer is reused.
    """

    def __init__(self, me: str, ip: str, port: int, remember: float) -> None:
        self.me = Host(me, ip, port)
        self.remember = remember
        self._hosts: dict[str, Host] = {me: self.me}
        self._by_ip: dict[str, list[Host]] = {}
        self._blind = True  # some node's IP is unknown: no IP can rule it out
        self._complete = False  # until a view names every live node, any may share an IP
        self._known: dict[AddressKey, tuple[float, Home | Homeless]] = {}
        #: actors whose probe named an admin the view does not show (yet): (address,
        #: admin, admin's (ip, port)); placed by the next view that shows it.
        self._unseen: dict[AddressKey, tuple[Any, Any, tuple[str, int]]] = {}
        self._index()

    # ---- the view ------------------------------------------------------------------------

    def set_view(self, hosts: Iterable[Host], complete: bool = True, now: float = 0.0) -> list[Any]:
        """The live nodes now (this one among them or not: it is always kept).

        Args:
            hosts: the live nodes.
            complete: False while this node has not joined its cluster: other nodes
                may then listen on this node's IP unseen, so no IP is taken as proof.
            now: the time (for remembering the homes this view settles).

        Returns:
            The addresses waiting for a view (see :meth:`probed`) that this one places.
        """
        self._complete = complete
        fresh = {h.name: h for h in hosts}
        mine = fresh.get(self.me.name)
        self.me = Host(self.me.name, self.me.ip, self.me.port, mine.registry_dist if mine else None)
        fresh[self.me.name] = self.me
        self._hosts = fresh
        # A remembered home on a node that left, or whose admin moved, is stale.
        self._known = {
            key: (at, placed)
            for key, (at, placed) in self._known.items()
            if not isinstance(placed, Home) or self._hosts.get(placed.host.name) == placed.host
        }
        self._index()
        settled = []
        for key, (address, _, where) in list(self._unseen.items()):
            host = self._host_at(*where)
            if host is not None:
                del self._unseen[key]
                self._remember(address, self._home(host), now)
                settled.append(address)
        return settled

    def host(self, name: str) -> Host | None:
        """The live node called ``name``, or None."""
        return self._hosts.get(name)

    def _index(self) -> None:
        by_ip: dict[str, list[Host]] = {}
        blind = False
        for host in self._hosts.values():
            ip = _literal_ip(host.ip)
            if ip is None:
                blind = True
            else:
                by_ip.setdefault(ip, []).append(host)
        self._by_ip, self._blind = by_ip, blind

    # ---- placing ---------------------------------------------------------------------------

    def place(self, address: Any, now: float) -> Placement:
        """Where the actor at ``address`` lives, or that it must be probed first."""
        where = sockname(address)
        if where is None:
            return Homeless(f"{address!r} is not a TCP actor address: no node can host it")
        known = self._known.get(address_key(address))
        if known is not None and now - known[0] <= self.remember:
            return known[1]
        if self._complete and not self._blind:
            ip = _literal_ip(where[0])
            on_ip = self._by_ip.get(ip, []) if ip is not None else []
            if len(on_ip) == 1:
                return self._home(on_ip[0])
        return Probe(address)

    def probed(self, address: Any, admin: Any, now: float) -> Home | Homeless | None:
        """The actor at ``address`` answered a probe naming ``admin`` as its admin.

        Returns:
            Its home; Homeless when ``admin`` is no TCP address; None when ``admin`` is
            no node of the view *yet*: a node that has just joined reaches this node's
            view a moment after its actors can be named, so the request waits for the
            next view (:meth:`set_view` places it) or its deadline (:meth:`silent`).
        """
        where = sockname(admin)
        placed: Home | Homeless
        if where is None:
            placed = Homeless(f"actor {address!r} named {admin!r} as its admin: no node's")
        else:
            host = self._host_at(*where)
            if host is None:
                self._unseen[address_key(address)] = (address, admin, where)
                return None
            placed = self._home(host)
        self._remember(address, placed, now)
        return placed

    def silent(self, address: Any, now: float, why: str) -> Homeless:
        """No home for the actor at ``address`` by its deadline: it gave no answer to its
        probe (``why``: dead, timed out), or named an admin no view has shown."""
        unseen = self._unseen.pop(address_key(address), None)
        if unseen is not None:
            ip, port = unseen[2]
            why = f"it belongs to the actor system at {ip}:{port}, no node of this cluster"
        placed = Homeless(f"actor {address!r} has no node of this cluster as its home ({why})")
        self._remember(address, placed, now)
        return placed

    def forget(self, address: Any) -> None:
        """``address`` is dead: whatever is remembered of it no longer holds."""
        self._known.pop(address_key(address), None)
        self._unseen.pop(address_key(address), None)

    def _host_at(self, ip: str, port: int) -> Host | None:
        literal = _literal_ip(ip)
        for host in self._hosts.values():
            if host.port == port and (host.ip == ip or _literal_ip(host.ip) == literal):
                return host
        return None

    def _home(self, host: Host) -> Home:
        return Home(host, here=host.name == self.me.name)

    def _remember(self, address: Any, placed: Home | Homeless, now: float) -> None:
        if len(self._known) >= _MAX_REMEMBERED:
            fresh = {k: v for k, v in self._known.items() if now - v[0] <= self.remember}
            self._known = fresh if len(fresh) < _MAX_REMEMBERED else {}
        self._known[address_key(address)] = (now, placed)


@dataclass(frozen=True, slots=True)
class Route:
    """How to carry out a request of items (one, or a batch's), given their placements.

    Attributes:
        probes: addresses to probe first; while any is left, nothing else holds.
        parts: node name -> (that node, the indices of the items it must write).
        refused: ``(index, why)`` of the items no node can write.
    """

    probes: list[Any]
    parts: dict[str, tuple[Host, list[int]]]
    refused: list[tuple[int, str]]

    def only_here(self, me: str) -> bool:
        """Is everything for this node, with nothing to probe or refuse (the common path)?"""
        return not self.probes and not self.refused and set(self.parts) <= {me}


def route(placements: Iterable[Placement]) -> Route:
    """Group the items' placements by node (probes first: see :class:`Route`)."""
    probes: dict[AddressKey, Any] = {}
    parts: dict[str, tuple[Host, list[int]]] = {}
    refused: list[tuple[int, str]] = []
    for index, placed in enumerate(placements):
        if isinstance(placed, Probe):
            probes.setdefault(address_key(placed.address), placed.address)
        elif isinstance(placed, Homeless):
            refused.append((index, placed.detail))
        else:
            parts.setdefault(placed.host.name, (placed.host, []))[1].append(index)
    return Route(list(probes.values()), parts, refused)


@dataclass
class _Waiter(Generic[T]):
    item: T
    deadline: float
    needs: set[Hashable] = field(default_factory=set)


class Waiting(Generic[T]):
    """Requests waiting for the probes of the addresses they need.

    Args:
        limit: most requests kept at once; :meth:`add` refuses more.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._waiters: list[_Waiter[T]] = []
        self._probing: dict[AddressKey, Any] = {}  # key -> address, one probe in flight each

    def __len__(self) -> int:
        return len(self._waiters)

    def add(self, item: T, addresses: Iterable[Any], deadline: float) -> list[Any] | None:
        """Park ``item`` until every one of ``addresses`` is answered.

        Returns:
            the addresses to probe now (those no probe is in flight for yet), or None if
            the limit is reached and ``item`` was not parked.
        """
        if len(self._waiters) >= self.limit:
            return None
        waiter = _Waiter(item, deadline)
        new = []
        for address in addresses:
            key = address_key(address)
            waiter.needs.add(key)
            if key not in self._probing:
                self._probing[key] = address
                new.append(address)
        self._waiters.append(waiter)
        return new

    def probing(self, address: Any) -> bool:
        """Is a probe of ``address`` in flight?"""
        return address_key(address) in self._probing

    def answered(self, address: Any) -> list[T]:
        """The probe of ``address`` is over (answered or given up): the requests that
        need nothing else any more, in arrival order."""
        key = address_key(address)
        if self._probing.pop(key, None) is None:
            return []
        ready = []
        for waiter in self._waiters:
            waiter.needs.discard(key)
            if not waiter.needs:
                ready.append(waiter)
        self._waiters = [w for w in self._waiters if w.needs]
        return [w.item for w in ready]

    def drain(self) -> list[T]:
        """Every waiting request, removed (the caller is stopping)."""
        items = [w.item for w in self._waiters]
        self._waiters, self._probing = [], {}
        return items

    def next_deadline(self) -> float | None:
        """The earliest deadline of a waiting request, or None if none waits."""
        return min((w.deadline for w in self._waiters), default=None)

    def overdue(self, now: float) -> list[Any]:
        """The addresses whose probes some request waited on past its deadline."""
        late: dict[Hashable, Any] = {}
        for waiter in self._waiters:
            if now >= waiter.deadline:
                for key in waiter.needs:
                    late[key] = self._probing[key]
        return list(late.values())
