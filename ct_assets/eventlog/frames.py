"""The on-disk framing of the event log.

A segment file is a sequence of frames. One frame holds one whole batch:

    magic "CTF1" | payload length u32 | crc32(payload) u32 | #predictions u32 | #feedback u32
    payload: one JSON event per line

A frame is written with one ``write`` and made durable with ``fsync`` before the
batch is acknowledged, so after a crash the file ends in complete frames followed,
at worst, by a torn one. A reader stops at the first frame whose length or
checksum does not hold; the writer cuts such a tail off before appending.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"CTF1"
HEADER = struct.Struct("<4sIIII")
SEGMENT_SUFFIX = ".ctlog"


@dataclass(frozen=True)
class Frame:
    offset: int
    n_prediction: int
    n_feedback: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + HEADER.size + len(self.payload)

    def lines(self) -> list[bytes]:
        return self.payload.splitlines()


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


def encode_frame(lines: list[bytes], n_prediction: int, n_feedback: int) -> bytes:
    payload = b"".join(line + b"\n" for line in lines)
    header = HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), n_prediction, n_feedback)
    return header + payload


def scan_segment(path: Path, start: int = 0) -> ScanResult:
    """Read every valid frame from ``start`` on; stop at the first torn or corrupt one."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read()
    frames: list[Frame] = []
    pos = 0
    corrupt = False
    while pos + HEADER.size <= len(data):
        frame = _frame_at(data, pos)
        if frame is None:
            corrupt = _valid_frame_after(data, pos)
            break
        frames.append(Frame(start + pos, frame.n_prediction, frame.n_feedback, frame.payload))
        pos = frame.end
    return ScanResult(frames, start + pos, start + len(data), corrupt)


def _valid_frame_after(data: bytes, pos: int) -> bool:
    """Whether a whole, checksummed frame starts anywhere after ``pos``: then the
    invalid frame at ``pos`` is damage to acknowledged data, not a torn last write."""
    found = data.find(MAGIC, pos + 1)
    while found != -1:
        if _frame_at(data, found) is not None:
            return True
        found = data.find(MAGIC, found + 1)
    return False


def _frame_at(data: bytes, pos: int) -> Frame | None:
    """The complete, checksummed frame at ``pos`` of ``data``, or None."""
    if pos + HEADER.size > len(data):
        return None
    magic, length, crc, n_pred, n_fb = HEADER.unpack_from(data, pos)
    body_end = pos + HEADER.size + length
    if magic != MAGIC or body_end > len(data):
        return None
    payload = data[pos + HEADER.size : body_end]
    if zlib.crc32(payload) != crc:
        return None
    return Frame(pos, n_pred, n_fb, payload)


def segment_paths(root: Path) -> list[Path]:
    """Segments in append order (their names carry a zero-padded sequence number)."""
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.suffix == SEGMENT_SUFFIX)


def segment_name(sequence: int) -> str:
    return f"seg-{sequence:08d}{SEGMENT_SUFFIX}"


def iter_frames(root: Path) -> Iterator[Frame]:
    """Every valid frame in append order. Only the newest segment may end in a torn
    write (skipped); damage anywhere else raises :class:`CorruptLogError` rather than
    silently hiding acknowledged events."""
    paths = segment_paths(root)
    for position, path in enumerate(paths):
        scan = scan_segment(path)
        if scan.corrupt or (scan.torn and position != len(paths) - 1):
            raise CorruptLogError(f"{path}: invalid frame at byte {scan.valid_end}")
        yield from scan.frames


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
