"""The cluster cookie's cost: ask() round trips with and without wire security.

Each sample runs one client process (``bench_wire_security.py --worker``) that starts
its own node-less actor system and asks an echo actor for a few seconds, with the
sealed serializer installed or not; the two kinds alternate, so drift in the
machine's load hits both alike (which goes first alternates too), and the ratio is
taken run by run. The serializer's
own cost per packet is timed in this process, several times (median).
"""

from __future__ import annotations

from bench import bench_wire_security as wire_security
from bench.common import Context, Figure, Mode

FAMILY = "wire"
TITLE = "cluster cookie: sealed wire vs Thespian's plain pickle"
SECONDS = {"smoke": 0.5, "quick": 1.5, "full": 3.0}


def _runs(mode: Mode) -> int:
    return max(1, min(mode.runs, 6))


def steps(mode: Mode) -> int:
    return 2 * _runs(mode) + 1


def weight(mode: Mode) -> float:
    return _runs(mode) * 2 * (SECONDS[mode.name] + 1.5) + 2


def run(ctx: Context) -> list[Figure]:
    seconds = SECONDS[ctx.mode.name]
    plain = Figure("wire.plain_ask", "ask() to an echo actor, no cookie", "rt/s")
    sealed = Figure("wire.sealed_ask", "ask() to an echo actor, with a cluster cookie", "rt/s")
    # CPU of the client, admin and actor per round trip: load elsewhere slows the rate
    # more than it adds CPU, so this ratio is the steadier of the two.
    cpu = {
        kind: Figure(
            f"wire.{kind}_cpu",
            f"CPU per ask() round trip, {label}",
            "us",
            higher_is_better=False,
        )
        for kind, label in (("plain", "no cookie"), ("sealed", "with a cluster cookie"))
    }
    for run_index in range(_runs(ctx.mode)):
        kinds = [("plain", plain), ("sealed", sealed)]
        if run_index % 2:  # alternate which goes first: the second of a pair runs warmer
            kinds.reverse()
        for kind, figure in kinds:
            rate, cpu_us = wire_security._run_workers([kind], seconds)[kind]
            figure.samples.append(rate)
            cpu[kind].samples.append(cpu_us)
            ctx.step(f"{kind} run {run_index + 1}")
    per_packet = Figure(
        "wire.serializer_extra_us",
        "sealing + checking one packet (dumps + loads), extra over plain pickle",
        "us",
        higher_is_better=False,
    )
    for _ in range(_runs(ctx.mode)):  # one timing flips sign under load; take a median
        per_packet.samples.append(float(wire_security.serializer_costs()["str"]["extra_us"]))
    ctx.step("serializer")
    return [plain, sealed, cpu["plain"], cpu["sealed"], per_packet]
