"""What users would do instead: a Redis key per name, from one Python client.

The benchmark starts its own ``redis-server`` on a free loopback port (no
persistence: ``--save '' --appendonly no``), runs the loops with redis-py (one
command per round trip, no pipelining: the same shape as the registry's asks) and
stops it. ``register`` is ``SET name addr NX``, ``whereis`` is ``GET``, a group
join is ``SADD``, group members is ``SMEMBERS`` of a 10-member set.

When redis-server is missing it tries ``apt-get install redis-server`` (as root,
unless ``--no-install``); when redis-py is missing, ``pip install redis``. If
either is still missing the Redis column is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.common import Context, Figure, Mode, skipped
from thespian_cluster.testing.ports import free_port

FAMILY = "redis"
TITLE = "Redis (local redis-server, redis-py, one client)"
GROUP_SIZE = 10
COMMANDS = {
    "set_nx": "SET name NX (register)",
    "get": "GET name (whereis)",
    "sadd": "SADD group member (join group)",
    "smembers": f"SMEMBERS, {GROUP_SIZE} members (group members)",
}


def steps(mode: Mode) -> int:
    return mode.runs + 2


def weight(mode: Mode) -> float:
    return 3 + mode.runs * mode.redis_ops * 4 / 15_000


def run(ctx: Context) -> list[Figure]:
    redis_module, server, why = prerequisites(ctx)
    ctx.step("redis-server and redis-py")
    if why is not None:
        ctx.note(f"redis: skipped: {why}")
        return [
            skipped(f"redis.{key}", label, "ops/s", f"skipped: {why}")
            for key, label in COMMANDS.items()
        ]
    assert redis_module is not None and server is not None
    mode = ctx.mode
    figures = {key: Figure(f"redis.{key}", label, "ops/s") for key, label in COMMANDS.items()}
    with redis_server(server, ctx) as port:
        client = redis_module.Redis(host="127.0.0.1", port=port)
        ctx.info["redis_server"] = client.info("server").get("redis_version")
        ctx.step("redis-server up")
        value = pickle.dumps(("127.0.0.1", 40123, "an ActorAddress stand-in"))
        client.sadd("members", *[f"member-{i}" for i in range(GROUP_SIZE)])
        client.set("known", value)
        loops: dict[str, Callable[[int, int], Any]] = {
            "set_nx": lambda r, i: client.set(f"name:{r}:{i}", value, nx=True),
            "get": lambda r, i: client.get("known"),
            "sadd": lambda r, i: client.sadd(f"group:{r}:{i}", "member"),
            "smembers": lambda r, i: client.smembers("members"),
        }
        for loop in loops.values():  # warm up
            for i in range(min(100, mode.redis_ops)):
                loop(-1, i)
        for r in range(mode.runs):
            for key, loop in loops.items():
                started = time.perf_counter()
                for i in range(mode.redis_ops):
                    loop(r, i)
                figures[key].samples.append(mode.redis_ops / (time.perf_counter() - started))
            ctx.step(f"run {r + 1}/{mode.runs}")
        client.close()
    for figure in figures.values():
        figure.params = {"ops_per_run": mode.redis_ops}
    return list(figures.values())


def prerequisites(ctx: Context) -> tuple[Any, str | None, str | None]:
    """(the redis module, the redis-server path, why not) — installing what it may."""
    try:
        redis_module = importlib.import_module("redis")
    except ImportError:
        redis_module = None
        if ctx.allow_install:
            ctx.note("redis: installing redis-py (pip install redis)")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "redis>=5.0"],
                capture_output=True,
                timeout=300,
                check=False,
            )
            with contextlib.suppress(ImportError):
                importlib.invalidate_caches()
                redis_module = importlib.import_module("redis")
    if redis_module is None:
        return None, None, "redis-py is not installed (pip install -e '.[bench]')"
    ctx.info["redis_py"] = getattr(redis_module, "__version__", "?")
    server = shutil.which("redis-server")
    if server is None and ctx.allow_install:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return redis_module, None, "redis-server is not installed, and apt-get needs root"
        ctx.note("redis: installing redis-server (apt-get install redis-server)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "redis-server"],
        ):
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=600, env=env, check=False
            )
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                return redis_module, None, f"{' '.join(command[:2])} failed: {tail}"
        server = shutil.which("redis-server")
    if server is None:
        hint = "" if ctx.allow_install else "; --no-install was given"
        why = f"redis-server is not installed (apt-get install redis-server{hint})"
        return redis_module, None, why
    return redis_module, server, None


@contextlib.contextmanager
def redis_server(server: str, ctx: Context) -> Iterator[int]:
    """A private redis-server on a free loopback port, always stopped afterwards."""
    port = free_port()
    data = ctx.node_dir("redis")
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
            "--loglevel",
            "warning",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"redis-server exited at once: {err.strip()[-300:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError("redis-server did not listen within 15 s")
