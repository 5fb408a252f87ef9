"""Feedback attribution: turning feedback events into labeled examples.

A labeled example is one feedback event with a label and the features the model saw.
The label comes from the feedback itself (``explicit``) or from a :class:`LabelPolicy`
that maps implicit signals (``click``, ``skip``, ``dwell`` ...) to labels. The features
are the feedback's own when it carries them, else those of the logged prediction it
refers to by ``prediction_id``; the serving context of that prediction (model version,
arm, what was served, when) rides along so datasets and reports can be sliced by it.

Feedback that gets no label from the policy (:func:`unlabeled`) or has no features to
learn from (:func:`unattributed`, typically a prediction not logged yet) is not an
example; both functions return those rows so callers can count and report them. The
functions are pure: attribution is recomputed from the log, so feedback whose
prediction arrives late becomes an example on the next run.

Everything is vectorised Polars; outputs are sorted by ``(timestamp, log_offset)``.
"""

from __future__ import annotations

from ct_assets.data.attribution.examples import (
    EXAMPLE_COLUMNS,
    attribute_feedback,
    logged_predictions,
    supertype,
    unattributed,
)
from ct_assets.data.attribution.labels import (
    CARRIED_COLUMNS,
    LABEL_COLUMN,
    LABEL_SOURCE_COLUMN,
    MISSING_LABEL,
    MISSING_SIGNAL,
    MISSING_VALUE,
    OWN_FEATURES_COLUMN,
    UNKNOWN_FEEDBACK_TYPE,
    UNKNOWN_SIGNAL,
    labeled_feedback,
    unlabeled,
)
from ct_assets.data.attribution.policy import (
    EXPLICIT,
    IMPLICIT,
    IMPLICIT_PREFIX,
    LabelPolicy,
    UnknownSignalError,
)
from ct_assets.data.attribution.summary import NO_VALUE, attribution_summary

__all__ = [
    "CARRIED_COLUMNS",
    "EXAMPLE_COLUMNS",
    "EXPLICIT",
    "IMPLICIT",
    "IMPLICIT_PREFIX",
    "LABEL_COLUMN",
    "LABEL_SOURCE_COLUMN",
    "MISSING_LABEL",
    "MISSING_SIGNAL",
    "MISSING_VALUE",
    "NO_VALUE",
    "OWN_FEATURES_COLUMN",
    "UNKNOWN_FEEDBACK_TYPE",
    "UNKNOWN_SIGNAL",
    "LabelPolicy",
    "UnknownSignalError",
    "attribute_feedback",
    "attribution_summary",
    "labeled_feedback",
    "logged_predictions",
    "supertype",
    "unattributed",
    "unlabeled",
]
