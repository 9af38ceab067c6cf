"""A network lab for real partitions: one Linux network namespace per node on a bridge.

::

    with NetnsLab() as lab, LocalCluster(tmp_dir) as cluster:
        a = cluster.start("a", **lab.place("a"))
        b = cluster.start("b", leader=a, **lab.place("b"))
        lab.cut("b")        # b's cable is pulled: nothing reaches it, nothing leaves it
        lab.heal()          # every cable plugged in again
        lab.split(["a", "b"], ["c", "d"])   # two sides, each still whole inside

The layout, for a lab with id ``3fa9c`` on subnet ``10.213.S.0/24`` (S picked at random
among the subnets no interface of this machine uses yet)::

    root namespace                               namespace tcn3fa9c-0
    ┌──────────────────────────────┐            ┌───────────────────────┐
    │ bridge tcn3fa9cbr 10.213.S.1 ├─tcn3fa9ch0═╪═tcn3fa9cn0 10.213.S.10 │  node "a"
    │   (the test process's side)  ├─tcn3fa9ch1═╪═ ... 10.213.S.11       │  node "b" ...
    └──────────────────────────────┘            └───────────────────────┘

* Each node gets a namespace with loopback up and one end of a veth pair holding its
  address; the other end is a port of the lab's bridge in the root namespace.
* The bridge has an address of its own, so the test process reaches every node over
  it; a client there advertises the bridge address as its own
  (``connect(..., advertise_as=lab.bridge_address)``) so that replies come back.
* :meth:`NetnsLab.cut` sets the node's bridge-side veth down: its frames are dropped
  both ways, like a pulled cable (peers see *silence*, so a cut node goes ``down`` with
  reason ``timeout``, never ``refused``). It cuts the node from the test process too:
  ask the other side, or ask inside the namespace (:func:`ask_status_in_namespace`).
* :meth:`NetnsLab.split` moves the nodes of every side but the first onto an island
  bridge of that side's own (a cut would isolate each node, even from its own side);
  :meth:`NetnsLab.heal` puts every node back on the lab's bridge, link up.
* :func:`measure_partition` splits a formed cluster, waits for both sides to see the
  other ``down``, heals, waits for every node ``up``, and returns the times each node
  recorded (the partition benchmarks' probe, see its docstring).
* Traffic goes nowhere but loopback and the lab's own subnet: nothing routes out of a
  namespace, and the subnet exists only on the lab's bridge and veths.

Cleanup is the point of the design. Every name starts with :data:`PREFIX` and the lab's
random id (interface names are at most 15 characters: ``tcn`` + 5 + ``br``/``h``/``n``
+ index). Before creating anything the lab writes a claim file naming its owner
process (``/run/thespian-cluster-netns/<id>``); :meth:`NetnsLab.close` kills whatever
still runs in its namespaces, deletes veths, namespaces and bridge, and is idempotent;
:func:`sweep` deletes every lab whose owner process is gone (a suite killed half-way),
and never a live one (a parallel suite's). Needs root and iproute2 (``ip``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from thespian.actors import Actor, ActorAddress

from thespian_cluster.cluster_messages import (
    GetNodeStatus,
    NodeDown,
    NodeStatusReply,
    NodeUp,
    Subscribed,
    SubscribeNodeEvents,
)
from thespian_cluster.local_cluster import ClusterNode, wait_for
from thespian_cluster.node import (
    cluster_agent,
    connect,
    disconnect,
    registry_address,
    root_address,
)

PREFIX = "tcn"
#: The lab subnets: 10.213.S.0/24, one S per lab.
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
CLAIMS = Path("/run/thespian-cluster-netns")
_FIRST_HOST = 10  # node i gets .10 + i; the bridge .1


class NetnsError(RuntimeError):
    """The lab could not be built (not root, no ``ip``, no free subnet)."""


def available() -> str | None:
    """Why a lab cannot be built here, or None when it can (for ``pytest.skip``)."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


@dataclass(frozen=True)
class Slot:
    """One node's place in the lab."""

    name: str
    index: int
    namespace: str
    host_link: str  # the veth end on the bridge, in the root namespace
    address: str  # the node's IPv4 address inside its namespace


class NetnsLab:
    """A bridge and one namespace per node; see the module docstring."""

    def __init__(self) -> None:
        reason = available()
        if reason:
            raise NetnsError(reason)
        self.id = _claim()
        self.bridge = f"{PREFIX}{self.id}br"
        self.slots: dict[str, Slot] = {}
        self._closed = False
        try:
            self.network = _free_subnet()
            hosts = list(self.network.hosts())
            self.bridge_address = str(hosts[0])
            self._hosts = hosts[_FIRST_HOST - 1 :]
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- nodes ---------------------------------------------------------------

    def add(self, name: str) -> Slot:
        """The namespace of node ``name``, created (with its veth and address) once."""
        if name in self.slots:
            return self.slots[name]
        if self._closed:
            raise NetnsError(f"lab {self.id} is closed")
        index = len(self.slots)
        slot = Slot(
            name=name,
            index=index,
            namespace=f"{PREFIX}{self.id}-{index}",
            host_link=f"{PREFIX}{self.id}h{index}",
            address=str(self._hosts[index]),
        )
        self.slots[name] = slot  # before creating anything: close() deletes what exists
        inner = f"{PREFIX}{self.id}n{index}"
        _ip("netns", "add", slot.namespace)
        _ip("link", "add", slot.host_link, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", slot.namespace)
        _ip("link", "set", slot.host_link, "master", self.bridge, "up")
        _ip("-n", slot.namespace, "link", "set", "lo", "up")
        _ip("-n", slot.namespace, "addr", "add", f"{slot.address}/24", "dev", inner)
        _ip("-n", slot.namespace, "link", "set", inner, "up")
        return slot

    def place(self, name: str) -> dict[str, Any]:
        """Keyword arguments for :meth:`LocalCluster.start` that run node ``name`` in its
        namespace: its ``host``, the ``launcher`` prefix, and the ``client_address``
        the test process's client advertises (the bridge's)."""
        slot = self.add(name)
        return {
            "host": slot.address,
            "launcher": self.launcher(name),
            "client_address": self.bridge_address,
        }

    def launcher(self, name: str) -> list[str]:
        """The command prefix that runs a program inside node ``name``'s namespace."""
        return ["ip", "netns", "exec", self.slots[name].namespace]

    def address(self, name: str) -> str:
        return self.slots[name].address

    # ---- cuts ----------------------------------------------------------------

    def cut(self, *names: str) -> None:
        """Pull the cable of each named node: no frame reaches it or leaves it.

        Each named node is alone (two cut nodes cannot reach each other either); for
        sides of several nodes use :meth:`split`.
        """
        for name in names:
            _ip("link", "set", self.slots[name].host_link, "down")

    def split(self, *groups: Sequence[str]) -> None:
        """Partition the lab: the nodes of each group reach each other and no one else.

        The first group (and every node in no group) stays on the lab's bridge, with
        the test process; each further group is moved to an island bridge of its own
        (``tcn<id>i<k>``), which has no address: the test process cannot reach it.
        """
        for k, group in enumerate(groups[1:], start=1):
            island = f"{PREFIX}{self.id}i{k}"
            if island not in _lab_objects():
                _ip("link", "add", island, "type", "bridge")
                _ip("link", "set", island, "up")
            for name in group:
                _ip("link", "set", self.slots[name].host_link, "master", island)

    def heal(self) -> None:
        """Undo every :meth:`cut` and :meth:`split`: all nodes on the lab's bridge, up."""
        for slot in self.slots.values():
            _ip("link", "set", slot.host_link, "master", self.bridge, "up")

    def side_of(self, name: str) -> str | None:
        """The bridge node ``name`` is plugged into, or None while it is cut."""
        line = _ip_out("-o", "link", "show", self.slots[name].host_link)
        flags = line.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in line else []
        if "UP" not in flags:
            return None
        return line.split(" master ", 1)[1].split()[0] if " master " in line else None

    # ---- teardown ------------------------------------------------------------

    def close(self) -> None:
        """Delete everything the lab made; safe to call twice, or half-way through
        construction. Processes still running in its namespaces are killed first (a
        namespace lives on while a process is in it)."""
        self._closed = True
        _remove_lab(self.id)

    def leftovers(self) -> list[str]:
        """Namespaces and interfaces of this lab that still exist (empty after close)."""
        return [n for n in _lab_objects() if n[len(PREFIX) :].startswith(self.id)]


# ---- asking a node from inside its namespace ---------------------------------------


def ask_status_in_namespace(
    namespace: str, host: str, port: int, timeout: float = 20.0, cookie: str | None = None
) -> NodeStatusReply:
    """A node's ``NodeStatusReply``, asked by a client process started inside
    ``namespace`` (so it works while the node is cut off from the test process).

    Costs a Python start in the namespace (about half a second): use it for an
    assertion during a cut, not in a polling loop that could be answered from the
    other side.
    """
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", __name__]
    env = dict(os.environ)
    if cookie is not None:
        env["THESPIAN_CLUSTER_COOKIE"] = cookie  # the cluster's, for this client only
    done = subprocess.run(
        [*command, "status", host, str(port)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise NetnsError(f"status in {namespace} failed: {done.stderr.strip()[-2000:]}")
    return NodeStatusReply.model_validate_json(done.stdout)


def _status_main(host: str, port: int) -> None:
    system = connect(port, host)
    try:
        monitor = cluster_agent(system, root_address(system), "node_monitor")
        reply = system.ask(monitor, GetNodeStatus(), 10)
        if reply is None:
            raise SystemExit("no answer from the node monitor")
        print(reply.model_dump_json())
    finally:
        disconnect(system)


# ---- measuring a partition -------------------------------------------------------


class TimedEventLog(Actor):
    """Like :class:`~thespian_cluster.local_cluster.EventLog`, but keeps each NodeUp /
    NodeDown with the ``time.monotonic()`` of its arrival; answers ``"events"`` with
    the list of ``(time, event)`` pairs.

    CLOCK_MONOTONIC is one clock for every network namespace of the machine, so the
    times a node records while cut off compare directly with the test process's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[float, NodeUp | NodeDown]] = []

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if message == "events":
            self.send(sender, list(self.events))
        elif isinstance(message, NodeUp | NodeDown):
            self.events.append((time.monotonic(), message))


@dataclass
class PartitionTiming:
    """What :func:`measure_partition` saw, in milliseconds, per node: from the split
    until the node saw the last node of the other side(s) ``down``, and from the heal
    until it saw the last of them ``up`` again; and the events each node heard from
    the split on."""

    cut_to_down_ms: dict[str, float]
    heal_to_up_ms: dict[str, float]
    events: dict[str, list[tuple[float, NodeUp | NodeDown]]]

    @property
    def slowest_down_ms(self) -> float:
        return max(self.cut_to_down_ms.values())

    @property
    def slowest_up_ms(self) -> float:
        return max(self.heal_to_up_ms.values())


def subscribe_timed(node: ClusterNode) -> ActorAddress:
    """A :class:`TimedEventLog` on ``node``, subscribed to its NodeMonitor."""
    log = node.client().createActor(TimedEventLog)
    reply = node.ask_monitor(SubscribeNodeEvents(subscriber=log))
    if not isinstance(reply, Subscribed):
        raise NetnsError(f"node {node.name} refused the subscription: {reply!r}")
    return log


def timed_events(node: ClusterNode, log: ActorAddress) -> list[tuple[float, NodeUp | NodeDown]]:
    found = node.client().ask(log, "events", 10)
    if not isinstance(found, list):
        raise NetnsError(f"the event log on {node.name} did not answer")
    return found


def measure_partition(
    lab: NetnsLab,
    nodes: Mapping[str, ClusterNode],
    groups: Sequence[Sequence[str]],
    timeout: float = 30.0,
    logs: dict[str, ActorAddress] | None = None,
) -> PartitionTiming:
    """Split a formed cluster into ``groups``, wait until every side sees the others
    ``down``, heal, wait until every node sees every node ``up``; return the times.

    For ``bench/partition.py`` and the tests. Each node records its own events
    (:class:`TimedEventLog`), so the times of the sides the test process cannot
    reach are exact; only *waiting* for them asks inside their namespaces
    (:func:`ask_status_in_namespace`, ~0.5 s a question), which does not affect the
    figures. ``groups[0]`` stays reachable from the test process.

    ``logs``: the nodes' event logs by node name, filled in here for the nodes that
    have none yet; pass the same dict to every sample of a benchmark so that each
    node keeps one log (only the events of this sample's window are counted).

    A benchmark sample, e.g. in ``bench/partition.py``::

        with NetnsLab() as lab, LocalCluster(work_dir) as cluster:
            first = cluster.start("n1", **lab.place("n1"))
            for name in ("n2", "n3", "n4", "n5"):
                cluster.start(name, leader=first, **lab.place(name))
            cluster.wait_formed(["n1", "n2", "n3", "n4", "n5"])
            logs = {}
            for _ in range(samples):  # every sample ends healed
                sides = [["n1", "n2", "n3"], ["n4", "n5"]]
                timing = measure_partition(lab, cluster.nodes, sides, logs=logs)
                downs.append(timing.slowest_down_ms)
                ups.append(timing.slowest_up_ms)
    """
    placed = {name: k for k, group in enumerate(groups) for name in group}

    def side(name: str) -> int:
        return placed.get(name, 0)  # a node in no group stays on the lab's bridge

    def status_of(name: str) -> NodeStatusReply:
        node = nodes[name]
        if side(name) == 0:
            return node.status()
        return ask_status_in_namespace(
            lab.slots[name].namespace, node.host, node.port, cookie=node.cookie
        )

    def others_down(name: str) -> bool:
        status = status_of(name)
        return all(
            (info := status.by_name(other)) is not None and info.health == "down"
            for other in nodes
            if side(other) != side(name)
        )

    def all_up(name: str) -> bool:  # healed: every node is reachable from here again
        return sorted(i.name for i in nodes[name].status().nodes if i.health == "up") == names

    names = sorted(nodes)
    logs = {} if logs is None else logs
    for name in names:
        if name not in logs:
            logs[name] = subscribe_timed(nodes[name])
    try:
        cut_at = time.monotonic()
        lab.split(*groups)
        for name in names:
            wait_for(partial(others_down, name), timeout, f"{name} to see the other side down")
        heal_at = time.monotonic()
        lab.heal()
        for name in names:
            wait_for(partial(all_up, name), timeout, f"{name} to see every node up")
    finally:
        lab.heal()  # a sample that failed half-way leaves no partition behind
    events = {
        name: [(t, e) for t, e in timed_events(nodes[name], logs[name]) if t >= cut_at]
        for name in names
    }

    def last(name: str, kind: type, start: float, end: float) -> float:
        times = [
            t
            for t, e in events[name]
            if isinstance(e, kind) and side(e.node) != side(name) and start <= t < end
        ]
        return (max(times) - start) * 1000 if times else float("nan")

    return PartitionTiming(
        cut_to_down_ms={n: last(n, NodeDown, cut_at, heal_at) for n in names},
        heal_to_up_ms={n: last(n, NodeUp, heal_at, float("inf")) for n in names},
        events=events,
    )


# ---- cleanup ---------------------------------------------------------------------


def sweep(mine: bool = False) -> list[str]:
    """Delete every lab whose owner process is gone; with ``mine``, this process's too.

    Returns the ids of the labs removed. A fixture's ``finally`` closes each lab, so
    this only catches what a killed run (or a fixture that never reached its
    ``finally``) left: run it with ``mine=True`` at the end of a test session. A lab
    whose owner still runs (a parallel suite's) is never touched.
    """
    removed = []
    ids = {name[len(PREFIX) : len(PREFIX) + 5] for name in _lab_objects()}
    if CLAIMS.is_dir():
        ids |= {p.name for p in CLAIMS.iterdir()}
    for lab_id in sorted(ids):
        owner = _owner(lab_id)
        if owner is None or not _alive(owner) or (mine and owner == os.getpid()):
            _remove_lab(lab_id)
            removed.append(lab_id)
    return removed


def _claim() -> str:
    """A new lab id, claimed for this process (exclusively: a parallel run's id is
    never taken twice)."""
    CLAIMS.mkdir(parents=True, exist_ok=True)
    while True:
        lab_id = secrets.token_hex(3)[:5]
        try:
            with (CLAIMS / lab_id).open("x") as claim:
                claim.write(json.dumps({"pid": os.getpid(), "created": time.time()}))
        except FileExistsError:
            continue
        if not any(n[len(PREFIX) :].startswith(lab_id) for n in _lab_objects()):
            return lab_id


def _owner(lab_id: str) -> int | None:
    try:
        return int(json.loads((CLAIMS / lab_id).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_lab(lab_id: str) -> None:
    """Kill what runs in the lab's namespaces, then delete its links, namespaces, bridge
    and claim file. Every step tolerates a thing that is already gone."""
    mine = [n for n in _lab_objects() if n[len(PREFIX) :].startswith(lab_id)]
    namespaces = [n for n in mine if "-" in n]
    for namespace in namespaces:
        for pid in _pids_in(namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for link in (n for n in mine if "-" not in n and not n.endswith("br")):
        _ip("link", "del", link, check=False)  # deletes its peer in the namespace too
    for namespace in namespaces:
        _ip("netns", "del", namespace, check=False)
    for bridge in (n for n in mine if n.endswith("br")):
        _ip("link", "del", bridge, check=False)
    with contextlib.suppress(OSError):
        (CLAIMS / lab_id).unlink()


def _lab_objects() -> list[str]:
    """Names of every lab namespace and root-namespace interface on this machine."""
    found = []
    for line in _ip_out("netns", "list").splitlines():
        name = line.split(" ", 1)[0]
        if name.startswith(PREFIX):
            found.append(name)
    for line in _ip_out("-o", "link", "show").splitlines():
        # "7: tcn3fa9ch0@if6: <BROADCAST,..." -> tcn3fa9ch0
        parts = line.split(": ", 2)
        if len(parts) > 1:
            name = parts[1].split("@", 1)[0]
            if name.startswith(PREFIX):
                found.append(name)
    return found


def _pids_in(namespace: str) -> list[int]:
    out = _ip_out("netns", "pids", namespace)
    return [int(p) for p in out.split() if p.isdigit()]


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of :data:`SUPERNET` that no address or route of this machine touches."""
    taken = _ip_out("-o", "-4", "addr", "show") + _ip_out("-4", "route", "show", "table", "all")
    subnets = list(SUPERNET.subnets(new_prefix=24))
    for _ in range(64):
        subnet = subnets[secrets.randbelow(len(subnets))]
        assert isinstance(subnet, ipaddress.IPv4Network)
        stem = str(subnet.network_address).rsplit(".", 1)[0] + "."
        if stem not in taken:
            return subnet
    raise NetnsError(f"no free /24 left in {SUPERNET}")


def _ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _ip_out(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    return done.stdout


def register_in_namespace(
    namespace: str, host: str, port: int, name: str, cookie: str | None = None
) -> dict[str, Any]:
    """Register ``name`` globally for a new :class:`~thespian_cluster.local_cluster.EventLog`
    actor on the node at ``host:port``, from a client inside ``namespace`` (so it works
    on a side the test process cannot reach). Returns ``{"reply": <reply class name>,
    "code": <error code or None>, "actor": [ip, port]}``; the actor keeps whatever it is
    sent (a ``NameConflict`` after a heal, for one)."""
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", __name__]
    env = dict(os.environ)
    if cookie is not None:
        env["THESPIAN_CLUSTER_COOKIE"] = cookie
    done = subprocess.run(
        [*command, "register", host, str(port), name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise NetnsError(f"register in {namespace} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _register_main(host: str, port: int, name: str) -> None:
    from thespian_cluster.local_cluster import EventLog
    from thespian_cluster.messages import Register, RegistryError

    system = connect(port, host)
    try:
        owner = system.createActor(EventLog)
        registry = registry_address(system)
        reply = system.ask(registry, Register(name=name, address=owner, scope="global"), 15)
        code = reply.code.value if isinstance(reply, RegistryError) else None
        actor = list(owner.addressDetails.sockname[:2])
        print(json.dumps({"reply": type(reply).__name__, "code": code, "actor": actor}))
    finally:
        disconnect(system)


def _main(argv: Sequence[str]) -> int:
    """``python -m thespian_cluster.netns status HOST PORT`` and ``... register HOST PORT
    NAME`` (used inside a namespace), and ``python -m thespian_cluster.netns sweep``
    (delete labs whose owner is gone)."""
    if len(argv) == 3 and argv[0] == "status":
        _status_main(argv[1], int(argv[2]))
        return 0
    if len(argv) == 4 and argv[0] == "register":
        _register_main(argv[1], int(argv[2]), argv[3])
        return 0
    if argv == ["sweep"]:
        for lab_id in sweep():
            print(f"removed lab {lab_id}")
        return 0
    print(_main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
