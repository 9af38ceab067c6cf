"""Ratios and goals over a finished run, and the table as text and as Markdown."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import OK, Figure

ECHO = "baseline.echo_ask"


@dataclass(frozen=True)
class Ratio:
    """``figure`` over ``reference``, both from the same run.

    ``paired``: the two were measured interleaved, run by run (same family), so the
    ratio is the median of the per-run ratios, which cancels drift between runs;
    otherwise it is the ratio of the two medians.
    """

    figure: str
    reference: str
    name: str  # how the table says it: "echo", "Redis GET", ...
    paired: bool = False


@dataclass(frozen=True)
class Goal:
    figure: str
    text: str
    met: Callable[[Figure, dict[str, Figure]], bool | None]


RATIOS = [
    Ratio("baseline.echo_ask_whereis", ECHO, "echo", paired=True),
    Ratio("registry.whereis_local", ECHO, "echo", paired=True),
    Ratio("registry.whereis_local", "registry.whereis_local_no_probes", "probes off", paired=True),
    Ratio("registry.whereis_local_no_probes", ECHO, "echo", paired=True),
    Ratio("registry.register_local", ECHO, "echo", paired=True),
    Ratio("registry.join_group_local", ECHO, "echo", paired=True),
    Ratio("registry.group_members_local", ECHO, "echo", paired=True),
    Ratio("registry.whereis_global", ECHO, "echo", paired=True),
    Ratio("registry.register_global", ECHO, "echo", paired=True),
    Ratio("registry.whereis_local", "redis.get", "Redis GET"),
    Ratio("registry.register_local", "redis.set_nx", "Redis SET NX"),
    Ratio("registry.join_group_local", "redis.sadd", "Redis SADD"),
    Ratio("registry.group_members_local", "redis.smembers", "Redis SMEMBERS"),
    Ratio("scale.register_throughput", "redis.set_nx", "Redis SET NX"),
    Ratio("scale.register_ask_full", "registry.register_local", "Register, few names"),
    Ratio("baseline.pingpong_two_nodes", "baseline.pingpong_same_node", "same node", paired=True),
    Ratio("fast_path.lookup_100", "redis.get", "Redis GET"),
    Ratio("fast_path.lookup_100000", "redis.get", "Redis GET"),
    Ratio("fast_path.lookup_100000", "fast_path.lookup_100", "100 names"),
    Ratio("fast_path.lookup_hot_100000", "fast_path.lookup_100", "100 names"),
    Ratio("fast_path.lookup_100", "registry.whereis_local", "Whereis ask"),
    Ratio("scale.lookup_node_table", "redis.get", "Redis GET"),
    Ratio("wire.sealed_ask", "wire.plain_ask", "no cookie", paired=True),
    Ratio("cluster.bulk_global_register", "redis.set_nx", "Redis SET NX"),
    Ratio("cluster.register_global_ask", "cluster.register_local_ask", "local Register"),
    Ratio("cluster.register_global_ask", "cluster.register_global_ask_no_links", "links off"),
    Ratio("cluster.register_global_ask_sequencer", "cluster.register_local_ask", "local Register"),
    Ratio("cluster.whereis_global_ask", "cluster.whereis_local_ask", "local Whereis"),
    Ratio("cluster.lookup_global_100000", "cluster.lookup_global_100", "100 names"),
    Ratio("wire.sealed_cpu", "wire.plain_cpu", "no cookie", paired=True),
]


def _added_at_most(limit: float) -> Callable[[Figure, dict[str, Figure]], bool | None]:
    """The figure's round trip takes at most ``limit`` (0.10 = 10%) longer than echo's."""

    def met(figure: Figure, _: dict[str, Figure]) -> bool | None:
        ratio = figure.ratios.get("echo")
        return None if not ratio else 1 / ratio - 1 <= limit

    return met


def _median(test: Callable[[float], bool]) -> Callable[[Figure, dict[str, Figure]], bool | None]:
    return lambda figure, _: None if figure.median is None else test(figure.median)


def _costs_under(
    limit: float, reference: str
) -> Callable[[Figure, dict[str, Figure]], bool | None]:
    def met(figure: Figure, _: dict[str, Figure]) -> bool | None:
        ratio = figure.ratios.get(reference)
        return None if not ratio else 1 / ratio - 1 < limit

    return met


def _ratio_at_least(name: str, limit: float) -> Callable[[Figure, dict[str, Figure]], bool | None]:
    def met(figure: Figure, _: dict[str, Figure]) -> bool | None:
        ratio = figure.ratios.get(name)
        return None if ratio is None else ratio >= limit

    return met


def _flat(figure: Figure, _: dict[str, Figure]) -> bool | None:
    ratio = figure.ratios.get("100 names")
    return None if ratio is None else ratio >= 0.8


GOALS = [
    Goal("registry.whereis_local", "adds <= 10% to a round trip", _added_at_most(0.10)),
    Goal("registry.register_local", "adds <= 10% to a round trip", _added_at_most(0.10)),
    Goal("registry.whereis_global", "adds <= 10% to a round trip", _added_at_most(0.10)),
    Goal("registry.register_global", "adds <= 10% to a round trip", _added_at_most(0.10)),
    Goal("fast_path.lookup_100", ">= 1,000,000/s", _median(lambda m: m >= 1e6)),
    Goal("fast_path.lookup_100000", ">= 1,000,000/s", _median(lambda m: m >= 1e6)),
    Goal("fast_path.lookup_hot_100000", "flat: >= 0.8x of 100 names", _flat),
    # The cluster family's goals are issue 18's.
    Goal("cluster.bulk_global_register", ">= 20,000 names/s", _median(lambda m: m >= 20_000)),
    Goal(
        "cluster.register_global_ask",
        ">= 0.5x local Register",
        _ratio_at_least("local Register", 0.5),
    ),
    Goal(
        "cluster.register_global_ask_sequencer",
        ">= 0.8x local Register",
        _ratio_at_least("local Register", 0.8),
    ),
    Goal(
        "cluster.whereis_global_ask", ">= 0.9x local Whereis", _ratio_at_least("local Whereis", 0.9)
    ),
    Goal(
        "cluster.replication_lag",
        "p50 <= 10 ms, p99 <= 50 ms",
        lambda f, _: None if f.median is None else f.median <= 10 and (f.p99 or 0) <= 50,
    ),
    Goal("cluster.lookup_global_100", ">= 1,000,000/s", _median(lambda m: m >= 1e6)),
    Goal("cluster.lookup_global_100000", ">= 1,000,000/s", _median(lambda m: m >= 1e6)),
    Goal(
        "cluster.node_death_purge_after_down", "<= 1 s after NodeDown", _median(lambda m: m <= 1000)
    ),
    Goal("cluster.sequencer_failover", "<= 2 s", _median(lambda m: m <= 2000)),
    Goal("cluster.sequencer_failover_lost", "0", _median(lambda m: m == 0)),
    Goal("cluster.memory_per_global_name", "<= 700 B", _median(lambda m: m <= 700)),
    Goal("cluster.join_catch_up", "<= 2 s", _median(lambda m: m <= 2000)),
    Goal("partition.detect", "within the heartbeat timeout + 1 s", _median(lambda m: m <= 3500)),
    Goal("supervision.restart_gap", "median < 100 ms", _median(lambda m: m < 100)),
    Goal("scale.memory_per_name", "<= 1 KB per name per replica", _median(lambda m: m <= 1024)),
    Goal("wire.sealed_ask", "costs < 5% of a round trip", _costs_under(0.05, "no cookie")),
    Goal("membership.known_by_all", "<= 1 s", _median(lambda m: m <= 1000)),
    Goal(
        "membership.sigkill_down",
        "median <= 0.5 s, p99 <= 1 s",
        lambda f, _: None if f.median is None else f.median <= 500 and (f.p99 or 0) <= 1000,
    ),
    Goal("membership.sigstop_down", "<= 3 s", lambda f, _: max(f.samples) <= 3000),
    Goal("membership.false_downs", "0", _median(lambda m: m == 0)),
    Goal("membership.heartbeat_cpu_50", "< 5% of a core per node", _median(lambda m: m < 5)),
]


def evaluate(figures: list[Figure]) -> None:
    """Fill in every figure's ratios and goal from the others of the same run."""
    by_id = {f.id: f for f in figures if f.status == OK}
    for ratio in RATIOS:
        figure, reference = by_id.get(ratio.figure), by_id.get(ratio.reference)
        if not (figure and reference and figure.median and reference.median):
            continue
        if ratio.paired and len(figure.samples) == len(reference.samples):
            pairs = zip(figure.samples, reference.samples, strict=True)
            value = statistics.median(f / r for f, r in pairs if r)
        else:
            value = figure.median / reference.median
        figure.ratios[ratio.name] = round(value, 4)
    every = {f.id: f for f in figures}
    for goal in GOALS:
        target = every.get(goal.figure)
        if target is not None:
            target.goal = goal.text
            target.goal_met = goal.met(target, by_id) if target.status == OK else None


# ---- formatting ---------------------------------------------------------------------------


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if unit == "ms" or abs(value) < 100:
        return f"{value:,.1f}" if abs(value) >= 1 else f"{value:.3g}"
    return f"{value:,.0f}"


def times(value: float) -> str:
    if value >= 10:
        return f"{value:,.0f}x"
    return f"{value:.2g}x" if value < 0.1 else f"{value:.2f}x"


def ratio_text(figure: Figure) -> str:
    parts = []
    for name, value in figure.ratios.items():
        text = f"{times(value)} {name}"
        if name.startswith("echo"):  # the registry's cost over a raw round trip
            added = (1 / value - 1) * 100
            text += f" (+{max(0.0, added):.0f}%/rt)" if added > -0.5 else " (faster)"
        parts.append(text)
    return "; ".join(parts)


def goal_text(figure: Figure) -> str:
    if not figure.goal:
        return ""
    mark = {True: "met", False: "MISSED", None: "-"}[figure.goal_met]
    return f"{mark}: {figure.goal}"


def rows(figures: list[Figure]) -> list[list[str]]:
    table = []
    for figure in figures:
        if figure.status != OK:
            table.append([figure.label, figure.status, "", "", figure.unit, figure.note, ""])
            continue
        low, high = (number(f(figure.samples), figure.unit) for f in (min, max))
        spread = f"{low} - {high}" if len(figure.samples) > 1 else ""
        table.append(
            [
                figure.label,
                number(figure.median, figure.unit),
                number(figure.p99, figure.unit) if figure.latency else "",
                spread,
                figure.unit,
                ratio_text(figure),
                goal_text(figure),
            ]
        )
    return table


HEADER = ["figure", "median", "p99", "min - max", "unit", "same-run ratios", "goal"]

#: (section title, its figures), in the order the run made them.
Sections = list[tuple[str, list[Figure]]]


def text_table(sections: Sections) -> str:
    every = [figure for _, figures in sections for figure in figures]
    body = rows(every)
    widths = [max(len(r[i]) for r in [HEADER, *body]) for i in range(len(HEADER))]
    right = {1, 2, 3}

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [line(HEADER), line(["-" * w for w in widths])]
    cells = iter(body)
    for title, figures in sections:
        lines.append(f"-- {title}")
        lines.extend(line(next(cells)) for _ in figures)
    return "\n".join(lines)


def markdown_table(sections: Sections) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---", "---:", "---:", "---:", "---", "---", "---"]) + "|",
    ]
    for title, figures in sections:
        lines.append(f"| **{title}** | | | | | | |")
        for cells in rows(figures):
            cells = [c.replace("|", "\\|") for c in cells]
            cells[0] = cells[0].strip().replace("  ", "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
