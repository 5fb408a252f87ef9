"""How the challenger meets live traffic (``ct-assets deploy``): the mode and fraction,
stored on the registered model so every API worker sees them, and when it began."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ct_assets.registry.audit import AuditRecord, AuditTrail
from ct_assets.registry.tags import (
    CHALLENGER,
    TAG_DEPLOY_FRACTION,
    TAG_DEPLOY_MODE,
    TAG_DEPLOY_STARTED,
)

DEPLOY_MODES = ("off", "shadow", "canary", "ab")


@dataclass(frozen=True)
class Deployment:
    """``off``: the gate promotes directly. ``shadow``: the challenger scores every request,
    the champion answers. ``canary``: ``fraction`` of the traffic (sticky per user) is
    served by the challenger. ``ab``: a fixed split of ``fraction`` for an experiment."""

    mode: str = "off"
    fraction: float = 0.0
    started_at: str = ""  # when this mode and challenger began meeting traffic; "" unknown

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"mode": self.mode, "fraction": self.fraction}
        if self.started_at:
            status["started_at"] = self.started_at
        return status


def check_deployment(mode: str, fraction: float | None) -> Deployment:
    """The deployment ``mode``/``fraction`` asks for, or a ValueError naming what is wrong."""
    if mode not in DEPLOY_MODES:
        raise ValueError(f"unknown deployment mode {mode!r}: use one of {', '.join(DEPLOY_MODES)}")
    if mode == "off":
        return Deployment("off", 0.0)
    if mode == "shadow":
        return Deployment("shadow", 1.0)
    value = fraction if fraction is not None else (0.1 if mode == "canary" else 0.5)
    if not 0.0 < value < 1.0:
        raise ValueError(f"--fraction for {mode} must be in (0, 1), got {value}")
    return Deployment(mode, value)


class Deployments(AuditTrail):
    def deployment(self) -> Deployment:
        """The deployment mode stored on the registered model (``off`` when never set)."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.model_name).tags or {}
        except MlflowException:
            return Deployment()
        mode = tags.get(TAG_DEPLOY_MODE, "off")
        return Deployment(
            mode,
            float(tags.get(TAG_DEPLOY_FRACTION, "0") or 0),
            tags.get(TAG_DEPLOY_STARTED, ""),
        )

    def set_deployment(self, deployment: Deployment, by: str, reason: str) -> AuditRecord:
        """Store the deployment mode (visible to every API worker) and audit the change."""
        before = self.deployment()
        self._ensure_registered_model()
        self._mark_start()
        self.client.set_registered_model_tag(self.model_name, TAG_DEPLOY_MODE, deployment.mode)
        self.client.set_registered_model_tag(
            self.model_name, TAG_DEPLOY_FRACTION, str(deployment.fraction)
        )
        challenger = self.alias(CHALLENGER)
        record = AuditRecord(
            "deploy",
            challenger.version if challenger else "",
            None,
            by,
            f"{before.mode} {before.fraction:g} -> {deployment.mode} {deployment.fraction:g}"
            + (f": {reason}" if reason else ""),
            datetime.now(UTC).isoformat(),
        )
        self.audit(record)
        return record

    def _mark_start(self) -> None:
        """Record now as the start of the deployment (before the change it starts, so every
        prediction the new arrangement serves is at or after it)."""
        self.client.set_registered_model_tag(
            self.model_name, TAG_DEPLOY_STARTED, datetime.now(UTC).isoformat()
        )
