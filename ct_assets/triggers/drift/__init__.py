"""Drift trigger: has the input (or the champion's score) distribution moved since training?

A :class:`DriftReference` is built once per champion version from the champion's training
dataset: the train split's features (at most ``max_reference`` rows, a seeded sample),
encoded as the detector reads them, and the champion's class probabilities on reference
rows for the score test. It is stored as ``<root>/<champion_version>/`` (``reference.npz``
+ ``reference.json``, never a pickle) and kept in process by :func:`get_or_build`, so a
sensor tick loads or builds it once and then reuses it, with its alibi-detect detector.

:func:`check_drift` compares a window of recent feature rows (a seeded sample of at most
``max_window`` rows) against the reference:

* per feature, with alibi-detect's ``TabularDrift`` (Kolmogorov-Smirnov for numeric
  features, chi-squared for categorical ones) or ``KSDrift`` (all-numeric), with a
  Bonferroni or FDR correction over the features;
* the champion's scores on the window against its scores on the reference, with a
  two-sample Kolmogorov-Smirnov test (scipy): it catches a change the model is sensitive
  to that per-feature marginals miss (a changed correlation) or a serving-side change of
  the scores themselves.

The decision fires when either test detects drift and the window holds at least
``min_window`` rows; its reason names the features and the numbers.

Encoding: numeric features as floats, missing as ``-inf`` (so a change of the missing rate
is a change of distribution, not a NaN); categorical features as their index in the
champion's category list, missing as ``len(categories)`` and unseen as
``len(categories) + 1``.

Score reference rows: by default the dataset's holdout rows, which the champion did not
fit. Its scores on its own training rows are more confident than on any new data from the
same distribution, so a KS test against them fires on a stationary stream: with a model
boosted 300 rounds without early stopping, 100 of 100 stationary windows against train-row
scores, 0 of 100 against holdout scores.
"""

from ct_assets.triggers.drift.check import (
    DriftDecision,
    check_drift,
    feature_effects,
    prediction_scores,
    score_columns,
)
from ct_assets.triggers.drift.config import DriftConfig
from ct_assets.triggers.drift.encoding import (
    ARRAYS_FILE,
    META_FILE,
    MIN_SCORE_ROWS,
    encode_features,
    feature_frame,
    missing_code,
    sample_indices,
    unseen_code,
)
from ct_assets.triggers.drift.reference import DriftReference, build_reference
from ct_assets.triggers.drift.store import clear_cache, get_or_build

__all__ = [
    "ARRAYS_FILE",
    "META_FILE",
    "MIN_SCORE_ROWS",
    "DriftConfig",
    "DriftDecision",
    "DriftReference",
    "build_reference",
    "check_drift",
    "clear_cache",
    "encode_features",
    "feature_effects",
    "feature_frame",
    "get_or_build",
    "missing_code",
    "prediction_scores",
    "sample_indices",
    "score_columns",
    "unseen_code",
]
