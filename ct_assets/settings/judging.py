"""Settings of sections gate, drift, performance and canary: how candidates, champions
and arms are judged."""

from __future__ import annotations

from dataclasses import dataclass

from ct_assets.settings.declare import (
    TRAINING_MODES,
    TrainingMode,
    at_least,
    between,
    check_drift_min_window,
    one_of,
    parse_flag,
    parse_fraction,
    parse_mode,
    parse_non_negative_int,
    setting,
)


@dataclass(frozen=True)
class JudgingSettings:
    # --- gate: the promotion gate --------------------------------------------------------------
    # Candidate AUC must reach champion AUC - tolerance, and the floor; the paired bootstrap
    # must not show it clearly worse; no historical slice may drop by more than the
    # forgetting tolerance, no segment by more than the slice tolerance; calibration (ECE)
    # must stay under its limit unless no worse than the champion's.
    gate_tolerance: float = setting(
        0.02,
        env="CT_GATE_TOLERANCE",
        section="gate",
        parse=parse_fraction,
        help="non-inferiority margin of the candidate's AUC",
    )
    gate_min_auc: float = setting(
        0.55,
        env="CT_GATE_MIN_AUC",
        section="gate",
        parse=parse_fraction,
        help="floor for any candidate",
    )
    gate_forgetting_tolerance: float = setting(
        0.02,
        env="CT_GATE_FORGETTING_TOLERANCE",
        section="gate",
        parse=parse_fraction,
        help="largest AUC drop on older data",
    )
    gate_slice_tolerance: float = setting(
        0.05,
        env="CT_GATE_SLICE_TOLERANCE",
        section="gate",
        parse=parse_fraction,
        help="largest AUC drop on a slice",
    )
    gate_max_ece: float = setting(
        0.15,
        env="CT_GATE_MAX_ECE",
        section="gate",
        parse=parse_fraction,
        help="calibration ceiling",
    )
    gate_bootstrap_resamples: int = setting(
        1000,
        env="CT_GATE_BOOTSTRAP_RESAMPLES",
        section="gate",
        parse=parse_non_negative_int,
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
        parse=parse_flag,
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
        0.05, env="CT_DRIFT_P_VALUE", section="drift", parse=parse_fraction, help="test level"
    )
    drift_min_distance: float = setting(
        0.1,
        env="CT_DRIFT_MIN_DISTANCE",
        section="drift",
        parse=parse_fraction,
        check=between(0.0, 1.0, closed="[)"),
        help="smallest KS or total variation distance that counts",
    )
    drift_window: int = setting(
        2000,
        env="CT_DRIFT_WINDOW",
        section="drift",
        parse=parse_non_negative_int,
        check=at_least(50),
        help="latest logged predictions compared",
    )
    drift_min_window: int = setting(
        500,
        env="CT_DRIFT_MIN_WINDOW",
        section="drift",
        parse=parse_non_negative_int,
        check=check_drift_min_window,
        help="new predictions before a check runs",
    )
    drift_cooldown_predictions: int = setting(
        5000,
        env="CT_DRIFT_COOLDOWN_PREDICTIONS",
        section="drift",
        parse=parse_non_negative_int,
        help="predictions before the trigger fires again for the same champion",
    )
    drift_mode: TrainingMode = setting(  # noqa: RUF009 (setting() is dataclasses.field)
        "full",
        env="CT_DRIFT_MODE",
        section="drift",
        parse=parse_mode,
        check=one_of(*TRAINING_MODES),
        help="mode of drift-triggered runs",
    )

    # --- performance: the champion's accuracy on attributed feedback --------------------------
    performance_window: int = setting(
        1000,
        env="CT_PERFORMANCE_WINDOW",
        section="performance",
        parse=parse_non_negative_int,
        check=at_least(10),
        help="latest labeled feedback events scored",
    )
    performance_min_samples: int = setting(
        200,
        env="CT_PERFORMANCE_MIN_SAMPLES",
        section="performance",
        parse=parse_non_negative_int,
        check=at_least(10),
        help="fewest events before the trigger can fire",
    )
    performance_tolerance: float = setting(
        0.02,
        env="CT_PERFORMANCE_TOLERANCE",
        section="performance",
        parse=parse_fraction,
        help="accuracy drop below the baseline that counts",
    )
    performance_alpha: float = setting(
        0.01,
        env="CT_PERFORMANCE_ALPHA",
        section="performance",
        parse=parse_fraction,
        help="level of the one-sided binomial test",
    )
    performance_mode: TrainingMode = setting(  # noqa: RUF009 (setting() is dataclasses.field)
        "full",
        env="CT_PERFORMANCE_MODE",
        section="performance",
        parse=parse_mode,
        check=one_of(*TRAINING_MODES),
        help="mode of performance-triggered runs",
    )
    # ...and the change detector on the champion's error stream (ADWIN's cut test).
    change_delta: float = setting(
        0.002,
        env="CT_CHANGE_DELTA",
        section="performance",
        parse=parse_fraction,
        check=between(0.0, 1.0),
        help="false-alarm level of one check of the change detector",
    )
    change_window: int = setting(
        5000,
        env="CT_CHANGE_WINDOW",
        section="performance",
        parse=parse_non_negative_int,
        check=at_least(200),
        help="newest outcomes the change detector reads",
    )
    change_min_rows: int = setting(
        250,
        env="CT_CHANGE_MIN_ROWS",
        section="performance",
        parse=parse_non_negative_int,
        help="fewest rows a dataset after a detected change keeps",
    )

    # --- canary: labeled requests per arm before promoting, non-inferiority margin -----------
    canary_min_samples: int = setting(
        300,
        env="CT_CANARY_MIN_SAMPLES",
        section="canary",
        parse=parse_non_negative_int,
        check=at_least(10),
        help="fewest labeled requests per arm before a promotion",
    )
    canary_margin: float = setting(
        0.02,
        env="CT_CANARY_MARGIN",
        section="canary",
        parse=parse_fraction,
        help="non-inferiority margin",
    )
    canary_alpha: float = setting(
        0.05,
        env="CT_CANARY_ALPHA",
        section="canary",
        parse=parse_fraction,
        help="bound on a wrong decision of either kind",
    )
