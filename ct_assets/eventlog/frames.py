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

    @property
    def torn(self) -> bool:
        """Bytes after the last valid frame: a write that never completed."""
        return self.valid_end < self.file_size


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
    while pos + HEADER.size <= len(data):
        magic, length, crc, n_pred, n_fb = HEADER.unpack_from(data, pos)
        body_start = pos + HEADER.size
        body_end = body_start + length
        if magic != MAGIC or body_end > len(data):
            break
        payload = data[body_start:body_end]
        if zlib.crc32(payload) != crc:
            break
        frames.append(Frame(start + pos, n_pred, n_fb, payload))
        pos = body_end
    return ScanResult(frames, start + pos, start + len(data))


def segment_paths(root: Path) -> list[Path]:
    """Segments in append order (their names carry a zero-padded sequence number)."""
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.suffix == SEGMENT_SUFFIX)


def segment_name(sequence: int) -> str:
    return f"seg-{sequence:08d}{SEGMENT_SUFFIX}"


def iter_frames(root: Path) -> Iterator[Frame]:
    for path in segment_paths(root):
        yield from scan_segment(path).frames


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
