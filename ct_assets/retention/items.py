"""What gc keeps or deletes: the kinds of object, one :class:`Item` each, and the
:class:`Plan` that lists them with why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ct_assets.retention.files import CHECKPOINT, HANDOFF

MODEL_VERSION = "model_version"
RUN = "mlflow_run"
DATASET = "dataset"
REPORT = "report"
DRIFT_REFERENCE = "drift_reference"
EVENT_SEGMENT = "event_segment"
#: The order deletions run in: a version leaves the registry before anything it needs.
DELETE_ORDER = (
    MODEL_VERSION,
    RUN,
    HANDOFF,
    REPORT,
    DRIFT_REFERENCE,
    CHECKPOINT,
    DATASET,
    EVENT_SEGMENT,
)


@dataclass(frozen=True)
class Item:
    """One object gc keeps or deletes: what it is, its id, the files it is, and why."""

    what: str
    id: str
    why: list[str]
    paths: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    kept: list[Item]
    deleted: list[Item]
    at: str

    def as_json(self, dry_run: bool) -> dict[str, Any]:
        return {
            "kept": [i.as_json() for i in self.kept],
            "deleted": [i.as_json() for i in self.deleted],
            "dry_run": dry_run,
            "at": self.at,
        }
