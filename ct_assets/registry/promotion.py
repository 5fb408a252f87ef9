"""Moving the aliases forward: a candidate that passed the gate becomes the
``challenger``, a version becomes the ``champion``; each change sets the versions'
deployment status and is audited."""

from __future__ import annotations

from datetime import UTC, datetime

from ct_assets.registry.audit import AuditRecord
from ct_assets.registry.client import VersionInfo
from ct_assets.registry.deployment import Deployments
from ct_assets.registry.tags import (
    CHALLENGER,
    CHAMPION,
    TAG_DEPLOYMENT_STATUS,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTED_AT,
)


class Promotion(Deployments):
    def promote(self, version: str, reason: str, by: str = "ct_assets") -> VersionInfo | None:
        """Move ``champion`` to ``version``, recording the previous one (returned) on it,
        both versions' deployment status and an audit record."""
        previous = self.alias(CHAMPION)
        client = self.client
        now = datetime.now(UTC).isoformat()
        client.set_model_version_tag(
            self.model_name, version, TAG_PREVIOUS_CHAMPION, previous.version if previous else ""
        )
        client.set_model_version_tag(self.model_name, version, TAG_PROMOTED_AT, now)
        client.set_model_version_tag(self.model_name, version, "ct.promotion_reason", reason)
        client.set_registered_model_alias(self.model_name, CHAMPION, version)
        challenger = self.alias(CHALLENGER)
        if challenger is not None and challenger.version == version:
            # the challenger became the champion: no challenger until the next candidate
            client.delete_registered_model_alias(self.model_name, CHALLENGER)
        self.set_version_tag(version, TAG_DEPLOYMENT_STATUS, "champion")
        if previous is not None and previous.version != version:
            self.set_version_tag(previous.version, TAG_DEPLOYMENT_STATUS, "retired")
        self.audit(
            AuditRecord("promote", version, previous.version if previous else None, by, reason, now)
        )
        return previous

    def set_challenger(self, version: str, mode: str, reason: str, by: str = "ct_assets") -> None:
        """Point ``challenger`` at ``version`` (a candidate that passed the gate) so it meets
        live traffic in ``mode``; a previous challenger still waiting is ``superseded``."""
        previous = self.alias(CHALLENGER)
        self._mark_start()
        self.client.set_registered_model_alias(self.model_name, CHALLENGER, version)
        self.set_version_tag(version, TAG_DEPLOYMENT_STATUS, f"challenger in {mode}")
        if previous is not None and previous.version != version:
            self.set_version_tag(previous.version, TAG_DEPLOYMENT_STATUS, "superseded")
        self.audit(
            AuditRecord(
                "challenge",
                version,
                previous.version if previous else None,
                by,
                reason,
                datetime.now(UTC).isoformat(),
            )
        )
