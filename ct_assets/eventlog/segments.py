"""The segments a writer appends to: what it knows of their committed extents, the check of
a segment's committed frames before the first append after them, and the cutting of bytes
a crashed writer left past a segment's committed end (never appending after damage)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from ct_assets.eventlog.archive import segment_bytes
from ct_assets.eventlog.frames import HEADER, SEGMENT_MAGIC, CorruptLogError, Frame, frame_at
from ct_assets.eventlog.journal import Part
from ct_assets.eventlog.layout import all_segments, key_date, key_sequence, segment_file

#: Bytes read at a time when checking a segment's committed frames.
_VERIFY_BUFFER = 1 << 20


class SegmentChecks:
    """A writer's view of the segments under ``root``: each one's committed end, each date's
    current segment, and which segments' committed frames were checked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._extent: dict[str, int] = {}
        self._current: dict[str, str] = {}
        self._verified: set[str] = set()  # segments whose committed frames were checked
        self._swept = False

    def _extended(self, key: str, end: int) -> None:
        self._extent[key] = end
        day = key_date(key)
        current = self._current.get(day)
        if current is None or key_sequence(key) > key_sequence(current):
            self._current[day] = key

    def _sweep(self) -> None:
        """Once per writer: cut the orphan bytes of every segment (the log's lock held)."""
        if not self._swept:
            for key in all_segments(self.root):
                self._trim(key)
            self._swept = True

    def _read_part(self, part: Part) -> Frame:
        path = segment_file(self.root, part.segment)
        data = segment_bytes(self.root, part.segment, part.offset, part.length)
        frame = frame_at(data, 0, SEGMENT_MAGIC)
        if frame is None or frame.length != part.length:
            raise CorruptLogError(
                f"{path}: committed frame at byte {part.offset} is missing or damaged"
            )
        return frame

    def _trim(self, key: str) -> None:
        """Cut bytes a crashed writer left past the committed end of a segment (after
        checking its committed frames: a longer frame in place of a committed one is
        damage to report, not bytes to cut)."""
        path = segment_file(self.root, key)
        extent = self._extent.get(key, 0)
        if path.stat().st_size > extent:
            if key not in self._verified:
                self._verify(key, extent)
            truncate_synced(path, extent)

    def _verify(self, key: str, end: int) -> None:
        """Check the committed frames of a segment (up to ``end``) before the first append
        after them: whole, checksummed, and ending exactly at ``end``."""
        path = segment_file(self.root, key)
        position = 0
        try:
            with open(path, "rb", buffering=_VERIFY_BUFFER) as handle:
                while position < end:
                    header = handle.read(HEADER.size)
                    if len(header) < HEADER.size:
                        break
                    magic, length, crc, _n_pred, _n_fb = HEADER.unpack(header)
                    if magic != SEGMENT_MAGIC or position + HEADER.size + length > end:
                        break
                    payload = handle.read(length)
                    if len(payload) != length or zlib.crc32(payload) != crc:
                        break
                    position += HEADER.size + length
        except FileNotFoundError:
            pass
        if position != end:
            raise CorruptLogError(
                f"{path}: committed frame at byte {position} is missing or damaged"
            )
        self._verified.add(key)


def truncate_synced(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes, durably."""
    with open(path, "r+b") as handle:
        handle.truncate(size)
        handle.flush()
        os.fsync(handle.fileno())
