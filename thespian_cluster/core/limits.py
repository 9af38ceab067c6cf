"""Size limits of the protocol and the node table: one source of truth.

The message models (:mod:`thespian_cluster.messages`), the Registry and the node
table (:mod:`thespian_cluster.node_table`) all import their limits from here, so
they cannot disagree. The disagreement this prevents: a name that the message
models accept but the node table cannot store (LMDB refuses keys longer than
:data:`MAX_TABLE_KEY_BYTES` with ``MDB_BAD_VALSIZE``) used to be kept in the
Registry's memory and missing from the table, so ``Whereis`` and ``lookup()``
disagreed.

The table's key encodings live here for the same reason: a validator that asks
"does this name fit?" must compute exactly the key the table will write. The
module is pure (no Thespian, no LMDB); addresses are duck-typed through
:func:`~thespian_cluster.core.addresses.address_key`.
"""

from __future__ import annotations

import pickle
from typing import Any, Final

from thespian_cluster.core.addresses import address_key

#: Characters in one name (a string name, or each part of a tuple name) and in a group.
MAX_NAME_LENGTH: Final = 255
#: Parts of a tuple name.
MAX_NAME_PARTS: Final = 16
#: Bytes of a registration's or membership's ``meta``, pickled.
MAX_META_BYTES: Final = 64 * 1024
#: Characters of a ``request_id``.
MAX_REQUEST_ID_LENGTH: Final = 128
#: Names one RegisterMany / UnregisterMany may carry.
MAX_BATCH: Final = 10_000
#: LMDB's maximum key size as py-lmdb is built (its ``max_key_size()``, 511 by default).
#: The node table checks at open that its environment takes keys this long.
MAX_TABLE_KEY_BYTES: Final = 511

NAME_PREFIX: Final = b"n:"
MEMBER_PREFIX: Final = b"g:"
_KEY_PICKLE: Final = pickle.HIGHEST_PROTOCOL


def name_key(kind: str, name: Any) -> bytes:
    """The node table's key for the registration ``(kind, name)``."""
    return NAME_PREFIX + name_key_body(kind, name)


def name_key_body(kind: str, name: Any) -> bytes:
    """:func:`name_key` without its prefix (the global mirror puts its own)."""
    return pickle.dumps((kind, name), protocol=_KEY_PICKLE)


def member_key(group: str, address: Any) -> bytes:
    """The node table's key for ``address``'s membership of ``group``."""
    return MEMBER_PREFIX + pickle.dumps((group, address_key(address)), protocol=_KEY_PICKLE)


# Bytes a key adds around its strings: prefix, pickle framing, the tuple, an (ip, port)
# address key of up to 64 characters of ip. Generous on purpose: it only decides when
# the exact check (pickling the key) can be skipped.
_KEY_OVERHEAD: Final = 160


def surely_fits(*texts: Any) -> bool:
    """True when a key made of these strings certainly fits, without building it.

    A character is at most 4 bytes of UTF-8, so short ASCII names (nearly all of them)
    skip the pickling :func:`key_problem` needs: ~0.5 µs on every request.
    """
    size = _KEY_OVERHEAD
    for text in texts:
        if type(text) is not str:
            return False
        size += 4 * len(text)
    return size <= MAX_TABLE_KEY_BYTES


def key_problem(key: bytes, what: str) -> str | None:
    """Why ``key`` cannot be stored in the node table, or None if it can.

    ``what`` names the thing for the message (``"name"``, ``"group"``).
    """
    if len(key) > MAX_TABLE_KEY_BYTES:
        return (
            f"{what} too long for the node table: its key is {len(key)} bytes, "
            f"the limit is {MAX_TABLE_KEY_BYTES} (multi-byte characters count by their "
            "UTF-8 size)"
        )
    return None
