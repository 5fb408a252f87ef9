"""Moving ``champion`` back to an earlier version, with the displaced one marked and the
change audited."""

from __future__ import annotations

from datetime import UTC, datetime

from ct_assets.registry.audit import AuditRecord, AuditTrail
from ct_assets.registry.tags import CHAMPION, TAG_DEPLOYMENT_STATUS, TAG_PREVIOUS_CHAMPION


class RollbackError(RuntimeError):
    """A rollback that cannot be done (no champion, no previous one, unknown version)."""


class Rollback(AuditTrail):
    def rollback(self, to: str | None, by: str, reason: str) -> AuditRecord:
        """Move ``champion`` back to ``to`` (default: the version the current champion
        replaced). The displaced version is marked ``rolled_back``; the change is audited."""
        from mlflow.exceptions import MlflowException

        current = self.alias(CHAMPION)
        if current is None:
            raise RollbackError("there is no champion to roll back")
        target = to or current.tags.get(TAG_PREVIOUS_CHAMPION) or ""
        if not target:
            raise RollbackError(
                f"champion v{current.version} replaced no earlier champion; pass --to VERSION"
            )
        if target == current.version:
            raise RollbackError(f"v{target} is already the champion")
        try:
            self.version(target)
        except MlflowException as exc:
            raise RollbackError(f"{self.model_name} has no version {target!r}") from exc
        now = datetime.now(UTC).isoformat()
        self.client.set_registered_model_alias(self.model_name, CHAMPION, target)
        self.set_version_tag(target, TAG_DEPLOYMENT_STATUS, "champion")
        self.set_version_tag(target, "ct.restored_at", now)
        self.set_version_tag(current.version, TAG_DEPLOYMENT_STATUS, "rolled_back")
        record = AuditRecord("rollback", target, current.version, by, reason, now)
        self.audit(record)
        return record
