"""Chaos: five nodes in network namespaces, a steady stream of global claims and releases,
a cluster singleton declared on every node, and for about 60 s random partitions, hangs
(SIGSTOP/SIGCONT), and kills with restarts.

Clients on n1, n2 and n3 claim and release names of their own (so each name's last
acknowledged operation says what must hold at the end) and race for a few shared
names. Faults hit n2..n5: partitions always leave n1..n3 (3 of 5 expected nodes, the
majority under the default winner_takes_all) on one side; kills only hit n4 and n5
(whose actors own nothing), so every acknowledged name survives unless released.

Afterwards, with everything healed: every replica lists each name once, all replicas
are identical, every name whose last acknowledged operation was a registration is
held by that owner, every one whose last acknowledged operation was a release is
free. The singleton ran on one node at a time on the winning side (its instances' log,
thespian_cluster.testing.singletons, against the fault schedule: only an instance on a
cut node, or on a node just resumed, may overlap another), and exactly one instance
runs at the end, found by every node. The seed is printed: ``CHAOS_SEED=<seed>``
replays the same fault schedule (the interleaving of the clients' stream with it is
the machine's). ``CHAOS_SECONDS`` lengthens the run for a soak (``CHAOS_SECONDS=600``;
not part of ``make test``); the seed, the duration and every fault are printed and are
in the failure message.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.actors import Worker
from thespian_cluster import (
    AlreadyRegistered,
    AskTimeout,
    ListNames,
    Register,
    Registered,
    RegistryError,
    Unregister,
    Unregistered,
)
from thespian_cluster.global_messages import GetGlobalStatus
from thespian_cluster.local_cluster import ClusterNode, LocalCluster, wait_for
from thespian_cluster.netns import NetnsLab
from thespian_cluster.testing.singletons import Run, declare, one_instance, probe_spec, runs

#: After a heal or a resume, how long an instance on the node that was away may still
#: run beside the new one: until it hears it lost the lock (or notices its own pause).
AWAY_GRACE = 1.0

pytestmark = pytest.mark.cluster

NAMES = ["n1", "n2", "n3", "n4", "n5"]
CLIENTS = ["n1", "n2", "n3"]
CHAOS_SECONDS = float(os.environ.get("CHAOS_SECONDS", "60"))
SHARED = [f"shared-{i}" for i in range(4)]


class Client(threading.Thread):
    """Claims and releases its own names (and races for the shared ones) until stopped."""

    def __init__(self, node: ClusterNode, seed: int, stop: threading.Event) -> None:
        super().__init__(name=f"client-{node.name}")
        self.node = node
        self.chance = random.Random(seed)
        self.stop = stop
        self.owner = node.client().createActor(Worker)
        self.mine = [f"{node.name}-{i}" for i in range(12)]
        self.last: dict[str, str] = {}  # name -> "held" | "free" | "unknown"
        self.acknowledged = 0
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))

    def ask(self, request: Any) -> Any:
        """The node's reply, or None when it gave none in time (a node cut off or hung)."""
        try:
            return self.node.ask(request, 8)
        except AskTimeout:
            return None

    def step(self) -> None:
        if self.chance.random() < 0.2:
            name = self.chance.choice(SHARED)
            reply = self.ask(Register(name=name, address=self.owner, scope="global"))
            if isinstance(reply, Registered):
                self.ask(Unregister(name=name, scope="global"))
            return
        name = self.chance.choice(self.mine)
        if self.last.get(name) == "held":
            reply = self.ask(Unregister(name=name, scope="global"))
            self.record(name, reply, Unregistered, "free")
        else:
            reply = self.ask(Register(name=name, address=self.owner, scope="global"))
            self.record(name, reply, Registered, "held")

    def record(self, name: str, reply: Any, success: type, state: str) -> None:
        if isinstance(reply, success):
            self.last[name] = state
            self.acknowledged += 1
        elif isinstance(reply, RegistryError) and reply.code == "not_registered":
            self.last[name] = "free"  # a release that found it free: free either way
        elif isinstance(reply, AlreadyRegistered):
            self.errors.append(f"{name} held by {reply.owner}, but only this client uses it")
        else:
            self.last[name] = "unknown"  # a timeout or no answer: it may have happened


# The run's own length plus its start (five nodes) and its checks at the end.
@pytest.mark.timeout(CHAOS_SECONDS + 150)
def test_chaos(netns_lab: NetnsLab, netns_cluster: LocalCluster, tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
    print(f"CHAOS_SEED={seed}")
    chance = random.Random(seed)
    settings = {"cluster_nodes": NAMES}
    first = netns_cluster.start("n1", **netns_lab.place("n1"), **settings)
    nodes = {"n1": first}
    for name in NAMES[1:]:
        nodes[name] = netns_cluster.start(name, leader=first, **netns_lab.place(name), **settings)
    netns_cluster.wait_formed(NAMES, timeout=30)
    log = tmp_path / "singleton.log"
    # The singleton starts on n4, which the faults hit (kills, cuts, hangs), so it moves.
    declare(nodes["n4"], [probe_spec(log)])
    wait_for(lambda: [r.node for r in runs(log)] == ["n4"], 10, "the singleton to run on n4")
    for name in ["n1", "n2", "n3", "n5"]:
        declare(nodes[name], [probe_spec(log)])

    stop = threading.Event()
    clients = [Client(nodes[name], seed + i, stop) for i, name in enumerate(CLIENTS)]
    for client in clients:
        client.start()
    faults: list[str] = []
    away: list[tuple[set[str], float, float]] = []  # (nodes, from, until): cut off or hung
    started = time.monotonic()
    try:
        deadline = started + CHAOS_SECONDS
        while time.monotonic() < deadline:
            fault = chance.choice(["split", "hang", "kill"])
            if fault == "split":
                cut = chance.choice([["n4"], ["n5"], ["n4", "n5"]])
                netns_lab.split([n for n in NAMES if n not in cut], cut)
                faults.append(f"split off {cut}")
                since = time.monotonic()
                _pause(chance.uniform(2.0, 5.0))
                netns_lab.heal()
                away.append((set(cut), since, time.monotonic()))
            elif fault == "hang":
                victim = nodes[chance.choice(["n2", "n3", "n4", "n5"])]
                victim.pause()
                faults.append(f"hang {victim.name}")
                since = time.monotonic()
                _pause(chance.uniform(0.5, 3.5))
                victim.resume()
                away.append(({victim.name}, since, time.monotonic()))
            else:
                name = chance.choice(["n4", "n5"])
                nodes[name].kill()
                faults.append(f"kill {name}")
                _pause(chance.uniform(0.5, 2.0))
                nodes[name] = netns_cluster.start(
                    name, leader=first, port=nodes[name].port, **netns_lab.place(name), **settings
                )
                declare(nodes[name], [probe_spec(log)])
            _pause(chance.uniform(0.5, 2.0))
    finally:
        netns_lab.heal()
        for node in nodes.values():
            node.resume()
        stop.set()
        for client in clients:
            client.join(60)
    run = (
        f"CHAOS_SEED={seed} CHAOS_SECONDS={CHAOS_SECONDS:g}: {len(faults)} faults in "
        f"{time.monotonic() - started:.0f} s: " + "; ".join(faults)
    )
    print(run, flush=True)
    assert not [e for c in clients for e in c.errors], [c.errors for c in clients]
    assert sum(c.acknowledged for c in clients) > 50, "the stream made no progress"

    netns_cluster.wait_formed(NAMES, timeout=30)

    def tables() -> list[dict[str, str]]:
        found = []
        for name in NAMES:
            listed = nodes[name].ask(ListNames(scope="global"), 20)
            names = [f"{i.kind}/{i.name}" for i in listed.names]
            assert len(names) == len(set(names)), f"a name is listed twice on {name}"
            found.append({f"{i.kind}/{i.name}": str(i.address) for i in listed.names})
        return found

    try:
        wait_for(lambda: all(t == tables()[0] for t in tables()), 30, "identical replicas")
    except TimeoutError:
        states = {n: nodes[n].ask(GetGlobalStatus(), 10) for n in NAMES}
        sizes = {n: len(t) for n, t in zip(NAMES, tables(), strict=True)}
        raise AssertionError(f"replicas differ: sizes {sizes}; status {states}; {run}") from None
    final = tables()[0]
    for client in clients:
        for name, state in client.last.items():
            if state == "held":
                assert final.get(f"server/{name}") == str(client.owner), f"acknowledged {name} lost"
            elif state == "free":
                assert f"server/{name}" not in final, f"released {name} came back"

    holder = one_instance([nodes[n] for n in NAMES], timeout=30)
    instances = runs(log)
    alive = [r for r in instances if r.last > time.monotonic() - 1.0]
    assert [(r.node, r.pid) for r in alive] == [holder], (alive, run)
    twice = _overlaps_on_the_winning_side(instances, away)
    assert not twice, f"two singleton instances ran at once: {twice}; {run}"
    print(f"singleton: {len(instances)} instances over the run, now on {holder[0]}")


def _overlaps_on_the_winning_side(
    instances: list[Run], away: list[tuple[set[str], float, float]]
) -> list[tuple[Run, Run]]:
    """Pairs of instances that ran at once, unless one of them was on a node that was
    away (cut off, or hung) at that time or had come back less than AWAY_GRACE ago."""

    def excused(run: Run, start: float, end: float) -> bool:
        return any(
            run.node in gone and start < until + AWAY_GRACE and end > since
            for gone, since, until in away
        )

    found = []
    for i, one in enumerate(instances):
        for other in instances[i + 1 :]:
            start, end = max(one.first, other.first), min(one.last, other.last)
            if end > start and not (excused(one, start, end) or excused(other, start, end)):
                found.append((one, other))
    return found


def _pause(seconds: float) -> None:
    time.sleep(seconds)  # the fault schedule itself: how long a fault lasts is the input
