"""The ``thespian-cluster`` command: run a node, ask it things, show its tree.

::

    thespian-cluster start --config config/single-node.toml   # foreground; Ctrl-C stops
    thespian-cluster whereis weather --port 1900
    thespian-cluster names --port 1900
    thespian-cluster groups --port 1900            # or: groups tool_servers
    thespian-cluster status --port 1900 --watch    # nodes, health, partition, tree; live
    thespian-cluster status --port 1900 --wait 30  # wait until the node is ready, then show it
    thespian-cluster demo                          # what `make demo` runs (--keep: stay up)
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from thespian.actors import ActorSystem, ActorSystemException

from thespian_cluster import __version__
from thespian_cluster.backends.loading import BackendLoadError
from thespian_cluster.cluster_messages import GetNodeStatus, NodeStatusReply
from thespian_cluster.core.singleton import LOCK_KIND
from thespian_cluster.global_messages import GetGlobalStatus, GlobalStatus
from thespian_cluster.logs import configure_logging
from thespian_cluster.messages import (
    ChildrenReply,
    GroupList,
    GroupMembers,
    GroupMembersReply,
    ListGroups,
    ListNames,
    NameList,
    RegistryError,
    Request,
    Whereis,
    WhereisReply,
    WhichChildren,
)
from thespian_cluster.metrics import MetricsServer
from thespian_cluster.node import (
    Node,
    NodeEntry,
    NodeError,
    ask,
    connect,
    disconnect,
    node_entry,
    start_node,
    wait_ready,
)
from thespian_cluster.partition_view import partition_status
from thespian_cluster.settings import ClusterSettings, SettingsError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])

Port = Annotated[int, typer.Option("--port", "-p", help="the node's admin port")]
Host = Annotated[str, typer.Option("--host", help="the node's host")]
Kind = Annotated[str, typer.Option("--kind", "-k", help="server, transport or your own kind")]
ScopeOption = Annotated[
    str | None,
    typer.Option(
        "--scope",
        "-s",
        help="local (this node's names) or global (the cluster's); "
        "default: local, then global on a cluster node",
    ),
]
Scope = Literal["local", "global"]
TIMEOUT = 10.0
#: Width of output that is not a terminal (a file, a pipe): rich's default there is
#: 80 columns, which cut the status tables (the address column went first).
PIPE_WIDTH = 400


def main() -> None:
    configure_logging("cli", "WARNING", None)  # start_node reconfigures for `start`
    app()


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"thespian-cluster {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    # Options of the command itself, before any subcommand; no docstring, so the help
    # stays the app's.
    pass


class _StopSignals:
    """Ctrl-C and SIGTERM for ``start``: a flag the main loop waits on.

    A Python signal handler runs between two bytecodes of the main thread, possibly
    while that thread holds a lock, so the handler must take none: it only sets a
    plain attribute. (It used to call ``threading.Event.set()``; one start in about
    130 hung for good when the signal landed inside ``Event.wait``, which holds the
    same lock.) The wait is a ``select`` on a socket the interpreter writes a byte to
    when a signal arrives (:func:`signal.set_wakeup_fd`), so a stop is seen at once.

    The first signal during the start stops the node once it is up (an interrupt
    could land after ``start_node``'s last cleanup point and leave the node running
    without us); a second one abandons the start (``start_node`` cleans up after
    itself).
    """

    def __init__(self) -> None:
        self.requested = False
        self.starting = True
        self._wakeup, self._wakeup_writer = socket.socketpair()
        for end in (self._wakeup, self._wakeup_writer):
            end.setblocking(False)

    def install(self) -> None:
        signal.set_wakeup_fd(self._wakeup_writer.fileno(), warn_on_full_buffer=False)
        # Both explicitly: a shell starts background jobs with SIGINT ignored.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, *_: Any) -> None:
        if self.requested and self.starting:
            raise KeyboardInterrupt
        self.requested = True

    def wait(self, timeout: float) -> bool:
        """True once a stop was asked for; otherwise False after ``timeout`` seconds."""
        if not self.requested:
            select.select([self._wakeup], [], [], timeout)
            with suppress(BlockingIOError):
                while self._wakeup.recv(512):
                    pass
        return self.requested


@app.command()
def start(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="a TOML settings file")
    ] = None,
    join: Annotated[
        str | None,
        typer.Option("--join", help="HOST:PORT of the convention leader to join (a cluster node)"),
    ] = None,
) -> None:
    """Run a node in the foreground until Ctrl-C or SIGTERM.

    Example: thespian-cluster start -c config/cluster-member.toml --join 10.0.0.1:1900
    """
    overrides = {"convention_leader": join, "cluster_enabled": True} if join else {}
    stop = _StopSignals()
    stop.install()
    # A node that cannot start is one line on stderr and exit code 2, never a traceback.
    with _one_line_errors():
        settings = ClusterSettings.load(config, **overrides)
        node = start_node(settings)
    stop.starting = False
    metrics = _serve_metrics(settings, node)
    typer.echo(
        f"node {settings.node_name} running on {settings.admin_address} "
        f"(pgid {node.pgid}); Ctrl-C stops it"
    )
    # The node is its admin: when the admin dies (a crash, a kill of the node's
    # process group) this process exits too, so a process manager sees the node go.
    period = min(0.5, settings.cluster_heartbeat_timeout / 4)
    lost = False
    try:
        while not stop.wait(period):
            if not node.admin_alive():
                lost = True
                break
    finally:
        if metrics is not None:
            metrics.stop()
        if lost:
            node.discard()
        else:
            node.stop()
    if lost:
        typer.echo(
            f"error: node {settings.node_name} is gone: its admin process "
            f"(pid {node.admin_pid}, process group {node.pgid}) exited",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"node {settings.node_name} stopped")


def _serve_metrics(settings: ClusterSettings, node: Node) -> MetricsServer | None:
    """With ``metrics_port`` set, serve /metrics, /healthz and /readyz (a daemon thread)."""
    if settings.metrics_port is None:
        return None
    try:
        server = MetricsServer(settings).start()
    except OSError as exc:
        node.stop()
        typer.echo(f"error: metrics_port {settings.metrics_port} cannot be used ({exc})", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"metrics on http://{settings.host}:{server.port}/metrics (/healthz, /readyz)")
    return server


@app.command()
def whereis(
    name: str,
    kind: Kind = "server",
    scope: ScopeOption = None,
    port: Port = 1900,
    host: Host = "127.0.0.1",
) -> None:
    """Who owns NAME.  Example: thespian-cluster whereis weather --scope global -p 1900

    Without --scope a cluster node looks in its local names first, then in the
    cluster's global names, and says which scope answered.
    """
    with _registry_session(host, port) as (system, entry):
        scopes = _scopes(scope, entry)
        for where in scopes:
            reply = _ask(system, entry, Whereis(name=name, kind=kind, scope=where), WhereisReply)
            if reply.address is not None:
                typer.echo(
                    f"{kind} {name!r} -> {reply.address} on node {reply.node} "
                    f"meta={reply.meta} ({where} scope)"
                )
                return
    typer.echo(f"{kind} {name!r} is not registered (looked in {_scopes_named(scopes)})")
    raise typer.Exit(1)


@app.command()
def names(
    kind: Annotated[str | None, typer.Option("--kind", "-k")] = None,
    scope: ScopeOption = None,
    port: Port = 1900,
    host: Host = "127.0.0.1",
) -> None:
    """Every registered name.  Example: thespian-cluster names --scope global -p 1900"""
    total = 0
    with _registry_session(host, port) as (system, entry):
        scopes = _scopes(scope, entry)
        for where in scopes:
            reply = _ask(system, entry, ListNames(kind=kind, scope=where), NameList)
            for info in sorted(reply.names, key=lambda i: (i.kind, str(i.name))):
                typer.echo(
                    f"{info.kind:<10} {info.name!s:<30} {info.address} node={info.node}"
                    + (f" scope={where}" if len(scopes) > 1 else "")
                )
            total += len(reply.names)
    typer.echo(f"{total} name(s) ({_scopes_named(scopes)})")


@app.command()
def groups(
    group: Annotated[str | None, typer.Argument(help="show this group's members")] = None,
    scope: ScopeOption = None,
    port: Port = 1900,
    host: Host = "127.0.0.1",
) -> None:
    """Every group, or the members of GROUP.  Example: thespian-cluster groups tool_servers"""
    with _registry_session(host, port) as (system, entry):
        scopes = _scopes(scope, entry)
        if group is None:
            found = 0
            for where in scopes:
                for listed in _ask(system, entry, ListGroups(scope=where), GroupList).groups:
                    typer.echo(listed if len(scopes) == 1 else f"{listed:<30} {where}")
                    found += 1
            if not found:
                typer.echo(f"no groups (looked in {_scopes_named(scopes)})")
            return
        count = 0
        for where in scopes:
            request = GroupMembers(group=group, scope=where)
            for member in _ask(system, entry, request, GroupMembersReply).members:
                typer.echo(
                    f"{member.address} node={member.node} meta={member.meta}"
                    + (f" scope={where}" if len(scopes) > 1 else "")
                )
                count += 1
    typer.echo(f"{count} member(s) in {group} ({_scopes_named(scopes)})")


@app.command()
def status(
    port: Port = 1900,
    host: Host = "127.0.0.1",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="refresh in place until Ctrl-C")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", "-n", help="seconds between refreshes with --watch")
    ] = 1.0,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            help="wait up to SECONDS for the node to be ready (safe while it starts); "
            "exit 2 if it is not",
            metavar="SECONDS",
        ),
    ] = None,
) -> None:
    """The node, the cluster's nodes and their health, the global registry, the tree.

    Example: thespian-cluster status -p 1900 --watch   (or --json for scripts)

    With --wait it first waits for the node to be ready: a readiness probe that
    never disturbs a starting node. Piped or redirected, --watch writes one full
    frame per refresh.
    """
    if wait is not None:
        with _failures_explained(host, port):
            wait_ready(port, host, wait)
    with _session(host, port) as system:
        if watch and not as_json:
            _watch(system, interval)
            return
        report = collect_status(system)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        render_status(report)


def _console() -> Any:
    """A rich console for stdout: the terminal's width, or :data:`PIPE_WIDTH` when
    the output goes to a file or a pipe."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def _watch(system: ActorSystem, interval: float) -> None:
    """``status --watch``: the same view every ``interval`` seconds, until Ctrl-C.

    On a terminal it is redrawn in place; into a file or a pipe each refresh is
    written as a new frame (a timestamp line, then the view), flushed at once.
    """
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    console = _console()
    # Ctrl-C and SIGTERM stop it even when it was started with SIGINT ignored (a shell's
    # background job): the view has no other way to end.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)

    def frame() -> Group:
        stamp = Text(f"{time.strftime('%H:%M:%S')}  every {interval:g} s; Ctrl-C stops", "dim")
        return Group(stamp, *status_renderables(collect_status(system)))

    try:
        if not console.is_terminal:
            while True:
                console.print(frame())
                console.print()
                console.file.flush()
                time.sleep(interval)  # the refresh period is the point of this pause
        with Live(frame(), console=console, auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `status --watch | head`: the reader has had enough
        # Python's own flush of stdout at exit must not complain about it either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def collect_status(system: ActorSystem) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (what ``--json`` prints)."""
    entry = node_entry(system)
    report: dict[str, Any] = {
        "node": entry.node,
        "pgid": entry.pgid,
        "root": str(entry.root),
        "backend": entry.backend,
        "cluster": entry.cluster,
    }
    report["tree"] = _tree(system, entry.root)
    registry = entry.registry
    if registry is None:
        return report
    health = ask(system, registry, GetNodeStatus(), TIMEOUT)
    if isinstance(health, NodeStatusReply):
        report["leader"] = health.leader
        report["nodes"] = [n.model_dump() for n in health.nodes]
    glob = ask(system, registry, GetGlobalStatus(), TIMEOUT)
    if isinstance(glob, GlobalStatus):
        report["global"] = glob.model_dump(exclude={"request_id"})
    if "nodes" in report:
        partition = partition_status(system)
        if partition is not None:
            report["partition"] = partition.model_dump(exclude={"request_id"})
    local = ask(system, registry, ListNames(), TIMEOUT)
    if isinstance(local, NameList):
        report["local_names"] = len(local.names)
    if "global" in report:
        locks = ask(system, registry, ListNames(kind=LOCK_KIND, scope="global"), TIMEOUT)
        if isinstance(locks, NameList):
            report["singletons"] = [
                {"name": i.name, "node": i.node, "state": i.meta.get("state", "?")}
                for i in locks.names
            ]
    return report


def render_status(report: dict[str, Any]) -> None:
    """``status`` for a person: a few tables, readable at a glance."""
    console = _console()
    for part in status_renderables(report):
        console.print(part)


def status_renderables(report: dict[str, Any]) -> list[Any]:
    """The parts of the status view (rich renderables), for a one-off print or ``--watch``."""
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    parts: list[Any] = [
        Text.from_markup(
            f"[bold]node {report['node']}[/bold]  process group {report['pgid']}  "
            f"backend {report.get('backend') or '-'}  "
            f"local names {report.get('local_names', '-')}"
        )
    ]
    if "nodes" in report:
        table = Table(title=f"cluster (leader {report['leader']})", title_justify="left")
        for column in ("node", "health", "incarnation", "address", "rtt ms", "last seen s"):
            table.add_column(column)
        colours = {"up": "green", "suspect": "yellow", "down": "red"}
        for n in report["nodes"]:
            health = n["health"] + (f" ({n['reason']})" if n.get("reason") else "")
            table.add_row(
                n["name"] + (" *" if n["is_self"] else ""),
                f"[{colours.get(n['health'], 'white')}]{health}[/]",
                n["incarnation"][:8],
                n["admin_address"],
                "-" if n["rtt_ms"] is None else f"{n['rtt_ms']:.2f}",
                "-" if n["last_seen"] is None else f"{n['last_seen']:.2f}",
            )
        parts.append(table)
    if "partition" in report:
        p = report["partition"]
        colour = "red" if p["partition_detected"] else "green"
        parts.append(
            Text.from_markup(
                f"partition: [{colour}]{'detected' if p['partition_detected'] else 'none'}[/] "
                f"strategy {p['strategy']}; winner {p['winner']}; action {p['action']}; "
                f"unreachable {', '.join(p['unreachable']) or '-'}"
            )
        )
    if "global" in report:
        g = report["global"]
        parts.append(
            Text.from_markup(
                f"global registry: sequencer [bold]{g['sequencer'] or '-'}[/bold] "
                f"epoch {g['epoch']} seq {g['seq']}; {g['names']} names, {g['groups']} groups "
                f"here; {g['pending']} writes pending"
            )
        )
    if report.get("singletons"):
        table = Table(title="cluster singletons", title_justify="left")
        for column in ("name", "held by", "state"):
            table.add_column(column)
        for one in report["singletons"]:
            table.add_row(str(one["name"]), one["node"], one["state"])
        parts.append(table)
    tree = Tree(f"NodeSupervisor {report['root']}")
    _render_tree(tree, report["tree"])
    parts.append(tree)
    return parts


def _tree(system: ActorSystem, supervisor: Any) -> list[dict[str, Any]]:
    reply = ask(system, supervisor, WhichChildren(), TIMEOUT)
    if not isinstance(reply, ChildrenReply):
        return []
    children = []
    for child in reply.children:
        item: dict[str, Any] = {
            "id": child.id,
            "running": child.running,
            "restarts": child.restart_count,
            "uptime": child.uptime,
            "address": str(child.address),
        }
        if child.type == "supervisor" and child.running:
            item["children"] = _tree(system, child.address)
        children.append(item)
    return children


def _render_tree(tree: Any, children: list[dict[str, Any]]) -> None:
    for child in children:
        uptime = f"{child['uptime']:.1f}s" if child["uptime"] is not None else "-"
        state = "running" if child["running"] else "[red]stopped[/red]"
        branch = tree.add(
            f"{child['id']:<22} {state}  restarts={child['restarts']}  uptime={uptime}  "
            f"{child['address']}"
        )
        _render_tree(branch, child.get("children", []))


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="leave the three nodes running and say how to stop them")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            "--backend", help="global scope: 'global' (built-in) or 'etcd' (starts an etcd)"
        ),
    ] = "global",
) -> None:
    """Three local nodes: global names, groups, a supervised restart, node and sequencer
    kills, a hung node and its heal; checked step by step (exit 0 when all behaved).

    Example: thespian-cluster demo --keep
    """
    from thespian_cluster.demo import run_demo

    if backend not in ("global", "etcd"):
        typer.echo(f"error: --backend is 'global' or 'etcd', not {backend!r}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_demo(keep, backend))


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Errors the user can fix become one line on stderr and exit code 2, no traceback."""
    try:
        yield
    except (NodeError, SettingsError, BackendLoadError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def _failures_explained(host: str, port: int) -> Iterator[None]:
    with _one_line_errors():
        try:
            yield
        except ActorSystemException:
            # A node with another cookie drops our packets: Thespian reports a bad address.
            typer.echo(
                f"error: the node at {host}:{port} refused us (check the cluster cookie)",
                err=True,
            )
            raise typer.Exit(2) from None


@contextmanager
def _session(host: str, port: int) -> Iterator[ActorSystem]:
    """A client handle, closed afterwards, with failures turned into one clear line."""
    with _failures_explained(host, port):
        system = connect(port, host)
        try:
            yield system
        finally:
            disconnect(system)


@contextmanager
def _registry_session(host: str, port: int) -> Iterator[tuple[ActorSystem, NodeEntry]]:
    """A client handle and the node's published entry (one that has a Registry)."""
    with _session(host, port) as system:
        entry = node_entry(system)
        if entry.registry is None:
            raise NodeError(f"node {entry.node} has no registry running right now")
        yield system, entry


def _scopes(value: str | None, entry: NodeEntry) -> list[Scope]:
    """The scopes a lookup searches, in order.

    ``--scope`` names one. Without it: local first, then, on a cluster node, global.
    Erlang keeps the two apart (``whereis/1`` for a node's names,
    ``global:whereis_name/1`` for the cluster's) and syn asks for a scope in every
    call; a person at a prompt asking "where is weather" means either, so the CLI
    looks in both, the node's own first (what an unqualified name means in
    Erlang), and every line it prints names the scope that answered.
    """
    if value is None:
        return ["local", "global"] if entry.cluster else ["local"]
    if value not in ("local", "global"):
        typer.echo(f"error: --scope must be local or global, not {value!r}", err=True)
        raise typer.Exit(2)
    return ["local" if value == "local" else "global"]


def _scopes_named(scopes: list[Scope]) -> str:
    """``the local scope``, ``the local and global scopes``."""
    return f"the {' and '.join(scopes)} scope" + ("s" if len(scopes) > 1 else "")


def _ask(system: ActorSystem, entry: NodeEntry, request: Request, expect: type) -> Any:
    """The Registry's reply of type ``expect``; a ``RegistryError`` is one line, exit 2."""
    assert entry.registry is not None
    reply = ask(system, entry.registry, request, TIMEOUT)
    if isinstance(reply, RegistryError):
        raise NodeError(f"the registry refused {type(request).__name__}: {reply.detail}")
    if not isinstance(reply, expect):
        raise NodeError(f"the registry answered {type(request).__name__} with {reply!r}")
    return reply


if __name__ == "__main__":
    main()
