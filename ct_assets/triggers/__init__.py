"""Retrain triggers as plain functions: given the evidence, retrain or not, and why.

- :mod:`~ct_assets.triggers.volume`: labeled feedback since the champion's cutoff;
- :mod:`~ct_assets.triggers.drift`: the champion's inputs and scores against its
  training data (alibi-detect);
- :mod:`~ct_assets.triggers.performance` and :mod:`~ct_assets.triggers.change`: its
  accuracy on labeled outcomes and change points in its error stream, combined by
  :mod:`~ct_assets.triggers.decay`;
- :mod:`~ct_assets.triggers.evidence`: what each reads from the event log.

The schedule trigger is a cron with no decision of its own. The sensors and the
schedule that act on these decisions are wired in :mod:`ct_assets.defs.triggers`.
"""

from ct_assets.triggers.drift import (
    DriftConfig,
    DriftDecision,
    DriftReference,
    build_reference,
    check_drift,
    get_or_build,
)
from ct_assets.triggers.performance import (
    PerformanceConfig,
    PerformanceDecision,
    check_performance,
)
from ct_assets.triggers.volume import VolumeDecision, volume_decision

__all__ = [
    "DriftConfig",
    "DriftDecision",
    "DriftReference",
    "PerformanceConfig",
    "PerformanceDecision",
    "VolumeDecision",
    "build_reference",
    "check_drift",
    "check_performance",
    "get_or_build",
    "volume_decision",
]
