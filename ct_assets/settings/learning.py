"""Settings of sections curation and training: what a dataset holds, when and how a
retrain trains."""

from __future__ import annotations

from dataclasses import dataclass

from ct_assets.settings.declare import (
    TRAINING_MODES,
    TrainingMode,
    above,
    at_least,
    between,
    check_candidate_windows,
    check_cron,
    check_dask_scheduler,
    one_of,
    parse_flag,
    parse_fraction,
    parse_mode,
    parse_non_negative_int,
    setting,
)


@dataclass(frozen=True)
class LearningSettings:
    # --- curation: feedback validation, dataset compilation, the labeling queue --------------
    # Dataset compilation: the last `window_days` of attributed examples (at most
    # `training_window`), plus a reservoir of older ones if asked; the last share held out.
    training_window: int = setting(
        4000,
        env="CT_TRAINING_WINDOW",
        section="curation",
        parse=parse_non_negative_int,
        check=at_least(10),
        help="examples per dataset",
    )
    holdout_fraction: float = setting(
        0.2,
        env="CT_HOLDOUT_FRACTION",
        section="curation",
        parse=parse_fraction,
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
        parse=parse_non_negative_int,
        check=at_least(1),
        help="days of a sliding window",
    )
    reservoir_size: int = setting(
        0,
        env="CT_RESERVOIR_SIZE",
        section="curation",
        parse=parse_non_negative_int,
        help="older examples kept by sliding_reservoir",
    )
    # Feedback validation (see ct_assets/data/feedback_rules/ for every rule).
    pending_expiry_hours: int = setting(
        24,
        env="CT_PENDING_EXPIRY_HOURS",
        section="curation",
        parse=parse_non_negative_int,
        check=at_least(1),
        help="pending feedback is then quarantined as unknown_prediction",
    )
    max_feedback_delay_days: int = setting(
        30,
        env="CT_MAX_FEEDBACK_DELAY_DAYS",
        section="curation",
        parse=parse_non_negative_int,
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
        parse=parse_fraction,
        help="abuse threshold",
    )
    flip_disagreement: float = setting(
        0.5,
        env="CT_FLIP_DISAGREEMENT",
        section="curation",
        parse=parse_fraction,
        help="abuse threshold",
    )
    max_quarantine_rate: float = setting(
        0.2,
        env="CT_MAX_QUARANTINE_RATE",
        section="curation",
        parse=parse_fraction,
        help="above it the dataset's blocking check stops training",
    )
    compile_memory_mb: int = setting(
        1000,
        env="CT_COMPILE_MEMORY_MB",
        section="curation",
        parse=parse_non_negative_int,
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
        parse=parse_non_negative_int,
        check=at_least(1),
        help="predictions in the labeling queue",
    )
    labeling_lookback_days: int = setting(
        7,
        env="CT_LABELING_LOOKBACK_DAYS",
        section="curation",
        parse=parse_non_negative_int,
        help="days of predictions the labeling queue looks at",
    )

    # --- training: when to retrain, how, and LightGBM ---------------------------------------
    # Volume trigger: labeled feedback events since the champion's dataset cutoff.
    volume_threshold: int = setting(
        2000,
        env="CT_VOLUME_THRESHOLD",
        section="training",
        parse=parse_non_negative_int,
        check=at_least(1),
        help="labeled events that trigger a retrain",
    )
    volume_mode: TrainingMode = setting(  # noqa: RUF009 (setting() is dataclasses.field)
        "auto",
        env="CT_VOLUME_MODE",
        section="training",
        parse=parse_mode,
        check=one_of(*TRAINING_MODES),
        help="mode of volume-triggered runs",
    )
    sensor_interval_seconds: int = setting(
        30,
        env="CT_SENSOR_INTERVAL_SECONDS",
        section="training",
        parse=parse_non_negative_int,
        check=at_least(1),
        help="minimum sensor interval",
    )
    # The schedule trigger: a full retrain on this cron (UTC), stopped unless turned on.
    retrain_cron: str = setting(
        "0 3 * * 0",
        env="CT_RETRAIN_CRON",
        section="training",
        check=check_cron,
        help="cron (UTC) of the schedule trigger",
    )
    retrain_schedule_on: bool = setting(
        False,
        env="CT_RETRAIN_SCHEDULE_ON",
        section="training",
        parse=parse_flag,
        help="start the schedule trigger running",
    )
    # Which candidate windows a retrain trains and the gate chooses among (see
    # ct_assets.training.candidates).
    candidate_windows: str = setting(
        "window,recent,incremental",
        env="CT_CANDIDATE_WINDOWS",
        section="training",
        check=check_candidate_windows,
        help="the candidate windows a retrain trains",
    )
    # After this many incremental versions in a row the next retrain is full (0: no limit):
    # trees stacked without end cost prediction time and keep what the data no longer says.
    max_incremental_chain: int = setting(
        10,
        env="CT_MAX_INCREMENTAL_CHAIN",
        section="training",
        parse=parse_non_negative_int,
        help="incremental versions in a row before a full retrain (0: no limit)",
    )
    # The registered model is the chosen candidate's recipe trained again with the holdout
    # (the gate judges the candidate trained without it).
    refit_on_holdout: bool = setting(
        True,
        env="CT_REFIT_ON_HOLDOUT",
        section="training",
        parse=parse_flag,
        help="register the chosen candidate trained again with the holdout",
    )
    checkpoint_every: int = setting(
        25,
        env="CT_CHECKPOINT_EVERY",
        section="training",
        parse=parse_non_negative_int,
        help="boosting rounds between checkpoints (0: none)",
    )
    # LightGBM (its own defaults). Early stopping picks the rounds only on datasets of at
    # least early_stopping_min_rows training rows; below, a model is plain LightGBM's.
    num_boost_round: int = setting(
        100,
        env="CT_NUM_BOOST_ROUND",
        section="training",
        parse=parse_non_negative_int,
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
        parse=parse_non_negative_int,
        check=at_least(2),
        help="LightGBM leaves per tree",
    )
    seed: int = setting(7, env="CT_SEED", section="training", parse=int, help="random seed")
    early_stopping_min_rows: int = setting(
        20_000,
        env="CT_EARLY_STOPPING_MIN_ROWS",
        section="training",
        parse=parse_non_negative_int,
        help="early stopping only from this many training rows",
    )
    balance_classes: bool = setting(
        False,
        env="CT_BALANCE_CLASSES",
        section="training",
        parse=parse_flag,
        help="rebalance classes",
    )
    # Full trainings of at least dask_min_rows rows run on this dask.distributed cluster
    # through lightgbm.dask (ct_assets.training.distributed); smaller ones, incremental
    # ones and every training when it is empty stay in the process.
    dask_scheduler: str = setting(
        "",
        env="CT_DASK_SCHEDULER",
        section="training",
        check=check_dask_scheduler,
        help="dask scheduler to train on (tcp://host:8786); empty: in the process",
    )
    dask_min_rows: int = setting(
        100_000,
        env="CT_DASK_MIN_ROWS",
        section="training",
        parse=parse_non_negative_int,
        help="training rows from which training runs on the dask cluster",
    )
