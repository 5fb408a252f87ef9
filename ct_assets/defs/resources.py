"""Resources: the event log, the dataset store, the MLflow registry and training settings."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ct_assets.eventlog import EventLog
from ct_assets.registry import Registry
from ct_assets.settings import Settings


class EventLogResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The append-only event log under ``root``."""

    root: str
    segment_max_bytes: int = 64 * 1024 * 1024

    def log(self) -> EventLog:
        return EventLog(Path(self.root), self.segment_max_bytes)


class DatasetStoreResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where immutable, content-addressed datasets and validation reports are written."""

    datasets_dir: str
    reports_dir: str

    @property
    def datasets(self) -> Path:
        return Path(self.datasets_dir)

    @property
    def reports(self) -> Path:
        return Path(self.reports_dir)


class RegistryResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The MLflow tracking server / registry holding the CT model and its aliases."""

    tracking_uri: str
    model_name: str
    artifact_root: str

    def registry(self) -> Registry:
        return Registry(self.tracking_uri, self.model_name, self.artifact_root)


class TrainingConfigResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Dataset window, LightGBM parameters and gate thresholds."""

    training_window: int
    holdout_fraction: float
    num_boost_round: int
    learning_rate: float
    num_leaves: int
    seed: int
    gate_tolerance: float
    gate_min_auc: float


def resources_from_settings(settings: Settings) -> dict[str, dg.ConfigurableResource]:  # type: ignore[type-arg]
    return {
        "event_log": EventLogResource(
            root=str(settings.eventlog_dir), segment_max_bytes=settings.segment_max_bytes
        ),
        "dataset_store": DatasetStoreResource(
            datasets_dir=str(settings.datasets_dir), reports_dir=str(settings.reports_dir)
        ),
        "registry": RegistryResource(
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
            artifact_root=settings.artifact_root,
        ),
        "training_config": TrainingConfigResource(
            training_window=settings.training_window,
            holdout_fraction=settings.holdout_fraction,
            num_boost_round=settings.num_boost_round,
            learning_rate=settings.learning_rate,
            num_leaves=settings.num_leaves,
            seed=settings.seed,
            gate_tolerance=settings.gate_tolerance,
            gate_min_auc=settings.gate_min_auc,
        ),
    }
