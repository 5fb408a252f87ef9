"""Canary and shadow analysis: is the challenger at least as good on live traffic?

Plain functions over outcomes of served predictions (1 when the served prediction
matched the label the user gave later, else 0):

* :func:`canary_decision` compares the challenger's arm (``canary``, or ``b`` in A/B) with
  the champion's arm (``champion``, or ``a``), both from the same period: the predictions
  served since the challenger's deployment started. It runs two **mixture sequential
  probability ratio tests** (mSPRT; Johari, Pekelis and Walsh, "Always valid inference",
  2017) on the difference of the two accuracies, ``d = challenger - champion``:

  - *promote*: H0 ``d <= -margin`` (worse by the margin or more) against ``d > -margin``;
  - *roll back*: H0 ``d >= 0`` (not worse) against ``d < 0``.

  Each test's statistic is the likelihood ratio of the observed difference (normal
  approximation, variance ``p(1-p)/n`` per arm with add-one smoothing), mixed over a
  half-normal prior of scale ``tau = margin`` on the side of the alternative. Under its
  null it is a nonnegative supermartingale, so by Ville's inequality the chance that it
  *ever* reaches ``1/a`` is at most ``a``: the decision may be looked at after every
  labeled outcome, as often as anyone likes. ``alpha`` (``CT_CANARY_ALPHA``, 0.05 by
  default) bounds the chance of a wrong decision of either kind and is split equally
  between the two tests (``a = alpha / 2`` each, Bonferroni): promoting a challenger worse
  by the margin or more, or rolling back one that is not worse, each happens with
  probability at most ``alpha / 2``. The reported p-values are always valid and already
  doubled (``min(1, 2 / statistic)``), so each is compared with ``alpha``. Promotion also
  waits for ``min_samples`` outcomes per arm and rollback for ``min_early`` (the normal
  approximation needs a few); a challenger between the two nulls keeps the canary running
  until the evidence settles it.
  :func:`simulate_canaries` measures both error rates and the samples to a decision.
* :func:`shadow_summary` compares champion and challenger scores on the same requests:
  agreement of the predicted class, mean absolute score difference, and each model's
  accuracy on the requests that received labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

Action = Literal["promote", "rollback", "continue"]
#: The name of the test, for reports.
TEST_NAME = "mixture SPRT, alpha split over promote and rollback (always valid at any look)"


@dataclass(frozen=True)
class CanaryConfig:
    min_samples: int = 300
    min_early: int = 100
    margin: float = 0.02
    alpha: float = 0.05

    @property
    def tau(self) -> float:
        """Scale of the mixing prior: the effect the tests are tuned to find quickest."""
        return max(self.margin, 0.01)


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
            f"challenger {self.challenger_accuracy:.3f} on {self.challenger_n} labeled "
            f"requests vs champion {self.champion_accuracy:.3f} on {self.champion_n} since "
            f"the canary started; always-valid p(not worse by {self.margin:g})="
            f"{self.p_not_worse:.3g}, p(worse)={self.p_worse:.3g}, alpha {self.alpha:g} "
            "(mixture SPRT)"
        )
        verdict = {
            "promote": "promote the challenger",
            "rollback": "roll the canary back: the challenger is clearly worse",
            "continue": "keep the canary running: not enough evidence yet",
        }[self.action]
        return f"{verdict} ({figures})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "test": TEST_NAME, "reason": self.reason()}


def _normal_cdf(x: NDArray[Any]) -> NDArray[Any]:
    from scipy.special import ndtr

    return np.asarray(ndtr(x), dtype=float)


def log_msprt(
    hits_a: NDArray[Any],
    n_a: NDArray[Any],
    hits_b: NDArray[Any],
    n_b: NDArray[Any],
    null: float,
    tau: float,
    side: int,
) -> NDArray[Any]:
    """log of the one-sided mixture likelihood ratio for ``d = p_b - p_a`` against the null
    ``d = null`` (composite: ``d <= null`` for ``side`` +1, ``d >= null`` for -1), from
    cumulative hit counts and sample sizes of the two arms (arrays: one value per look).
    Zero sample size on either arm gives 0 (no evidence)."""
    n_a = np.asarray(n_a, dtype=float)
    n_b = np.asarray(n_b, dtype=float)
    both = (n_a > 0) & (n_b > 0)
    na, nb = np.where(both, n_a, 1.0), np.where(both, n_b, 1.0)
    pa = (np.asarray(hits_a, dtype=float) + 1) / (na + 2)
    pb = (np.asarray(hits_b, dtype=float) + 1) / (nb + 2)
    variance = pa * (1 - pa) / na + pb * (1 - pb) / nb
    diff = side * (np.asarray(hits_b) / nb - np.asarray(hits_a) / na - null)
    t2 = tau * tau
    total = variance + t2
    # 2 / sqrt(1 + t2/V) * exp(diff^2 t2 / (2 V (V + t2))) * Phi(diff tau / sqrt(V (V + t2)))
    log_lr = (
        math.log(2.0)
        + 0.5 * np.log(variance / total)
        + diff * diff * t2 / (2 * variance * total)
        + np.log(np.maximum(_normal_cdf(diff * tau / np.sqrt(variance * total)), 1e-300))
    )
    return np.where(both, log_lr, 0.0)


def arm_outcomes(
    feedback: pl.DataFrame,
    predictions: pl.DataFrame,
    *,
    champion: str,
    challenger: str,
    since: datetime | None,
    arms: tuple[str, str] = ("champion", "canary"),
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Hits (served prediction == the label given later) of the champion's arm and of the
    challenger's arm (``arms``, e.g. ``("a", "b")`` for A/B), each restricted to the version
    that served it and to predictions served at or after ``since`` (the deployment's
    start): both arms from the same period, never champion traffic from before the
    challenger existed. One outcome per prediction (its first labeled feedback)."""
    from ct_assets.data.attribution import attribute_feedback

    empty = np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    if not feedback.height or not predictions.height:
        return empty
    examples = attribute_feedback(feedback, predictions)
    if not examples.height or "arm" not in examples.columns:
        return empty
    if since is not None:
        start = pl.lit(since.astimezone(UTC)).cast(pl.Datetime("us", "UTC"))
        examples = examples.filter(pl.col("prediction_time") >= start)
    examples = examples.filter(pl.col("prediction_id").is_not_null()).unique(
        "prediction_id", keep="first", maintain_order=True
    )
    hit = (pl.col("served_prediction").cast(pl.String) == pl.col("label")).cast(pl.Int64)

    def outcomes(arm: str, version: str) -> NDArray[Any]:
        rows = examples.filter((pl.col("arm") == arm) & (pl.col("model_version") == version))
        return rows.select(hit).to_series().to_numpy()

    return outcomes(arms[0], champion), outcomes(arms[1], challenger)


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
    args = (np.array([a.sum()]), np.array([n_a]), np.array([b.sum()]), np.array([n_b]))
    log_promote = float(log_msprt(*args, null=-config.margin, tau=config.tau, side=1)[0])
    log_rollback = float(log_msprt(*args, null=0.0, tau=config.tau, side=-1)[0])
    # always-valid p-values, doubled for the two tests sharing alpha
    p_not_worse = min(1.0, 2.0 * math.exp(-log_promote))
    p_worse = min(1.0, 2.0 * math.exp(-log_rollback))
    action: Action = "continue"
    if min(n_a, n_b) >= config.min_early and p_worse <= config.alpha:
        action = "rollback"
    elif min(n_a, n_b) >= config.min_samples and p_not_worse <= config.alpha:
        action = "promote"
    return CanaryDecision(
        action,
        n_a,
        n_b,
        _accuracy(a),
        _accuracy(b),
        p_not_worse,
        p_worse,
        config.margin,
        config.alpha,
    )


@dataclass(frozen=True)
class CanarySimulation:
    """Decisions of simulated canaries with known accuracies, each looked at after every
    labeled outcome (continuous monitoring)."""

    runs: int
    promoted: int
    rolled_back: int
    undecided: int
    median_samples: float  # labeled outcomes of both arms at the decision (decided runs)
    median_challenger_samples: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulate_canaries(
    runs: int,
    champion_accuracy: float,
    challenger_accuracy: float,
    *,
    fraction: float = 0.1,
    config: CanaryConfig | None = None,
    max_samples: int = 200_000,
    seed: int = 0,
    chunk: int = 20_000,
) -> CanarySimulation:
    """``runs`` canaries whose labeled requests go to the challenger with probability
    ``fraction`` and are right with each arm's accuracy; every run applies the decision
    rule of :func:`canary_decision` after every outcome until it decides (or after
    ``max_samples`` outcomes, undecided)."""
    config = config or CanaryConfig()
    rng = np.random.default_rng(seed)
    promoted = rolled_back = 0
    samples: list[int] = []
    challenger_samples: list[int] = []
    threshold = math.log(2 / config.alpha)  # as canary_decision: alpha shared by two tests
    for _ in range(runs):
        totals = np.zeros(4)  # hits_a, n_a, hits_b, n_b so far
        seen = 0
        while seen < max_samples:
            size = min(chunk, max_samples - seen)
            to_b = rng.random(size) < fraction
            hit = rng.random(size) < np.where(to_b, challenger_accuracy, champion_accuracy)
            n_b = totals[3] + np.cumsum(to_b)
            n_a = totals[1] + np.cumsum(~to_b)
            hits_b = totals[2] + np.cumsum(hit & to_b)
            hits_a = totals[0] + np.cumsum(hit & ~to_b)
            least = np.minimum(n_a, n_b)
            rollback = (least >= config.min_early) & (
                log_msprt(hits_a, n_a, hits_b, n_b, 0.0, config.tau, -1) >= threshold
            )
            promote = (least >= config.min_samples) & (
                log_msprt(hits_a, n_a, hits_b, n_b, -config.margin, config.tau, 1) >= threshold
            )
            fired = np.flatnonzero(rollback | promote)
            if fired.size:
                at = int(fired[0])
                if rollback[at]:
                    rolled_back += 1
                else:
                    promoted += 1
                samples.append(seen + at + 1)
                challenger_samples.append(int(n_b[at]))
                break
            totals = np.array([hits_a[-1], n_a[-1], hits_b[-1], n_b[-1]])
            seen += size
    decided = promoted + rolled_back
    return CanarySimulation(
        runs,
        promoted,
        rolled_back,
        runs - decided,
        float(np.median(samples)) if samples else float("nan"),
        float(np.median(challenger_samples)) if challenger_samples else float("nan"),
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
