"""Monitoring triggers as plain functions: drift and performance decisions, with reasons."""

from ct_assets.monitoring.drift import (
    DriftConfig,
    DriftDecision,
    DriftReference,
    build_reference,
    check_drift,
    get_or_build,
)
from ct_assets.monitoring.performance import (
    PerformanceConfig,
    PerformanceDecision,
    check_performance,
)

__all__ = [
    "DriftConfig",
    "DriftDecision",
    "DriftReference",
    "PerformanceConfig",
    "PerformanceDecision",
    "build_reference",
    "check_drift",
    "check_performance",
    "get_or_build",
]
