"""TableReader's cache: valid while ``table/version`` is unchanged, never stale after a write.

The writer runs in another process where it matters (the Registry always does): py-lmdb
handles and the version file mapping are per process.
"""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import pytest

from thespian_cluster.core.table import Entry
from thespian_cluster.node_table import (
    VERSION_FILE,
    GlobalMirror,
    NotMirrored,
    TableReader,
    TableWriter,
    _environment,
    _name_key,
    _VersionFile,
    table_path,
    wipe,
)


def _entry(name: str, owner: str) -> Entry:
    return Entry(name=name, kind="server", address=owner, node="n")


def _owner(reader: TableReader, name: str) -> Any:
    entry = reader.lookup(name)
    return None if entry is None else entry.address


def _published(node_dir: Path) -> int:
    return int.from_bytes((table_path(node_dir) / VERSION_FILE).read_bytes()[:8], "little")


# ---- a writer in another process ------------------------------------------------------


def _writer_process(node_dir: str, commands: Any, done: Any) -> None:
    writer = TableWriter(Path(node_dir))
    while (command := commands.get()) is not None:
        verb, name, owner = command
        if verb == "put":
            writer.write(entries=[_entry(name, owner)])
        elif verb == "delete":
            writer.write(removed_names=[("server", name)])
        elif verb == "wipe":
            wipe(Path(node_dir))
            writer = TableWriter(Path(node_dir))
        done.put(verb)


class RemoteWriter:
    def __init__(self, node_dir: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.commands, self.done = context.Queue(), context.Queue()
        self.process = context.Process(
            target=_writer_process, args=(str(node_dir), self.commands, self.done)
        )
        self.process.start()

    def do(self, verb: str, name: str = "", owner: str = "") -> None:
        """Returns once the write is committed and published, as a Registry reply does."""
        self.commands.put((verb, name, owner))
        assert self.done.get(timeout=30) == verb

    def close(self) -> None:
        self.commands.put(None)
        self.process.join(30)


def test_reads_its_writes_across_processes(tmp_path: Path) -> None:
    reader = TableReader(tmp_path)
    assert reader.lookup("a") is None  # before any table exists
    remote = RemoteWriter(tmp_path)
    try:
        for round_ in range(20):
            remote.do("put", "a", f"owner-{round_}")
            assert _owner(reader, "a") == f"owner-{round_}"
            assert _owner(reader, "a") == f"owner-{round_}"  # the cached answer
            assert reader.lookup("b") is None
        remote.do("delete", "a")
        assert reader.lookup("a") is None
        remote.do("put", "b", "x")
        assert _owner(reader, "b") == "x"  # a cached miss is invalidated too
    finally:
        remote.close()


def test_a_wipe_in_another_process_sends_readers_to_the_new_table(tmp_path: Path) -> None:
    reader = TableReader(tmp_path)
    remote = RemoteWriter(tmp_path)
    try:
        remote.do("put", "a", "old")
        assert _owner(reader, "a") == "old"
        remote.do("wipe")
        assert reader.lookup("a") is None
        remote.do("put", "a", "new")
        assert _owner(reader, "a") == "new"
    finally:
        remote.close()


# ---- the rules, one at a time (same process, files poked directly) -----------------------


def test_a_version_published_ahead_of_its_commit_is_not_trusted(tmp_path: Path) -> None:
    """A file read that runs ahead of the table (a torn read) must not label the cache."""
    writer = TableWriter(tmp_path)
    writer.write(entries=[_entry("a", "first")])
    version = _published(tmp_path)
    _VersionFile(table_path(tmp_path)).publish(version + 1)  # ahead of the table
    reader = TableReader(tmp_path)
    assert _owner(reader, "a") == "first"
    writer.write(entries=[_entry("a", "second")])  # now version + 1 for real
    assert _published(tmp_path) == version + 1
    assert _owner(reader, "a") == "second"


def test_a_restarted_writer_republishes_what_its_predecessor_committed(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path)
    writer.write(entries=[_entry("a", "first")])
    reader = TableReader(tmp_path)
    assert _owner(reader, "a") == "first"
    # The writer dies between commit and publish: the file still says the old version.
    with _environment(table_path(tmp_path)).begin(write=True) as txn:
        txn.put(_name_key("server", "a"), pickle.dumps(_entry("a", "committed")))
        TableWriter._bump(txn)
    assert _owner(reader, "a") == "first"  # unpublished: the cache may still answer
    TableWriter(tmp_path)  # the restarted Registry
    assert _owner(reader, "a") == "committed"


def test_set_registry_invalidates_readers(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path)
    before = _published(tmp_path)
    writer.set_registry("registry-address")
    assert _published(tmp_path) == before + 1
    assert TableReader(tmp_path).registry() == "registry-address"


def test_the_cache_limit_empties_the_cache_not_the_answers(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path)
    writer.write(entries=[_entry(f"n{i}", f"o{i}") for i in range(10)])
    reader = TableReader(tmp_path, cache_limit=3)
    for _ in range(3):
        assert [_owner(reader, f"n{i}") for i in range(10)] == [f"o{i}" for i in range(10)]
    assert sum(len(names) for names in reader._cache.values()) <= 3


def test_wipe_in_the_same_process_reopens(tmp_path: Path) -> None:
    TableWriter(tmp_path).write(entries=[_entry("a", "old")])
    reader = TableReader(tmp_path)
    assert _owner(reader, "a") == "old"
    wipe(tmp_path)
    assert reader.lookup("a") is None
    TableWriter(tmp_path).write(entries=[_entry("a", "new")])
    assert _owner(reader, "a") == "new"


def test_table_values_store_tcp_addresses_compactly() -> None:
    from thespian.actors import ActorAddress
    from thespian.system.transport.IPBase import TCPv4ActorAddress

    from thespian_cluster.core.table import Entry
    from thespian_cluster.node_table import _decode, _encode

    address = ActorAddress(TCPv4ActorAddress("127.0.0.1", 40123, external=True))
    entry = Entry("weather", "server", address, "node-a", {"v": 1}, 1.0)
    raw = _encode(entry)
    assert len(raw) < 150  # the full pickle of the address alone is ~260 bytes
    decoded = _decode(raw)
    assert decoded == entry and decoded.address == address
    other = ActorAddress("not a TCP address")
    assert _decode(_encode(Entry("x", "server", other, "n"))).address.addressDetails == (
        "not a TCP address"
    )


def test_an_unmirrored_global_scope_raises_until_a_feeding_backend_declares_itself(
    tmp_path: Path,
) -> None:
    """A cached global entry from before must not survive the declaration: the
    version bump empties every reader's cache, and the mirror itself is emptied."""
    mirror = GlobalMirror(tmp_path)
    mirror.replace([_entry("g", "owner")], [])
    reader = TableReader(tmp_path)
    assert _owner_global(reader, "g") == "owner"  # now cached
    mirror.declare(False, "my.store:Backend")
    with pytest.raises(NotMirrored, match=r"my\.store:Backend"):
        reader.lookup("g", scope="global")
    with pytest.raises(NotMirrored):
        reader.global_records()
    assert reader.lookup("g") is None  # the local scope is not concerned
    mirror.declare(True, "global")
    assert reader.lookup("g", scope="global") is None  # emptied by the first declaration
    assert reader.global_records() == ([], [])


def _owner_global(reader: TableReader, name: str) -> Any:
    entry = reader.lookup(name, scope="global")
    return None if entry is None else entry.address
