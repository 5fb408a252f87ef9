"""The dataset store resource: the local folders of datasets, reports and checkpoints, and
the object store ``CT_STORAGE_URI`` names (see :mod:`ct_assets.storage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import dagster as dg

from ct_assets.storage import ObjectStore, S3Config, open_store


class StoreFields(Protocol):
    """The object store settings a resource or IO manager carries."""

    storage_uri: str
    s3_endpoint_url: str
    s3_access_key_id: str | None
    s3_secret_access_key: str | None
    s3_region: str


def configured_store(fields: StoreFields, home: Path) -> ObjectStore | None:
    """The object store ``fields`` name (relative to ``home``); None when ``storage_uri``
    is empty."""
    if not fields.storage_uri:
        return None
    config = S3Config(
        endpoint_url=fields.s3_endpoint_url,
        access_key_id=fields.s3_access_key_id,
        secret_access_key=fields.s3_secret_access_key,
        region=fields.s3_region,
    )
    return open_store(fields.storage_uri, home, config)


class DatasetStoreResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where immutable, content-addressed datasets and validation reports are written.

    Datasets are compiled under ``datasets_dir`` and kept on the object store named by
    ``storage_uri`` (see :mod:`ct_assets.storage`); empty: they stay in ``datasets_dir``."""

    datasets_dir: str
    reports_dir: str
    checkpoints_dir: str
    home: str = ""
    storage_uri: str = ""
    s3_endpoint_url: str = ""
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"

    @property
    def datasets(self) -> Path:
        return Path(self.datasets_dir)

    def objects(self) -> ObjectStore | None:
        """The object store datasets and drift references are kept on; None: the local
        folders (``datasets_dir``, the drift folder under ``home``)."""
        home = Path(self.home) if self.home else Path(self.datasets_dir).parent
        return configured_store(self, home)

    @property
    def reports(self) -> Path:
        return Path(self.reports_dir)

    @property
    def checkpoints(self) -> Path:
        return Path(self.checkpoints_dir)
