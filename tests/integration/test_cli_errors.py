"""The command line's start-up and connection failures: one clear line, exit code 2.

Each case runs ``thespian-cluster`` as a real subprocess and checks what a user sees:
exit code 2, exactly one line on stderr naming the problem and what to do, and no
traceback anywhere. (Tests run as root, whom no directory mode stops, so an unusable
``data_dir`` is a path under a regular *file*.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from thespian_cluster.actors.exit_hook import NODE_DIR_ENV

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "thespian_cluster.cli"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THESPIAN_CLUSTER_")}
    env.pop(NODE_DIR_ENV, None)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)


def start(tmp_path: Path, port: int, data_dir: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "node.toml"
    config.write_text(f'node_name = "cli"\nadmin_port = {port}\ndata_dir = "{data_dir}"\n')
    return cli("start", "--config", str(config))


def one_clear_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_a_data_dir_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = one_clear_line(start(tmp_path, free_port(), blocker / "data"), "data_dir", "can write")
    print(f"\n{line}")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_a_port_already_in_use(tmp_path: Path, busy_port: int) -> None:
    line = one_clear_line(
        start(tmp_path, busy_port, tmp_path / "data"), str(busy_port), "already in use"
    )
    assert "another admin_port" in line
    print(f"\n{line}")


def test_a_node_table_that_cannot_be_opened(tmp_path: Path) -> None:
    port = free_port()
    node_dir = tmp_path / "data" / f"cli-{port}"
    node_dir.mkdir(parents=True)
    (node_dir / "table").write_text("a file where the table's directory belongs")
    line = one_clear_line(start(tmp_path, port, tmp_path / "data"), "node table", "remove it")
    print(f"\n{line}")


def test_a_settings_file_that_does_not_exist(tmp_path: Path) -> None:
    one_clear_line(cli("start", "--config", str(tmp_path / "missing.toml")), "missing.toml")


@pytest.mark.parametrize(
    "command", [["whereis", "weather"], ["names"], ["groups"], ["groups", "g"], ["status"]]
)
def test_queries_with_no_node_listening(command: list[str]) -> None:
    port = free_port()
    one_clear_line(cli(*command, "--port", str(port)), f"no node is listening on 127.0.0.1:{port}")
