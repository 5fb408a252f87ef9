"""The dataset store resource: the local folders of datasets, reports and checkpoints, and
the object store ``CT_STORAGE_URI`` names (see :mod:`ct_assets.storage`)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ct_assets.storage import ObjectStore, S3Config, open_store


class StoreFields(dg.Config):
    """The object store settings a resource or IO manager carries (a config mixin):
    ``CT_HOME``, ``CT_STORAGE_URI`` and the ``CT_S3_*`` settings."""

    home: str = ""
    storage_uri: str = ""
    s3_endpoint_url: str = ""
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"

    def configured_store(self, default_home: Path) -> ObjectStore | None:
        """The object store ``storage_uri`` names (a relative one under ``home``, else
        ``default_home``); None when it is empty."""
        if not self.storage_uri:
            return None
        config = S3Config(
            endpoint_url=self.s3_endpoint_url,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
            region=self.s3_region,
        )
        return open_store(self.storage_uri, Path(self.home) if self.home else default_home, config)


class DatasetStoreResource(dg.ConfigurableResource, StoreFields):  # type: ignore[type-arg]
    """Where immutable, content-addressed datasets and validation reports are written.

    Datasets are compiled under ``datasets_dir`` and kept on the object store named by
    ``storage_uri`` (see :mod:`ct_assets.storage`); empty: they stay in ``datasets_dir``."""

    datasets_dir: str
    reports_dir: str
    checkpoints_dir: str

    @property
    def datasets(self) -> Path:
        return Path(self.datasets_dir)

    def objects(self) -> ObjectStore | None:
        """The object store datasets and drift references are kept on; None: the local
        folders (``datasets_dir``, the drift folder under ``home``)."""
        return self.configured_store(Path(self.datasets_dir).parent)

    @property
    def reports(self) -> Path:
        return Path(self.reports_dir)

    @property
    def checkpoints(self) -> Path:
        return Path(self.checkpoints_dir)
