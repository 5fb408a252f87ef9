"""Resources: the event log, the dataset store (:mod:`ct_assets.defs.dataset_store`), the
MLflow registry and training settings."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from ct_assets.data.attribution import LabelPolicy
from ct_assets.data.feedback_rules import ValidationRules
from ct_assets.data.tables import TableStore
from ct_assets.data.windows import WindowSpec
from ct_assets.defs.dataset_store import DatasetStoreResource
from ct_assets.defs.handoffs import HANDOFF_IO_MANAGER, HandoffIOManager
from ct_assets.eventlog import EventLog
from ct_assets.registry import Registry
from ct_assets.settings import Settings, env_var


class EventLogResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The append-only event log under ``root``."""

    root: str
    segment_max_bytes: int = 64 * 1024 * 1024

    def log(self) -> EventLog:
        return EventLog(Path(self.root), self.segment_max_bytes)


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
    early_stopping_min_rows: int
    balance_classes: bool
    candidate_windows: str
    refit_on_holdout: bool = True
    max_incremental_chain: int = 10
    gate_tolerance: float
    gate_min_auc: float
    gate_forgetting_tolerance: float
    gate_slice_tolerance: float
    gate_max_ece: float
    gate_bootstrap_resamples: int
    slice_columns: str
    checkpoint_every: int
    report_plots: bool = True
    dask_scheduler: str = ""
    dask_min_rows: int = 100_000


class CurationResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Feedback validation thresholds, the label policy, the dataset window, where the
    per-date tables and the reference schema live, and the labeling queue's budget."""

    tables_dir: str
    reference_dir: str
    labeling_queue_path: str
    pending_expiry_hours: int
    max_feedback_delay_days: int
    rate_factor: float
    dominance_share: float
    flip_disagreement: float
    max_quarantine_rate: float
    compile_memory_mb: int
    window_mode: str
    window_days: int
    max_rows: int
    change_min_rows: int
    reservoir_size: int
    seed: int
    labeling_method: str
    labeling_budget: int
    labeling_lookback_days: int

    def rules(self) -> ValidationRules:
        return ValidationRules(
            pending_expiry=timedelta(hours=self.pending_expiry_hours),
            max_feedback_delay=timedelta(days=self.max_feedback_delay_days),
            rate_factor=self.rate_factor,
            dominance_share=self.dominance_share,
            flip_disagreement=self.flip_disagreement,
        )

    def policy(self) -> LabelPolicy:
        """The implicit-signal label policy: ``reference_dir/label_policy.json`` if present."""
        path = Path(self.reference_dir) / "label_policy.json"
        return LabelPolicy.from_json(path.read_text()) if path.exists() else LabelPolicy()

    def window(self, since: datetime | None = None) -> WindowSpec:
        """The dataset window; ``since``: a detected change point it starts at."""
        return WindowSpec(
            mode=self.window_mode,  # type: ignore[arg-type]
            window_days=self.window_days,
            max_rows=self.max_rows,
            reservoir_size=self.reservoir_size,
            seed=self.seed,
            since=since,
            min_rows=self.change_min_rows if since is not None else 0,
        )

    def store(self) -> TableStore:
        return TableStore(Path(self.tables_dir))

    def rules_folder(self) -> Path:
        """Where the reference schema (``latest.json``, ``overrides.json``) and the label
        policy (``label_policy.json``) live."""
        folder = Path(self.reference_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _secret(settings: Settings, name: str) -> Any:
    """A secret setting as resource config: an ``EnvVar`` when it came from its variable
    (so the value is never written into run config), else the value itself."""
    value = getattr(settings, name)
    var = env_var(name)
    if value is not None and os.environ.get(var) == value:
        return dg.EnvVar(var)
    return value


def resources_from_settings(
    settings: Settings,
) -> dict[str, dg.ConfigurableResource | dg.ConfigurableIOManager]:  # type: ignore[type-arg]
    store: dict[str, Any] = {
        "home": str(settings.home),
        "storage_uri": settings.storage_uri,
        "s3_endpoint_url": settings.s3_endpoint_url,
        "s3_access_key_id": _secret(settings, "s3_access_key_id"),
        "s3_secret_access_key": _secret(settings, "s3_secret_access_key"),
        "s3_region": settings.s3_region,
    }
    return {
        HANDOFF_IO_MANAGER: HandoffIOManager(root=str(settings.handoffs_dir), **store),
        "event_log": EventLogResource(
            root=str(settings.eventlog_dir), segment_max_bytes=settings.segment_max_bytes
        ),
        "dataset_store": DatasetStoreResource(
            datasets_dir=str(settings.datasets_dir),
            reports_dir=str(settings.reports_dir),
            checkpoints_dir=str(settings.checkpoints_dir),
            **store,
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
            early_stopping_min_rows=settings.early_stopping_min_rows,
            balance_classes=settings.balance_classes,
            candidate_windows=settings.candidate_windows,
            refit_on_holdout=settings.refit_on_holdout,
            max_incremental_chain=settings.max_incremental_chain,
            gate_tolerance=settings.gate_tolerance,
            gate_min_auc=settings.gate_min_auc,
            gate_forgetting_tolerance=settings.gate_forgetting_tolerance,
            gate_slice_tolerance=settings.gate_slice_tolerance,
            gate_max_ece=settings.gate_max_ece,
            gate_bootstrap_resamples=settings.gate_bootstrap_resamples,
            slice_columns=settings.slice_columns,
            checkpoint_every=settings.checkpoint_every,
            report_plots=settings.report_plots,
            dask_scheduler=settings.dask_scheduler,
            dask_min_rows=settings.dask_min_rows,
        ),
        "curation": CurationResource(
            tables_dir=str(settings.tables_dir),
            reference_dir=str(settings.reference_dir),
            labeling_queue_path=str(settings.labeling_queue_path),
            pending_expiry_hours=settings.pending_expiry_hours,
            max_feedback_delay_days=settings.max_feedback_delay_days,
            rate_factor=settings.rate_factor,
            dominance_share=settings.dominance_share,
            flip_disagreement=settings.flip_disagreement,
            max_quarantine_rate=settings.max_quarantine_rate,
            compile_memory_mb=settings.compile_memory_mb,
            window_mode=settings.window_mode,
            window_days=settings.window_days,
            max_rows=settings.training_window,
            change_min_rows=settings.change_min_rows,
            reservoir_size=settings.reservoir_size,
            seed=settings.seed,
            labeling_method=settings.labeling_method,
            labeling_budget=settings.labeling_budget,
            labeling_lookback_days=settings.labeling_lookback_days,
        ),
    }
