"""The MLflow client of one registered model: built from the tracking URI (no global
MLflow state), the experiment its runs go to, and reading its versions and aliases."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ct_assets.registry.tags import TAG_DATASET_VERSION
from ct_assets.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

SQLITE_PREFIX = "sqlite:///"
#: Versions read per request by :meth:`RegistryClient.versions`.
VERSIONS_PAGE = 1000


@dataclass(frozen=True)
class VersionInfo:
    version: str
    run_id: str
    dataset_version: str | None
    created_at: str
    tags: dict[str, str]

    def as_status(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "dataset_version": self.dataset_version,
            "run_id": self.run_id,
            "created_at": self.created_at,
        }


class RegistryClient:
    """One registered model (``model_name``) on the tracking server at ``tracking_uri``."""

    def __init__(self, tracking_uri: str, model_name: str, artifact_root: str) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_root = artifact_root

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.tracking_uri, settings.model_name, settings.artifact_root)

    @classmethod
    def existing(cls, settings: Settings) -> Self | None:
        """The registry, or None when its SQLite store was never created (nothing was
        registered): a lookup must not create an empty store as a side effect."""
        uri = settings.tracking_uri
        if uri.startswith(SQLITE_PREFIX) and not Path(uri.removeprefix(SQLITE_PREFIX)).exists():
            return None
        return cls.from_settings(settings)

    @cached_property
    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        if self.tracking_uri.startswith(SQLITE_PREFIX):
            Path(self.tracking_uri.removeprefix(SQLITE_PREFIX)).parent.mkdir(
                parents=True, exist_ok=True
            )

        # downloads of our own small artifacts need no progress bar on the console
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.model_name)
        if experiment is not None:
            return str(experiment.experiment_id)
        # a tracking server places (and proxies) the artifacts itself: its
        # --artifacts-destination; a client-side location would bypass it
        served = self.tracking_uri.lower().startswith(("http://", "https://"))
        location = None if served else self.artifact_root
        return str(self.client.create_experiment(self.model_name, artifact_location=location))

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(
                self.model_name,
                description="Continuously trained by ct_assets; aliases champion and challenger.",
            )

    def alias(self, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(self.model_name, alias))
        except MlflowException:
            return None

    def version(self, version: str) -> VersionInfo:
        return self._info(self.client.get_model_version(self.model_name, version))

    def versions(self) -> dict[str, VersionInfo]:
        """Every registered version of the model by number, read with one search (a page
        per :data:`VERSIONS_PAGE` versions) instead of one request per version."""
        found: dict[str, VersionInfo] = {}
        token: str | None = None
        while True:
            page = self.client.search_model_versions(
                f"name='{self.model_name}'", max_results=VERSIONS_PAGE, page_token=token
            )
            found.update((str(mv.version), self._info(mv)) for mv in page)
            token = page.token
            if not token:
                return found

    def set_version_tag(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.model_name, version, key, value)

    def _info(self, mv: ModelVersion) -> VersionInfo:
        tags = dict(mv.tags or {})
        created = datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, UTC).isoformat()
        return VersionInfo(
            version=str(mv.version),
            run_id=str(mv.run_id),
            dataset_version=tags.get(TAG_DATASET_VERSION),
            created_at=created,
            tags=tags,
        )
