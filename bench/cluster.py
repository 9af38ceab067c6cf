"""The global registry across real node processes (LocalCluster, default settings).

Figures, each against a reference measured in the same run where the issue names one:

* bulk: 3 nodes each ``RegisterMany`` their share of 30,000 global names at once
  (batches of 1,000); names/s until every node's ``lookup()`` finds all of them;
* ``Register(scope="global")`` and ``Whereis(scope="global")`` via ``ask()`` from a node
  that does not sequence, interleaved with the same requests in local scope;
* replication lag: ``Registered`` on B -> ``lookup()`` on C finds it (p50, p99);
* node SIGKILL -> its names gone on every survivor, and how much of that is after
  ``NodeDown``;
* sequencer SIGKILL under a stream of claims -> claims accepted again, and how many
  acknowledged names were lost (must be 0);
* a node holding 100,000 global names: ``lookup(scope="global")`` rate at 100 and
  100,000 names, memory per name of a replica (RegistryDist's heap + the node
  table), and a new node's catch-up (joined -> ``lookup()`` finds all 100,000).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.actors import BenchWorker
from bench.common import Context, Figure, Mode, memory_of, rate
from thespian_cluster import (
    ListNames,
    Register,
    Registered,
    RegisteredMany,
    RegisterMany,
    RegistryError,
    Whereis,
    WhereisReply,
    lookup,
)
from thespian_cluster.local_cluster import ClusterNode, LocalCluster, wait_for
from thespian_cluster.node import cluster_agent, root_address
from thespian_cluster.node_table import table_bytes
from thespian_cluster.supervisors.os_process import pid_listening_on

FAMILY = "cluster"
TITLE = "cluster: the global registry across 3 node processes"
BATCH = 1000


def steps(mode: Mode) -> int:
    return 6


def weight(mode: Mode) -> float:
    return 4.0


def _sizes(mode: Mode) -> dict[str, int]:
    if mode.name == "full":
        return {"bulk": 30_000, "asks": 500, "lag": 300, "big": 100_000, "stream": 400}
    if mode.name == "quick":
        return {"bulk": 9_000, "asks": 200, "lag": 100, "big": 20_000, "stream": 200}
    return {"bulk": 3_000, "asks": 20, "lag": 10, "big": 2_000, "stream": 60}


def run(ctx: Context) -> list[Figure]:
    sizes = _sizes(ctx.mode)
    figures: list[Figure] = []
    with LocalCluster(ctx.node_dir("cluster"), log_level="WARNING") as cluster:
        a = cluster.start("a")
        b, c = cluster.start("b", leader=a), cluster.start("c", leader=a)
        cluster.wait_formed(["a", "b", "c"], timeout=30)
        owners = {n.name: n.client().createActor(BenchWorker) for n in (a, b, c)}
        figures.append(_bulk(cluster, [a, b, c], owners, sizes["bulk"]))
        ctx.step("bulk global registration")
        with LocalCluster(ctx.node_dir("cluster-no-links"), log_level="WARNING") as plain:
            pa = plain.start("a", global_peer_links=False)
            pb = plain.start("b", leader=pa, global_peer_links=False)
            plain.start("c", leader=pa, global_peer_links=False)
            plain.wait_formed(["a", "b", "c"], timeout=30)
            no_links = (pb, pb.client().createActor(BenchWorker))
            figures += _asks(b, owners["b"], (a, owners["a"]), no_links, sizes["asks"])
        ctx.step("global vs local asks")
        figures.append(_lag(b, c, owners["b"], sizes["lag"]))
        ctx.step("replication lag")
        figures += _node_death(cluster, a, b, c)
        ctx.step("node death purge")
    with LocalCluster(ctx.node_dir("cluster-failover"), log_level="WARNING") as cluster:
        figures += _sequencer_failover(cluster, sizes["stream"])
        ctx.step("sequencer failover")
    with LocalCluster(ctx.node_dir("cluster-big"), log_level="WARNING") as cluster:
        figures += _big(ctx, cluster, sizes["big"])
        ctx.step("100,000 names: lookups, memory, catch-up")
    return figures


# ---- bulk --------------------------------------------------------------------------------


def _bulk(
    cluster: LocalCluster, nodes: list[ClusterNode], owners: dict[str, Any], total: int
) -> Figure:
    share = total // len(nodes)
    names = {n.name: [f"bulk-{n.name}-{i}" for i in range(share)] for n in nodes}
    for node in nodes:
        node.client()  # connect before the clock starts
    started = time.perf_counter()

    def load(node: ClusterNode) -> None:
        mine = names[node.name]
        for first in range(0, share, BATCH):
            batch = [
                Register(name=name, address=owners[node.name], scope="global")
                for name in mine[first : first + BATCH]
            ]
            _registered_all(node, node.ask(RegisterMany(registrations=batch, scope="global"), 120))

    _in_threads(load, nodes)
    every = [name for n in nodes for name in names[n.name]]
    for node in nodes:
        wait_for(
            lambda n=node: all(lookup(name, scope="global", node_dir=n.node_dir) for name in every),
            120,
            f"all {total} names on {node.name}",
        )
    elapsed = time.perf_counter() - started
    return Figure(
        "cluster.bulk_global_register",
        f"RegisterMany, 3 nodes each registering its share of {total:,} global names",
        "names/s",
        [rate(total, elapsed)],
        note="until every node's lookup() finds every name",
    )


# ---- asks ----------------------------------------------------------------------------------


def _asks(
    node: ClusterNode,
    owner: Any,
    sequencer: tuple[ClusterNode, Any],
    no_links: tuple[ClusterNode, Any],
    count: int,
) -> list[Figure]:
    """Global and local Register / Whereis from a node that does not sequence, in
    alternating blocks so drift hits both alike; with them, a global Register on the
    sequencing node and on a node of a second cluster whose peer links are off."""
    node.ask(Register(name="ask-known", address=owner, scope="global"))
    node.ask(Register(name="ask-known", address=owner))
    on_sequencer, sequencer_owner = sequencer
    plain, plain_owner = no_links
    kinds: dict[str, Callable[[int], bool]] = {
        "register_global_sequencer": lambda i: isinstance(
            on_sequencer.ask(Register(name=f"as-{i}", address=sequencer_owner, scope="global")),
            Registered,
        ),
        "register_global_no_links": lambda i: isinstance(
            plain.ask(Register(name=f"an-{i}", address=plain_owner, scope="global")), Registered
        ),
        "register_local": lambda i: isinstance(
            node.ask(Register(name=f"al-{i}", address=owner)), Registered
        ),
        "register_global": lambda i: isinstance(
            node.ask(Register(name=f"ag-{i}", address=owner, scope="global")), Registered
        ),
        "whereis_local": lambda i: isinstance(node.ask(Whereis(name="ask-known")), WhereisReply),
        "whereis_global": lambda i: isinstance(
            node.ask(Whereis(name="ask-known", scope="global")), WhereisReply
        ),
    }
    seconds = {k: 0.0 for k in kinds}
    block = max(1, count // 5)
    for first in range(0, count, block):
        for kind, call in kinds.items():
            started = time.perf_counter()
            for i in range(first, min(count, first + block)):
                assert call(i), kind
            seconds[kind] += time.perf_counter() - started
    rates = {k: rate(count, s) for k, s in seconds.items()}
    return [
        Figure(
            "cluster.register_global_ask",
            "Register, global, via ask() on a node that does not sequence",
            "rt/s",
            [rates["register_global"]],
        ),
        Figure(
            "cluster.register_global_ask_sequencer",
            "Register, global, via ask() on the sequencing node",
            "rt/s",
            [rates["register_global_sequencer"]],
        ),
        Figure(
            "cluster.register_global_ask_no_links",
            "Register, global, as above, a second cluster with peer links off",
            "rt/s",
            [rates["register_global_no_links"]],
            note="global_peer_links = false: RegistryDists talk by Thespian only",
        ),
        Figure(
            "cluster.register_local_ask",
            "Register, local, via ask() on the same node, interleaved",
            "rt/s",
            [rates["register_local"]],
        ),
        Figure(
            "cluster.whereis_global_ask",
            "Whereis, global, via ask() on a node that does not sequence",
            "rt/s",
            [rates["whereis_global"]],
        ),
        Figure(
            "cluster.whereis_local_ask",
            "Whereis, local, via ask() on the same node, interleaved",
            "rt/s",
            [rates["whereis_local"]],
        ),
    ]


# ---- replication lag ---------------------------------------------------------------------


def _lag(origin: ClusterNode, reader: ClusterNode, owner: Any, count: int) -> Figure:
    samples = []
    for i in range(count):
        name = f"lag-{i}"
        reply = origin.ask(Register(name=name, address=owner, scope="global"))
        acknowledged = time.perf_counter()
        assert isinstance(reply, Registered), reply
        while lookup(name, scope="global", node_dir=reader.node_dir) is None:
            if time.perf_counter() - acknowledged > 10:
                raise TimeoutError(f"{name} never reached {reader.name}")
        samples.append((time.perf_counter() - acknowledged) * 1000)
    return Figure(
        "cluster.replication_lag",
        "replication lag: Registered on B -> lookup() on C finds it (Horde syncs every 300 ms)",
        "ms",
        samples,
        higher_is_better=False,
        latency=True,
    )


# ---- node death ----------------------------------------------------------------------------


def _node_death(
    cluster: LocalCluster, a: ClusterNode, b: ClusterNode, c: ClusterNode
) -> list[Figure]:
    owner = c.client().createActor(BenchWorker)
    names = [f"doomed-{i}" for i in range(200)]
    batch = [Register(name=n, address=owner, scope="global") for n in names]
    c.ask(RegisterMany(registrations=batch, scope="global"), 60)
    for node in (a, b):
        wait_for(
            lambda n=node: lookup(names[-1], scope="global", node_dir=n.node_dir), 10, "doomed"
        )
    killed = time.perf_counter()
    c.kill()
    down_at: dict[str, float] = {}
    gone_at: dict[str, float] = {}
    while len(gone_at) < 2 or len(down_at) < 2:
        for node in (a, b):
            if node.name not in down_at and node.health_of("c") == "down":
                down_at[node.name] = time.perf_counter()
            if node.name not in gone_at and not any(
                lookup(n, scope="global", node_dir=node.node_dir) for n in names
            ):
                gone_at[node.name] = time.perf_counter()
        if time.perf_counter() - killed > 30:
            raise TimeoutError("c's names were not purged")
    detect = max(down_at.values()) - killed
    purge = max(gone_at.values()) - killed
    return [
        Figure(
            "cluster.node_death_purge",
            "node SIGKILL -> its 200 names gone on every survivor",
            "ms",
            [purge * 1000],
            higher_is_better=False,
            latency=True,
        ),
        Figure(
            "cluster.node_death_purge_after_down",
            "  of which after NodeDown on the slower survivor",
            "ms",
            [max(0.0, purge - detect) * 1000],
            higher_is_better=False,
            latency=True,
        ),
    ]


# ---- sequencer failover --------------------------------------------------------------------


def _sequencer_failover(cluster: LocalCluster, per_node: int) -> list[Figure]:
    a = cluster.start("a")
    b, c = cluster.start("b", leader=a), cluster.start("c", leader=a)
    cluster.wait_formed(["a", "b", "c"], timeout=30)
    owners = {n.name: n.client().createActor(BenchWorker) for n in (b, c)}
    acknowledged: dict[str, tuple[float, float]] = {}  # name -> (sent, acknowledged)
    lock = threading.Lock()
    killed: list[float] = []

    def stream(node: ClusterNode) -> None:
        for i in range(per_node):
            name = f"{node.name}-{i}"
            sent = time.perf_counter()
            reply = node.ask(Register(name=name, address=owners[node.name], scope="global"), 30)
            if isinstance(reply, Registered):
                with lock:
                    acknowledged[name] = (sent, time.perf_counter())
            if i == per_node // 4 and node.name == "b":
                killed.append(time.perf_counter())
                a.kill()

    _in_threads(stream, [b, c])
    kill = killed[0]
    # A claim sent after the kill, acknowledged: the new sequencer took it.
    after = sorted(done for sent, done in acknowledged.values() if sent > kill)
    resumed = (after[0] - kill) * 1000 if after else float("nan")
    listed = b.ask(ListNames(scope="global"), 30)
    held = {info.name for info in listed.names}
    lost = [name for name in acknowledged if name not in held]
    return [
        Figure(
            "cluster.sequencer_failover",
            "sequencer SIGKILL -> claims accepted again (under a stream from 2 nodes)",
            "ms",
            [resumed],
            higher_is_better=False,
            latency=True,
        ),
        Figure(
            "cluster.sequencer_failover_lost",
            f"  acknowledged registrations lost ({len(acknowledged)} acknowledged)",
            "names",
            [float(len(lost))],
            higher_is_better=False,
        ),
    ]


# ---- 100,000 names -------------------------------------------------------------------------


def _big(ctx: Context, cluster: LocalCluster, total: int) -> list[Figure]:
    a = cluster.start("a")
    b = cluster.start("b", leader=a)
    cluster.wait_formed(["a", "b"], timeout=30)
    owner = b.client().createActor(BenchWorker)
    dist_pid = _pid_of(b, "registry_dist")
    before = memory_of(dist_pid)["anonymous"]
    table_before = _table_bytes(b)
    for first in range(0, total, BATCH):
        batch = [
            Register(name=f"big-{i}", address=owner, scope="global")
            for i in range(first, min(total, first + BATCH))
        ]
        _registered_all(b, b.ask(RegisterMany(registrations=batch, scope="global"), 120))
    last = f"big-{total - 1}"
    wait_for(lambda: lookup(last, scope="global", node_dir=b.node_dir), 60, "all on b")
    heap = memory_of(dist_pid)["anonymous"] - before
    table = _table_bytes(b) - table_before
    figures = [
        Figure(
            "cluster.memory_per_global_name",
            f"memory per global name per replica at {total:,} names (heap + node table)",
            "bytes/name",
            [(heap + table) / total],
            higher_is_better=False,
            params={"heap_per_name": heap / total, "table_per_name": table / total},
        )
    ]
    small = [f"big-{i}" for i in range(100)]
    every = [f"big-{i}" for i in range(total)]
    for label, names in (("100", small), (f"{total}", every)):
        figures.append(_lookup_rate(b, names, label, ctx.mode.lookups))
    joined_at = time.perf_counter()
    c = cluster.start("c", leader=a)
    ready = time.perf_counter()
    wait_for(
        lambda: (
            lookup(last, scope="global", node_dir=c.node_dir)
            and all(
                lookup(n, scope="global", node_dir=c.node_dir)
                for n in every[:: max(1, total // 1000)]
            )
        ),
        120,
        "the new node caught up",
    )
    caught_up = time.perf_counter()
    figures.append(
        Figure(
            "cluster.join_catch_up",
            f"join catch-up: node started -> lookup() finds {total:,} names",
            "ms",
            [(caught_up - joined_at) * 1000],
            higher_is_better=False,
            latency=True,
            params={"after_start_returned_ms": (caught_up - ready) * 1000},
        )
    )
    return figures


def _lookup_rate(node: ClusterNode, names: list[str], label: str, count: int) -> Figure:
    for name in names:  # warm the process-local cache, as a long-lived reader has it
        lookup(name, scope="global", node_dir=node.node_dir)
    rounds = max(1, count // len(names))
    node_dir = node.node_dir
    started = time.perf_counter()
    for _ in range(rounds):
        for name in names:
            lookup(name, "server", "global", node_dir)
    elapsed = time.perf_counter() - started
    return Figure(
        f"cluster.lookup_global_{label}",
        f"lookup(scope='global'), {int(label):,} names",
        "lookups/s",
        [rate(rounds * len(names), elapsed)],
    )


def _pid_of(node: ClusterNode, child: str) -> int:
    system = node.client()
    address = cluster_agent(system, root_address(system), child)
    pid = pid_listening_on(address.addressDetails.sockname[1])
    assert pid is not None
    return pid


def _table_bytes(node: ClusterNode) -> int:
    return table_bytes(node.node_dir)


def _registered_all(node: ClusterNode, reply: Any) -> None:
    """Fail with what came back unless every item of a RegisterMany was registered: a
    refused or timed-out item is never in any replica, and waiting for it to appear
    would only time out without saying why."""
    results = reply.results if isinstance(reply, RegisteredMany) else [reply]
    outcomes = Counter(
        type(r).__name__ + (f"({r.code}: {r.detail})" if isinstance(r, RegistryError) else "")
        for r in results
        if not isinstance(r, Registered)
    )
    if outcomes:
        raise RuntimeError(f"RegisterMany on {node.name}: {dict(outcomes)}")


def _in_threads(work: Callable[[ClusterNode], None], nodes: list[ClusterNode]) -> None:
    errors: list[BaseException] = []

    def guarded(node: ClusterNode) -> None:
        try:
            work(node)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
