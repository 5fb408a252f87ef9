"""Durable, idempotent, append-only writes to the event log.

Guarantees:

* a batch is one frame: after a crash it is wholly present or wholly absent;
* :meth:`EventLogWriter.append` returns only after the frame is fsynced;
* an ``event_id`` already in the log (or twice in one batch) is acknowledged as a
  duplicate and not stored again, across restarts and across processes: writers
  serialise on an exclusive ``flock`` and, holding it, first read what other
  writers appended since they last looked;
* closed segments are never modified; only a torn tail of the newest segment
  (a write that was never acknowledged) is cut off before the next append.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from ct_assets.eventlog.frames import (
    CorruptLogError,
    encode_frame,
    fsync_dir,
    scan_segment,
    segment_name,
    segment_paths,
)
from ct_assets.schema import (
    Event,
    EventValidationError,
    FieldError,
    PredictionEvent,
    ReasonCode,
    encode_event,
)

LOCK_NAME = ".lock"


class _EventId(msgspec.Struct):
    event_id: str


_ID_DECODER = msgspec.json.Decoder(_EventId)


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    duplicates: int
    accepted_ids: list[str] = field(default_factory=list)


class EventLogWriter:
    """Appends batches of validated events to the log under ``root``."""

    def __init__(
        self, root: Path, segment_max_bytes: int = 64 * 1024 * 1024, max_event_bytes: int = 32768
    ) -> None:
        self.root = root
        self.segment_max_bytes = segment_max_bytes
        self.max_event_bytes = max_event_bytes
        self._thread_lock = threading.Lock()
        self._known_ids: set[str] = set()
        self._scanned: dict[str, int] = {}
        root.mkdir(parents=True, exist_ok=True)

    def append(self, events: Sequence[Event], received_at: datetime | None = None) -> AppendResult:
        """Store the events not already in the log; durable when this returns."""
        now = received_at or datetime.now(UTC)
        encoded = [encode_event(msgspec.structs.replace(e, received_at=now)) for e in events]
        oversized = [
            FieldError(
                i,
                "$",
                f"event is {len(raw)} bytes; limit {self.max_event_bytes}",
                ReasonCode.TOO_LARGE.value,
            )
            for i, raw in enumerate(encoded)
            if len(raw) > self.max_event_bytes
        ]
        if oversized:
            raise EventValidationError(oversized)
        with self._thread_lock, self._exclusive():
            self._catch_up()
            lines: list[bytes] = []
            ids: list[str] = []
            n_pred = 0
            batch_ids: set[str] = set()
            for event, raw in zip(events, encoded, strict=True):
                if event.event_id in self._known_ids or event.event_id in batch_ids:
                    continue
                batch_ids.add(event.event_id)
                ids.append(event.event_id)
                lines.append(raw)
                n_pred += isinstance(event, PredictionEvent)
            if lines:
                self._write_frame(encode_frame(lines, n_pred, len(lines) - n_pred))
                self._known_ids.update(ids)
        return AppendResult(accepted=len(ids), duplicates=len(events) - len(ids), accepted_ids=ids)

    def contains(self, event_id: str) -> bool:
        with self._thread_lock, self._exclusive():
            self._catch_up()
            return event_id in self._known_ids

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _catch_up(self) -> None:
        """Learn the ids other writers appended; cut a torn tail off the newest segment."""
        paths = segment_paths(self.root)
        for position, path in enumerate(paths):
            start = self._scanned.get(path.name, 0)
            self._scanned[path.name] = start
            if start == path.stat().st_size:
                continue
            scan = scan_segment(path, start)
            for frame in scan.frames:
                for line in frame.lines():
                    self._known_ids.add(_ID_DECODER.decode(line).event_id)
            if scan.torn:
                if scan.corrupt or position != len(paths) - 1:
                    raise CorruptLogError(
                        f"{path}: damaged frame at byte {scan.valid_end}; refusing to append"
                    )
                with open(path, "r+b") as handle:
                    handle.truncate(scan.valid_end)
                    handle.flush()
                    os.fsync(handle.fileno())
            self._scanned[path.name] = scan.valid_end

    def _write_frame(self, frame: bytes) -> None:
        paths = segment_paths(self.root)
        path = paths[-1] if paths else None
        if path is None or (
            self._scanned.get(path.name, 0) > 0
            and self._scanned[path.name] + len(frame) > self.segment_max_bytes
        ):
            sequence = int(path.stem.split("-")[1]) + 1 if path is not None else 1
            path = self.root / segment_name(sequence)
            path.touch()
            fsync_dir(self.root)
            self._scanned[path.name] = 0
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(frame)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._scanned[path.name] += len(frame)
