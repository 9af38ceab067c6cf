"""The node-local shared table: the registry's contents on disk, readable by any process.

The Registry actor is the only writer. Every process on the host (other actors, the
CLI, a client script) can read it without sending a message, the way ETS tables
are read in Erlang; and a restarted Registry reloads it, so a SIGKILL of the
Registry loses no acknowledged registration.

Storage is LMDB: one writer, lock-free readers, crash-safe commits. py-lmdb refuses
an environment inherited through ``fork``, so every process opens its own handle
lazily (see :func:`_environment`).
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb

from thespian_cluster.core.addresses import address_key
from thespian_cluster.core.table import Entry, Member, Name, Removal

MAP_SIZE = 1 << 32  # sparse: only what is written takes disk
_VERSION_KEY = b"v"
_NAME_PREFIX = b"n:"
_MEMBER_PREFIX = b"g:"
_REGISTRY_KEY = b"r"
_PICKLE = pickle.HIGHEST_PROTOCOL

_environments: dict[tuple[int, str], Any] = {}


def _environment(path: Path) -> Any:
    key = (os.getpid(), str(path))
    env = _environments.get(key)
    if env is None:
        path.mkdir(parents=True, exist_ok=True)
        env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=0, lock=True, sync=True)
        _environments[key] = env
    return env


def _name_key(kind: str, name: Name) -> bytes:
    return _NAME_PREFIX + pickle.dumps((kind, name), protocol=_PICKLE)


def _member_key(group: str, address: Any) -> bytes:
    return _MEMBER_PREFIX + pickle.dumps((group, address_key(address)), protocol=_PICKLE)


def table_path(node_dir: Path) -> Path:
    return node_dir / "table"


def wipe(node_dir: Path) -> None:
    """Forget a previous incarnation's table (its actors are gone with it)."""
    shutil.rmtree(table_path(node_dir), ignore_errors=True)


class TableWriter:
    """The Registry's side: record each change, bump the version, in one commit."""

    def __init__(self, node_dir: Path) -> None:
        self._env = _environment(table_path(node_dir))

    def load(self) -> tuple[list[Entry], list[Member]]:
        entries: list[Entry] = []
        members: list[Member] = []
        with self._env.begin() as txn:
            for key, value in txn.cursor():
                if key.startswith(_NAME_PREFIX):
                    entries.append(pickle.loads(value))
                elif key.startswith(_MEMBER_PREFIX):
                    members.append(pickle.loads(value))
        return entries, members

    def write(
        self,
        entries: Iterable[Entry] = (),
        removed_names: Iterable[tuple[str, Name]] = (),
        members: Iterable[Member] = (),
        removed_members: Iterable[tuple[str, Any]] = (),
    ) -> None:
        with self._env.begin(write=True) as txn:
            for entry in entries:
                txn.put(_name_key(entry.kind, entry.name), pickle.dumps(entry, protocol=_PICKLE))
            for kind, name in removed_names:
                txn.delete(_name_key(kind, name))
            for member in members:
                txn.put(
                    _member_key(member.group, member.address),
                    pickle.dumps(member, protocol=_PICKLE),
                )
            for group, address in removed_members:
                txn.delete(_member_key(group, address))
            self._bump(txn)

    def write_removal(self, removal: Removal, address: Any) -> None:
        self.write(
            removed_names=[e.key for e in removal.names],
            removed_members=[(g, address) for g in removal.groups],
        )

    def set_registry(self, address: Any) -> None:
        """Publish the Registry's own address for actors and clients on this host."""
        with self._env.begin(write=True) as txn:
            txn.put(_REGISTRY_KEY, pickle.dumps(address, protocol=_PICKLE))

    @staticmethod
    def _bump(txn: Any) -> None:
        raw = txn.get(_VERSION_KEY)
        version = struct.unpack("<Q", raw)[0] + 1 if raw else 1
        txn.put(_VERSION_KEY, struct.pack("<Q", version))


class TableReader:
    """Any process's side: ``lookup()`` without a message, cached by table version."""

    def __init__(self, node_dir: Path) -> None:
        self._path = table_path(node_dir)
        self._version: bytes | None = None
        self._cache: dict[tuple[str, Name], Entry | None] = {}

    def lookup(self, name: Name, kind: str = "server") -> Entry | None:
        """The entry registered as ``name``, or None; never sends a message."""
        env = _environment(self._path)
        with env.begin(buffers=False) as txn:
            version = txn.get(_VERSION_KEY)
            if version != self._version:
                self._cache.clear()
                self._version = version
            key = (kind, name)
            try:
                return self._cache[key]
            except KeyError:
                raw = txn.get(_name_key(kind, name))
                entry = pickle.loads(raw) if raw is not None else None
                self._cache[key] = entry
                return entry

    def registry(self) -> Any | None:
        """The address of this node's Registry actor, if one has published it."""
        with _environment(self._path).begin() as txn:
            raw = txn.get(_REGISTRY_KEY)
        return pickle.loads(raw) if raw is not None else None
