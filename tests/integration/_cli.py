"""Running ``thespian-cluster`` as a user does: real subprocesses, a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SESSION_ENV

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "thespian_cluster.cli"]


def client_env(cookie: str | None = None) -> dict[str, str]:
    """This environment without any ``THESPIAN_CLUSTER_*`` setting, plus ``cookie``.

    (The suite's session token stays: it tells the leftover check whose processes
    these are.)
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("THESPIAN_CLUSTER_") or k == SESSION_ENV
    }
    env["PYTHONPATH"] = str(REPO)
    if cookie is not None:
        env["THESPIAN_CLUSTER_COOKIE"] = cookie
    return env


def node_config(path: Path, name: str, port: int, data_dir: Path, extra: str = "") -> Path:
    """A minimal single-node TOML file at ``path``."""
    path.write_text(f'node_name = "{name}"\nadmin_port = {port}\ndata_dir = "{data_dir}"\n{extra}')
    return path


def start_cli(config: Path, capture: bool = True) -> subprocess.Popen[str]:
    """``thespian-cluster start --config CONFIG`` in its own session (stdout and stderr
    piped, or discarded)."""
    sink = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [*CLI, "start", "--config", str(config)],
        stdout=sink,
        stderr=sink,
        text=True,
        env=client_env(),
        start_new_session=True,
    )


def run_cli(*args: str, cookie: str | None = None) -> subprocess.CompletedProcess[str]:
    """A one-off command, its output captured."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=client_env(cookie), timeout=90
    )
