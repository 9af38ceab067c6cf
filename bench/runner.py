"""``python -m bench``: run every family, draw the bar, print the table, write the JSON."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import (
    cluster,
    fast_path,
    membership,
    partition,
    pingpong,
    redis_ref,
    report,
    round_trips,
    scale,
    supervision,
    wire,
)
from bench.common import ERROR, MODES, Context, Figure, Progress

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DOC = ROOT / "BENCHMARKS.md"
TABLE_START, TABLE_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"

#: Run order: the message-path figures first, while the machine is freshest.
FAMILIES: list[ModuleType] = [
    round_trips,
    pingpong,
    redis_ref,
    fast_path,
    supervision,
    wire,
    scale,
    membership,
    cluster,
    partition,
]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render:
        return render(args)
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    families = _chosen(args.only)
    out = Path(args.out)
    progress = Progress({f.FAMILY: f.weight(mode) for f in families}, enabled=not args.no_progress)
    work_dir = Path(tempfile.mkdtemp(prefix="thespian-cluster-bench-"))
    ctx = Context(mode, work_dir, progress, allow_install=not args.no_install)
    started, wall = datetime.datetime.now(datetime.UTC), time.monotonic()
    load_before = os.getloadavg()
    sections: list[tuple[str, list[Figure]]] = []
    try:
        for family in families:
            sections.append((family.TITLE, _run_family(family, ctx)))
    finally:
        progress.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    figures = [figure for _, section in sections for figure in section]
    report.evaluate(figures)
    family_of = {
        id(f): family for family, (_, fs) in zip(families, sections, strict=True) for f in fs
    }
    results = {
        "schema": 1,
        "mode": mode.name,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - wall, 1),
        "machine": _machine(load_before),
        "versions": _versions(ctx),
        "git": _git(),
        "settings": {k: v for k, v in vars(mode).items() if k != "name"},
        "families": [f.FAMILY for f in families],
        "figures": [{"family": family_of[id(f)].FAMILY, **f.to_json()} for f in figures],
        "series": ctx.series,
    }
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "latest.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(report.text_table(sections))
    print(f"\n{mode.name} run, {results['duration_s']} s; results in {_shown(json_path)}")
    _outputs(args, results, sections, out)
    return 0


def render(args: argparse.Namespace) -> int:
    """Table, plot and BENCHMARKS.md again from a saved run (``--render latest.json``)."""
    path = Path(args.render)
    results = json.loads(path.read_text())
    titles = {f.FAMILY: f.TITLE for f in FAMILIES}
    sections: list[tuple[str, list[Figure]]] = []
    for data in results["figures"]:
        figure = Figure.from_json(data)
        family = data.get("family") or _family_of(figure.id)
        title = titles.get(family, family)
        if not sections or sections[-1][0] != title:
            sections.append((title, []))
        sections[-1][1].append(figure)
    figures = [figure for _, section in sections for figure in section]
    report.evaluate(figures)  # with this code's ratios and goals
    print(report.text_table(sections))
    print(f"\n{results['mode']} run of {results['started']}, rendered from {_shown(path)}")
    _outputs(args, results, sections, path.parent)
    return 0


def _family_of(fig_id: str) -> str:
    """The family of a figure of a run saved before figures carried it."""
    group = fig_id.split(".", 1)[0]
    if fig_id.startswith("baseline.pingpong"):
        return "pingpong"
    return "round_trips" if group in ("baseline", "registry") else group


def _outputs(
    args: argparse.Namespace,
    results: dict[str, Any],
    sections: list[tuple[str, list[Figure]]],
    out: Path,
) -> None:
    figures = [figure for _, section in sections for figure in section]
    plot_path = _plot_path(args, results["mode"], out)
    if plot_path is not None:
        try:
            from bench.plot import draw

            draw(plot_path, results["series"], figures)
            print(f"plot in {_shown(plot_path)}")
        except ImportError:
            print("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    if args.update_docs:
        update_doc(DOC, report.markdown_table(sections), results)
        print(f"table written into {_shown(DOC)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").strip().splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="the quick mode (< 2 minutes)")
    parser.add_argument(
        "--smoke", action="store_true", help="the quick mode's smallest case (the smoke test)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated families: " + ",".join(f.FAMILY for f in FAMILIES),
    )
    parser.add_argument("--out", default=str(RESULTS), help="where latest.json goes")
    parser.add_argument(
        "--plot",
        default=None,
        help="PNG to draw (default: <out>/scaling.png in the full mode, none otherwise)",
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--no-install", action="store_true", help="never apt-get/pip what Redis needs"
    )
    parser.add_argument(
        "--update-docs", action="store_true", help="write the table into BENCHMARKS.md"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="run nothing: print the table (and --plot, --update-docs) of a saved run",
    )
    return parser


def _chosen(only: str) -> list[ModuleType]:
    if not only:
        return FAMILIES
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    known = {f.FAMILY for f in FAMILIES}
    if wanted - known:
        raise SystemExit(f"unknown families {sorted(wanted - known)}; known: {sorted(known)}")
    return [f for f in FAMILIES if f.FAMILY in wanted]


def _run_family(family: ModuleType, ctx: Context) -> list[Figure]:
    ctx.progress.start(family.FAMILY, family.steps(ctx.mode))
    try:
        figures: list[Figure] = family.run(ctx)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        ctx.note(f"{family.FAMILY}: failed: {last}")
        figures = [
            Figure(
                f"{family.FAMILY}.error",
                f"{family.FAMILY} failed",
                "",
                status=ERROR,
                note=last,
            )
        ]
    ctx.progress.finish_family()
    return figures


def _plot_path(args: argparse.Namespace, mode: str, out: Path) -> Path | None:
    if args.no_plot:
        return None
    if args.plot:
        return Path(args.plot)
    return out / "scaling.png" if mode == "full" else None


def update_doc(path: Path, table: str, results: dict[str, Any]) -> None:
    """Replace the table between the markers in BENCHMARKS.md with this run's."""
    text = path.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"{path} has no {TABLE_START} ... {TABLE_END} markers")
    machine, git = results["machine"], results["git"]
    header = (
        f"Run of {results['started']} ({results['mode']} mode, {results['duration_s']} s), "
        f"git {git.get('revision', '?')[:10]}{' (dirty)' if git.get('dirty') else ''}, "
        f"{machine['cpus']} CPUs ({machine['cpu_model']}), Python {machine['python']}, "
        f"load average {machine['loadavg_before'][0]} before and "
        f"{machine['loadavg_after'][0]} after."
    )
    before, rest = text.split(TABLE_START, 1)
    _, after = rest.split(TABLE_END, 1)
    path.write_text(f"{before}{TABLE_START}\n{header}\n\n{table}\n{TABLE_END}{after}")


def _machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_model = next(
                (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")),
                "",
            )
    except OSError:
        pass
    memory_gb = 0.0
    try:
        with open("/proc/meminfo") as meminfo:
            memory_gb = round(int(meminfo.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model or platform.processor(),
        "memory_gb": memory_gb,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def _versions(ctx: Context) -> dict[str, Any]:
    versions: dict[str, Any] = {}
    for package in ("thespian", "thespian-cluster", "lmdb", "pydantic", "redis", "matplotlib"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        import lmdb

        versions["liblmdb"] = ".".join(map(str, lmdb.version()))
    except ImportError:
        pass
    versions["redis-server"] = ctx.info.get("redis_server")
    return versions


def _git() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status) if status is not None else None
    return {"revision": git("rev-parse", "HEAD"), "dirty": dirty}


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
