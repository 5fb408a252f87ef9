"""How the retrain triggers request retrains: one run per piece of evidence (its run key),
none while a retrain is in flight, and, for the monitoring sensors, a cooldown per champion
and every evaluation charted on their monitor asset."""

import json
from dataclasses import dataclass
from typing import Any

import dagster as dg

from ct_assets import keys
from ct_assets.defs.metadata import latest_metadata

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def retrain_request(
    trigger: str, reason: str, mode: str, evidence: str, tags: dict[str, str] | None = None
) -> dg.RunRequest:
    """A run of the retrain job, keyed by its evidence so it is never requested twice;
    ``tags``: more run tags (e.g. the change point the dataset starts at)."""
    return dg.RunRequest(
        run_key=f"{trigger}-{evidence}",
        tags={
            **(tags or {}),
            keys.RUN_TAG_TRIGGER: trigger,
            keys.RUN_TAG_REASON: reason[:1000],
            keys.RUN_TAG_MODE: mode,
            keys.RUN_TAG_JOB: keys.RETRAIN_JOB,
        },
    )


def retrain_in_flight(instance: dg.DagsterInstance) -> str | None:
    """The id of a retrain run queued or running, if any: triggers wait for it."""
    runs = instance.get_runs(
        dg.RunsFilter(tags={keys.RUN_TAG_JOB: keys.RETRAIN_JOB}, statuses=IN_FLIGHT), limit=1
    )
    return runs[0].run_id if runs else None


@dataclass(frozen=True)
class Monitor:
    """How a monitoring sensor acts on its decisions: the ``trigger`` and ``mode`` of the
    retrains it requests, the ``word`` its reasons use, how many ``unit`` must pass before
    it requests again for the same champion (``cooldown``), and the asset its evaluations
    are charted on."""

    trigger: str
    word: str
    mode: str
    cooldown: int
    unit: str
    chart: str


@dataclass(frozen=True)
class Tick:
    """One evaluation of a monitoring sensor: its cursor and the champion's metadata."""

    context: dg.SensorEvaluationContext
    monitor: Monitor
    cursor: dict[str, Any]
    champion: dict[str, Any]

    @classmethod
    def read(cls, context: dg.SensorEvaluationContext, monitor: Monitor) -> "Tick":
        cursor = json.loads(context.cursor) if context.cursor else {}
        champion = latest_metadata(context.instance, keys.CHAMPION_MODEL) or {}
        return cls(context, monitor, cursor, champion)

    @property
    def version(self) -> str:
        return str(self.champion.get(keys.META_MODEL_VERSION, ""))

    def too_soon(self, position: int, step: int, since: str) -> dg.SensorResult | None:
        """A skip while fewer than ``step`` events came ``since`` this champion's last check."""
        checked = (
            int(self.cursor.get("checked_at", 0))
            if self.cursor.get("champion") == self.version
            else 0
        )
        if position - checked >= step:
            return None
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"{position - checked} {since} of champion v{self.version} < {step}"
            )
        )

    def outcome(
        self,
        position: int,
        *,
        fire: bool,
        reason: str,
        figures: dict[str, Any],
        details: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> dg.SensorResult:
        """What the sensor does with a decision about the champion at log ``position``:
        skip with the reason; skip while a request for the same champion is younger than
        the cooldown (no retrain storm); keep the evidence (cursor unchanged) while a
        retrain is in flight; or request a retrain. Every evaluation is charted, with
        ``figures``, the reason and ``details``."""
        monitor, cursor, version = self.monitor, self.cursor, self.version
        event = dg.AssetMaterialization(
            asset_key=monitor.chart,
            metadata={
                "champion_version": version,
                **figures,
                "reason": reason,
                "details": dg.MetadataValue.json(details),
            },
        )
        state = {**cursor, "champion": version, "checked_at": position}

        def skip(message: str, kept: str | None = json.dumps(state)) -> dg.SensorResult:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(message), cursor=kept, asset_events=[event]
            )

        word, cooldown = monitor.word, monitor.cooldown
        if not fire:
            return skip(f"no {word}: {reason}")
        since = position - int(cursor.get("fired_at", 0))
        if cursor.get("fired_for") == version and since < cooldown:
            return skip(
                f"{word} persists ({reason}); a retrain was already requested for champion "
                f"v{version} {since} {monitor.unit} ago (cooldown {cooldown})"
            )
        if retrain_in_flight(self.context.instance) is not None:
            # evaluate again once it is done
            return skip(f"{word} ({reason}), but a retrain is in flight", self.context.cursor)
        state.update(fired_for=version, fired_at=position)
        request = retrain_request(
            monitor.trigger, reason, monitor.mode, f"v{version}-{position}", tags
        )
        return dg.SensorResult(
            run_requests=[request], cursor=json.dumps(state), asset_events=[event]
        )
