"""What every benchmark family shares: figures, modes, the run context and process helpers."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from thespian_cluster.supervisors.os_process import is_dead

T = TypeVar("T")

OK, NOT_AVAILABLE, SKIPPED, ERROR = "ok", "n/a", "skipped", "error"


# ---- figures ------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured quantity: its samples (one per run, or one per event for latencies)."""

    id: str  # "<family>.<what>", e.g. "registry.whereis_local"
    label: str
    unit: str
    samples: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    latency: bool = False  # samples are single events: report p99 too
    status: str = OK
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    # filled in by the runner once every family has run
    ratios: dict[str, float] = field(default_factory=dict)
    goal: str = ""
    goal_met: bool | None = None

    @property
    def group(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def p99(self) -> float | None:
        return percentile(self.samples, 99) if self.samples else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "group": self.group,
            "label": self.label,
            "unit": self.unit,
            "status": self.status,
            "median": _round(self.median),
            "min": _round(min(self.samples)) if self.samples else None,
            "max": _round(max(self.samples)) if self.samples else None,
            "runs": len(self.samples),
            "samples": [_round(s) for s in self.samples],
            "higher_is_better": self.higher_is_better,
        }
        if self.latency:
            data["p99"] = _round(self.p99)
        for key in ("note", "params", "ratios", "goal"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.goal:
            data["goal_met"] = self.goal_met
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        """A figure of a saved run (ratios and goals are computed again)."""
        return cls(
            id=data["id"],
            label=data["label"],
            unit=data["unit"],
            samples=list(data.get("samples", [])),
            higher_is_better=data.get("higher_is_better", True),
            latency="p99" in data,
            status=data.get("status", OK),
            note=data.get("note", ""),
            params=dict(data.get("params", {})),
        )


def not_available(fig_id: str, label: str, unit: str, reason: str, **kw: Any) -> Figure:
    return Figure(fig_id, label, unit, status=NOT_AVAILABLE, note=reason, **kw)


def skipped(fig_id: str, label: str, unit: str, reason: str, **kw: Any) -> Figure:
    return Figure(fig_id, label, unit, status=SKIPPED, note=reason, **kw)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: with few samples, p99 is the max)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    if value == 0 or abs(value) >= 100:
        return round(value, 1)
    return float(f"{value:.4g}")


# ---- modes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """How much of everything one run does."""

    name: str
    runs: int  # repetitions of every rate figure
    asks: int  # ask() round trips per run and per kind of request
    pingpongs: int  # actor-to-actor round trips per run
    lookups: int  # lookup() calls per run
    lookup_sizes: tuple[int, ...]  # table sizes the fast path is measured at
    redis_ops: int  # operations per run and per Redis command
    fill_names: int  # names the scale benchmark registers (memory per name at this size)
    fill_checkpoints: tuple[int, ...]
    restarts: int  # supervisor restart gaps measured
    deaths: int  # registered actors SIGKILLed for "actor death -> name freed"


MODES = {
    "full": Mode(
        name="full",
        runs=9,
        asks=1000,
        pingpongs=1000,
        lookups=1_000_000,
        lookup_sizes=(100, 1_000, 10_000, 100_000),
        redis_ops=10_000,
        fill_names=100_000,
        fill_checkpoints=(100, 1_000, 10_000, 30_000, 100_000),
        restarts=50,
        deaths=20,
    ),
    "quick": Mode(
        name="quick",
        runs=3,
        asks=300,
        pingpongs=300,
        lookups=300_000,
        lookup_sizes=(100, 100_000),
        redis_ops=2_000,
        fill_names=5_000,
        fill_checkpoints=(100, 1_000, 5_000),
        restarts=6,
        deaths=3,
    ),
    # The quick mode's smallest case: every code path once, for the smoke test.
    "smoke": Mode(
        name="smoke",
        runs=1,
        asks=20,
        pingpongs=20,
        lookups=2_000,
        lookup_sizes=(100,),
        redis_ops=100,
        fill_names=200,
        fill_checkpoints=(100, 200),
        restarts=1,
        deaths=1,
    ),
}


# ---- progress -----------------------------------------------------------------------------


class Progress:
    """One bar for the whole run: families weighted by their expected time."""

    WIDTH = 30

    def __init__(self, weights: dict[str, float], stream: Any = None, enabled: bool = True):
        self.weights = weights
        self.total = sum(weights.values()) or 1.0
        self.done = 0.0  # weight of the families already finished
        self.family = ""
        self.steps = 1
        self.step_count = 0
        self.detail = ""
        self.finished = False
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()

    def start(self, family: str, steps: int) -> None:
        self.family, self.steps, self.step_count, self.detail = family, max(1, steps), 0, ""
        self.finished = False
        self._draw(force_line=self.tty)

    def step(self, detail: str = "") -> None:
        self.step_count = min(self.steps, self.step_count + 1)
        self.detail = detail
        self._draw()

    def note(self, text: str) -> None:
        """A message above the bar (e.g. why a column is skipped)."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"  {text}\n")
        self._draw()

    def finish_family(self) -> None:
        self.done += self.weights.get(self.family, 0.0)
        self.step_count = self.steps
        self.finished = True
        self._draw(force_line=not self.tty)

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def fraction(self) -> float:
        current = 0.0
        if not self.finished:
            current = self.weights.get(self.family, 0.0) * self.step_count / self.steps
        return min(1.0, (self.done + current) / self.total)

    def _draw(self, force_line: bool = False) -> None:
        if not self.enabled:
            return
        fraction = self.fraction()
        filled = int(self.WIDTH * fraction)
        elapsed = time.monotonic() - self.started
        bar = "#" * filled + "." * (self.WIDTH - filled)
        text = (
            f"[{bar}] {fraction * 100:3.0f}% {_clock(elapsed)}  {self.family}"
            f" {self.step_count}/{self.steps}" + (f": {self.detail}" if self.detail else "")
        )
        if self.tty:
            self.stream.write("\r\033[K" + text[:150])
        elif force_line:
            self.stream.write(text + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


# ---- the run context ------------------------------------------------------------------------


@dataclass
class Context:
    mode: Mode
    work_dir: Path  # scratch space for node directories; removed after the run
    progress: Progress
    allow_install: bool = True  # may the Redis benchmark apt-get / pip what it lacks
    series: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # versions etc. found on the way

    def step(self, detail: str = "") -> None:
        self.progress.step(detail)

    def note(self, text: str) -> None:
        self.progress.note(text)

    def point(self, series: str, **values: float) -> None:
        """One point of a plotted series (e.g. lookup rate at a table size)."""
        self.series.setdefault(series, []).append(values)

    def node_dir(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# ---- small helpers ------------------------------------------------------------------------


def wait_until(check: Callable[[], T | None], timeout: float, what: str, pause: float = 0.0) -> T:
    """Poll ``check`` until it returns something truthy; RuntimeError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        if pause:
            time.sleep(pause)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def memory_of(pid: int) -> dict[str, int]:
    """Rss, Pss, Anonymous and file-backed bytes of ``pid`` (``/proc/<pid>/smaps_rollup``)."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {
        "rss": values.get("Rss", 0),
        "pss": values.get("Pss", 0),
        "anonymous": values.get("Anonymous", 0),
        "file": values.get("Rss", 0) - values.get("Anonymous", 0),
    }


def actor_port(address: Any) -> int:
    return int(address.addressDetails.sockname[1])


def kill_group(pgid: int | None) -> None:
    """SIGKILL a process group that is not ours (what an actor system leaves behind)."""
    if pgid and pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


process_dead = is_dead


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    holder: list[float] = []
    started = time.perf_counter()
    try:
        yield holder
    finally:
        holder.append(time.perf_counter() - started)
