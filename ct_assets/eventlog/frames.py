"""The on-disk framing of the event log, shared by segments and the journal.

A frame is one checksummed record:

    magic (4 bytes) | payload length u32 | crc32(payload) u32 | #predictions u32 | #feedback u32
    payload

Segment frames (magic ``CTF1``) hold one JSON event per line of the payload; journal
frames (magic ``CTJ1``) hold one commit record. A frame is written with one ``write``;
after a crash a file ends in complete frames followed, at worst, by a short write (the
beginning of a frame). A scanner stops at the first frame whose length or checksum
does not hold and tells a torn tail (nothing valid after it) from damage (a valid
frame follows it). The journal is stricter: a complete record that fails its checksum
is damage even at the tail; only an incomplete one is a torn tail.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

SEGMENT_MAGIC = b"CTF1"
JOURNAL_MAGIC = b"CTJ1"
MAGIC = SEGMENT_MAGIC
HEADER = struct.Struct("<4sIIII")
SEGMENT_SUFFIX = ".ctlog"


@dataclass(frozen=True)
class Frame:
    offset: int
    n_prediction: int
    n_feedback: int
    payload: bytes
    #: crc32 of ``payload`` as its header records it (checked when the frame was read)
    crc: int

    @property
    def end(self) -> int:
        return self.offset + HEADER.size + len(self.payload)

    @property
    def length(self) -> int:
        return HEADER.size + len(self.payload)

    def lines(self) -> list[bytes]:
        """The payload's lines: split on ``\n`` only (a ``\r`` may be JSON whitespace)."""
        return self.payload.split(b"\n")[:-1] if self.payload else []


@dataclass(frozen=True)
class ScanResult:
    frames: list[Frame]
    valid_end: int
    file_size: int
    # a frame failed its checksum although a valid frame follows it: damage, not a torn write
    corrupt: bool = False

    @property
    def torn(self) -> bool:
        """Bytes after the last valid frame: a write that never completed (or damage)."""
        return self.valid_end < self.file_size


class CorruptLogError(RuntimeError):
    """A frame that was once complete no longer checks out: storage was damaged."""


def encode_frame(
    lines: list[bytes], n_prediction: int, n_feedback: int, magic: bytes = SEGMENT_MAGIC
) -> bytes:
    payload = b"\n".join(lines) + b"\n" if lines else b""
    return encode_record(payload, n_prediction, n_feedback, magic)


def encode_record(payload: bytes, n_prediction: int, n_feedback: int, magic: bytes) -> bytes:
    header = HEADER.pack(magic, len(payload), zlib.crc32(payload), n_prediction, n_feedback)
    return header + payload


def scan_bytes(
    data: bytes, start: int = 0, magic: bytes = SEGMENT_MAGIC, *, strict_tail: bool = False
) -> ScanResult:
    """Every valid frame in ``data`` (which begins at file offset ``start``).

    An invalid frame followed by a valid one is damage (``corrupt``). With
    ``strict_tail`` (the journal, written one whole record per ``write``) an invalid
    last frame is damage too unless it is incomplete (see :func:`is_short_write`):
    a complete record whose checksum fails was acknowledged once and is now damaged.
    """
    frames: list[Frame] = []
    pos = 0
    corrupt = False
    while pos + HEADER.size <= len(data):
        frame = frame_at(data, pos, magic)
        if frame is None:
            corrupt = _valid_frame_after(data, pos, magic)
            break
        frames.append(
            Frame(start + pos, frame.n_prediction, frame.n_feedback, frame.payload, frame.crc)
        )
        pos = frame.end
    if strict_tail and pos < len(data) and not is_short_write(data[pos:], magic):
        corrupt = True
    return ScanResult(frames, start + pos, start + len(data), corrupt)


def is_short_write(tail: bytes, magic: bytes) -> bool:
    """Whether ``tail`` (the bytes after the last valid frame) is the beginning of a
    frame whose write never completed: fewer bytes than a header, beginning like the
    magic; or a header with the right magic that claims more bytes than are there."""
    if len(tail) < HEADER.size:
        return magic.startswith(tail[: len(magic)])
    found, length, _crc, _n_pred, _n_fb = HEADER.unpack_from(tail)
    return bool(found == magic and HEADER.size + int(length) > len(tail))


def scan_segment(path: Path, start: int = 0, magic: bytes = SEGMENT_MAGIC) -> ScanResult:
    """Read every valid frame of a file from ``start`` on; stop at the first torn or corrupt one."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read()
    return scan_bytes(data, start, magic)


def _valid_frame_after(data: bytes, pos: int, magic: bytes) -> bool:
    """Whether a whole, checksummed frame starts anywhere after ``pos``: then the
    invalid frame at ``pos`` is damage to acknowledged data, not a torn last write."""
    found = data.find(magic, pos + 1)
    while found != -1:
        if frame_at(data, found, magic) is not None:
            return True
        found = data.find(magic, found + 1)
    return False


def frame_at(data: bytes, pos: int, magic: bytes = SEGMENT_MAGIC) -> Frame | None:
    """The complete, checksummed frame at ``pos`` of ``data``, or None."""
    if pos + HEADER.size > len(data):
        return None
    found, length, crc, n_pred, n_fb = HEADER.unpack_from(data, pos)
    body_end = pos + HEADER.size + length
    if found != magic or body_end > len(data):
        return None
    payload = data[pos + HEADER.size : body_end]
    if zlib.crc32(payload) != crc:
        return None
    return Frame(pos, n_pred, n_fb, payload, crc)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
