"""One settings object for the whole project, each setting declared once.

Every path lives under ``CT_HOME`` (default ``.ct/`` in the project root). Values
come from defaults, overridden by ``CT_*`` environment variables; nothing reads
the environment at import time: call :meth:`Settings.from_env` where needed.

Each field of :class:`Settings` is declared by :func:`setting`: its default, its
environment variable, the parser of that variable's text, the check of its value, its
section (``drift``, ``gate``, ...) and whether it is a secret. ``from_env``, ``as_env``,
``validate``, :meth:`Settings.section` and ``ct-assets config`` are all derived from
these declarations (see :func:`declarations`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = PROJECT_ROOT / ".ct"

#: full: train from scratch; incremental: continue the champion; auto: both compete as
#: candidates (see ct_assets.training.candidates), incremental only when no change was found.
TrainingMode = Literal["full", "incremental", "auto"]

#: The sections settings are grouped in, in the order ``ct-assets config`` lists them.
SECTIONS = (
    "core",
    "api",
    "eventlog",
    "eventstream",
    "curation",
    "training",
    "gate",
    "drift",
    "performance",
    "canary",
    "bias",
    "monitoring",
    "serving",
    "retention",
    "storage",
)


class SettingsError(ValueError):
    """An environment variable holds a value the settings cannot use."""


#: A check of a setting's value: ``None`` when it is fine, else what is wrong ("must be
#: >= 1"). It also receives the whole settings, for limits that depend on another one.
Check = Callable[[Any, "Settings"], str | None]

_DECLARATION = "ct_setting"


@dataclass(frozen=True)
class Declaration:
    """What :func:`setting` declares about one field of :class:`Settings`."""

    name: str
    env: str
    section: str
    parse: Callable[[str], Any]
    check: Check | None
    secret: bool  # never printed (``ct-assets config`` shows it redacted)
    uri: bool  # a URI that may carry credentials (redacted when shown)
    help: str
    default: Any


def setting(
    default: Any,
    *,
    env: str,
    section: str,
    parse: Callable[[str], Any] = str,
    check: Check | None = None,
    secret: bool = False,
    uri: bool = False,
    help: str = "",
) -> Any:
    """A field of :class:`Settings` with its environment variable, parser, check and section."""
    if section not in SECTIONS:
        raise ValueError(f"unknown settings section {section!r}")
    spec = {
        "env": env,
        "section": section,
        "parse": parse,
        "check": check,
        "secret": secret,
        "uri": uri,
        "help": help,
    }
    return field(default=default, repr=not secret, metadata={_DECLARATION: spec})


# --- checks -----------------------------------------------------------------------------------


def at_least(low: float) -> Check:
    return lambda value, _s: None if value >= low else f"must be >= {low:g}"


def above(low: float) -> Check:
    return lambda value, _s: None if value > low else f"must be > {low:g}"


def between(low: float, high: float, *, closed: str = "()") -> Check:
    """``closed``: the brackets of the interval, ``"()"``, ``"[)"``, ``"(]"`` or ``"[]"``."""

    def check(value: Any, _s: Settings) -> str | None:
        ok_low = value >= low if closed[0] == "[" else value > low
        ok_high = value <= high if closed[1] == "]" else value < high
        return None if ok_low and ok_high else f"must be in {closed[0]}{low:g}, {high:g}{closed[1]}"

    return check


def one_of(*choices: str) -> Check:
    return lambda value, _s: None if value in choices else "must be one of " + "|".join(choices)


def _cron(value: Any, _s: Settings) -> str | None:
    if len(str(value).split()) == 5:
        return None
    return "must be a cron with 5 fields (minute hour day month weekday)"


def _iso_date(value: Any, _s: Settings) -> str | None:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        return "must be a date YYYY-MM-DD"
    return None if len(value) == 10 else "must be a date YYYY-MM-DD"


_CANDIDATE_WINDOWS = ("window", "recent", "incremental")


def _candidate_windows(value: Any, _s: Settings) -> str | None:
    names = {part for part in value.replace(" ", "").split(",")}
    if value.strip() and names <= set(_CANDIDATE_WINDOWS):
        return None
    return "must be a comma list of " + ", ".join(_CANDIDATE_WINDOWS)


def _drift_min_window(value: Any, s: Settings) -> str | None:
    if 1 <= value <= s.drift_window:
        return None
    return f"must be between 1 and CT_DRIFT_WINDOW ({s.drift_window})"


def _nats_url(value: Any, _s: Settings) -> str | None:
    if str(value).startswith(("nats://", "tls://")) and "," not in value and " " not in value:
        return None
    return "must be one nats:// or tls:// URL (the client learns the cluster's other servers)"


def _stream_name(value: Any, _s: Settings) -> str | None:
    if value and not any(c in value for c in " .*>/\\\t"):
        return None
    return "must be a JetStream stream name (no spaces, '.', '*', '>', '/' or '\\')"


# --- parsers ----------------------------------------------------------------------------------


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


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be a number >= 0")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def _queue_size(raw: str) -> int:
    value = int(raw)
    if value < 2:
        raise ValueError("must be an integer >= 2 (a shadowed prediction makes two records)")
    return value


_MODES = ("full", "incremental", "auto")


def _storage_uri(value: Any, _s: Settings) -> str | None:
    from ct_assets.storage import parse_storage_uri  # the one definition of what is valid

    if not value:
        return None
    try:
        parse_storage_uri(value)
    except ValueError as error:
        return str(error)
    return None


def _dask_scheduler(value: Any, _s: Settings) -> str | None:
    from ct_assets.uris import scheduler_address_problem  # the one definition

    return scheduler_address_problem(str(value))


def _endpoint_url(value: Any, _s: Settings) -> str | None:
    if not value or value.startswith(("http://", "https://")):
        return None
    return "must be http(s)://host[:port]"


@dataclass(frozen=True)
class Settings:
    # --- core: where state lives and which model --------------------------------------------
    home: Path = setting(  # noqa: RUF009 (setting() is dataclasses.field)
        DEFAULT_HOME, env="CT_HOME", section="core", parse=_home, help="all state"
    )
    model_name: str = setting(
        "ct_model",
        env="CT_MODEL_NAME",
        section="core",
        help="registered model and experiment name",
    )
    # None: SQLite + local artifacts under CT_HOME/mlflow.
    tracking_uri_override: str | None = setting(
        None,
        env="CT_MLFLOW_TRACKING_URI",
        section="core",
        uri=True,
        help="another MLflow server (default: SQLite under CT_HOME)",
    )

    # --- api: the ingestion API -------------------------------------------------------------
    api_token: str | None = setting(
        None, env="CT_API_TOKEN", section="api", secret=True, help="bearer token of the API"
    )
    api_max_body_bytes: int = setting(
        5 * 1024 * 1024,
        env="CT_API_MAX_BODY_BYTES",
        section="api",
        parse=_non_negative_int,
        check=at_least(1024),
        help="larger bodies get 413",
    )
    max_future_skew_seconds: int = setting(
        300,
        env="CT_MAX_FUTURE_SKEW_SECONDS",
        section="api",
        parse=_non_negative_int,
        help="tolerated clock skew of event timestamps",
    )

    # --- eventlog: the log and the daily partitions of the raw assets ------------------------
    segment_max_bytes: int = setting(
        64 * 1024 * 1024,
        env="CT_SEGMENT_MAX_BYTES",
        section="eventlog",
        parse=_non_negative_int,
        check=at_least(4096),
        help="segment size before it is closed",
    )
    max_event_bytes: int = setting(
        32 * 1024,
        env="CT_MAX_EVENT_BYTES",
        section="eventlog",
        parse=_non_negative_int,
        check=at_least(1024),
        help="largest event",
    )
    partition_start_date: str = setting(
        "2020-01-01",
        env="CT_PARTITION_START_DATE",
        section="eventlog",
        check=_iso_date,
        help="first daily partition of the raw assets (UTC event dates)",
    )
    raw_sensor_interval_seconds: int = setting(
        60,
        env="CT_RAW_SENSOR_INTERVAL_SECONDS",
        section="eventlog",
        parse=_non_negative_int,
        check=at_least(1),
        help="how often raw_partitions_sensor looks",
    )

    # --- eventstream: where the API sends accepted events (see ct_assets.eventstream) --------
    event_store: str = setting(
        "embedded",
        env="CT_EVENT_STORE",
        section="eventstream",
        check=one_of("embedded", "nats"),
        help="embedded: the API writes the log; nats: it publishes to JetStream",
    )
    nats_url: str = setting(
        "nats://127.0.0.1:4222",
        env="CT_NATS_URL",
        section="eventstream",
        uri=True,
        check=_nats_url,
        help="a NATS server of the cluster (the client learns the others from it)",
    )
    nats_stream: str = setting(
        "CT_EVENTS",
        env="CT_NATS_STREAM",
        section="eventstream",
        check=_stream_name,
        help="JetStream stream (subjects <stream>.feedback, <stream>.prediction)",
    )
    nats_replicas: int = setting(
        1,
        env="CT_NATS_REPLICAS",
        section="eventstream",
        parse=_positive_int,
        check=between(1, 5, closed="[]"),
        help="replicas of a stream this creates (3 in production)",
    )
    nats_timeout_seconds: float = setting(
        5.0,
        env="CT_NATS_TIMEOUT_SECONDS",
        section="eventstream",
        parse=_positive_float,
        help="longest wait for the stream's acknowledgements before a 503",
    )
    nats_ack_wait_seconds: float = setting(
        60.0,
        env="CT_NATS_ACK_WAIT_SECONDS",
        section="eventstream",
        parse=_positive_float,
        help="a delivery the log's consumer has not acknowledged this long is sent again",
    )

    # --- curation: feedback validation, dataset compilation, the labeling queue --------------
    # Dataset compilation: the last `window_days` of attributed examples (at most
    # `training_window`), plus a reservoir of older ones if asked; the last share held out.
    training_window: int = setting(
        4000,
        env="CT_TRAINING_WINDOW",
        section="curation",
        parse=_non_negative_int,
        check=at_least(10),
        help="examples per dataset",
    )
    holdout_fraction: float = setting(
        0.2,
        env="CT_HOLDOUT_FRACTION",
        section="curation",
        parse=_fraction,
        check=between(0.0, 0.9),
        help="latest share held out",
    )
    window_mode: str = setting(
        "sliding",
        env="CT_WINDOW_MODE",
        section="curation",
        check=one_of("sliding", "all", "sliding_reservoir"),
        help="which examples a dataset holds",
    )
    window_days: int = setting(
        30,
        env="CT_WINDOW_DAYS",
        section="curation",
        parse=_non_negative_int,
        check=at_least(1),
        help="days of a sliding window",
    )
    reservoir_size: int = setting(
        0,
        env="CT_RESERVOIR_SIZE",
        section="curation",
        parse=_non_negative_int,
        help="older examples kept by sliding_reservoir",
    )
    # Feedback validation (see ct_assets/data/feedback_rules.py for every rule).
    pending_expiry_hours: int = setting(
        24,
        env="CT_PENDING_EXPIRY_HOURS",
        section="curation",
        parse=_non_negative_int,
        check=at_least(1),
        help="pending feedback is then quarantined as unknown_prediction",
    )
    max_feedback_delay_days: int = setting(
        30,
        env="CT_MAX_FEEDBACK_DELAY_DAYS",
        section="curation",
        parse=_non_negative_int,
        check=at_least(1),
        help="feedback later than this after its prediction is quarantined",
    )
    rate_factor: float = setting(
        10.0, env="CT_RATE_FACTOR", section="curation", parse=float, help="abuse threshold"
    )
    dominance_share: float = setting(
        0.5,
        env="CT_DOMINANCE_SHARE",
        section="curation",
        parse=_fraction,
        help="abuse threshold",
    )
    flip_disagreement: float = setting(
        0.5,
        env="CT_FLIP_DISAGREEMENT",
        section="curation",
        parse=_fraction,
        help="abuse threshold",
    )
    max_quarantine_rate: float = setting(
        0.2,
        env="CT_MAX_QUARANTINE_RATE",
        section="curation",
        parse=_fraction,
        help="above it the dataset's blocking check stops training",
    )
    compile_memory_mb: int = setting(
        1000,
        env="CT_COMPILE_MEMORY_MB",
        section="curation",
        parse=_non_negative_int,
        check=at_least(100),
        help="memory DuckDB may use compiling a dataset before it spills to disk",
    )
    # Active learning: the labeling queue.
    labeling_method: str = setting(
        "margin",
        env="CT_LABELING_METHOD",
        section="curation",
        check=one_of("margin", "entropy"),
        help="uncertainty measure of the labeling queue",
    )
    labeling_budget: int = setting(
        100,
        env="CT_LABELING_BUDGET",
        section="curation",
        parse=_non_negative_int,
        check=at_least(1),
        help="predictions in the labeling queue",
    )
    labeling_lookback_days: int = setting(
        7,
        env="CT_LABELING_LOOKBACK_DAYS",
        section="curation",
        parse=_non_negative_int,
        help="days of predictions the labeling queue looks at",
    )

    # --- training: when to retrain, how, and LightGBM ---------------------------------------
    # Volume trigger: labeled feedback events since the champion's dataset cutoff.
    volume_threshold: int = setting(
        2000,
        env="CT_VOLUME_THRESHOLD",
        section="training",
        parse=_non_negative_int,
        check=at_least(1),
        help="labeled events that trigger a retrain",
    )
    volume_mode: TrainingMode = setting(  # noqa: RUF009 (setting() is dataclasses.field)
        "auto",
        env="CT_VOLUME_MODE",
        section="training",
        parse=_mode,
        check=one_of(*_MODES),
        help="mode of volume-triggered runs",
    )
    sensor_interval_seconds: int = setting(
        30,
        env="CT_SENSOR_INTERVAL_SECONDS",
        section="training",
        parse=_non_negative_int,
        check=at_least(1),
        help="minimum sensor interval",
    )
    # The schedule trigger: a full retrain on this cron (UTC), stopped unless turned on.
    retrain_cron: str = setting(
        "0 3 * * 0",
        env="CT_RETRAIN_CRON",
        section="training",
        check=_cron,
        help="cron (UTC) of the schedule trigger",
    )
    retrain_schedule_on: bool = setting(
        False,
        env="CT_RETRAIN_SCHEDULE_ON",
        section="training",
        parse=_flag,
        help="start the schedule trigger running",
    )
    # Which candidate windows a retrain trains and the gate chooses among (see
    # ct_assets.training.candidates).
    candidate_windows: str = setting(
        "window,recent,incremental",
        env="CT_CANDIDATE_WINDOWS",
        section="training",
        check=_candidate_windows,
        help="the candidate windows a retrain trains",
    )
    # After this many incremental versions in a row the next retrain is full (0: no limit):
    # trees stacked without end cost prediction time and keep what the data no longer says.
    max_incremental_chain: int = setting(
        10,
        env="CT_MAX_INCREMENTAL_CHAIN",
        section="training",
        parse=_non_negative_int,
        help="incremental versions in a row before a full retrain (0: no limit)",
    )
    # The registered model is the chosen candidate's recipe trained again with the holdout
    # (the gate judges the candidate trained without it).
    refit_on_holdout: bool = setting(
        True,
        env="CT_REFIT_ON_HOLDOUT",
        section="training",
        parse=_flag,
        help="register the chosen candidate trained again with the holdout",
    )
    checkpoint_every: int = setting(
        25,
        env="CT_CHECKPOINT_EVERY",
        section="training",
        parse=_non_negative_int,
        help="boosting rounds between checkpoints (0: none)",
    )
    # LightGBM (its own defaults). Early stopping picks the rounds only on datasets of at
    # least early_stopping_min_rows training rows; below, a model is plain LightGBM's.
    num_boost_round: int = setting(
        100,
        env="CT_NUM_BOOST_ROUND",
        section="training",
        parse=_non_negative_int,
        check=at_least(1),
        help="LightGBM boosting rounds",
    )
    learning_rate: float = setting(
        0.1,
        env="CT_LEARNING_RATE",
        section="training",
        parse=float,
        check=above(0.0),
        help="LightGBM learning rate",
    )
    num_leaves: int = setting(
        31,
        env="CT_NUM_LEAVES",
        section="training",
        parse=_non_negative_int,
        check=at_least(2),
        help="LightGBM leaves per tree",
    )
    seed: int = setting(7, env="CT_SEED", section="training", parse=int, help="random seed")
    early_stopping_min_rows: int = setting(
        20_000,
        env="CT_EARLY_STOPPING_MIN_ROWS",
        section="training",
        parse=_non_negative_int,
        help="early stopping only from this many training rows",
    )
    balance_classes: bool = setting(
        False,
        env="CT_BALANCE_CLASSES",
        section="training",
        parse=_flag,
        help="rebalance classes",
    )
    # Full trainings of at least dask_min_rows rows run on this dask.distributed cluster
    # through lightgbm.dask (ct_assets.training.distributed); smaller ones, incremental
    # ones and every training when it is empty stay in the process.
    dask_scheduler: str = setting(
        "",
        env="CT_DASK_SCHEDULER",
        section="training",
        check=_dask_scheduler,
        help="dask scheduler to train on (tcp://host:8786); empty: in the process",
    )
    dask_min_rows: int = setting(
        100_000,
        env="CT_DASK_MIN_ROWS",
        section="training",
        parse=_non_negative_int,
        help="training rows from which training runs on the dask cluster",
    )

    # --- gate: the promotion gate --------------------------------------------------------------
    # Candidate AUC must reach champion AUC - tolerance, and the floor; the paired bootstrap
    # must not show it clearly worse; no historical slice may drop by more than the
    # forgetting tolerance, no segment by more than the slice tolerance; calibration (ECE)
    # must stay under its limit unless no worse than the champion's.
    gate_tolerance: float = setting(
        0.02,
        env="CT_GATE_TOLERANCE",
        section="gate",
        parse=_fraction,
        help="non-inferiority margin of the candidate's AUC",
    )
    gate_min_auc: float = setting(
        0.55,
        env="CT_GATE_MIN_AUC",
        section="gate",
        parse=_fraction,
        help="floor for any candidate",
    )
    gate_forgetting_tolerance: float = setting(
        0.02,
        env="CT_GATE_FORGETTING_TOLERANCE",
        section="gate",
        parse=_fraction,
        help="largest AUC drop on older data",
    )
    gate_slice_tolerance: float = setting(
        0.05,
        env="CT_GATE_SLICE_TOLERANCE",
        section="gate",
        parse=_fraction,
        help="largest AUC drop on a slice",
    )
    gate_max_ece: float = setting(
        0.15,
        env="CT_GATE_MAX_ECE",
        section="gate",
        parse=_fraction,
        help="calibration ceiling",
    )
    gate_bootstrap_resamples: int = setting(
        1000,
        env="CT_GATE_BOOTSTRAP_RESAMPLES",
        section="gate",
        parse=_non_negative_int,
        check=at_least(100),
        help="paired bootstrap resamples of the holdout",
    )
    # Empty: categorical features and the serving arm.
    slice_columns: str = setting(
        "",
        env="CT_SLICE_COLUMNS",
        section="gate",
        help="columns whose segments the gate compares (comma-separated)",
    )
    # For people only: the decision never reads the plots.
    report_plots: bool = setting(
        True,
        env="CT_REPORT_PLOTS",
        section="gate",
        parse=_flag,
        help="render the report's ROC, calibration and importance PNGs",
    )

    # --- drift: the drift trigger (alibi-detect on the champion's logged predictions) --------
    drift_detector: str = setting(
        "tabular",
        env="CT_DRIFT_DETECTOR",
        section="drift",
        check=one_of("tabular", "ks"),
        help="tabular (KS and Chi2) or ks",
    )
    drift_p_value: float = setting(
        0.05, env="CT_DRIFT_P_VALUE", section="drift", parse=_fraction, help="test level"
    )
    drift_min_distance: float = setting(
        0.1,
        env="CT_DRIFT_MIN_DISTANCE",
        section="drift",
        parse=_fraction,
        check=between(0.0, 1.0, closed="[)"),
        help="smallest KS or total variation distance that counts",
    )
    drift_window: int = setting(
        2000,
        env="CT_DRIFT_WINDOW",
        section="drift",
        parse=_non_negative_int,
        check=at_least(50),
        help="latest logged predictions compared",
    )
    drift_min_window: int = setting(
        500,
        env="CT_DRIFT_MIN_WINDOW",
        section="drift",
        parse=_non_negative_int,
        check=_drift_min_window,
        help="new predictions before a check runs",
    )
    drift_cooldown_predictions: int = setting(
        5000,
        env="CT_DRIFT_COOLDOWN_PREDICTIONS",
        section="drift",
        parse=_non_negative_int,
        help="predictions before the trigger fires again for the same champion",
    )
    drift_mode: TrainingMode = setting(  # noqa: RUF009 (setting() is dataclasses.field)
        "full",
        env="CT_DRIFT_MODE",
        section="drift",
        parse=_mode,
        check=one_of(*_MODES),
        help="mode of drift-triggered runs",
    )

    # --- performance: the champion's accuracy on attributed feedback --------------------------
    performance_window: int = setting(
        1000,
        env="CT_PERFORMANCE_WINDOW",
        section="performance",
        parse=_non_negative_int,
        check=at_least(10),
        help="latest labeled feedback events scored",
    )
    performance_min_samples: int = setting(
        200,
        env="CT_PERFORMANCE_MIN_SAMPLES",
        section="performance",
        parse=_non_negative_int,
        check=at_least(10),
        help="fewest events before the trigger can fire",
    )
    performance_tolerance: float = setting(
        0.02,
        env="CT_PERFORMANCE_TOLERANCE",
        section="performance",
        parse=_fraction,
        help="accuracy drop below the baseline that counts",
    )
    performance_alpha: float = setting(
        0.01,
        env="CT_PERFORMANCE_ALPHA",
        section="performance",
        parse=_fraction,
        help="level of the one-sided binomial test",
    )
    performance_mode: TrainingMode = setting(  # noqa: RUF009 (setting() is dataclasses.field)
        "full",
        env="CT_PERFORMANCE_MODE",
        section="performance",
        parse=_mode,
        check=one_of(*_MODES),
        help="mode of performance-triggered runs",
    )
    # ...and the change detector on the champion's error stream (ADWIN's cut test).
    change_delta: float = setting(
        0.002,
        env="CT_CHANGE_DELTA",
        section="performance",
        parse=_fraction,
        check=between(0.0, 1.0),
        help="false-alarm level of one check of the change detector",
    )
    change_window: int = setting(
        5000,
        env="CT_CHANGE_WINDOW",
        section="performance",
        parse=_non_negative_int,
        check=at_least(200),
        help="newest outcomes the change detector reads",
    )
    change_min_rows: int = setting(
        250,
        env="CT_CHANGE_MIN_ROWS",
        section="performance",
        parse=_non_negative_int,
        help="fewest rows a dataset after a detected change keeps",
    )

    # --- canary: labeled requests per arm before promoting, non-inferiority margin -----------
    canary_min_samples: int = setting(
        300,
        env="CT_CANARY_MIN_SAMPLES",
        section="canary",
        parse=_non_negative_int,
        check=at_least(10),
        help="fewest labeled requests per arm before a promotion",
    )
    canary_margin: float = setting(
        0.02,
        env="CT_CANARY_MARGIN",
        section="canary",
        parse=_fraction,
        help="non-inferiority margin",
    )
    canary_alpha: float = setting(
        0.05,
        env="CT_CANARY_ALPHA",
        section="canary",
        parse=_fraction,
        help="bound on a wrong decision of either kind",
    )

    # --- bias: thresholds of the feedback bias checks -----------------------------------------
    bias_max_top_users_share: float = setting(
        0.25,
        env="CT_BIAS_MAX_TOP_USERS_SHARE",
        section="bias",
        parse=_fraction,
        help="share of labels from the top 1% of users",
    )
    bias_max_hhi: float = setting(
        0.05, env="CT_BIAS_MAX_HHI", section="bias", parse=_fraction, help="label concentration"
    )
    bias_max_label_shift: float = setting(
        0.15,
        env="CT_BIAS_MAX_LABEL_SHIFT",
        section="bias",
        parse=_fraction,
        help="label-rate shift per segment",
    )
    bias_max_selection_ratio: float = setting(
        3.0,
        env="CT_BIAS_MAX_SELECTION_RATIO",
        section="bias",
        parse=float,
        check=at_least(1.0),
        help="highest/lowest score-decile selection ratio",
    )
    bias_block_training: bool = setting(
        False,
        env="CT_BIAS_BLOCK_TRAINING",
        section="bias",
        parse=_flag,
        help="the bias checks block the retrain",
    )

    # --- monitoring: the loop itself (group monitoring) ---------------------------------------
    monitoring_segments: str = setting(
        "",
        env="CT_MONITORING_SEGMENTS",
        section="monitoring",
        help="segment columns of the feedback figures (empty: the categorical features)",
    )
    api_metrics_url: str = setting(
        "",
        env="CT_API_METRICS_URL",
        section="monitoring",
        uri=True,
        help="the API's /metrics, for pipeline_health",
    )
    monitoring_cron: str = setting(
        "0 * * * *",
        env="CT_MONITORING_CRON",
        section="monitoring",
        check=_cron,
        help="cron of monitoring_schedule",
    )

    # --- serving: POST /v1/predict in each API worker (see ct_assets.serving) ----------------
    serving_poll_seconds: float = setting(
        2.0,
        env="CT_SERVING_POLL_SECONDS",
        section="serving",
        parse=_positive_float,
        check=above(0.0),
        help="how often a worker reads the registry's aliases and deployment tags",
    )
    serving_log_queue: int = setting(
        10_000,
        env="CT_SERVING_LOG_QUEUE",
        section="serving",
        parse=_queue_size,
        check=at_least(2),
        help="prediction records a worker may hold not yet durable",
    )
    serving_log_timeout_seconds: float = setting(
        2.0,
        env="CT_SERVING_LOG_TIMEOUT_SECONDS",
        section="serving",
        parse=_non_negative_float,
        check=at_least(0.0),
        help="how long a request waits for room in a full queue before a 503",
    )
    serving_max_instances: int = setting(
        1000,
        env="CT_SERVING_MAX_INSTANCES",
        section="serving",
        parse=_positive_int,
        check=at_least(1),
        help="instances per request",
    )
    serving_log: bool = setting(
        True,
        env="CT_SERVING_LOG",
        section="serving",
        parse=_flag,
        help="log served predictions (0: only for measurements and emergencies)",
    )

    # --- retention: what ``ct-assets gc`` keeps (see ct_assets.retention) ---------------------
    # Besides these, gc keeps every version an alias or a deployment points at and what each
    # kept version's lineage needs (its dataset, the versions it continued from, ...).
    keep_versions: int = setting(
        10,
        env="CT_KEEP_VERSIONS",
        section="retention",
        parse=_positive_int,
        check=at_least(1),
        help="newest registered model versions gc keeps",
    )
    gc_checkpoint_age_hours: int = setting(
        24,
        env="CT_GC_CHECKPOINT_AGE_HOURS",
        section="retention",
        parse=_positive_int,
        check=at_least(1),
        help="hours since its last write before gc deletes a training checkpoint",
    )
    gc_cron: str = setting(
        "30 3 * * *",
        env="CT_GC_CRON",
        section="retention",
        check=_cron,
        help="cron of gc_schedule (stopped until turned on)",
    )

    # --- storage: where datasets and drift references live (see ct_assets.storage) ----------
    storage_uri: str = setting(
        "",
        env="CT_STORAGE_URI",
        section="storage",
        uri=True,
        check=_storage_uri,
        help="object store: empty (CT_HOME), file:///path or s3://bucket/prefix",
    )
    s3_endpoint_url: str = setting(
        "",
        env="CT_S3_ENDPOINT_URL",
        section="storage",
        uri=True,
        check=_endpoint_url,
        help="S3-compatible server, e.g. http://127.0.0.1:8333 (empty: AWS)",
    )
    s3_access_key_id: str | None = setting(
        None, env="CT_S3_ACCESS_KEY_ID", section="storage", secret=True, help="S3 access key"
    )
    s3_secret_access_key: str | None = setting(
        None,
        env="CT_S3_SECRET_ACCESS_KEY",
        section="storage",
        secret=True,
        help="S3 secret key",
    )
    s3_region: str = setting("us-east-1", env="CT_S3_REGION", section="storage", help="S3 region")

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
    def handoffs_dir(self) -> Path:
        """The retrain job's typed hand-offs between its assets (``<asset>.json``)."""
        return self.home / "handoffs"

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
        """Defaults overridden by ``CT_*`` variables from ``environ`` (default ``os.environ``);
        :class:`SettingsError` naming the variable when one holds a value it cannot use."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for decl in declarations():
            raw = _raw(env, decl.env)
            if raw is None:
                continue
            try:
                values[decl.name] = decl.parse(raw)
            except ValueError as exc:
                shown = "***" if decl.secret else repr(raw)
                raise SettingsError(f"{decl.env}={shown}: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def with_home(self, home: Path) -> Settings:
        return replace(self, home=home.resolve())

    def validate(self) -> None:
        """Every declared check; :class:`SettingsError` naming the first variable that fails."""
        for decl in declarations():
            if decl.check is None:
                continue
            value = getattr(self, decl.name)
            problem = decl.check(value, self)
            if problem is not None:
                shown = "***" if decl.secret else repr(value)
                raise SettingsError(f"{decl.env} {problem}, got {shown}")

    def as_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        out: dict[str, str] = {}
        for decl in declarations():
            value = getattr(self, decl.name)
            if value is not None:
                out[decl.env] = str(value)
        out["DAGSTER_HOME"] = str(self.dagster_home)
        return out

    def section(self, name: str) -> Mapping[str, Any]:
        """The settings of one section (see :data:`SECTIONS`), read-only, by field name."""
        if name not in SECTIONS:
            raise KeyError(f"unknown settings section {name!r}; one of {', '.join(SECTIONS)}")
        return MappingProxyType(
            {d.name: getattr(self, d.name) for d in declarations() if d.section == name}
        )


def declarations() -> tuple[Declaration, ...]:
    """Every setting, in declaration order."""
    return _DECLARATIONS


def declaration(name: str) -> Declaration:
    """The declaration of the field ``name`` of :class:`Settings`."""
    for decl in _DECLARATIONS:
        if decl.name == name:
            return decl
    raise KeyError(f"no setting {name!r}")


def env_var(name: str) -> str:
    """The environment variable of the field ``name`` (``"drift_window"`` ->
    ``"CT_DRIFT_WINDOW"``)."""
    return declaration(name).env


def names_set_in(environ: Mapping[str, str]) -> frozenset[str]:
    """The fields whose variables ``environ`` sets (an empty value means unset)."""
    return frozenset(d.name for d in _DECLARATIONS if _raw(environ, d.env) is not None)


def _raw(environ: Mapping[str, str], var: str) -> str | None:
    raw = environ.get(var)
    if raw is None or not raw.strip():
        return None
    return raw


def _declarations() -> tuple[Declaration, ...]:
    out = []
    for f in fields(Settings):
        spec = f.metadata.get(_DECLARATION)
        if spec is None:
            raise TypeError(f"Settings.{f.name} is not declared with setting()")
        out.append(Declaration(name=f.name, default=f.default, **spec))
    envs = [d.env for d in out]
    duplicates = {e for e in envs if envs.count(e) > 1}
    if duplicates:
        raise TypeError(f"environment variables declared twice: {sorted(duplicates)}")
    return tuple(out)


_DECLARATIONS = _declarations()
