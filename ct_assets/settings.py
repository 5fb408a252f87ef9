"""One settings object for the whole project.

Every path lives under ``CT_HOME`` (default ``.ct/`` in the project root). Values
come from defaults, overridden by ``CT_*`` environment variables; nothing reads
the environment at import time: call :meth:`Settings.from_env` where needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".ct"

#: full: train from scratch; incremental: continue the champion; auto: both compete as
#: candidates (see ct_assets.training.candidates), incremental only when no change was found.
TrainingMode = Literal["full", "incremental", "auto"]


class SettingsError(ValueError):
    """An environment variable holds a value the settings cannot use."""


@dataclass(frozen=True)
class Settings:
    home: Path = DEFAULT_HOME
    model_name: str = "ct_model"
    # MLflow: None means SQLite + local artifacts under CT_HOME/mlflow.
    tracking_uri_override: str | None = None
    # Volume trigger: labeled feedback events since the champion's dataset cutoff.
    volume_threshold: int = 2000
    volume_mode: TrainingMode = "auto"
    sensor_interval_seconds: int = 30
    # Dataset compilation: most recent labeled examples, the last share held out by time.
    training_window: int = 4000
    holdout_fraction: float = 0.2
    # Which examples a dataset is compiled from: the last `window_days` of attributed
    # examples (at most `training_window`), plus a reservoir of older ones if asked.
    window_mode: str = "sliding"
    window_days: int = 30
    reservoir_size: int = 0
    # Feedback validation (see ct_assets/data/validation.py for every rule).
    pending_expiry_hours: int = 24
    max_feedback_delay_days: int = 30
    rate_factor: float = 10.0
    dominance_share: float = 0.5
    flip_disagreement: float = 0.5
    max_quarantine_rate: float = 0.2
    # Memory DuckDB may use compiling a dataset before it spills to disk.
    compile_memory_mb: int = 1000
    # Active learning: the labeling queue.
    labeling_method: str = "margin"
    labeling_budget: int = 100
    labeling_lookback_days: int = 7
    # Promotion gate: candidate AUC must reach champion AUC - tolerance, and the floor;
    # the paired bootstrap must not show it clearly worse; no historical slice may drop
    # by more than the forgetting tolerance, no segment by more than the slice tolerance;
    # calibration (ECE) must stay under its limit unless no worse than the champion's.
    gate_tolerance: float = 0.02
    gate_min_auc: float = 0.55
    gate_forgetting_tolerance: float = 0.02
    gate_slice_tolerance: float = 0.05
    gate_max_ece: float = 0.15
    gate_bootstrap_resamples: int = 1000
    # Columns whose segments the gate compares (comma-separated; empty: categorical
    # features and the serving arm).
    slice_columns: str = ""
    # The gate's report renders ROC, calibration and importance PNGs (for people only:
    # the decision never reads them).
    report_plots: bool = True
    # The drift trigger: alibi-detect on the champion's latest logged predictions.
    drift_detector: str = "tabular"
    drift_p_value: float = 0.05
    drift_min_distance: float = 0.1
    drift_window: int = 2000
    drift_min_window: int = 500
    drift_cooldown_predictions: int = 5000
    drift_mode: TrainingMode = "full"
    # The performance trigger: the champion's accuracy on attributed feedback.
    performance_window: int = 1000
    performance_min_samples: int = 200
    performance_tolerance: float = 0.02
    performance_alpha: float = 0.01
    performance_mode: TrainingMode = "full"
    # ...and the change detector on the champion's error stream (ADWIN's cut test): its
    # false-alarm level per check, how many of the newest outcomes it examines, and the
    # fewest rows a dataset after a detected change keeps.
    change_delta: float = 0.002
    change_window: int = 5000
    change_min_rows: int = 250
    # Which candidate windows a retrain trains and the gate chooses among (comma list of
    # window, recent, incremental; see ct_assets.training.candidates).
    candidate_windows: str = "window,recent,incremental"
    # Canary analysis: labeled requests per arm before promoting, non-inferiority margin.
    canary_min_samples: int = 300
    canary_margin: float = 0.02
    canary_alpha: float = 0.05
    # Monitoring of the loop itself (group monitoring): the segment columns of the
    # feedback figures (comma-separated feature names; empty: the categorical features),
    # the bias thresholds its checks warn on (or block training on, when turned on), the
    # API metrics endpoint pipeline_health reads and the cron of monitoring_schedule.
    monitoring_segments: str = ""
    bias_max_top_users_share: float = 0.25
    bias_max_hhi: float = 0.05
    bias_max_label_shift: float = 0.15
    bias_max_selection_ratio: float = 3.0
    bias_block_training: bool = False
    api_metrics_url: str = ""
    monitoring_cron: str = "0 * * * *"
    # The schedule trigger: a full retrain on this cron (UTC), stopped unless turned on.
    retrain_cron: str = "0 3 * * 0"
    retrain_schedule_on: bool = False
    # Training checkpoints: every N boosting rounds (0: none).
    checkpoint_every: int = 25
    # LightGBM (its own defaults). Early stopping picks the rounds only on datasets of at
    # least early_stopping_min_rows training rows; below, a model is plain LightGBM's.
    num_boost_round: int = 100
    learning_rate: float = 0.1
    num_leaves: int = 31
    seed: int = 7
    early_stopping_min_rows: int = 20_000
    balance_classes: bool = False
    # The registered model is the chosen candidate's recipe trained again with the holdout
    # (the gate judges the candidate trained without it).
    refit_on_holdout: bool = True
    # After this many incremental versions in a row the next retrain is full (0: no limit):
    # trees stacked without end cost prediction time and keep what the data no longer says.
    max_incremental_chain: int = 10
    # Event log
    segment_max_bytes: int = 64 * 1024 * 1024
    max_event_bytes: int = 32 * 1024
    # Daily partitions of the raw assets (UTC event dates) and how often they are refreshed.
    partition_start_date: str = "2020-01-01"
    raw_sensor_interval_seconds: int = 60
    # Ingestion API: bearer token (never printed), body limit, tolerated clock skew.
    api_token: str | None = field(default=None, repr=False)
    api_max_body_bytes: int = 5 * 1024 * 1024
    max_future_skew_seconds: int = 300

    @property
    def eventlog_dir(self) -> Path:
        return self.home / "eventlog"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def drift_dir(self) -> Path:
        return self.home / "drift"

    @property
    def tables_dir(self) -> Path:
        return self.home / "tables"

    @property
    def monitoring_dir(self) -> Path:
        """Exports of the monitoring assets (e.g. feedback_loop_latency.json)."""
        return self.home / "monitoring"

    @property
    def metrics_dir(self) -> Path:
        """Prometheus textfiles (``*.prom``) the API appends to its ``/metrics``."""
        return self.home / "metrics"

    @property
    def loop_latency_path(self) -> Path:
        """feedback_loop_latency's export, which ``ct-assets status`` shows."""
        return self.monitoring_dir / "feedback_loop_latency.json"

    @property
    def loop_latency_metrics_path(self) -> Path:
        """feedback_loop_latency's Prometheus gauges, served by the API's ``/metrics``."""
        return self.metrics_dir / "feedback_loop_latency.prom"

    @property
    def bias_report_path(self) -> Path:
        return self.monitoring_dir / "feedback_bias_report.json"

    @property
    def api_scrape_path(self) -> Path:
        """pipeline_health's previous scrape of the API's metrics (for rates)."""
        return self.monitoring_dir / "api_metrics_last.json"

    @property
    def labeling_queue_path(self) -> Path:
        return self.tables_dir / "labeling_queue" / "latest.json"

    @property
    def reference_dir(self) -> Path:
        return self.home / "reference"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def tracking_uri(self) -> str:
        if self.tracking_uri_override:
            return self.tracking_uri_override
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by ``CT_*`` variables from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (var, parse) in _ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{var}={raw!r}: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def with_home(self, home: Path) -> Settings:
        return replace(self, home=home.resolve())

    def validate(self) -> None:
        checks = [
            (self.volume_threshold >= 1, "CT_VOLUME_THRESHOLD must be >= 1"),
            (self.training_window >= 10, "CT_TRAINING_WINDOW must be >= 10"),
            (0.0 < self.holdout_fraction < 0.9, "CT_HOLDOUT_FRACTION must be in (0, 0.9)"),
            (self.sensor_interval_seconds >= 1, "CT_SENSOR_INTERVAL_SECONDS must be >= 1"),
            (self.num_boost_round >= 1, "CT_NUM_BOOST_ROUND must be >= 1"),
            (self.learning_rate > 0.0, "CT_LEARNING_RATE must be > 0"),
            (self.num_leaves >= 2, "CT_NUM_LEAVES must be >= 2"),
            (self.max_event_bytes >= 1024, "CT_MAX_EVENT_BYTES must be >= 1024"),
            (self.segment_max_bytes >= 4096, "CT_SEGMENT_MAX_BYTES must be >= 4096"),
            (self.api_max_body_bytes >= 1024, "CT_API_MAX_BODY_BYTES must be >= 1024"),
            (_is_date(self.partition_start_date), "CT_PARTITION_START_DATE must be YYYY-MM-DD"),
            (self.raw_sensor_interval_seconds >= 1, "CT_RAW_SENSOR_INTERVAL_SECONDS must be >= 1"),
            (
                self.volume_mode in ("full", "incremental", "auto"),
                "CT_VOLUME_MODE: full|incremental|auto",
            ),
            (
                self.window_mode in ("sliding", "all", "sliding_reservoir"),
                "CT_WINDOW_MODE: sliding|all|sliding_reservoir",
            ),
            (self.window_days >= 1, "CT_WINDOW_DAYS must be >= 1"),
            (self.pending_expiry_hours >= 1, "CT_PENDING_EXPIRY_HOURS must be >= 1"),
            (self.max_feedback_delay_days >= 1, "CT_MAX_FEEDBACK_DELAY_DAYS must be >= 1"),
            (self.labeling_method in ("margin", "entropy"), "CT_LABELING_METHOD: margin|entropy"),
            (self.labeling_budget >= 1, "CT_LABELING_BUDGET must be >= 1"),
            (self.compile_memory_mb >= 100, "CT_COMPILE_MEMORY_MB must be >= 100"),
            (self.drift_detector in ("tabular", "ks"), "CT_DRIFT_DETECTOR: tabular|ks"),
            (self.drift_window >= 50, "CT_DRIFT_WINDOW must be >= 50"),
            (0 <= self.drift_min_distance < 1, "CT_DRIFT_MIN_DISTANCE must be in [0, 1)"),
            (
                1 <= self.drift_min_window <= self.drift_window,
                "CT_DRIFT_MIN_WINDOW must be between 1 and CT_DRIFT_WINDOW",
            ),
            (self.performance_window >= 10, "CT_PERFORMANCE_WINDOW must be >= 10"),
            (0.0 < self.change_delta < 1.0, "CT_CHANGE_DELTA must be in (0, 1)"),
            (
                bool(self.candidate_windows.strip())
                and set(self.candidate_windows.replace(" ", "").split(","))
                <= {"window", "recent", "incremental"},
                "CT_CANDIDATE_WINDOWS: a comma list of window, recent, incremental",
            ),
            (self.change_window >= 200, "CT_CHANGE_WINDOW must be >= 200"),
            (
                self.bias_max_selection_ratio >= 1.0,
                "CT_BIAS_MAX_SELECTION_RATIO must be >= 1",
            ),
            (
                len(self.monitoring_cron.split()) == 5,
                f"CT_MONITORING_CRON must be a 5-field cron, got {self.monitoring_cron!r}",
            ),
            (self.canary_min_samples >= 10, "CT_CANARY_MIN_SAMPLES must be >= 10"),
            (self.performance_min_samples >= 10, "CT_PERFORMANCE_MIN_SAMPLES must be >= 10"),
            (
                len(self.retrain_cron.split()) == 5,
                f"CT_RETRAIN_CRON must have 5 fields (minute hour day month weekday), "
                f"got {self.retrain_cron!r}",
            ),
            (
                self.gate_bootstrap_resamples >= 100,
                "CT_GATE_BOOTSTRAP_RESAMPLES must be >= 100",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)

    def as_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        out: dict[str, str] = {}
        for f in fields(self):
            if f.name not in _ENV_VARS:
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[_ENV_VARS[f.name][0]] = str(value)
        out["DAGSTER_HOME"] = str(self.dagster_home)
        return out


def _is_date(raw: str) -> bool:
    try:
        date.fromisoformat(raw)
    except ValueError:
        return False
    return len(raw) == 10


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")


def _mode(raw: str) -> str:
    if raw not in ("full", "incremental", "auto"):
        raise ValueError("must be 'full', 'incremental' or 'auto'")
    return raw


def _home(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


_ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "home": ("CT_HOME", _home),
    "model_name": ("CT_MODEL_NAME", str),
    "tracking_uri_override": ("CT_MLFLOW_TRACKING_URI", str),
    "volume_threshold": ("CT_VOLUME_THRESHOLD", _non_negative_int),
    "volume_mode": ("CT_VOLUME_MODE", _mode),
    "sensor_interval_seconds": ("CT_SENSOR_INTERVAL_SECONDS", _non_negative_int),
    "training_window": ("CT_TRAINING_WINDOW", _non_negative_int),
    "holdout_fraction": ("CT_HOLDOUT_FRACTION", _fraction),
    "gate_tolerance": ("CT_GATE_TOLERANCE", _fraction),
    "gate_min_auc": ("CT_GATE_MIN_AUC", _fraction),
    "gate_forgetting_tolerance": ("CT_GATE_FORGETTING_TOLERANCE", _fraction),
    "gate_slice_tolerance": ("CT_GATE_SLICE_TOLERANCE", _fraction),
    "gate_max_ece": ("CT_GATE_MAX_ECE", _fraction),
    "gate_bootstrap_resamples": ("CT_GATE_BOOTSTRAP_RESAMPLES", _non_negative_int),
    "slice_columns": ("CT_SLICE_COLUMNS", str),
    "report_plots": ("CT_REPORT_PLOTS", _flag),
    "checkpoint_every": ("CT_CHECKPOINT_EVERY", _non_negative_int),
    "retrain_cron": ("CT_RETRAIN_CRON", str),
    "canary_min_samples": ("CT_CANARY_MIN_SAMPLES", _non_negative_int),
    "canary_margin": ("CT_CANARY_MARGIN", _fraction),
    "canary_alpha": ("CT_CANARY_ALPHA", _fraction),
    "drift_detector": ("CT_DRIFT_DETECTOR", str),
    "drift_p_value": ("CT_DRIFT_P_VALUE", _fraction),
    "drift_min_distance": ("CT_DRIFT_MIN_DISTANCE", _fraction),
    "drift_window": ("CT_DRIFT_WINDOW", _non_negative_int),
    "drift_min_window": ("CT_DRIFT_MIN_WINDOW", _non_negative_int),
    "drift_cooldown_predictions": ("CT_DRIFT_COOLDOWN_PREDICTIONS", _non_negative_int),
    "drift_mode": ("CT_DRIFT_MODE", _mode),
    "performance_window": ("CT_PERFORMANCE_WINDOW", _non_negative_int),
    "performance_min_samples": ("CT_PERFORMANCE_MIN_SAMPLES", _non_negative_int),
    "performance_tolerance": ("CT_PERFORMANCE_TOLERANCE", _fraction),
    "performance_alpha": ("CT_PERFORMANCE_ALPHA", _fraction),
    "performance_mode": ("CT_PERFORMANCE_MODE", _mode),
    "change_delta": ("CT_CHANGE_DELTA", _fraction),
    "change_window": ("CT_CHANGE_WINDOW", _non_negative_int),
    "change_min_rows": ("CT_CHANGE_MIN_ROWS", _non_negative_int),
    "candidate_windows": ("CT_CANDIDATE_WINDOWS", str),
    "retrain_schedule_on": ("CT_RETRAIN_SCHEDULE_ON", _flag),
    "monitoring_segments": ("CT_MONITORING_SEGMENTS", str),
    "bias_max_top_users_share": ("CT_BIAS_MAX_TOP_USERS_SHARE", _fraction),
    "bias_max_hhi": ("CT_BIAS_MAX_HHI", _fraction),
    "bias_max_label_shift": ("CT_BIAS_MAX_LABEL_SHIFT", _fraction),
    "bias_max_selection_ratio": ("CT_BIAS_MAX_SELECTION_RATIO", float),
    "bias_block_training": ("CT_BIAS_BLOCK_TRAINING", _flag),
    "api_metrics_url": ("CT_API_METRICS_URL", str),
    "monitoring_cron": ("CT_MONITORING_CRON", str),
    "num_boost_round": ("CT_NUM_BOOST_ROUND", _non_negative_int),
    "learning_rate": ("CT_LEARNING_RATE", float),
    "num_leaves": ("CT_NUM_LEAVES", _non_negative_int),
    "seed": ("CT_SEED", int),
    "early_stopping_min_rows": ("CT_EARLY_STOPPING_MIN_ROWS", _non_negative_int),
    "balance_classes": ("CT_BALANCE_CLASSES", _flag),
    "refit_on_holdout": ("CT_REFIT_ON_HOLDOUT", _flag),
    "max_incremental_chain": ("CT_MAX_INCREMENTAL_CHAIN", _non_negative_int),
    "segment_max_bytes": ("CT_SEGMENT_MAX_BYTES", _non_negative_int),
    "max_event_bytes": ("CT_MAX_EVENT_BYTES", _non_negative_int),
    "window_mode": ("CT_WINDOW_MODE", str),
    "window_days": ("CT_WINDOW_DAYS", _non_negative_int),
    "reservoir_size": ("CT_RESERVOIR_SIZE", _non_negative_int),
    "pending_expiry_hours": ("CT_PENDING_EXPIRY_HOURS", _non_negative_int),
    "max_feedback_delay_days": ("CT_MAX_FEEDBACK_DELAY_DAYS", _non_negative_int),
    "rate_factor": ("CT_RATE_FACTOR", float),
    "dominance_share": ("CT_DOMINANCE_SHARE", _fraction),
    "flip_disagreement": ("CT_FLIP_DISAGREEMENT", _fraction),
    "max_quarantine_rate": ("CT_MAX_QUARANTINE_RATE", _fraction),
    "compile_memory_mb": ("CT_COMPILE_MEMORY_MB", _non_negative_int),
    "labeling_method": ("CT_LABELING_METHOD", str),
    "labeling_budget": ("CT_LABELING_BUDGET", _non_negative_int),
    "labeling_lookback_days": ("CT_LABELING_LOOKBACK_DAYS", _non_negative_int),
    "partition_start_date": ("CT_PARTITION_START_DATE", str),
    "raw_sensor_interval_seconds": ("CT_RAW_SENSOR_INTERVAL_SECONDS", _non_negative_int),
    "api_token": ("CT_API_TOKEN", str),
    "api_max_body_bytes": ("CT_API_MAX_BODY_BYTES", _non_negative_int),
    "max_future_skew_seconds": ("CT_MAX_FUTURE_SKEW_SECONDS", _non_negative_int),
}
