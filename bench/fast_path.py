"""``TableReader.lookup()`` per second in one process, at several table sizes.

For each size a table is filled by another process with :class:`TableWriter` (the
code the Registry writes with), with real ``ActorAddress`` owners. This process
then reads it:

* **cold** — the first lookup of every name: an LMDB read and an unpickle each;
* **warm** — ``mode.lookups`` lookups of names drawn at random from the whole table,
  per run: served from the reader's cache, validated by the published table version.
  Uniform random access over 100,000 names misses the CPU caches on most lookups;
* **hot names of a large table** — the same, over 100 names of the largest table: the
  cost of a lookup does not depend on the table's size, only on how many distinct
  names the caller touches;
* **under churn** — lookups of 1,000 hot names while another process registers
  100 names/s elsewhere in the table: every write empties the cache (invalidation is
  per table, not per name), so this shows what steady writes cost readers.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path
from typing import Any

from bench.common import Context, Figure, Mode
from thespian_cluster import TableReader

FAMILY = "fast_path"
TITLE = "lookup(): the node table read in one process, no message"
CHURN_WRITES_PER_S = 100
HOT_NAMES = 1_000
HOT_OF_LARGEST = 100


def steps(mode: Mode) -> int:
    return len(mode.lookup_sizes) * (mode.runs + 1) + 2


def weight(mode: Mode) -> float:
    return 4 + sum(n / 30_000 for n in mode.lookup_sizes) + mode.lookups * mode.runs / 1e6


def name_of(i: int) -> str:
    return f"service-{i:07d}"


def _address(port: int) -> Any:
    from thespian.actors import ActorAddress
    from thespian.system.transport.IPBase import TCPv4ActorAddress

    return ActorAddress(TCPv4ActorAddress("127.0.0.1", port, external=True))


def _fill(node_dir: str, start: int, count: int) -> None:
    """(In a spawned process.) Register ``count`` names the way the Registry writes them."""
    from thespian_cluster.core.table import Entry
    from thespian_cluster.node_table import TableWriter

    writer = TableWriter(Path(node_dir))
    now = time.time()
    batch: list[Entry] = []
    for i in range(start, start + count):
        owner = _address(20_000 + i % 40_000)
        batch.append(Entry(name_of(i), "server", owner, "bench", {}, now))
        if len(batch) == 10_000:
            writer.write(entries=batch)
            batch = []
    if batch:
        writer.write(entries=batch)


def _churn(node_dir: str, stop: Any, per_second: float) -> None:
    """(In a spawned process.) One registration every 1/per_second s until ``stop`` is set."""
    from thespian_cluster.core.table import Entry
    from thespian_cluster.node_table import TableWriter

    writer = TableWriter(Path(node_dir))
    owner = _address(19_999)
    i = 0
    while not stop.wait(1 / per_second):
        writer.write(entries=[Entry(f"churn-{i}", "server", owner, "bench", {}, time.time())])
        i += 1


def run(ctx: Context) -> list[Figure]:
    mode = ctx.mode
    spawn = multiprocessing.get_context("spawn")  # LMDB handles must not cross a fork
    figures: list[Figure] = []
    largest = max(mode.lookup_sizes)
    largest_dir: Path | None = None
    rng = random.Random(42)
    for size in sorted(mode.lookup_sizes):
        node_dir = ctx.node_dir(f"fast-path-{size}")
        filler = spawn.Process(target=_fill, args=(str(node_dir), 0, size))
        filler.start()
        filler.join(600)
        if filler.exitcode != 0:
            raise RuntimeError(f"filling a table of {size} names failed ({filler.exitcode})")
        reader = TableReader(node_dir)
        lookup = reader.lookup
        names = [name_of(i) for i in range(size)]
        rng.shuffle(names)
        started = time.perf_counter()
        found = sum(1 for name in names if lookup(name) is not None)
        cold = size / (time.perf_counter() - started)
        if found != size:
            raise RuntimeError(f"lookup found {found} of {size} names")
        ctx.point("lookup_cold", names=size, rate=cold)
        if size == largest:
            figures.append(
                Figure(
                    f"fast_path.lookup_cold_{size}",
                    f"lookup(), first of each name, {size:,} names",
                    "lookups/s",
                    [cold],
                    note="LMDB read + unpickle per name; one pass",
                )
            )
            largest_dir = node_dir
        ctx.step(f"{size:,} names: filled, cold pass")
        sequence = rng.choices(names, k=min(mode.lookups, 200_000))
        warm = Figure(
            f"fast_path.lookup_{size}",
            f"lookup(), {size:,} names",
            "lookups/s",
            params={"names": size, "lookups_per_run": mode.lookups},
        )
        for r in range(mode.runs):
            warm.samples.append(_timed_lookups(lookup, sequence, mode.lookups))
            ctx.step(f"{size:,} names: run {r + 1}/{mode.runs}")
        ctx.point(
            "lookup_warm",
            names=size,
            rate=warm.median or 0.0,
            low=min(warm.samples),
            high=max(warm.samples),
        )
        figures.append(warm)
        if size == largest and size > HOT_OF_LARGEST:
            figures.append(_hot_of_largest(ctx, reader, names, size))
            ctx.step(f"{HOT_OF_LARGEST} hot names of {size:,}")
    assert largest_dir is not None
    figures.append(_under_churn(ctx, spawn, largest_dir, largest))
    ctx.step("under churn")
    return figures


def _timed_lookups(lookup: Any, sequence: list[str], count: int) -> float:
    done = 0
    started = time.perf_counter()
    while done < count:
        chunk = sequence if count - done >= len(sequence) else sequence[: count - done]
        for name in chunk:
            lookup(name)
        done += len(chunk)
    return done / (time.perf_counter() - started)


def _hot_of_largest(ctx: Context, reader: TableReader, names: list[str], size: int) -> Figure:
    hot = names[:HOT_OF_LARGEST]
    figure = Figure(
        f"fast_path.lookup_hot_{size}",
        f"lookup(), {HOT_OF_LARGEST} hot names of {size:,}",
        "lookups/s",
        params={"names": size, "hot_names": HOT_OF_LARGEST},
    )
    sequence = random.Random(3).choices(hot, k=min(ctx.mode.lookups, 200_000))
    for _ in range(ctx.mode.runs):
        figure.samples.append(_timed_lookups(reader.lookup, sequence, ctx.mode.lookups))
    ctx.point("lookup_hot", names=size, rate=figure.median or 0.0)
    return figure


def _under_churn(ctx: Context, spawn: Any, node_dir: Path, size: int) -> Figure:
    hot = [name_of(i) for i in range(min(HOT_NAMES, size))]
    figure = Figure(
        "fast_path.lookup_under_churn",
        f"lookup(), {len(hot):,} hot names of {size:,}, {CHURN_WRITES_PER_S} writes/s",
        "lookups/s",
        params={"writes_per_s": CHURN_WRITES_PER_S, "hot_names": len(hot), "names": size},
    )
    reader = TableReader(node_dir)
    stop = spawn.Event()
    writer = spawn.Process(target=_churn, args=(str(node_dir), stop, CHURN_WRITES_PER_S))
    writer.start()
    try:
        time.sleep(1.0)  # the writer process is importing; let it reach its loop
        sequence = random.Random(7).choices(hot, k=100_000)
        for _ in range(max(1, ctx.mode.runs)):
            figure.samples.append(_timed_lookups(reader.lookup, sequence, len(sequence)))
    finally:
        stop.set()
        writer.join(30)
        if writer.is_alive():
            writer.kill()
    return figure
