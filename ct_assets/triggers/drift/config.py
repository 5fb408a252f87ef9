"""How a window is compared with the reference."""

from __future__ import annotations

from dataclasses import dataclass

from ct_assets.triggers.drift.encoding import Correction, Detector


@dataclass(frozen=True)
class DriftConfig:
    """How a window is compared with the reference (see :func:`check_drift`)."""

    detector: Detector = "tabular"
    #: Family-wise level of the feature tests (the FDR q-value with ``correction="fdr"``).
    p_val: float = 0.05
    correction: Correction = "bonferroni"
    #: Level of the score KS test (Bonferroni over the class columns when multiclass).
    score_p_val: float = 0.01
    #: The smallest change that counts as drift, whatever its p-value: a feature's KS
    #: distance (numeric) or total variation distance between category frequencies
    #: (categorical), the scores' KS distance. A long stream of checks on large windows
    #: finds differences too small to matter (and, at a fixed level, by chance at about
    #: the level per check); below this floor they do not fire. 0: p-values alone.
    min_distance: float = 0.1
    max_window: int = 2000
    min_window: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.detector not in ("tabular", "ks"):
            raise ValueError(f"detector must be 'tabular' or 'ks', got {self.detector!r}")
        if self.correction not in ("bonferroni", "fdr"):
            raise ValueError(f"correction must be 'bonferroni' or 'fdr', got {self.correction!r}")
        for name in ("p_val", "score_p_val"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if not 0.0 <= self.min_distance < 1.0:
            raise ValueError(f"min_distance must be in [0, 1), got {self.min_distance}")
        if self.min_window < 2 or self.max_window < self.min_window:
            raise ValueError(
                f"need 2 <= min_window <= max_window, got {self.min_window}, {self.max_window}"
            )
