"""etcd itself, through our client: the floor under ``registry_backend = "etcd"``.

``python -m bench.etcd_raw [--keys N] [--data-dir DIR]`` starts a single-member etcd on
127.0.0.1 (:class:`~thespian_cluster.testing.etcd_server.EtcdServer`: free ports, a
temp data dir on the disk ``tempfile`` picks, unless ``--data-dir``), then from one
Python thread on one kept-alive connection:

* ``create``: N put-if-absent txns (:meth:`EtcdClient.create`, compare
  create_revision == 0), each on a new key: what registering a name costs;
* ``get``: N reads of those keys (:meth:`EtcdClient.get`): what a whereis that misses
  the cache costs.

Each op is timed alone (``perf_counter``); throughput is N over the loop's wall time.
It prints one JSON object (milliseconds and ops/s) and stops the server. Every write
is fsynced by etcd before it answers, so the disk's sync latency is part of ``create``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import percentile
from thespian_cluster.testing.etcd_server import EtcdServer, find_etcd

WARM_UP = 100


def measure(op: Callable[[int], object], count: int) -> dict[str, float]:
    """Latency (median, p99, max in ms) and throughput (ops/s) of ``op(0..count-1)``."""
    latencies = []
    started = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        op(i)
        latencies.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - started
    return {
        "median_ms": round(statistics.median(latencies), 4),
        "p99_ms": round(percentile(latencies, 99), 4),
        "max_ms": round(max(latencies), 4),
        "ops_per_s": round(count / wall, 1),
    }


def run(keys: int, data_dir: str | None) -> dict[str, Any]:
    with EtcdServer(data_dir=data_dir) as server, server.client(timeout=5) as client:
        version = client.status().version
        value = b"a registry record stand-in: node, actor address, incarnation" * 2
        for i in range(WARM_UP):
            client.create(f"warm/{i}", value)
            client.get(f"warm/{i}")

        def create(i: int) -> None:
            if not client.create(f"names/{i}", value).succeeded:
                raise RuntimeError(f"names/{i} existed: the benchmark's keys are not fresh")

        def get(i: int) -> None:
            if client.get(f"names/{i}").record is None:
                raise RuntimeError(f"names/{i} is missing")

        return {
            "benchmark": "etcd_raw",
            "etcd_version": version,
            "etcd_binary": str(find_etcd()),
            "keys": keys,
            "value_bytes": len(value),
            "threads": 1,
            "create_if_absent_txn": measure(create, keys),
            "get": measure(get, keys),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=2000, help="keys to create, then read")
    parser.add_argument("--data-dir", default=None, help="etcd's data dir (kept)")
    options = parser.parse_args(argv)
    if options.keys < 1:
        parser.error("--keys must be at least 1")
    print(json.dumps(run(options.keys, options.data_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
