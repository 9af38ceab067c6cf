"""The PNG of BENCHMARKS.md: lookup and registration rates against the number of names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import OK, Figure


def _median(figures: dict[str, Figure], fig_id: str) -> float | None:
    figure = figures.get(fig_id)
    return figure.median if figure is not None and figure.status == OK else None


def draw(path: Path, series: dict[str, list[dict[str, float]]], figures: list[Figure]) -> Path:
    """Write the plot to ``path``; raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_id = {f.id: f for f in figures}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=90)

    def line(axes: Any, name: str, label: str, style: str, key: str = "rate") -> None:
        points = sorted(series.get(name, []), key=lambda p: p["names"])
        if points:
            xs = [p["names"] for p in points]
            axes.plot(xs, [p[key] for p in points], style, label=label)
            if all("low" in p for p in points):
                axes.fill_between(
                    xs, [p["low"] for p in points], [p["high"] for p in points], alpha=0.2
                )

    def reference(axes: Any, fig_id: str, label: str, color: str, style: str = "--") -> None:
        value = _median(by_id, fig_id)
        if value is not None:
            axes.axhline(value, color=color, linestyle=style, linewidth=1.2, label=label)

    line(left, "lookup_warm", "lookup(), warm cache", "o-")
    line(left, "lookup_cold", "lookup(), first of each name", "s-")
    hot = series.get("lookup_hot", [])
    if hot:
        xs, ys = [p["names"] for p in hot], [p["rate"] for p in hot]
        left.plot(xs, ys, "D", label="lookup(), 100 hot names")
    line(left, "lookup_node_table", "lookup() on a live node's table", "^-")
    reference(left, "redis.get", "Redis GET (one client)", "tab:red")
    reference(left, "registry.whereis_local", "Whereis via ask()", "tab:purple", ":")
    reference(left, "baseline.echo_ask", "raw Thespian ask() (echo)", "black")
    left.set_title("Lookups per second")

    line(right, "register_rate", "Register from an actor (5 in flight)", "o-")
    line(right, "register_ask_rate", "Register via ask()", "s-")
    reference(right, "redis.set_nx", "Redis SET NX (one client)", "tab:red")
    reference(right, "baseline.echo_ask", "raw Thespian ask() (echo)", "black")
    reference(right, "cluster.bulk_global_register", "global, 3 nodes", "tab:green", "-.")
    right.set_title("Registrations per second")

    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("names in the table")
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=7.5, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
