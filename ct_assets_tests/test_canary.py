"""Canary and shadow analysis on outcomes with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ct_assets.monitoring.canary import CanaryConfig, canary_decision, shadow_summary


def _hits(accuracy: float, n: int, seed: int) -> np.ndarray:  # type: ignore[type-arg]
    return (np.random.default_rng(seed).random(n) < accuracy).astype(int)


def test_a_clearly_worse_challenger_is_rolled_back_early() -> None:
    decision = canary_decision(_hits(0.85, 2000, 1), _hits(0.6, 150, 2))
    assert decision.action == "rollback"
    assert decision.challenger_n == 150 < CanaryConfig().min_samples, "stopped early"
    assert "clearly worse" in decision.reason()
    assert f"challenger {decision.challenger_accuracy:.3f} on 150" in decision.reason()
    json.dumps(decision.to_dict())


def test_a_better_challenger_is_promoted_once_there_is_enough_evidence() -> None:
    champion = _hits(0.80, 3000, 3)
    assert canary_decision(champion, _hits(0.86, 120, 4)).action == "continue"
    promoted = canary_decision(champion, _hits(0.86, 800, 4))
    assert promoted.action == "promote", promoted.reason()
    assert promoted.p_not_worse < 0.05


def test_an_equivalent_challenger_neither_promoted_nor_rolled_back_on_little_data() -> None:
    decision = canary_decision(_hits(0.8, 400, 5), _hits(0.8, 200, 6))
    assert decision.action == "continue"
    assert "not enough evidence" in decision.reason()


def test_an_equivalent_challenger_is_rarely_rolled_back() -> None:
    """A one-sided test at alpha 0.05 rolls back about 5% of equivalent canaries; over 200
    fixed seeds, far fewer than a biased test would."""
    rollbacks = sum(
        canary_decision(_hits(0.8, 1000, seed), _hits(0.8, 300, 1000 + seed)).action == "rollback"
        for seed in range(200)
    )
    assert rollbacks <= 20, f"{rollbacks} of 200 equivalent canaries rolled back"


def test_shadow_summary_measures_agreement_and_accuracy() -> None:
    champ = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    chall = np.array([[0.8, 0.2], [0.1, 0.9], [0.4, 0.6], [0.3, 0.7]])
    labels = np.array([0, 1, 1, -1])
    summary = shadow_summary(champ, chall, labels)
    assert summary["agreement"] == 0.75
    assert summary["mean_abs_score_difference"] == pytest.approx((0.1 + 0.1 + 0.2 + 0.0) / 4)
    assert summary["labeled"] == 3
    assert summary["champion_accuracy"] == pytest.approx(2 / 3)
    assert summary["challenger_accuracy"] == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        shadow_summary(champ, chall[:2])
