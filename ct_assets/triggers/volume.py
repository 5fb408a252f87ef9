"""Trigger decisions as plain functions: given the evidence, retrain or not, and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VolumeDecision:
    fire: bool
    new_examples: int
    baseline: int
    position: int
    threshold: int

    @property
    def reason(self) -> str:
        verb = ">=" if self.fire else "<"
        return (
            f"{self.new_examples} new labeled feedback events since log position "
            f"{self.baseline} (now {self.position}) {verb} threshold {self.threshold}"
        )


def volume_decision(
    position: int,
    champion_cutoff: int,
    last_requested: int,
    threshold: int,
    labeled: int | None = None,
) -> VolumeDecision:
    """Fire when labeled feedback since the later of the champion's cutoff and the last
    request reaches ``threshold``. ``labeled``: how many of the feedback events since then
    the label policy labels (default: all of them). Counting from the last request means
    a rejected candidate is not retrained on the same evidence again."""
    baseline = max(champion_cutoff, last_requested)
    new = max(0, position - baseline) if labeled is None else labeled
    return VolumeDecision(new >= threshold, new, baseline, position, threshold)
