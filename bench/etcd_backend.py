"""The etcd backend side by side with the built-in one, in one run (issue 17's figures).

``python -m bench.etcd_backend [--ops N] [--bulk N]`` starts one etcd member on
127.0.0.1, then for each backend (``global``, then ``etcd``) three nodes
(:class:`~thespian_cluster.local_cluster.LocalCluster`) and measures, from this
process:

* ``echo_ask`` / ``local_register_ask``: N ``ask()`` round trips to an actor on node b,
  and N local ``Register`` on b: the floor under any write through a node;
* ``register_ask`` / ``whereis_ask``: N global ``Register`` / ``Whereis`` via ``ask()``
  on node b, one at a time (b's own actor: claims stay on b);
* ``lookup_per_s``: ``lookup(scope="global")`` on node c's table for one second;
* ``lag``: a ``Register`` on b until ``lookup()`` on c sees it (N/3 samples);
* ``bulk``: the three nodes each ``RegisterMany`` their share of ``--bulk`` names at
  once (batches of 1,000), until every node's table has them all;
* ``kill_to_gone``: node c SIGKILLed with 200 names: from a's NodeDown to the names gone
  on a and b.

And, for the floor under the plug-in, N put-if-absent transactions straight to etcd
from this process (:meth:`EtcdClient.create`), and N Redis ``SET name NX`` on a
private redis-server (installed as ``python -m bench`` does unless ``--no-install``;
"skipped" with the reason when it cannot be). It prints one JSON object with the
goals' ratios: etcd ``Register`` against the raw transaction (goal >= 0.8 in ops/s)
and against its floor (an ask() plus the transaction), ``lookup()`` (goal >= 1M/s),
lag p99 (goal <= 50 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import redis_ref
from bench.common import MODES, Context, Progress, percentile
from bench.etcd_raw import measure
from tests.integration.actors import Worker
from thespian_cluster import Register, Registered, RegisterMany, Whereis, lookup
from thespian_cluster.local_cluster import ClusterNode, LocalCluster, wait_for
from thespian_cluster.testing.etcd_server import EtcdServer

BATCH = 1000


def _registered(reply: Any) -> None:
    if not isinstance(reply, Registered):
        raise RuntimeError(f"not registered: {reply!r}")


def _cluster(cluster: LocalCluster) -> list[ClusterNode]:
    a = cluster.start("a")
    nodes = [a, cluster.start("b", leader=a), cluster.start("c", leader=a)]
    cluster.wait_formed(["a", "b", "c"])
    return nodes


def _measure(cluster: LocalCluster, ops: int, bulk: int) -> dict[str, Any]:
    a, b, c = _cluster(cluster)
    owner = b.client().createActor(Worker)
    _registered(b.ask(Register(name="warm", address=owner, scope="global"), 30))
    wait_for(lambda: lookup("warm", scope="global", node_dir=c.node_dir), 30, "settled")
    run = uuid.uuid4().hex[:6]
    figures: dict[str, Any] = {
        # The floor under any write through a node: one ask() round trip to an actor.
        "echo_ask": measure(lambda i: b.client().ask(owner, "info", 10), ops),
        "local_register_ask": measure(
            lambda i: _registered(b.ask(Register(name=f"l-{run}-{i}", address=owner))), ops
        ),
        "register_ask": measure(
            lambda i: _registered(
                b.ask(Register(name=f"r-{run}-{i}", address=owner, scope="global"))
            ),
            ops,
        ),
        "whereis_ask": measure(
            lambda i: b.ask(Whereis(name=f"r-{run}-{i}", scope="global")).address, ops
        ),
    }
    count, deadline = 0, time.perf_counter() + 1.0
    where = c.node_dir  # as a caller keeps it (the property builds a Path each time)
    while time.perf_counter() < deadline:
        for _ in range(1000):
            lookup("warm", scope="global", node_dir=where)
        count += 1000
    figures["lookup_per_s"] = count
    lags = []
    for i in range(max(1, ops // 3)):
        name = f"lag-{run}-{i}"
        started = time.perf_counter()
        _registered(b.ask(Register(name=name, address=owner, scope="global")))
        wait_for(lambda n=name: lookup(n, scope="global", node_dir=c.node_dir), 10, "lag")
        lags.append((time.perf_counter() - started) * 1000)
    figures["lag_ms"] = {
        "median": round(statistics.median(lags), 3),
        "p99": round(percentile(lags, 99), 3),
    }
    figures["bulk"] = _bulk([a, b, c], bulk, run)
    figures["kill_to_gone_ms"] = _kill_to_gone(a, b, c, run)
    return figures


def _bulk(nodes: list[ClusterNode], total: int, run: str) -> dict[str, float]:
    owners = {n.name: n.client().createActor(Worker) for n in nodes}
    share = total // len(nodes)

    def load(node: ClusterNode) -> None:
        for first in range(0, share, BATCH):
            batch = [
                Register(name=f"bulk-{run}-{node.name}-{i}", address=owners[node.name])
                for i in range(first, min(share, first + BATCH))
            ]
            reply = node.ask(RegisterMany(registrations=batch, scope="global"), 120)
            bad = [r for r in getattr(reply, "results", [None]) if not isinstance(r, Registered)]
            if bad:
                raise RuntimeError(f"RegisterMany on {node.name}: {bad[:3]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=load, args=(n,)) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    last = [f"bulk-{run}-{n.name}-{share - 1}" for n in nodes]
    for node in nodes:
        wait_for(
            lambda n=node: all(lookup(x, scope="global", node_dir=n.node_dir) for x in last),
            120,
            "bulk everywhere",
        )
    elapsed = time.perf_counter() - started
    return {
        "names": share * len(nodes),
        "seconds": round(elapsed, 2),
        "names_per_s": round(share * len(nodes) / elapsed, 1),
    }


def _kill_to_gone(a: ClusterNode, b: ClusterNode, c: ClusterNode, run: str) -> float:
    owner = c.client().createActor(Worker)
    names = [f"mortal-{run}-{i}" for i in range(200)]
    reply = c.ask(
        RegisterMany(
            registrations=[Register(name=n, address=owner) for n in names], scope="global"
        ),
        60,
    )
    if not all(isinstance(r, Registered) for r in reply.results):
        raise RuntimeError("could not register c's names")
    for node in (a, b):
        wait_for(lambda n=node: lookup(names[-1], scope="global", node_dir=n.node_dir), 10, "c's")
    c.kill()
    wait_for(lambda: "c" not in a.cluster_nodes().nodes, 20, "NodeDown on a")
    down = time.perf_counter()
    for node in (a, b):
        wait_for(
            lambda n=node: not any(lookup(x, scope="global", node_dir=n.node_dir) for x in names),
            20,
            "c's names gone",
        )
    return round((time.perf_counter() - down) * 1000, 1)


VALUE = b'{"address":["127.0.0.1",1],"node":"x","incarnation":"y","meta":{}}'


def _redis_set_nx(ops: int, allow_install: bool) -> dict[str, Any]:
    """N ``SET name NX`` from this process to a private redis-server, as bench.redis_ref."""
    with tempfile.TemporaryDirectory() as work:
        ctx = Context(MODES["quick"], Path(work), Progress({}, enabled=False), allow_install)
        module, server, why = redis_ref.prerequisites(ctx)
        if why is not None:
            return {"skipped": why}
        assert module is not None and server is not None
        with redis_ref.redis_server(server, ctx) as port:
            client = module.Redis(host="127.0.0.1", port=port)
            try:
                run = uuid.uuid4().hex
                figure = measure(lambda i: client.set(f"name:{run}:{i}", VALUE, nx=True), ops)
                return {"redis_version": client.info("server").get("redis_version"), **figure}
            finally:
                client.close()


def run(ops: int, bulk: int, allow_install: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "etcd_backend", "ops": ops}
    result["redis_set_nx"] = _redis_set_nx(ops, allow_install)
    with EtcdServer() as server:
        with server.client(timeout=5) as client:
            result["raw_etcd_create_txn"] = measure(
                lambda i: client.create(f"/raw-{uuid.uuid4().hex}/{i}", VALUE), ops
            )
        for backend in ("global", "etcd"):
            settings: dict[str, Any] = {"log_level": "WARNING", "cluster_nodes": ["a", "b", "c"]}
            if backend == "etcd":
                settings["registry_backend"] = "etcd"
                settings["backend"] = {
                    "endpoints": server.endpoints,
                    "prefix": f"/b-{uuid.uuid4().hex}/",
                }
            with (
                tempfile.TemporaryDirectory() as work,
                LocalCluster(Path(work), **settings) as cluster,
            ):
                result[backend] = _measure(cluster, ops, bulk)
    raw = result["raw_etcd_create_txn"]["ops_per_s"]
    etcd = result["etcd"]
    # What a Register through a node could cost at best: an ask() round trip plus the
    # transaction itself (ms), against what it costs.
    floor_ms = etcd["echo_ask"]["median_ms"] + result["raw_etcd_create_txn"]["median_ms"]
    result["goals"] = {
        "etcd_register_vs_raw_txn": round(etcd["register_ask"]["ops_per_s"] / raw, 3),
        "etcd_register_vs_raw_txn_goal": ">= 0.8",
        "etcd_register_floor_ms": round(floor_ms, 3),
        "etcd_register_vs_floor": round(floor_ms / etcd["register_ask"]["median_ms"], 3),
        "etcd_register_vs_local_register": round(
            etcd["register_ask"]["ops_per_s"] / etcd["local_register_ask"]["ops_per_s"], 3
        ),
        "etcd_lookup_per_s": etcd["lookup_per_s"],
        "lookup_goal": ">= 1,000,000",
        "etcd_lag_p99_ms": etcd["lag_ms"]["p99"],
        "lag_goal_ms": "<= 50",
        "etcd_vs_builtin_register": round(
            etcd["register_ask"]["ops_per_s"] / result["global"]["register_ask"]["ops_per_s"], 3
        ),
        "redis_set_nx_vs_raw_txn": (
            round(result["redis_set_nx"]["ops_per_s"] / raw, 3)
            if "ops_per_s" in result["redis_set_nx"]
            else None
        ),
        "etcd_vs_builtin_bulk": round(
            etcd["bulk"]["names_per_s"] / result["global"]["bulk"]["names_per_s"], 3
        ),
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--bulk", type=int, default=30_000)
    parser.add_argument("--no-install", action="store_true", help="never apt-get/pip Redis")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.ops, args.bulk, not args.no_install), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
