"""Canary and shadow analysis: is the challenger at least as good on live traffic?

Plain functions over outcomes of served predictions (1 when the served prediction
matched the label the user gave later, else 0):

* :func:`canary_decision` compares the canary arm (served by the challenger) with the
  champion's arm. ``promote`` needs at least ``min_samples`` labeled outcomes per arm
  and a one-sided two-proportion z-test showing the challenger not worse than the
  champion by more than ``margin`` (p < ``alpha``). ``rollback`` happens as soon as the
  challenger is clearly worse (the opposite one-sided test at ``alpha``, checked at
  every look with at least ``min_early`` outcomes, so a bad canary stops early).
  Otherwise ``continue``. The reason always carries the numbers.
* :func:`shadow_summary` compares champion and challenger scores on the same requests:
  agreement of the predicted class, mean absolute score difference, and each model's
  accuracy on the requests that received labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Action = Literal["promote", "rollback", "continue"]


@dataclass(frozen=True)
class CanaryConfig:
    min_samples: int = 300
    min_early: int = 100
    margin: float = 0.02
    alpha: float = 0.05


@dataclass(frozen=True)
class CanaryDecision:
    action: Action
    champion_n: int
    challenger_n: int
    champion_accuracy: float
    challenger_accuracy: float
    p_not_worse: float
    p_worse: float
    margin: float
    alpha: float

    def reason(self) -> str:
        figures = (
            f"challenger {self.challenger_accuracy:.3f} on {self.challenger_n} labeled canary "
            f"requests vs champion {self.champion_accuracy:.3f} on {self.champion_n}; "
            f"p(not worse by {self.margin:g})={self.p_not_worse:.3g}, "
            f"p(worse)={self.p_worse:.3g}, alpha {self.alpha:g}"
        )
        verdict = {
            "promote": "promote the challenger",
            "rollback": "roll the canary back: the challenger is clearly worse",
            "continue": "keep the canary running: not enough evidence yet",
        }[self.action]
        return f"{verdict} ({figures})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason()}


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _accuracy(hits: NDArray[Any]) -> float:
    return float(np.mean(hits)) if len(hits) else float("nan")


def canary_decision(
    champion_hits: NDArray[Any], challenger_hits: NDArray[Any], config: CanaryConfig | None = None
) -> CanaryDecision:
    """Promote, roll back or continue, from the two arms' outcomes (see the module)."""
    config = config or CanaryConfig()
    a = np.asarray(champion_hits, dtype=float)
    b = np.asarray(challenger_hits, dtype=float)
    n_a, n_b = len(a), len(b)
    p_a, p_b = _accuracy(a), _accuracy(b)
    p_not_worse = p_worse = 1.0
    if n_a and n_b:
        variance = p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
        se = math.sqrt(max(variance, 1e-12))
        # H0: b <= a - margin, vs b > a - margin  (non-inferiority)
        p_not_worse = _normal_sf((p_b - p_a + config.margin) / se)
        # H0: b >= a, vs b < a  (clearly worse)
        p_worse = _normal_sf((p_a - p_b) / se)
    action: Action = "continue"
    if min(n_a, n_b) >= config.min_early and p_worse < config.alpha:
        action = "rollback"
    elif min(n_a, n_b) >= config.min_samples and p_not_worse < config.alpha:
        action = "promote"
    return CanaryDecision(
        action, n_a, n_b, p_a, p_b, p_not_worse, p_worse, config.margin, config.alpha
    )


def shadow_summary(
    champion_proba: NDArray[Any],
    challenger_proba: NDArray[Any],
    labels: NDArray[Any] | None = None,
) -> dict[str, float]:
    """Agreement, score difference and (where labels exist, -1 elsewhere) accuracies of
    two models' probabilities on the same requests (rows x classes, same class order)."""
    champ = np.asarray(champion_proba, dtype=float)
    chall = np.asarray(challenger_proba, dtype=float)
    if champ.shape != chall.shape:
        raise ValueError(f"score shapes differ: {champ.shape} vs {chall.shape}")
    n = champ.shape[0]
    if n == 0:
        return {"requests": 0.0}
    top_champ, top_chall = champ.argmax(axis=1), chall.argmax(axis=1)
    out = {
        "requests": float(n),
        "agreement": float(np.mean(top_champ == top_chall)),
        "mean_abs_score_difference": float(np.mean(np.abs(champ - chall).sum(axis=1) / 2)),
    }
    if labels is not None:
        y = np.asarray(labels)
        known = y >= 0
        out["labeled"] = float(known.sum())
        if known.any():
            out["champion_accuracy"] = float(np.mean(top_champ[known] == y[known]))
            out["challenger_accuracy"] = float(np.mean(top_chall[known] == y[known]))
    return out
