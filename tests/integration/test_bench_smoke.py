"""The benchmark suite runs: the quick mode's smallest case, end to end (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {
    "round_trips",
    "pingpong",
    "redis",
    "fast_path",
    "supervision",
    "wire",
    "scale",
    "membership",
    "cluster",
    "partition",
}


def _left_behind(marker: str) -> list[str]:
    """Live processes whose command line carries ``marker`` (forks keep their starter's)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(f"{pid}: {cmdline.decode(errors='replace')[:120]}")
    return found


@pytest.mark.timeout(300)  # every family once, the multi-node ones included
def test_the_smallest_case_runs_every_family_and_writes_results(tmp_path: Path) -> None:
    plot = tmp_path / "plot.png"
    command = [sys.executable, "-m", "bench", "--smoke", "--no-install", "--no-progress"]
    command += ["--out", str(tmp_path), "--plot", str(plot)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "figure" in done.stdout and "median" in done.stdout  # the table was printed

    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["mode"] == "smoke"
    assert set(results["families"]) == FAMILIES
    assert {"cpus", "python", "loadavg_before"} <= set(results["machine"])
    assert results["versions"]["thespian"] == "4.0.1"
    assert "revision" in results["git"]

    figures = {f["id"]: f for f in results["figures"]}
    errors = [f"{f['id']}: {f.get('note')}" for f in figures.values() if f["status"] == "error"]
    assert not errors
    for fig_id in (
        "baseline.echo_ask",
        "baseline.pingpong_two_nodes",
        "registry.whereis_local",
        "registry.register_local",
        "fast_path.lookup_100",
        "supervision.restart_gap",
        "supervision.death_to_name_freed",
        "wire.plain_ask",
        "wire.sealed_ask",
        "scale.register_throughput",
        "scale.memory_per_name",
    ):
        figure = figures[fig_id]
        assert figure["status"] == "ok", figure
        assert figure["runs"] >= 1 and figure["median"] is not None
    # ratios are computed within the run; goals are evaluated, never asserted
    assert "echo" in figures["registry.whereis_local"]["ratios"]
    assert figures["registry.register_local"]["goal_met"] in (True, False)
    # what needs the cluster says so instead of showing a number
    for fig_id in ("cluster.bulk_global_register", "cluster.replication_lag"):
        assert figures[fig_id]["status"] in ("ok", "n/a")
        if figures[fig_id]["status"] == "n/a":
            assert "cluster" in figures[fig_id]["note"]
    # Redis is measured when it is installed here, and skipped with the reason otherwise
    redis = figures["redis.get"]
    assert redis["status"] in ("ok", "skipped")
    if redis["status"] == "skipped":
        assert "install" in redis["note"]
    assert {"lookup_warm", "register_rate"} <= set(results["series"])
    if results["versions"]["matplotlib"]:
        assert plot.stat().st_size > 0

    deadline = time.monotonic() + 10
    while (left := _left_behind(str(tmp_path))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, "the benchmark left processes behind:\n" + "\n".join(left)
