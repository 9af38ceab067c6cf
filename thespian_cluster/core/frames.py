"""Length-prefixed frames on a byte stream: what a peer link sends and reads back.

A frame is a 4-byte big-endian length and that many bytes of payload. A
:class:`FrameReader` takes the stream in whatever pieces the socket gives and hands
back whole payloads, in order; a length above ``max_frame`` (a corrupt or hostile
stream) raises :class:`FrameError` before anything is buffered for it, so a reader
never holds more than one frame plus one read of bytes.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct

_LENGTH = struct.Struct(">I")
HEADER = _LENGTH.size
#: Larger than any message a link carries (a delta of a 1,000-name batch is ~0.3 MB).
MAX_FRAME = 64 * 1024 * 1024


class FrameError(ValueError):
    """The stream cannot be read as frames: the link must be closed."""


def frame(payload: bytes) -> bytes:
    """``payload`` with its length in front."""
    return _LENGTH.pack(len(payload)) + payload


class FrameReader:
    """Whole payloads out of a stream fed in arbitrary pieces."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._max = max_frame
        self._buffer = bytearray()

    def resized(self, max_frame: int) -> FrameReader:
        """This reader, with what it holds, reading frames of up to ``max_frame``."""
        reader = FrameReader(max_frame)
        reader._buffer = self._buffer
        return reader

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads that ``data`` completes, oldest first."""
        buffer = self._buffer
        buffer += data
        payloads: list[bytes] = []
        start = 0
        while len(buffer) - start >= HEADER:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if length > self._max:
                raise FrameError(f"a frame of {length} bytes (at most {self._max})")
            end = start + HEADER + length
            if end > len(buffer):
                break
            payloads.append(bytes(buffer[start + HEADER : end]))
            start = end
        if start:
            del buffer[:start]
        return payloads
