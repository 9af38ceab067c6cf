"""A custom registry backend: the local backend plus a policy and an audit trail.

    python examples/custom_backend.py

A backend is any :class:`~thespian_cluster.RegistryBehavior`, loaded by dotted path
(``registry_backend = "examples.custom_backend:AuditedBackend"``) inside the node's
Registry process. This one extends :class:`~thespian_cluster.LocalBackend`:

* names under ``reserved/`` are refused (the caller gets ``AlreadyRegistered`` with
  the reserving entry as owner: the Registry's answer for any backend ``Conflict``);
* every registration and removal is appended to ``<node dir>/audit.log``.

docs/backends.md shows a backend written from scratch.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples import importable

importable()

from thespian.actors import Actor  # noqa: E402

from thespian_cluster import (  # noqa: E402
    AlreadyRegistered,
    ClusterSettings,
    Conflict,
    Entry,
    LocalBackend,
    Register,
    Registered,
    Removal,
    Whereis,
    start_node,
)

RESERVED = "reserved/"


class AuditedBackend(LocalBackend):
    """LocalBackend that refuses ``reserved/`` names and audits every change."""

    def register(
        self, name: Any, address: Any, kind: str, meta: Mapping[str, Any]
    ) -> Entry | Conflict:
        if isinstance(name, str) and name.startswith(RESERVED):
            keeper = Entry(name, kind, None, self.node, {"reserved": True}, time.time())
            self._audit(f"refused {kind} {name}")
            return Conflict(keeper)
        result = super().register(name, address, kind, meta)
        if isinstance(result, Entry):
            self._audit(f"registered {kind} {name}")
        return result

    def remove_address(self, address: Any) -> Removal:
        removal = super().remove_address(address)
        for entry in removal.names:
            self._audit(f"freed {entry.kind} {entry.name}")
        return removal

    def _audit(self, line: str) -> None:
        node_dir = os.environ.get("THESPIAN_CLUSTER_NODE_DIR")  # set in every node process
        if node_dir:
            with open(Path(node_dir) / "audit.log", "a") as log:
                log.write(f"{time.time():.3f} {line}\n")


class Echo(Actor):
    def receiveMessage(self, message: Any, sender: Any) -> None:
        self.send(sender, message)


def main() -> int:
    from examples.custom_backend import Echo  # by module name, as the node imports it

    with tempfile.TemporaryDirectory() as work:
        settings = ClusterSettings.build(
            node_name="audited",
            admin_port=_free_port(),
            data_dir=Path(work),
            registry_backend="examples.custom_backend:AuditedBackend",
            log_level="WARNING",
        )
        node = start_node(settings, log_to_stderr=False)
        try:
            echo = node.system.createActor(Echo)
            ok = node.ask(Register(name="echo", address=echo))
            refused = node.ask(Register(name="reserved/admin", address=echo))
            assert isinstance(ok, Registered), ok
            assert isinstance(refused, AlreadyRegistered), refused
            print(f"'echo' -> {type(ok).__name__}; 'reserved/admin' -> {type(refused).__name__}")
            assert node.ask(Whereis(name="echo")).address == echo
        finally:
            node.stop()
        audit = (settings.node_dir / "audit.log").read_text()
        print("audit.log:\n" + audit, end="")
        assert "registered server echo" in audit and "refused server reserved/admin" in audit
    return 0


def _free_port() -> int:
    from thespian_cluster.local_cluster import free_port

    return free_port()


if __name__ == "__main__":
    sys.exit(main())
