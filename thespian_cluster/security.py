"""Wire security: the cluster cookie authenticates every packet before it is unpickled.

Thespian's TCP transport frames each message as ``b"<len>>" + pickle.dumps(...)`` and
calls ``pickle.loads`` on whatever arrives at any of its ports -- the admin's and every
actor's. Unpickling runs code chosen by the sender, so anyone who can open a TCP
connection to a node could run code in it. This module closes that hole with two layers:

1. **Authentication.** With a cookie, every packet is ``MAGIC + tag + pickle``, where
   ``tag`` is a keyed BLAKE2b-128 MAC of the pickle under a key derived from the cookie.
   The tag is checked with :func:`hmac.compare_digest` *before* a single byte is
   unpickled. A packet without a valid tag is dropped, counted and logged (at most one
   line per peer host per :data:`LOG_INTERVAL` seconds); the cookie itself is never
   logged, shown or put in an exception.
2. **Restriction.** An authenticated pickle is still only decoded by an unpickler whose
   ``find_class`` admits an allow-list: classes of Thespian, of this package, of
   pydantic, of the modules you declare in ``message_modules``, and a short table of
   inert standard types (datetime, uuid, Decimal, paths, ...). Functions such as
   ``os.system`` or ``builtins.eval`` are never admitted, whatever their module.

Thespian's hook is a module global, ``thespian.system.transport.TCPTransport.serializer``
(an object with ``dumps``/``loads``). :func:`install_wire_security` replaces it in the
calling process; actor processes are *forked* from there and inherit it, so call it
before ``ActorSystem(...)`` starts (node start, client scripts, the CLI).

How a refused packet looks to Thespian: ``loads`` raises :class:`WireRejected`; the
receiving transport answers the untagged control packet ``'ACK+DATAERR'`` and closes the
connection. The sender marks the send as ``BadPacket`` and does not retry, so a
wrong-cookie peer neither hangs nor hammers the node. For that to work both ways the
two control packets (``'ACK'``, ``'ACK+DATAERR'``) stay untagged and are recognised by
their exact bytes -- never unpickled.

Without a cookie (``install_wire_security(None)``) Thespian's plain ``pickle`` is put
back: the node is as open as stock Thespian. See docs/security.md for why an allow-list
alone is not offered as "security".
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import importlib
import io
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from loguru import logger
from pydantic import SecretStr

if TYPE_CHECKING:
    from thespian_cluster.settings import ClusterSettings

__all__ = [
    "COOKIE_ENV",
    "LOG_INTERVAL",
    "WireRejected",
    "WireSerializer",
    "install_from_settings",
    "install_wire_security",
    "resolve_cookie",
    "wire_security_status",
]

#: Environment variable a client (script, CLI) may take its cookie from.
COOKIE_ENV: Final = "THESPIAN_CLUSTER_COOKIE"
#: At most one log line per peer host (and per refused class) in this many seconds.
LOG_INTERVAL: Final = 10.0

#: Wire-format marker and version; lets a log line tell "wrong cookie" from "no cookie".
MAGIC: Final = b"TCk1"
#: 128-bit tags: forging one is a 2**-128 guess per attempt.
TAG_BYTES: Final = 16
_HEADER: Final = len(MAGIC) + TAG_BYTES
#: BLAKE2b "personalisation" for key derivation: a key for this purpose only.
_KDF_PERSON: Final = b"thespian-clustr"

# Thespian's transport control packets: ``pickle.dumps('ACK')`` etc. are built once at
# import (streamBuffer.ackMsg) without our serializer, so they arrive untagged. They are
# matched by their exact bytes for every protocol another Python might have used.
_CONTROL_STRINGS: Final = ("ACK", "ACK+DATAERR")
_CONTROL_PACKETS: Final[dict[bytes, str]] = {
    pickle.dumps(text, protocol=proto): text
    for text in _CONTROL_STRINGS
    for proto in range(pickle.HIGHEST_PROTOCOL + 1)
}
_CONTROL_MAX: Final = max(len(packet) for packet in _CONTROL_PACKETS)

# Modules whose classes are admitted by prefix (the module itself and its submodules).
_TRUSTED_PACKAGES: Final = ("thespian", "thespian_cluster", "pydantic", "pydantic_core")
# Parts of Thespian that are machinery, not data: never needed on the wire.
_DENIED_MODULES: Final = (
    "thespian.shell",
    "thespian.director",
    "thespian.diagnose",
    "thespian.local_importlib",
    "thespian.test",
    "thespian.system.sourceLoader",
    "thespian.system.dictconfig",
    "thespian.system.admin",
    "thespian.system.actorManager",
    "thespian.system.multiprocCommon",
    "thespian.system.multiprocTCPBase",
    "thespian.system.multiprocUDPBase",
    "thespian.system.multiprocQueueBase",
    "thespian.system.simpleSystemBase",
    "thespian.system.systemAdmin",
    "thespian.system.systemBase",
)
# Classes whose constructor does I/O or starts processes; refused with their subclasses.
_DENIED_BASES: Final = (
    ("thespian.actors", "ActorSystem"),
    ("thespian.system.transport.asyncTransportBase", "asyncTransportBase"),
)
# Inert standard types: building one runs no code beyond filling in a value.
_STDLIB_ALLOWED: Final[frozenset[tuple[str, str]]] = frozenset(
    # Plain value types; pickle names them e.g. as a defaultdict's factory.
    [
        ("builtins", n)
        for n in [
            *("bool", "int", "float", "complex", "str", "bytes", "bytearray"),
            *("list", "tuple", "dict", "set", "frozenset", "slice", "range"),
        ]
    ]
    + [("collections", n) for n in ("OrderedDict", "deque", "defaultdict", "Counter")]
    + [("datetime", n) for n in ("date", "time", "datetime", "timedelta", "timezone")]
    + [("uuid", "UUID"), ("uuid", "SafeUUID"), ("decimal", "Decimal")]
    + [("fractions", "Fraction"), ("types", "SimpleNamespace"), ("logging", "LogRecord")]
    # Thespian's IP addresses carry these enums (an enum is looked up, not constructed).
    + [("socket", "AddressFamily"), ("socket", "SocketKind")]
    + [
        ("pathlib", n)
        for n in ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath")
    ]
    + [
        ("ipaddress", f"IPv{v}{kind}")
        for v in (4, 6)
        for kind in ("Address", "Network", "Interface")
    ]
)


class WireRejected(pickle.UnpicklingError):
    """A packet was refused: bad or missing tag, or a class outside the allow-list.

    Raised inside Thespian's receive path, which answers ``ACK+DATAERR`` and closes the
    connection. The message names the reason and the peer, never the cookie.
    """


# ---------------------------------------------------------------- rate-limited logging


class _RateLimitedLog:
    """One log line per key per ``interval``; the next line says how many were skipped.

    Keys are peer hosts (not host:port: every connection has a fresh source port),
    so a flood from one host costs one line per interval. The table is bounded so a
    scan from many hosts cannot grow it without limit.
    """

    MAX_KEYS = 4096

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}  # key -> (last line time, suppressed)

    def __call__(self, key: str, emit: Callable[[int], None]) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (-self.interval - 1.0, 0))
            if now - last < self.interval:
                self._last[key] = (last, suppressed + 1)
                return
            if len(self._last) >= self.MAX_KEYS:
                self._last.clear()  # crude, bounded, and only hit under a scan
            self._last[key] = (now, 0)
        emit(suppressed)


_drop_log = _RateLimitedLog(LOG_INTERVAL)
_counters: dict[str, int] = {"dropped": 0, "refused_classes": 0}

# The connection being decoded, set by the transport wrappers below, so that a refusal
# deep inside ``loads`` (which only sees bytes) can name the peer.
_PEER: contextvars.ContextVar[Any] = contextvars.ContextVar("thespian_cluster_peer")


def _peer() -> tuple[str, str]:
    """(host for rate limiting, text for the log) of the connection being decoded."""
    source = _PEER.get(None)
    if source is None:
        return "unknown", "unknown peer"
    sock = getattr(source, "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
        return str(host), f"{host}:{port}"
    except Exception:  # closed socket, or not a socket: fall back to the Thespian address
        pass
    address = getattr(source, "fromAddress", None) or getattr(source, "targetAddr", None)
    details = getattr(address, "addressDetails", None)
    sockname = getattr(details, "sockname", None)
    if isinstance(sockname, tuple) and sockname:
        return str(sockname[0]), f"{sockname[0]}:{sockname[1]}"
    return "unknown", "unknown peer"


def _reject(reason: str, hint: str) -> WireRejected:
    """Count and (rate-limited) log a dropped packet; the exception for Thespian."""
    _counters["dropped"] += 1
    host, peer = _peer()

    def emit(suppressed: int) -> None:
        more = f" ({suppressed} more from this host since the last line)" if suppressed else ""
        logger.warning("wire security: dropped packet from {}: {}; {}{}", peer, reason, hint, more)

    _drop_log(host, emit)
    return WireRejected(f"packet from {peer} dropped: {reason}")


# ---------------------------------------------------------------- allow-list


_NOT_ALLOWED: Final = "module not on the allow-list"


def _printable(text: str, limit: int = 120) -> str:
    """A peer-supplied name made safe for one log line (no control characters, bounded)."""
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


class _AllowList:
    """Decides, once per (module, name), whether ``find_class`` may return a global.

    The rule is strict on purpose: the object must be a *class* (functions are how
    pickle exploits run code), defined in the module it is looked up in (so a class
    that an allowed module merely imports -- ``socket.socket`` in a Thespian module --
    does not slip in), and not machinery that acts when constructed.
    """

    MAX_CACHED = 10_000  # (module, name) pairs come from peers: keep the memory bounded

    def __init__(self, message_modules: Sequence[str]) -> None:
        self.message_modules = tuple(message_modules)
        self._prefixes = _TRUSTED_PACKAGES + self.message_modules
        self.cache: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._denied_bases: tuple[type, ...] | None = None

    def find_class(self, module: str, name: str) -> Any:
        """The global ``module.name`` if allowed; otherwise log and raise WireRejected."""
        try:
            found = self.cache[(module, name)]
        except KeyError:
            found = self._decide(module, name)
            if len(self.cache) < self.MAX_CACHED:
                with self._lock:
                    self.cache[(module, name)] = found
        if isinstance(found, str):  # a cached refusal reason
            raise self._refuse(module, name, found)
        return found

    def _decide(self, module: str, name: str) -> Any:
        stdlib = (module, name) in _STDLIB_ALLOWED
        exception = module == "builtins"  # builtin exception classes, checked below
        if not (stdlib or exception or _under(module, self._prefixes)):
            return _NOT_ALLOWED
        if _under(module, _DENIED_MODULES):
            return "Thespian machinery, not a message type"
        if "__main__" in module.split("."):  # importing a package's __main__ runs it
            return "a __main__ module"
        try:
            target: Any = importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
        except Exception:
            return "no such class"
        if not isinstance(target, type):
            return "not a class (only classes may be unpickled)"
        if (target.__module__, target.__qualname__) != (module, name):
            return "re-exported from another module"
        if exception and not stdlib and not issubclass(target, BaseException):
            return "builtin that is not an exception class"
        if issubclass(target, self._bases()):
            return "class that acts when constructed"
        return target

    def _bases(self) -> tuple[type, ...]:
        if self._denied_bases is None:
            bases = []
            for module, name in _DENIED_BASES:
                try:
                    bases.append(getattr(importlib.import_module(module), name))
                except Exception:  # not importable here: nothing of it can arrive either
                    continue
            self._denied_bases = tuple(bases)
        return self._denied_bases

    def _refuse(self, module: str, name: str, reason: str) -> WireRejected:
        _counters["refused_classes"] += 1
        host, peer = _peer()
        what = _printable(f"{module}.{name}")
        hint = (
            "; if it is one of your message types, list its module in message_modules"
            if reason == _NOT_ALLOWED
            else ""
        )

        def emit(suppressed: int) -> None:
            more = f" ({suppressed} more since the last line)" if suppressed else ""
            logger.warning(
                "wire security: refused to unpickle {} from {}: {}{}{}",
                what,
                peer,
                reason,
                hint,
                more,
            )

        _drop_log(f"{host} {what}", emit)
        return WireRejected(f"refused to unpickle {what} from {peer}: {reason}")


def _restricted_unpickler(allow: _AllowList) -> type[pickle.Unpickler]:
    """The C unpickler with ``find_class`` consulting ``allow`` for every global it meets.

    A class per allow-list, with the cache lookup inlined, keeps the per-packet cost to
    the C ``Unpickler`` plus one dict lookup per global (no Python ``__init__``).
    """
    cache = allow.cache
    decide = allow.find_class

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            found = cache.get((module, name))
            if found is None or isinstance(found, str):  # undecided, or a refusal to log
                return decide(module, name)
            return found

    return RestrictedUnpickler


# ---------------------------------------------------------------- the serializer


def _derive_key(cookie: str) -> bytes:
    """A 32-byte MAC key for the wire, derived so that the cookie of any length fits
    BLAKE2b's 64-byte key limit and the key serves this purpose only."""
    return hashlib.blake2b(cookie.encode(), digest_size=32, person=_KDF_PERSON).digest()


class WireSerializer:
    """``dumps``/``loads`` in Thespian's serializer shape, sealing packets with a MAC.

    ``dumps(obj)`` → ``MAGIC + blake2b_mac(pickle) + pickle``; ``loads`` checks the tag
    before unpickling with the allow-list, and lets Thespian's untagged ``'ACK'`` /
    ``'ACK+DATAERR'`` through by their exact bytes.

    Keyed BLAKE2b was measured against HMAC-SHA256 (bench/bench_wire_security.py): at
    Thespian's message sizes (0.1-2 KB) it costs 0.4-2.5 µs versus 1.5-2.9 µs; both are
    sound MACs. The keyed state is built once and copied per packet, which skips
    re-processing the key block.

    The raw key is not kept: only the keyed hash state, whose repr shows nothing.
    """

    def __init__(self, cookie: str, message_modules: Sequence[str] = ()) -> None:
        if not cookie:
            raise ValueError("the cluster cookie must not be empty")
        self._mac = hashlib.blake2b(key=_derive_key(cookie), digest_size=TAG_BYTES)
        self._allow = _AllowList(_checked_modules(message_modules))
        self._unpickler = _restricted_unpickler(self._allow)
        self._protocol = pickle.DEFAULT_PROTOCOL

    def __repr__(self) -> str:  # never the cookie or the key
        return f"<WireSerializer blake2b-{TAG_BYTES * 8} modules={self._allow.message_modules}>"

    @property
    def message_modules(self) -> tuple[str, ...]:
        return self._allow.message_modules

    def seal(self, body: bytes) -> bytes:
        """``body`` (already pickled) with the magic and its tag in front."""
        mac = self._mac.copy()
        mac.update(body)
        return MAGIC + mac.digest() + body

    def dumps(self, obj: Any) -> bytes:
        return self.seal(pickle.dumps(obj, protocol=self._protocol))

    def loads(self, data: bytes) -> Any:
        if data[: len(MAGIC)] == MAGIC and len(data) > _HEADER:
            body = memoryview(data)[_HEADER:]
            mac = self._mac.copy()
            mac.update(body)
            if hmac.compare_digest(mac.digest(), data[len(MAGIC) : _HEADER]):
                return self._unpickler(io.BytesIO(body)).load()
            raise _reject("bad tag", "the peer uses a different cluster cookie")
        if len(data) <= _CONTROL_MAX:
            control = _CONTROL_PACKETS.get(bytes(data))
            if control is not None:
                return control
        if data[:1] == b"\x80":  # a bare pickle: protocol 2+ starts with PROTO (0x80)
            raise _reject("untagged pickle", "the peer has no cluster cookie, or is hostile")
        raise _reject("malformed packet", "not a Thespian cluster peer")


def _checked_modules(modules: Sequence[str]) -> tuple[str, ...]:
    """Declared message modules, refusing ones that would re-open the hole."""
    if isinstance(modules, str):
        modules = [modules]
    checked = []
    for module in modules:
        parts = module.split(".")
        if not module or not all(part.isidentifier() for part in parts):
            raise ValueError(f"message_modules: {module!r} is not a dotted module name")
        if parts[0] in sys.stdlib_module_names or parts[0] == "__main__":
            # A stdlib package admits classes like subprocess.Popen; __main__ differs per
            # process. Put message types in a module of your own.
            raise ValueError(f"message_modules: {module!r} may not be allowed on the wire")
        checked.append(module)
    return tuple(checked)


# ---------------------------------------------------------------- installing


def _transport_module() -> Any:
    # The module, not the class of the same name that the package namespace may shadow.
    return importlib.import_module("thespian.system.transport.TCPTransport")


_installed: WireSerializer | None = None
_install_lock = threading.Lock()
_PATCH_MARK: Final = "_thespian_cluster_wire_patch"


def _patch_transport(tcp: Any) -> None:
    """Wrap the two transport methods that decode packets, once per process.

    Both only record *which connection* is being decoded (so a refusal can name the
    peer); the second also turns a refusal of an answer into a failed send, where
    Thespian would otherwise abandon the send without calling its completion callback.
    """
    cls = tcp.TCPTransport
    if getattr(cls, _PATCH_MARK, False):
        return
    from thespian.system.transport import SendStatus

    added = cls._addedDataToIncoming
    check_ack = cls._check_XMIT_4_done

    def _addedDataToIncoming(self: Any, inc: Any, *args: Any, **kwargs: Any) -> Any:
        token = _PEER.set(inc)
        try:
            return added(self, inc, *args, **kwargs)
        finally:
            _PEER.reset(token)

    def _check_XMIT_4_done(self: Any, intent: Any, rcv: Any) -> Any:
        token = _PEER.set(intent)
        try:
            return check_ack(self, intent, rcv)
        except WireRejected:
            intent.result = SendStatus.BadPacket
            intent.stage = cls._XMITStepFinishCleanup
            return self._nextTransmitStep(intent)
        finally:
            _PEER.reset(token)

    cls._addedDataToIncoming = _addedDataToIncoming
    cls._check_XMIT_4_done = _check_XMIT_4_done
    setattr(cls, _PATCH_MARK, (added, check_ack))


def install_wire_security(
    cookie: str | SecretStr | None, message_modules: Sequence[str] = ()
) -> None:
    """Make this process (and the actor processes it forks later) speak the sealed wire.

    ``cookie``: the cluster cookie (a ``SecretStr`` is accepted as is), or ``None`` to put
    Thespian's plain ``pickle`` back. ``message_modules``: dotted names of modules whose
    classes (and their submodules' classes) may be unpickled, in addition to Thespian's,
    this package's and pydantic's. Idempotent; calling again with another cookie replaces
    it for every packet built or buffered after the call.

    Call it before ``ActorSystem(...)`` in the process that starts the node, in every
    client process (scripts, the CLI), and never change it while a system runs: peers
    with different cookies cannot talk. Raises ``ValueError`` for an empty cookie or an
    unusable message module (the message never contains the cookie).
    """
    global _installed
    if isinstance(cookie, SecretStr):
        cookie = cookie.get_secret_value()
    tcp = _transport_module()
    with _install_lock:
        if cookie is None:
            # The transport wrappers, if installed earlier, stay: without WireRejected
            # they only note the peer, so behaviour is stock Thespian's.
            tcp.serializer = pickle
            _installed = None
            return
        serializer = WireSerializer(cookie, message_modules)
        _patch_transport(tcp)
        tcp.serializer = serializer
        _installed = serializer
    # Silent here: this runs in every client too, which must not write to stderr;
    # a node logs its state once it is up (start_node, wire_security_status()).


def resolve_cookie(configured: str | SecretStr | None) -> str | None:
    """The cookie from settings if set, else from ``THESPIAN_CLUSTER_COOKIE``, else None."""
    if isinstance(configured, SecretStr):
        configured = configured.get_secret_value()
    return configured or os.environ.get(COOKIE_ENV) or None


def install_from_settings(settings: ClusterSettings) -> None:
    """:func:`install_wire_security` with a node's or client's ``ClusterSettings``.

    The cookie comes from ``settings.cluster_cookie`` or, failing that, the
    ``THESPIAN_CLUSTER_COOKIE`` environment variable (handy for scripts and the CLI);
    an environment cookie obeys the same 16-byte minimum unless
    ``settings.allow_short_cookie``.
    """
    from thespian_cluster.settings import MIN_COOKIE_BYTES, SettingsError

    cookie = resolve_cookie(settings.cluster_cookie)
    if (
        cookie is not None
        and settings.cluster_cookie is None
        and len(cookie.encode()) < MIN_COOKIE_BYTES
        and not settings.allow_short_cookie
    ):
        raise SettingsError(
            f"{COOKIE_ENV} must be at least {MIN_COOKIE_BYTES} bytes "
            "(set allow_short_cookie = true for local development)"
        )
    install_wire_security(cookie, settings.message_modules)


def wire_codec() -> Any:
    """What this process's Thespian transport pickles packets with: ``pickle`` itself,
    or the sealed :class:`WireSerializer` once :func:`install_wire_security` ran. Other
    channels between nodes (peer links) use it so that every packet is checked alike."""
    return _transport_module().serializer


def wire_security_status() -> dict[str, Any]:
    """What this process enforces, for status output: never the cookie or its key.

    Counters are per process (the admin's, an actor's or a client's own).
    """
    serializer = _installed
    return {
        "enabled": serializer is not None,
        "mac": f"blake2b-{TAG_BYTES * 8}" if serializer else None,
        "message_modules": list(serializer.message_modules) if serializer else [],
        "dropped_packets": _counters["dropped"],
        "refused_classes": _counters["refused_classes"],
    }
