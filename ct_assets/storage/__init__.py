"""Where the loop keeps its objects (datasets, drift references): one seam, two stores.

``CT_STORAGE_URI`` chooses: empty (the default) is the local disk under ``CT_HOME``, with
the same layout as always (``$CT_HOME/datasets/<version>.parquet``); ``file:///path`` or an
absolute path another folder; ``s3://bucket/prefix`` an S3-compatible store reached at
``CT_S3_ENDPOINT_URL`` with ``CT_S3_ACCESS_KEY_ID`` / ``CT_S3_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ct_assets.storage.base import (
    ObjectNotFoundError,
    ObjectStore,
    StorageError,
    check_key,
    get_file,
    put_file,
    same_file,
    write_bytes,
)
from ct_assets.storage.local import LocalStore, atomic_file
from ct_assets.storage.s3 import S3Config, S3Store

if TYPE_CHECKING:
    from ct_assets.settings import Settings

__all__ = [
    "LocalStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "S3Config",
    "S3Store",
    "StorageError",
    "atomic_file",
    "check_key",
    "get_file",
    "open_store",
    "parse_storage_uri",
    "put_file",
    "same_file",
    "store_from_settings",
    "write_bytes",
]

SETTING = "CT_STORAGE_URI"


def parse_storage_uri(uri: str) -> tuple[str, str, str]:
    """``("local", path, "")`` or ``("s3", bucket, prefix)``; :class:`ValueError` saying what
    is wrong otherwise (the caller names the setting)."""
    text = uri.strip()
    if text.startswith("/"):
        return "local", text, ""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"a file URI must be file:///absolute/path, got {uri!r}")
        return "local", parts.path, ""
    if scheme == "s3":
        bucket = parts.netloc
        if "@" in bucket:
            raise ValueError("credentials go in CT_S3_ACCESS_KEY_ID/CT_S3_SECRET_ACCESS_KEY")
        if len(bucket) < 3:
            raise ValueError(f"an s3 URI needs a bucket of at least 3 characters, got {uri!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"an s3 URI is s3://bucket[/prefix] only, got {uri!r}")
        return "s3", bucket, parts.path.strip("/")
    raise ValueError(f"must be empty, file:///path, /path or s3://bucket[/prefix], got {uri!r}")


def open_store(uri: str, home: Path, s3: S3Config | None = None) -> ObjectStore:
    """The store ``uri`` names (empty: the local disk under ``home``); :class:`ValueError`
    naming ``CT_STORAGE_URI`` when it cannot be used."""
    if not uri.strip():
        return LocalStore(home)
    try:
        kind, first, prefix = parse_storage_uri(uri)
    except ValueError as error:
        raise ValueError(f"{SETTING}: {error}") from None
    if kind == "local":
        return LocalStore(Path(first))
    return S3Store(first, prefix, s3 or S3Config())


def store_from_settings(settings: Settings) -> ObjectStore:
    return open_store(
        settings.storage_uri,
        settings.home,
        S3Config(
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            region=settings.s3_region,
        ),
    )
