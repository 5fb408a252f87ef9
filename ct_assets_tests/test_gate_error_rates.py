"""The gate's error rates over many seeds, defaults unchanged: the real paired bootstrap
and the real decision on simulated scores whose population differences are known.

Scores: a latent signal ``s`` decides the label (``y = s + e > 0``); a model scores
``s + shared + own``, where ``shared`` is noise every model trained on the same kind of
data makes alike and ``own`` its own. An equivalent candidate has the champion's noise
levels; a worse one more ``own`` noise, set so that its population AUC is lower by the
stated margin (measured on 300,000 rows).
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from ct_assets.training.bootstrap import paired_bootstrap
from ct_assets.training.evaluation import GateConfig, GateReport, HistoryMetrics
from ct_assets.training.gate import decide

SEEDS = 200
HOLDOUT_ROWS = 2000
SHARED, OWN = 0.6, 0.3
CONFIG = GateConfig(n_resamples=400)  # defaults but fewer resamples: 400 runs stay fast


def scores(
    rng: np.random.Generator, rows: int, own: float, flip: float = 0.0
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Labels, the champion's and a candidate's scores (``own``: the candidate's own
    noise; ``flip``: the share of rows where the candidate's signal is reversed)."""
    s = rng.normal(size=rows)
    y = (s + rng.normal(size=rows) > 0).astype(np.int64)
    shared = SHARED * rng.normal(size=rows)
    champion = s + shared + OWN * rng.normal(size=rows)
    signal = np.where(rng.random(rows) < flip, -s, s)
    candidate = signal + shared + own * rng.normal(size=rows)
    return y, champion, candidate


def population_auc(own: float, flip: float = 0.0) -> tuple[float, float]:
    y, champion, candidate = scores(np.random.default_rng(0), 300_000, own, flip)
    return float(roc_auc_score(y, champion)), float(roc_auc_score(y, candidate))


def noise_for_drop(drop: float) -> float:
    """The candidate's own noise that makes its population AUC ``drop`` below the
    champion's (bisection)."""
    low, high = OWN, 5.0
    for _ in range(16):
        mid = (low + high) / 2
        champion, candidate = population_auc(mid)
        low, high = (mid, high) if champion - candidate < drop else (low, mid)
    return (low + high) / 2


def flip_for_drop(drop: float) -> float:
    low, high = 0.0, 0.5
    for _ in range(16):
        mid = (low + high) / 2
        champion, candidate = population_auc(OWN, mid)
        low, high = (mid, high) if champion - candidate < drop else (low, mid)
    return (low + high) / 2


def auc(y: NDArray[np.int64], p: NDArray[np.float64]) -> dict[str, float]:
    return {"auc": float(roc_auc_score(y, p)), "rows": float(len(y))}


def gate(seed: int, own: float, forget_flip: float = 0.0) -> tuple[bool, bool]:
    """(promoted, inconclusive) for one simulated candidate; with ``forget_flip`` the
    candidate is equivalent on the holdout and worse on an older frame of 2,000 rows."""
    rng = np.random.default_rng(seed)
    y, champion, candidate = scores(rng, HOLDOUT_ROWS, own)
    forgetting = []
    if forget_flip:
        y_old, champion_old, candidate_old = scores(rng, 2000, OWN, forget_flip)
        forgetting.append(
            HistoryMetrics(
                "reservoir",
                len(y_old),
                auc(y_old, candidate_old),
                auc(y_old, champion_old),
                paired_bootstrap(
                    y_old,
                    sigmoid(candidate_old),
                    sigmoid(champion_old),
                    "auc",
                    CONFIG.n_resamples,
                    CONFIG.confidence,
                    seed,
                ),
            )
        )
    bootstrap = paired_bootstrap(
        y,
        sigmoid(candidate),
        sigmoid(champion),
        "auc",
        CONFIG.n_resamples,
        CONFIG.confidence,
        seed,
    )
    report = GateReport(
        "auc", auc(y, candidate), auc(y, champion), bootstrap, [], forgetting, CONFIG
    )
    decision = decide(report)
    return decision.promote, decision.inconclusive


def sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


@pytest.mark.slow
def test_equivalent_candidates_pass_and_worse_ones_do_not() -> None:
    equivalent = [gate(seed, OWN) for seed in range(SEEDS)]
    rejected = sum(not promoted for promoted, _ in equivalent)
    worse_noise = noise_for_drop(0.02)
    worse = [gate(10_000 + seed, worse_noise) for seed in range(SEEDS)]
    promoted = sum(p for p, _ in worse)
    print(
        f"\ngate on {HOLDOUT_ROWS} holdout rows, {SEEDS} seeds each: equivalent not promoted "
        f"{rejected / SEEDS:.1%} ({sum(i for _, i in equivalent)} inconclusive); 2 points "
        f"worse promoted {promoted / SEEDS:.1%}"
    )
    assert rejected <= 0.05 * SEEDS
    assert promoted <= 0.05 * SEEDS


@pytest.mark.slow
def test_five_points_of_forgetting_are_caught() -> None:
    flip = flip_for_drop(0.05)
    outcomes = [gate(20_000 + seed, OWN, forget_flip=flip) for seed in range(SEEDS)]
    caught = sum(not promoted for promoted, _ in outcomes)
    print(f"\n5 points of forgetting on 2,000 older rows caught {caught / SEEDS:.1%}")
    assert caught >= 0.9 * SEEDS
