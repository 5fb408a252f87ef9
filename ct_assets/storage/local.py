"""The local-disk store: key ``a/b`` is the file ``<root>/a/b``.

Writes go to a unique temporary sibling (``.<name>.<random>.tmp``), are fsynced, renamed
over the key and the folder is fsynced: a reader sees the old object, the whole new one,
or none; a write that fails removes its temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ct_assets.storage.base import ObjectNotFoundError, check_key, file_chunks

if TYPE_CHECKING:
    import pyarrow.fs

TMP_SUFFIX = ".tmp"


def atomic_file(path: Path, chunks: Iterable[bytes], *, once: bool = False) -> bool:
    """Write ``chunks`` to ``path`` atomically; with ``once``, an existing file is kept
    (False). Two writers of the same content may race: the file is whole either way."""
    if once and path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if once and path.exists():
            tmp.unlink()
            return False
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return True


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """Objects as files under ``root`` (by default ``CT_HOME``)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def uri_of(self, key: str) -> str:
        return self._path(key).as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"no object {self.uri_of(key)}") from None

    def write_chunks(self, key: str, chunks: Iterable[bytes], *, once: bool = False) -> bool:
        return atomic_file(self._path(key), chunks, once=once)

    def download(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFoundError(f"no object {self.uri_of(key)}")
        if source.resolve() != path.resolve():
            atomic_file(path, file_chunks(source))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def modified(self, key: str) -> float:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {self.uri_of(key)}")
        return path.stat().st_mtime

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if path.is_file() and not (
                path.name.startswith(".") and path.name.endswith(TMP_SUFFIX)
            ):
                found.append(path.relative_to(self.root).as_posix())
        return sorted(found)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def arrow(self, key: str) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), str(self._path(key))
