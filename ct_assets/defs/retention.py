"""Retention in Dagster: ``gc_job`` runs what ``ct-assets gc`` runs, and ``gc_schedule``
(stopped until someone turns it on) runs the job on ``CT_GC_CRON``."""

from collections import Counter
from typing import Any

import dagster as dg

from ct_assets import keys
from ct_assets.defs.resources import RegistryResource
from ct_assets.settings import Settings


class GcConfig(dg.Config):
    """``dry_run``: plan only, delete nothing."""

    dry_run: bool = False


def build_gc_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(
        name="collect_garbage",
        description=(
            "Deletes model versions, runs, datasets, reports, drift references, hand-offs and "
            "checkpoints that no alias, deployment or kept version's lineage needs (see "
            "`ct-assets gc`); tombstones keep lineage answerable. With CT_RETENTION_DAYS, "
            "replaces the event log's segments of older dates by their columnar archive."
        ),
    )
    def collect_garbage(
        context: dg.OpExecutionContext, config: GcConfig, registry: RegistryResource
    ) -> dg.Output[int]:  # type: ignore[type-arg]
        from ct_assets.retention import run_gc

        by = context.run.tags.get("dagster/user") or keys.GC_JOB
        plan = run_gc(settings, registry.registry(), dry_run=config.dry_run, by=by)
        deleted = Counter(item.what for item in plan.deleted)
        kept = Counter(item.what for item in plan.kept)
        context.log.info(
            f"{'would delete' if config.dry_run else 'deleted'} {len(plan.deleted)} object(s), "
            f"kept {len(plan.kept)}"
        )
        metadata: dict[str, Any] = {
            "dry_run": config.dry_run,
            "deleted": dg.MetadataValue.json(dict(sorted(deleted.items()))),
            "kept": dg.MetadataValue.json(dict(sorted(kept.items()))),
            "keep_versions": settings.keep_versions,
            "retention_days": settings.retention_days,
        }
        return dg.Output(len(plan.deleted), metadata=metadata)

    @dg.job(
        name=keys.GC_JOB,
        description="Retention: what `ct-assets gc` does (config: dry_run).",
        tags={keys.RUN_TAG_JOB: keys.GC_JOB},
    )
    def gc_job() -> None:
        collect_garbage()

    return gc_job


def build_gc_schedule(settings: Settings, job: dg.JobDefinition) -> dg.ScheduleDefinition:
    cron = settings.gc_cron
    return dg.ScheduleDefinition(
        name=keys.GC_SCHEDULE,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        tags={keys.RUN_TAG_JOB: keys.GC_JOB},
        description=(
            f"Runs gc_job on cron '{cron}' (UTC, CT_GC_CRON). Stopped by default: turn it on "
            "once CT_KEEP_VERSIONS suits you (`ct-assets gc --dry-run` shows what it deletes)."
        ),
    )
