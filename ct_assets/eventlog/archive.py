"""The columnar archive of old segments, and reading a segment whichever form it has.

Retention (``CT_RETENTION_DAYS``, done by ``ct-assets gc``) replaces a segment of an old
event date by one Parquet file, ``<root>/archive/<date>/seg-<sequence>.parquet``, and then
deletes the segment. One row per event: the exact JSON line the segment holds (``event``,
zstd-compressed), its ``event_id`` and ``kind``, and its frame's byte offset, checksum and
counts. Nothing is lost: the segment's committed bytes are rebuilt from those rows exactly
(each frame's header is the same function of its lines), and the file's metadata holds the
segment's committed end and the SHA-256 of its bytes, checked at every rebuild. So every
reader (a date's events, an export, ``lineage --event``, the event id index rebuilt from
the journal) reads an archived segment through :func:`segment_bytes` as if the segment
were there, and the journal, the checkpoints and the partition fingerprints do not change.

The archive is written under the log's lock (no commit runs meanwhile), fsynced, read back
and compared byte for byte with the segment before the segment is deleted. A process killed
in between leaves both, and the next archiving of that segment finishes the job. A writer
never appends to an archived segment: the next event of that date starts the next one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ct_assets.eventlog.archive_store import pointer_file, stored_end, stored_segment
from ct_assets.eventlog.frames import (
    SEGMENT_MAGIC,
    CorruptLogError,
    encode_record,
    fsync_dir,
    scan_bytes,
)
from ct_assets.eventlog.layout import (
    ARCHIVE_DIR,
    archive_name,
    key_date,
    log_lock,
    segment_file,
)
from ct_assets.storage.local import TMP_SUFFIX, atomic_file

if TYPE_CHECKING:
    import pyarrow as pa

ARCHIVE_SUFFIX = ".parquet"
ARCHIVE_VERSION = "1"
_META_VERSION = b"ct.archive_version"
_META_SEGMENT = b"ct.segment"
_META_END = b"ct.segment_end"
_META_SHA = b"ct.segment_sha256"
_ARCHIVE_RE = re.compile(r"^seg-(\d{8})\.(?:parquet|stored\.json)$")


class _Envelope(msgspec.Struct):
    event_id: str = ""
    kind: str = ""


_ENVELOPE = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True)
class Archived:
    """A segment replaced by its archive: its key, committed end and events."""

    segment: str
    archive: Path
    end: int
    events: int


def archive_file(root: Path, key: str) -> Path:
    """Where the archive of segment ``key`` (``<date>/seg-<n>.ctlog``) lives."""
    return root / ARCHIVE_DIR / archive_name(key, ARCHIVE_SUFFIX)


def archived_segments(root: Path, day: str) -> list[str]:
    """Keys of the segments of ``day`` that have an archive, here or on the store (a
    pointer), in sequence order."""
    folder = root / ARCHIVE_DIR / day
    if not folder.is_dir():
        return []
    found = {m.group(1) for p in folder.iterdir() if (m := _ARCHIVE_RE.match(p.name))}
    return [f"{day}/seg-{sequence}.ctlog" for sequence in sorted(found)]


def is_archived(root: Path, key: str) -> bool:
    return archive_file(root, key).exists() or pointer_file(root, key).exists()


# -- reading ---------------------------------------------------------------------------------


def segment_size(root: Path, key: str) -> int:
    """The bytes a segment holds: its file's size, else its archive's committed end, else 0."""
    try:
        return segment_file(root, key).stat().st_size
    except FileNotFoundError:
        pass
    path = archive_file(root, key)
    if path.exists():
        return int(_metadata(path)[_META_END])
    return stored_end(root, key) or 0


def segment_bytes(root: Path, key: str, offset: int, length: int | None = None) -> bytes:
    """``length`` bytes of segment ``key`` from ``offset`` (to its end if None): from its
    file, else rebuilt from its archive here or on the store (checked), else empty (a
    missing segment)."""
    path = segment_file(root, key)
    try:
        with open(path, "rb") as handle:
            if length is None:
                handle.seek(offset)
                return handle.read()
            return os.pread(handle.fileno(), length, offset)
    except FileNotFoundError:
        pass
    local = archive_file(root, key)
    try:
        stat = local.stat()
    except FileNotFoundError:
        data = stored_segment(root, key) or b""
    else:
        data = _rebuilt(str(local), stat.st_mtime_ns, stat.st_size)
    return data[offset:] if length is None else data[offset : offset + length]


def _metadata(path: Path) -> dict[bytes, bytes]:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:
        raise CorruptLogError(f"{path}: archive of a segment cannot be read: {exc}") from exc
    if meta.get(_META_VERSION) != ARCHIVE_VERSION.encode() or _META_END not in meta:
        raise CorruptLogError(f"{path}: not a segment archive this version can read")
    return dict(meta)


@functools.lru_cache(maxsize=2)
def _rebuilt(path: str, _mtime_ns: int, _size: int) -> bytes:
    """The committed bytes of an archived segment (cached by the file's identity)."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise CorruptLogError(f"{path}: archive of a segment cannot be read: {exc}") from exc
    return rebuilt_from(blob, path, None)


def rebuilt_from(blob: bytes, where: str, end: int | None) -> bytes:
    """A segment's committed bytes from the bytes of its archive (named ``where``), checked
    against the archive's recorded end and SHA-256 (and ``end`` if given)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # ParquetFile, not read_table: no pyarrow.dataset import (0.4 s) in a reader
        parquet = pq.ParquetFile(pa.BufferReader(blob), page_checksum_verification=True)
        meta = parquet.schema_arrow.metadata or {}
        if meta.get(_META_VERSION) != ARCHIVE_VERSION.encode() or _META_END not in meta:
            raise CorruptLogError(f"{where}: not a segment archive this version can read")
        # one thread: with Arrow's pool, a process exiting after a read aborted now and then
        # ("terminate called without an active exception", 2 in 24 `lineage` runs)
        data = rebuild(parquet.read(use_threads=False))
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptLogError(f"{where}: archive of a segment cannot be read: {exc}") from exc
    recorded = int(meta[_META_END])
    if (
        len(data) != recorded
        or (end is not None and recorded != end)
        or hashlib.sha256(data).hexdigest().encode() != meta[_META_SHA]
    ):
        raise CorruptLogError(f"{where}: archive does not rebuild its segment's bytes")
    return data


def rebuild(table: pa.Table) -> bytes:
    """A segment's bytes from its archive rows (frames in offset order, each checked)."""
    offsets = table.column("frame_offset").to_pylist()
    crcs = table.column("frame_crc").to_pylist()
    n_preds = table.column("frame_n_prediction").to_pylist()
    n_fbs = table.column("frame_n_feedback").to_pylist()
    events = table.column("event").to_pylist()
    out = bytearray()
    start = 0
    while start < len(offsets):
        stop = start + 1
        while stop < len(offsets) and offsets[stop] == offsets[start]:
            stop += 1
        if offsets[start] != len(out):
            raise ValueError(f"frame at byte {offsets[start]} follows byte {len(out)}")
        payload = b"\n".join(events[start:stop]) + b"\n"
        if zlib.crc32(payload) != crcs[start]:
            raise ValueError(f"frame at byte {offsets[start]} fails its checksum")
        out += encode_record(payload, n_preds[start], n_fbs[start], SEGMENT_MAGIC)
        start = stop
    return bytes(out)


# -- writing ---------------------------------------------------------------------------------


def archive_table(data: bytes, key: str) -> pa.Table:
    """The archive rows of a segment's committed bytes ``data`` (every frame whole)."""
    import pyarrow as pa

    scan = scan_bytes(data)
    if scan.corrupt or scan.valid_end != len(data):
        raise CorruptLogError(f"{key}: committed frame at byte {scan.valid_end} is damaged")
    columns: dict[str, list[object]] = {
        name: []
        for name in (
            "frame_offset",
            "frame_crc",
            "frame_n_prediction",
            "frame_n_feedback",
            "event_id",
            "kind",
            "event",
        )
    }
    for frame in scan.frames:
        lines = frame.lines()
        if not lines or b"\n".join(lines) + b"\n" != frame.payload:
            raise CorruptLogError(f"{key}: frame at byte {frame.offset} holds no whole lines")
        for line in lines:
            try:
                envelope = _ENVELOPE.decode(line)
            except msgspec.DecodeError:
                envelope = _Envelope()
            columns["frame_offset"].append(frame.offset)
            columns["frame_crc"].append(frame.crc)
            columns["frame_n_prediction"].append(frame.n_prediction)
            columns["frame_n_feedback"].append(frame.n_feedback)
            columns["event_id"].append(envelope.event_id)
            columns["kind"].append(envelope.kind)
            columns["event"].append(line)
    schema = pa.schema(
        [
            ("frame_offset", pa.int64()),
            ("frame_crc", pa.uint32()),
            ("frame_n_prediction", pa.uint32()),
            ("frame_n_feedback", pa.uint32()),
            ("event_id", pa.string()),
            ("kind", pa.dictionary(pa.int8(), pa.string())),
            ("event", pa.binary()),
        ],
        metadata={
            _META_VERSION: ARCHIVE_VERSION.encode(),
            _META_SEGMENT: key.encode(),
            _META_END: str(len(data)).encode(),
            _META_SHA: hashlib.sha256(data).hexdigest().encode(),
        },
    )
    return pa.table(columns, schema=schema)


def archive_segment(root: Path, key: str, end: int) -> Archived:
    """Replace segment ``key`` (committed up to ``end``) by its archive; call with the log's
    lock held. Idempotent: an archive already written (a run killed before the segment was
    deleted) is checked against the segment and written again if it does not match."""
    import pyarrow.parquet as pq

    path = segment_file(root, key)
    target = archive_file(root, key)
    if not path.exists():
        if target.exists():
            return Archived(key, target, end, pq.read_metadata(target).num_rows)
        if pointer_file(root, key).exists():
            return Archived(key, pointer_file(root, key), end, -1)  # moved to the store
        raise CorruptLogError(f"{path}: segment to archive is missing")
    data = segment_bytes(root, key, 0, end)
    if len(data) != end:
        raise CorruptLogError(f"{path}: committed frame ends past the segment ({len(data)} bytes)")
    table = archive_table(data, key)
    if not _archive_matches(target, data):
        target.parent.mkdir(parents=True, exist_ok=True)
        fsync_dir(target.parent.parent)
        for leftover in target.parent.glob(f".{target.name}.*{TMP_SUFFIX}"):
            leftover.unlink()  # of an archiving killed mid-write (the lock is ours)
        atomic_file(target, [_parquet_bytes(table)])
        if not _archive_matches(target, data):
            raise CorruptLogError(f"{target}: archive read back does not rebuild {path}")
    path.unlink()
    fsync_dir(path.parent)
    return Archived(key, target, end, table.num_rows)


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True, row_group_size=65536)
    return bytes(sink.getvalue())


def _archive_matches(target: Path, data: bytes) -> bool:
    if not target.exists():
        return False
    stat = target.stat()
    try:
        return _rebuilt(str(target), stat.st_mtime_ns, stat.st_size) == data
    except CorruptLogError:
        return False


@dataclass(frozen=True)
class LogDisk:
    """What the log's segments and archives take: bytes and files of each form."""

    segment_bytes: int
    segments: int
    archive_bytes: int
    archived: int
    stored: int

    def as_json(self) -> dict[str, int]:
        return {
            "segment_bytes": self.segment_bytes,
            "segments": self.segments,
            "archive_bytes": self.archive_bytes,
            "archived_segments": self.archived,
            "stored_archives": self.stored,
        }


def log_disk(root: Path) -> LogDisk:
    """The segments on disk, the archives here and the pointers to archives on the store
    (one ``stat`` per file)."""
    sizes: dict[str, list[int]] = {"ctlog": [], "parquet": [], "json": []}
    for folder in (root / "segments", root / ARCHIVE_DIR):
        if not folder.is_dir():
            continue
        for day in folder.iterdir():
            if not day.is_dir():
                continue
            for entry in os.scandir(day):
                kind = entry.name.rsplit(".", 1)[-1]
                if kind in sizes and entry.name.startswith("seg-") and entry.is_file():
                    sizes[kind].append(entry.stat().st_size)
    return LogDisk(
        sum(sizes["ctlog"]),
        len(sizes["ctlog"]),
        sum(sizes["parquet"]),
        len(sizes["parquet"]),
        len(sizes["json"]),
    )


def local_archives(root: Path, before: str) -> list[str]:
    """Keys of the segments of event dates before ``before`` archived on this disk."""
    base = root / ARCHIVE_DIR
    if not base.is_dir():
        return []
    found: list[str] = []
    for folder in sorted(base.iterdir()):
        if folder.is_dir() and folder.name < before:
            found += [
                k for k in archived_segments(root, folder.name) if archive_file(root, k).exists()
            ]
    return found


def old_segments(root: Path, before: str) -> list[tuple[str, int]]:
    """Segments (key, committed end) of event dates before ``before`` still on disk."""
    from ct_assets.eventlog.counts import committed_extents

    extents = committed_extents(root)
    found: list[tuple[str, int]] = []
    for day in sorted(extents):
        if day >= before:
            continue
        for key, end in sorted(extents[day].items()):
            if end > 0 and segment_file(root, key).exists():
                found.append((key, end))
    return found


def archive_old_segment(root: Path, key: str) -> Archived:
    """Archive segment ``key`` under the log's lock, at its committed end then (a segment
    already archived is answered from its archive)."""
    from ct_assets.eventlog.counts import committed_extents

    with log_lock(root):
        end = committed_extents(root).get(key_date(key), {}).get(key, 0)
        if end <= 0:
            raise CorruptLogError(f"{segment_file(root, key)}: no committed frame to archive")
        return archive_segment(root, key, end)


__all__ = [
    "ARCHIVE_DIR",
    "Archived",
    "archive_file",
    "archive_old_segment",
    "archive_segment",
    "archived_segments",
    "is_archived",
    "local_archives",
    "log_disk",
    "old_segments",
    "rebuild",
    "segment_bytes",
    "segment_size",
]
