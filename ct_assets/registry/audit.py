"""The audit trail: every change of who serves, one JSON record in a registered-model tag
``ct.audit.<UTC time>`` each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from ct_assets.registry.client import RegistryClient
from ct_assets.registry.tags import AUDIT_PREFIX


@dataclass(frozen=True)
class AuditRecord:
    """One change of who serves: what, to which version, from which, who, why."""

    action: str  # promote | rollback | deploy | challenge (a new challenger)
    version: str
    previous: str | None
    by: str
    reason: str
    at: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AuditRecord:
        return cls(**json.loads(text))


class AuditTrail(RegistryClient):
    def audit(self, record: AuditRecord) -> None:
        stamp = datetime.fromisoformat(record.at).strftime("%Y%m%dT%H%M%S%fZ")
        self._ensure_registered_model()
        self.client.set_registered_model_tag(
            self.model_name, f"{AUDIT_PREFIX}{stamp}", record.to_json()
        )

    def audit_trail(self) -> list[AuditRecord]:
        """Every champion change, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.model_name).tags or {}
        except MlflowException:
            return []
        return [
            AuditRecord.from_json(tags[key])
            for key in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))
        ]
