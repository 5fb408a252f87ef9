"""What ``ct-assets status`` reports: aliases, event counts, the last trigger and retrain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ct_assets import keys
from ct_assets.eventlog import EventLog
from ct_assets.eventlog.archive import log_disk
from ct_assets.eventstream import event_store_backend
from ct_assets.settings import Settings
from ct_assets.storage import LocalStore, ObjectStore, store_from_settings
from ct_assets.uris import redact_uri


def _registry_state(settings: Settings) -> dict[str, Any]:
    from ct_assets.registry import CHALLENGER, CHAMPION, Registry

    out: dict[str, Any] = {
        "champion": None,
        "challenger": None,
        "performance": None,
        "deployment": {"mode": "off", "fraction": 0.0},
    }
    registry = Registry.existing(settings)
    if registry is None:
        return out
    champion = registry.alias(CHAMPION)
    challenger = registry.alias(CHALLENGER)
    out["champion"] = champion.as_status() if champion else None
    out["challenger"] = challenger.as_status() if challenger else None
    out["deployment"] = registry.deployment().as_status()
    if champion is not None:
        run = registry.client.get_run(champion.run_id)
        out["performance"] = {
            "source": "validation holdout at training time",
            **{
                k.removeprefix("holdout_"): v
                for k, v in run.data.metrics.items()
                if k.startswith("holdout_")
            },
        }
    return out


def _run_summary(run: Any) -> dict[str, Any]:
    def stamp(value: float | None) -> str | None:
        return datetime.fromtimestamp(value, UTC).isoformat() if value else None

    return {
        "run_id": run.dagster_run.run_id,
        "status": run.dagster_run.status.value,
        "trigger": run.dagster_run.tags.get(keys.RUN_TAG_TRIGGER),
        "reason": run.dagster_run.tags.get(keys.RUN_TAG_REASON),
        "mode": run.dagster_run.tags.get(keys.RUN_TAG_MODE),
        "started_at": stamp(run.start_time),
        "ended_at": stamp(run.end_time),
    }


NOT_CHECKED = {"state": "not checked yet", "detail": "the sensor has not evaluated a window"}


def _monitor(instance: Any, asset: str, values: tuple[str, ...]) -> dict[str, Any]:
    """The latest evaluation a monitoring sensor recorded on its asset."""
    import dagster as dg

    result = instance.fetch_materializations(dg.AssetKey(asset), limit=1)
    if not result.records or result.records[0].asset_materialization is None:
        return dict(NOT_CHECKED)
    record = result.records[0]
    meta = {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}
    return {
        "state": "fired" if meta.get("fire") else "ok",
        "detail": meta.get("reason"),
        "champion_version": meta.get("champion_version"),
        "at": datetime.fromtimestamp(record.timestamp, UTC).isoformat(),
        **{name: meta.get(name) for name in values},
    }


def _dagster_state(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "last_trigger": None,
        "last_retrain": None,
        "drift": dict(NOT_CHECKED),
        "live_performance": dict(NOT_CHECKED),
    }
    if not (settings.dagster_home / "dagster.yaml").exists():
        return out
    import dagster as dg

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        out["drift"] = _monitor(
            instance,
            keys.DRIFT_MONITOR,
            ("min_feature_p_value", "drifted_features", "score_p_value", "window_rows"),
        )
        out["live_performance"] = _monitor(
            instance,
            keys.PERFORMANCE_MONITOR,
            ("accuracy", "baseline", "p_value", "labeled_events"),
        )
        records = instance.get_run_records(
            dg.RunsFilter(tags={keys.RUN_TAG_JOB: keys.RETRAIN_JOB}), limit=20
        )
        if records:
            out["last_retrain"] = _run_summary(records[0])
        triggered = [r for r in records if r.dagster_run.tags.get(keys.RUN_TAG_TRIGGER) != "manual"]
        if triggered:
            summary = _run_summary(triggered[0])
            out["last_trigger"] = {
                "kind": summary["trigger"],
                "reason": summary["reason"],
                "run_id": summary["run_id"],
                "at": summary["started_at"],
            }
    return out


def _feedback_states(settings: Settings) -> dict[str, int]:
    """Feedback per state (accepted, quarantined, pending; expired only in tables of
    earlier versions) over every curated date, as of each date's last materialization of
    validated_feedback."""
    import polars as pl

    folder = settings.tables_dir / keys.VALIDATED_FEEDBACK
    if not folder.is_dir() or not any(folder.glob("date=*.parquet")):
        return {}
    counts = (
        pl.scan_parquet(str(folder / "date=*.parquet"))
        .group_by("status")
        .len()
        .collect()
        .sort("status")
    )
    return {str(r["status"]): int(r["len"]) for r in counts.iter_rows(named=True)}


def _loop_latency(settings: Settings) -> dict[str, Any] | None:
    """The champion's feedback-loop latency as the feedback_loop_latency asset last
    exported it; None before the asset was materialized."""
    import json

    path = settings.loop_latency_path
    try:
        exported = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"error": f"{path} is unreadable: {exc}"}
    champion = exported.get("champion") if isinstance(exported, dict) else None
    return champion if isinstance(champion, dict) else None


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds != seconds:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _where(store: ObjectStore, folder: str) -> str:
    """A folder of the object store as people read it: a path on a local disk, else its
    URI (redacted)."""
    if isinstance(store, LocalStore):
        return str(store.root / folder) if folder else str(store.root)
    return redact_uri(f"{store.uri}/{folder}" if folder else store.uri)


def _backends(settings: Settings) -> dict[str, Any]:
    """What this CT_HOME runs on (the contract of ``status --json`` ``backends``)."""
    from ct_assets.instance import instance_backends

    store = store_from_settings(settings)
    tracking = settings.tracking_uri
    served = tracking.lower().startswith(("http://", "https://"))
    return {
        **instance_backends(settings),
        "tracking_uri": redact_uri(tracking),
        # a tracking server keeps (and proxies) its own artifacts: its --artifacts-destination
        "artifact_root": f"mlflow-artifacts: via {redact_uri(tracking)}"
        if served
        else redact_uri(settings.artifact_root),
        # the per-date tables stay on the local disk in this profile
        "table_root": str(settings.tables_dir),
        # where accepted events go: the embedded log, or a stream consumed into it
        "event_store": event_store_backend(settings),
        # datasets and drift references (ct_assets.storage: CT_STORAGE_URI)
        "object_store": _where(store, ""),
        "dataset_root": _where(store, "datasets"),
        "drift_root": _where(store, "drift"),
    }


def collect_status(settings: Settings) -> dict[str, Any]:
    counts = EventLog.from_settings(settings).counts()
    return {
        "model_name": settings.model_name,
        "ct_home": str(settings.home),
        "tracking_uri": redact_uri(settings.tracking_uri),
        **_registry_state(settings),
        **_dagster_state(settings),
        "events": {"feedback": counts.feedback, "prediction": counts.prediction},
        "event_log": {
            **log_disk(settings.eventlog_dir).as_json(),
            "retention_days": settings.retention_days,
        },
        "feedback_states": _feedback_states(settings),
        "volume_trigger": {"threshold": settings.volume_threshold, "mode": settings.volume_mode},
        "feedback_loop_latency": _loop_latency(settings),
        "backends": _backends(settings),
    }


def _event_log_line(disk: dict[str, Any] | None) -> str:
    if not disk:
        return "event log    -"
    kept = (
        f"dates older than {disk['retention_days']} days archived"
        if disk["retention_days"]
        else "kept whole (CT_RETENTION_DAYS 0)"
    )
    return (
        f"event log    {disk['segment_bytes'] / 2**20:.1f} MiB in {disk['segments']} segments; "
        f"{disk['archived_segments']} archived here ({disk['archive_bytes'] / 2**20:.1f} MiB), "
        f"{disk['stored_archives']} on the object store; {kept}"
    )


def render_status(status: dict[str, Any]) -> str:
    def version(entry: dict[str, Any] | None) -> str:
        if not entry:
            return "none"
        return f"v{entry['version']} (dataset {entry['dataset_version']}, {entry['created_at']})"

    lines = [
        f"model        {status['model_name']}  ({status['tracking_uri']})",
        f"champion     {version(status['champion'])}",
        f"challenger   {version(status['challenger'])}",
        f"events       {status['events']['feedback']} feedback, "
        f"{status['events']['prediction']} predictions",
        _event_log_line(status.get("event_log")),
        f"deployment   {status['deployment']['mode']}"
        + (
            f" (fraction {status['deployment']['fraction']:g})"
            if status["deployment"]["mode"] in ("canary", "ab")
            else ""
        ),
    ]
    states = status.get("feedback_states")
    if states:
        lines.append("curated      " + ", ".join(f"{n} {state}" for state, n in states.items()))
    trigger = status.get("last_trigger")
    lines.append(
        f"last trigger {trigger['kind']}: {trigger['reason']}" if trigger else "last trigger none"
    )
    retrain = status.get("last_retrain")
    lines.append(
        f"last retrain {retrain['status']} ({retrain['trigger']}, {retrain['started_at']})"
        if retrain
        else "last retrain none"
    )
    for label, key in (("drift", "drift"), ("live perf", "live_performance")):
        entry = status.get(key) or NOT_CHECKED
        lines.append(f"{label:<12} {entry['state']}: {entry.get('detail') or '-'}")
    latency = status.get("feedback_loop_latency")
    lines.append(
        f"loop latency {latency['error']}"
        if latency and "error" in latency
        else f"loop latency v{latency['version']}: event to promotion p50 "
        f"{_duration(latency.get('p50_seconds'))}, p95 {_duration(latency.get('p95_seconds'))}, "
        f"max {_duration(latency.get('max_seconds'))}; trigger to promotion "
        f"{_duration(latency.get('trigger_to_promotion_seconds'))}"
        if latency
        else "loop latency not measured yet (materialize feedback_loop_latency)"
    )
    performance = status.get("performance")
    if performance:
        lines.append(
            f"performance  auc {performance.get('auc', float('nan')):.4f}, "
            f"accuracy {performance.get('accuracy', float('nan')):.4f} ({performance['source']})"
        )
    return "\n".join(lines)
