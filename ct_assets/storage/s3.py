"""The S3 store (any S3-compatible server: AWS S3, SeaweedFS, MinIO, Ceph), through
``pyarrow.fs.S3FileSystem``: key ``a/b`` is the object ``s3://<bucket>/<prefix>/a/b``.

Reads return one version of an object: pyarrow reads in ranges, so a key replaced while
it is read would mix two objects; the ETag is compared before and after and the read
done again when it changed.

Atomicity: an S3 object appears whole when its upload completes, and never partly. What
is uploaded is complete before the upload starts (chunks from a generator are spooled to
a local temporary file first), so a failure on our side never completes an upload; a
failure of the server or the network fails the upload, which leaves no object.

Write-once (``once=True``): the object is written only when no object holds the key.
Between the check and the upload another writer of the same content-addressed key may
finish first; the second upload then replaces it with the same bytes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ct_assets.storage.base import CHUNK_BYTES, ObjectNotFoundError, StorageError, check_key
from ct_assets.storage.local import TMP_SUFFIX, fsync_dir

if TYPE_CHECKING:
    import pyarrow.fs

#: Above this, chunks are spooled to disk rather than kept in memory before the upload.
SPOOL_BYTES = 16 << 20
#: Reads of an object replaced while it was read are done again this many times at most.
READ_ATTEMPTS = 5


@dataclass(frozen=True)
class S3Config:
    """How to reach the server: ``endpoint_url`` (``http://127.0.0.1:8333``; empty: AWS),
    credentials (``None``: the AWS SDK's own chain), region."""

    endpoint_url: str = ""
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    connect_timeout: float = 5.0

    def filesystem(self) -> pyarrow.fs.S3FileSystem:
        import pyarrow.fs

        options: dict[str, Any] = {
            "region": self.region,
            "connect_timeout": self.connect_timeout,
            "retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"an S3 endpoint must be http(s)://host[:port], got {self.endpoint_url!r}"
                )
            options["scheme"] = parts.scheme
            options["endpoint_override"] = parts.netloc.rpartition("@")[2]
        if self.access_key_id or self.secret_access_key:
            options["access_key"] = self.access_key_id or ""
            options["secret_key"] = self.secret_access_key or ""
        return pyarrow.fs.S3FileSystem(**options)


class S3Store:
    """Objects under ``s3://<bucket>/<prefix>/``."""

    def __init__(self, bucket: str, prefix: str, config: S3Config) -> None:
        if len(bucket) < 3:
            raise ValueError(f"an S3 bucket name has at least 3 characters, got {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.config = config
        self.fs = config.filesystem()

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint={self.config.endpoint_url!r})"

    @property
    def uri(self) -> str:
        return f"s3://{self._root()}"

    def _root(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def _path(self, key: str) -> str:
        return f"{self._root()}/{check_key(key)}"

    def uri_of(self, key: str) -> str:
        return f"s3://{self._path(key)}"

    def local_path(self, key: str) -> None:
        return None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, ObjectNotFoundError):
            raise
        except OSError as error:
            where = self.config.endpoint_url or "AWS S3"
            raise StorageError(f"{what} on the S3 store at {where} failed: {error}") from error

    def read_bytes(self, key: str) -> bytes:
        out = bytearray()

        def sink(chunks: Iterable[bytes]) -> None:
            out.clear()
            for chunk in chunks:
                out.extend(chunk)

        self._read(key, sink)
        return bytes(out)

    def download(self, key: str, path: Path) -> None:
        """Into a temporary sibling (rewritten when the read is done again), then renamed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        tmp = Path(name)
        try:
            with os.fdopen(handle, "wb") as out:

                def sink(chunks: Iterable[bytes]) -> None:
                    out.seek(0)
                    out.truncate()
                    for chunk in chunks:
                        out.write(chunk)

                self._read(key, sink)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def _read(self, key: str, sink: Callable[[Iterable[bytes]], object]) -> None:
        """Feed the object's bytes to ``sink``, all of one version of the object.

        Ranged reads of a key replaced meanwhile would mix two objects: the object's ETag
        is read before and after, and the read is done again when it changed (at most
        :data:`READ_ATTEMPTS` times). Two replacements that restore the first content
        within one read are not seen (the bytes read are then the first's).
        """
        path = self._path(key)
        with self._errors(f"reading {self.uri_of(key)}"):
            for _ in range(READ_ATTEMPTS):
                try:
                    source = self.fs.open_input_file(path)
                except FileNotFoundError:
                    raise ObjectNotFoundError(f"no object {self.uri_of(key)}") from None
                with source:
                    tag, size = source.metadata().get(b"ETag"), source.size()

                    def chunks(source: Any = source, size: int = size) -> Iterator[bytes]:
                        at = 0
                        while at < size:
                            block = bytes(source.read_at(min(CHUNK_BYTES * 8, size - at), at))
                            if not block:
                                raise StorageError(f"{self.uri_of(key)} ended at byte {at}")
                            at += len(block)
                            yield block

                    sink(chunks())
                if self._etag(path) == tag:
                    return
        raise StorageError(f"{self.uri_of(key)} kept changing while it was read")

    def _etag(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_file(path) as source:
                tag = source.metadata().get(b"ETag")
        except FileNotFoundError:
            return None
        return None if tag is None else bytes(tag)

    def write_chunks(self, key: str, chunks: Iterable[bytes], *, once: bool = False) -> bool:
        path = self._path(key)
        if once and self.exists(key):
            return False
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for chunk in chunks:  # complete before the upload starts (module docstring)
                spool.write(chunk)
            spool.seek(0)
            with self._errors(f"writing {self.uri_of(key)}"):
                stream = self.fs.open_output_stream(path)
                try:
                    while block := spool.read(CHUNK_BYTES):
                        stream.write(block)
                finally:
                    stream.close()
        return True

    def exists(self, key: str) -> bool:
        import pyarrow.fs

        with self._errors(f"looking up {self.uri_of(key)}"):
            info = self.fs.get_file_info(self._path(key))
        return bool(info.type == pyarrow.fs.FileType.File)

    def modified(self, key: str) -> float:
        import pyarrow.fs

        with self._errors(f"looking up {self.uri_of(key)}"):
            info = self.fs.get_file_info(self._path(key))
        if info.type != pyarrow.fs.FileType.File or info.mtime is None:
            raise ObjectNotFoundError(f"no object {self.uri_of(key)}")
        return float(info.mtime.timestamp())

    def list(self, prefix: str) -> list[str]:
        import pyarrow.fs

        base = self._path(prefix) if prefix else self._root()
        selector = pyarrow.fs.FileSelector(base, recursive=True, allow_not_found=True)
        with self._errors(f"listing s3://{base}"):
            infos = self.fs.get_file_info(selector)
        root = self._root() + "/"
        return sorted(
            i.path.removeprefix(root) for i in infos if i.type == pyarrow.fs.FileType.File
        )

    def delete(self, key: str) -> None:
        with self._errors(f"deleting {self.uri_of(key)}"):
            if self.exists(key):
                self.fs.delete_file(self._path(key))

    def arrow(self, key: str) -> tuple[pyarrow.fs.FileSystem, str]:
        return self.fs, self._path(key)

    def check_bucket(self) -> None:
        """:class:`StorageError` unless the bucket exists and answers."""
        import pyarrow.fs

        with self._errors(f"opening bucket {self.bucket}"):
            info = self.fs.get_file_info(self.bucket)
        if info.type != pyarrow.fs.FileType.Directory:
            where = self.config.endpoint_url or "AWS S3"
            raise StorageError(f"no bucket {self.bucket!r} on the S3 store at {where}")
