"""What the cluster cookie costs: ask() round trips with and without it, and the MAC alone.

    .venv/bin/python bench/bench_wire_security.py            # ~1.5 min on 2 cores
    .venv/bin/python bench/bench_wire_security.py --quick    # ~25 s, noisier

Prints one JSON document:

* ``ask`` and ``cpu_us_per_ask``: an external client asking an Echo actor on a
  multiprocTCPBase system, ``plain`` (Thespian's pickle) vs ``sealed`` (cookie
  installed). The wire serializer is process-global and inherited by forked actors, so
  each run starts its own system in a fresh worker process, warms it up, then asks for
  a fixed number of seconds; plain and sealed runs alternate so that drift in the
  machine's load hits both alike. Reported: round trips/s and the CPU per round trip
  summed over all the system's processes (client, admin, actor, logger) -- median, min,
  max -- and how much the sealed kind costs. CPU per round trip is the steadier measure
  on a shared machine, and its minimum the steadiest (other work only ever adds).
* ``mac_us``: µs per tag at typical message sizes, keyed BLAKE2b (fresh key vs copied
  keyed state, the one security.py uses) vs HMAC-SHA256 (``hmac.digest`` one-shot and
  ``hmac.new``).
* ``serializer_us``: µs per ``dumps`` + ``loads`` of real Thespian envelopes, plain
  pickle vs :class:`WireSerializer` (MAC plus the allow-listed unpickler), and
  ``estimated_pct``: that extra cost for the two sealed packets of a round trip, as a
  share of the median CPU of a plain round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import hmac
import json
import os
import pickle
import signal
import statistics
import subprocess
import sys
import time
import timeit
from typing import Any

from loguru import logger
from thespian.actors import Actor, ActorAddress, ActorSystem

from thespian_cluster.security import WireSerializer, install_wire_security, resolve_cookie
from thespian_cluster.testing.ports import free_port

COOKIE_ENV = "THESPIAN_CLUSTER_COOKIE"
BENCH_COOKIE = "bench-cookie-5d1f0a7e93c24b68"
SIZES = (128, 512, 2048, 8192)
PR_SET_CHILD_SUBREAPER = 36


# ---------------------------------------------------------------- worker: one system


class Echo(Actor):
    """Answers a string with itself (module level: actor processes look it up by name)."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, str):
            self.send(sender, message)


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU of ``root`` and all its descendants (the admin, logger, actors)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rpartition(")")[2].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    total, frontier = stats[root][1], [root]
    while frontier:
        children = [pid for pid, (parent, _) in stats.items() if parent in frontier]
        total += sum(stats[pid][1] for pid in children)
        frontier = children
    return total / os.sysconf("SC_CLK_TCK")


def run_worker(seconds: float, warmup: int) -> None:
    """Start a system (sealed if the cookie is in the environment); on ``go``, ask for
    ``seconds`` and report the rate and the CPU per ask of all its processes."""
    logger.remove()  # keep the bench's output to its JSON; warnings would still show
    logger.add(sys.stderr, level="WARNING")
    # Thespian detaches its admin; as a subreaper this worker gets back the admin's
    # orphans and reaps them all before it exits (PID 1 of a container may not).
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    install_wire_security(resolve_cookie(None))
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": free_port()}, transientUnique=True)
    try:
        echo = asys.createActor(Echo)
        for _ in range(warmup):
            assert asys.ask(echo, "ping", 10) == "ping"
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # "go": both workers start together
        cpu_before = _tree_cpu_seconds(os.getpid())
        started = time.perf_counter()
        asks = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            assert asys.ask(echo, "ping", 10) == "ping"
            asks += 1
        cpu = _tree_cpu_seconds(os.getpid()) - cpu_before
    finally:
        asys.shutdown()
        signal.alarm(30)  # a child that never exits ends this worker instead of hanging it
        with contextlib.suppress(ChildProcessError):
            while True:
                os.waitpid(-1, 0)
        signal.alarm(0)
    print(json.dumps({"asks_per_s": asks / elapsed, "cpu_us_per_ask": cpu / asks * 1e6}))


def _run_workers(kinds: list[str], seconds: float) -> dict[str, tuple[float, float]]:
    """Workers of the given kinds, started together once all are warm;
    {kind: (asks/s, CPU µs per ask)}."""
    workers = {}
    for kind in kinds:
        env = {k: v for k, v in os.environ.items() if k != COOKIE_ENV}
        if kind == "sealed":
            env[COOKIE_ENV] = BENCH_COOKIE
        workers[kind] = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--seconds", str(seconds)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    try:
        for worker in workers.values():
            assert worker.stdout is not None
            assert json.loads(worker.stdout.readline())["ready"]
        for worker in workers.values():
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = {}
        for kind, worker in workers.items():
            out, _ = worker.communicate(timeout=600)
            result = json.loads(out.strip().splitlines()[-1])
            results[kind] = (float(result["asks_per_s"]), float(result["cpu_us_per_ask"]))
        return results
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


# ---------------------------------------------------------------- in-process costs


def _us(function: Any, number: int) -> float:
    best = min(timeit.repeat(function, number=number, repeat=5))
    return round(best / number * 1e6, 3)


def mac_costs() -> dict[str, dict[str, float]]:
    key = os.urandom(32)
    keyed = hashlib.blake2b(key=key, digest_size=16)
    results: dict[str, dict[str, float]] = {}
    for size in SIZES:
        data = os.urandom(size)
        number = 20_000

        def blake2b_copy(data: bytes = data) -> bytes:
            mac = keyed.copy()
            mac.update(data)
            return mac.digest()

        results[f"{size}B"] = {
            "blake2b_copy": _us(blake2b_copy, number),
            "blake2b_new": _us(
                lambda d=data: hashlib.blake2b(d, key=key, digest_size=16).digest(), number
            ),
            "hmac_sha256_digest": _us(lambda d=data: hmac.digest(key, d, "sha256"), number),
            "hmac_sha256_new": _us(lambda d=data: hmac.new(key, d, "sha256").digest(), number),
        }
    return results


def serializer_costs() -> dict[str, Any]:
    from thespian.actors import ActorAddress
    from thespian.system.transport.IPBase import TCPv4ActorAddress

    from thespian_cluster.messages import Whereis

    sender = ActorAddress(TCPv4ActorAddress("127.0.0.1", 40123, external=True))
    wire = WireSerializer(BENCH_COOKIE)
    envelopes = {
        "str": (sender, "ping"),
        "pydantic": (sender, Whereis(name="weather", kind="server")),
    }
    results: dict[str, Any] = {}
    for label, envelope in envelopes.items():
        body = pickle.dumps(envelope)
        sealed = wire.dumps(envelope)
        plain = _us(lambda e=envelope: pickle.loads(pickle.dumps(e)), 5_000)
        secure = _us(lambda e=envelope: wire.loads(wire.dumps(e)), 5_000)
        results[label] = {
            "bytes": len(body),
            "sealed_bytes": len(sealed),
            "plain_us": plain,
            "sealed_us": secure,
            "extra_us": round(secure - plain, 3),
        }
    return results


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.seconds, warmup=200)
        return

    repetitions, seconds = (3, 2.0) if args.quick else (8, 4.0)
    rates: dict[str, list[float]] = {"plain": [], "sealed": []}
    cpu: dict[str, list[float]] = {"plain": [], "sealed": []}
    load_before = os.getloadavg()[0]
    for _ in range(repetitions):
        # One at a time (two cores: a worker keeps both busy), alternating so that
        # drift in the machine's load hits both kinds alike.
        for kind in ("plain", "sealed"):
            rate, cpu_us = _run_workers([kind], seconds)[kind]
            rates[kind].append(rate)
            cpu[kind].append(cpu_us)
    ask = {kind: _summary(values) for kind, values in rates.items()}
    plain_median, sealed_median = ask["plain"]["median"], ask["sealed"]["median"]
    # Each sealed run against the plain run just before it.
    pair_costs = [100 * (1 - s / p) for p, s in zip(rates["plain"], rates["sealed"], strict=True)]
    cpu_median = {kind: statistics.median(values) for kind, values in cpu.items()}
    serializer = serializer_costs()
    # A round trip seals two packets (request, reply) and unseals two; the ACKs stay
    # untagged. Their extra CPU as a share of the CPU a plain round trip costs.
    extra_per_round_trip = 2 * serializer["str"]["extra_us"]
    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": sys.version.split()[0],
                    "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                },
                "ask": {
                    "seconds_per_repetition": seconds,
                    "repetitions": repetitions,
                    **ask,
                    "cost_pct_of_medians": round(100 * (1 - sealed_median / plain_median), 2),
                    "cost_pct_pairwise": _summary(pair_costs),
                },
                "cpu_us_per_ask": {
                    **{kind: _summary(values) for kind, values in cpu.items()},
                    "cost_pct_of_medians": round(
                        100 * (cpu_median["sealed"] / cpu_median["plain"] - 1), 2
                    ),
                    # Noise from other work only ever adds CPU: the minima are the
                    # steadiest estimate on a shared machine.
                    "cost_pct_of_mins": round(
                        100 * (min(cpu["sealed"]) / min(cpu["plain"]) - 1), 2
                    ),
                },
                "mac_us": mac_costs(),
                "serializer_us": serializer,
                "estimated_pct": round(100 * extra_per_round_trip / cpu_median["plain"], 2),
                "goal_pct": 5.0,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
