"""What name events cost: Register on one node -> the event on another, and fan-out.

Run ``python -m bench.events [--count N]``; prints one JSON object.

Three nodes (``a`` sequences), writes asked on ``b``, subscribers on ``c``:

* ``lag``: from just before ``Register(scope="global")`` on b to the ``NameRegistered``
  arriving at a subscriber actor on c (both read ``time.monotonic()``, one clock per
  host), p50 / p99 over ``count`` sequential writes; beside it the replication lag the
  events ride on, Register on b -> ``lookup()`` on c finds the name.
* ``fan_out``: the CPU of c's RegistryDist per change with 0, 1 and 10 subscribers
  on c (``/proc/<pid>/stat``), and its increase per subscriber per change, next to the
  CPU of an echo actor's round trip (what one message costs its sender and receiver).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.actors import BenchWorker, Echo, EventRecorder
from bench.common import percentile, wait_until
from bench.write_path import _pid, cpu_seconds
from thespian_cluster import Register, Registered, SubscribeNames, lookup
from thespian_cluster.local_cluster import LocalCluster
from thespian_cluster.node import cluster_agent, registry_address, root_address


def run(count: int) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="bench-events-")
    with tmp, LocalCluster(Path(tmp.name), log_level="WARNING") as cluster:
        a = cluster.start("a")
        b, c = cluster.start("b", leader=a), cluster.start("c", leader=a)
        cluster.wait_formed(["a", "b", "c"], timeout=30)
        on_b, on_c = b.client(), c.client()
        owner, registry_b = on_b.createActor(BenchWorker), registry_address(on_b)
        registry_c = registry_address(on_c)
        dist_c = _pid(cluster_agent(on_c, root_address(on_c), "registry_dist"))
        recorder = on_c.createActor(EventRecorder)
        request = SubscribeNames(subscriber=recorder, scope="global", prefix="lag-")
        on_c.tell(recorder, ("subscribe", registry_c, request))
        wait_until(lambda: on_c.ask(recorder, ("times",), 10) == {}, 10, "the subscription")

        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        for i in range(count):
            name = f"lag-{i}"
            sent[name] = time.monotonic()
            reply = on_b.ask(registry_b, Register(name=name, address=owner, scope="global"), 10)
            assert isinstance(reply, Registered), reply
            wait_until(lambda n=name: lookup(n, scope="global", node_dir=c.node_dir), 10, name)
            seen[name] = time.monotonic()
        arrivals = wait_until(
            lambda: (t := on_c.ask(recorder, ("times",), 10)) and len(t) == count and t,
            30,
            "every event",
        )
        lag = [(arrivals[n] - sent[n]) * 1000 for n in sent]
        visible = [(seen[n] - sent[n]) * 1000 for n in sent]

        fan_out: dict[str, Any] = {}
        delays: dict[str, Any] = {}  # seconds until c applied (and told) the round's writes
        subscribers: list[Any] = []
        echo = on_c.createActor(Echo)
        started = cpu_seconds(_pid(echo))
        for i in range(count):
            assert on_c.ask(echo, i, 10) == i
        echo_cpu = (cpu_seconds(_pid(echo)) - started) / count * 1e6
        for size in (0, 1, 10):
            while len(subscribers) < size:
                subscribers.append(on_c.createActor(EventRecorder))
            for sub in subscribers:  # this round's names; the snapshot comes back here
                again = SubscribeNames(subscriber=sub, scope="global", prefix=f"fan{size}-")
                on_c.ask(registry_c, again, 10)
            before, started_round = cpu_seconds(dist_c), time.monotonic()
            for i in range(count):
                name = f"fan{size}-{i}"
                on_b.ask(registry_b, Register(name=name, address=owner, scope="global"), 10)
            last = f"fan{size}-{count - 1}"
            wait_until(lambda n=last: lookup(n, scope="global", node_dir=c.node_dir), 300, last)
            if subscribers:
                wait_until(
                    lambda: len(on_c.ask(subscribers[-1], ("times",), 10) or {}) >= count,
                    300,
                    "the last subscriber's events",
                )
            fan_out[str(size)] = round((cpu_seconds(dist_c) - before) / count * 1e6, 1)
            delays[str(size)] = round(time.monotonic() - started_round, 2)
        base = fan_out["0"]
        per_subscriber = {n: round((fan_out[n] - base) / int(n), 1) for n in fan_out if n != "0"}
        return {
            "count": count,
            "lag_ms": {"p50": round(percentile(lag, 50), 2), "p99": round(percentile(lag, 99), 2)},
            "lookup_visible_ms": {
                "p50": round(percentile(visible, 50), 2),
                "p99": round(percentile(visible, 99), 2),
            },
            "c_registry_dist_cpu_us_per_change": fan_out,
            "cpu_us_per_subscriber_per_change": per_subscriber,
            "echo_cpu_us_per_round_trip": round(echo_cpu, 1),
            "round_seconds_until_c_caught_up": delays,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(run(args.count), indent=2))


if __name__ == "__main__":
    main()
