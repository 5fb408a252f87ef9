"""Canary and shadow analysis on outcomes with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ct_assets.monitoring.canary import (
    CanaryConfig,
    canary_decision,
    shadow_summary,
    simulate_canaries,
)


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


RUNS = 200


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_error_rates_under_continuous_looks_over_many_seeds(fraction: float) -> None:
    """200 simulated canaries per case, each looked at after every labeled outcome until it
    decides, with the default settings (margin 0.02, alpha 0.05, 300 outcomes per arm before
    a promotion): an equivalent challenger is rolled back at most 5% of the time, one 2
    points worse is promoted at most 5% of the time, and every run decides."""
    config = CanaryConfig()
    equivalent = simulate_canaries(RUNS, 0.8, 0.8, fraction=fraction, config=config, seed=11)
    worse = simulate_canaries(RUNS, 0.8, 0.78, fraction=fraction, config=config, seed=12)
    print(
        f"\ncanary fraction {fraction}: {RUNS} runs each; equivalent challenger rolled back "
        f"{equivalent.rolled_back / RUNS:.1%}, median {equivalent.median_samples:.0f} labeled "
        f"requests ({equivalent.median_challenger_samples:.0f} on the challenger) to a "
        f"decision; 2 points worse promoted {worse.promoted / RUNS:.1%}, median "
        f"{worse.median_samples:.0f} ({worse.median_challenger_samples:.0f})"
    )
    assert equivalent.undecided == worse.undecided == 0
    assert equivalent.rolled_back <= 0.05 * RUNS, equivalent
    assert worse.promoted <= 0.05 * RUNS, worse
    # and the right decisions are the common ones
    assert equivalent.promoted >= 0.9 * RUNS and worse.rolled_back >= 0.9 * RUNS


def test_the_simulation_applies_the_decision_rule_of_the_analysis() -> None:
    """A simulated run decides exactly when :func:`canary_decision` on the same outcomes
    first does (the statistic is the same; only the bookkeeping differs)."""
    rng = np.random.default_rng(5)
    to_b = rng.random(6000) < 0.5
    hit = rng.random(6000) < np.where(to_b, 0.70, 0.80)
    first = next(
        n
        for n in range(1, 6001)
        if canary_decision(hit[:n][~to_b[:n]], hit[:n][to_b[:n]]).action != "continue"
    )
    decision = canary_decision(hit[:first][~to_b[:first]], hit[:first][to_b[:first]])
    assert decision.action == "rollback" and decision.p_worse <= 0.05
    assert min(decision.champion_n, decision.challenger_n) >= CanaryConfig().min_early


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
