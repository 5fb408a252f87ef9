"""The human output of ``ct-assets lineage`` (``--json`` prints the dicts instead)."""

from __future__ import annotations

from typing import Any

from ct_assets.eventlog.decode import EVENT_FIELDS
from ct_assets.lineage.events import NOT_CURATED


def _status_of(entry: dict[str, Any]) -> str:
    aliases = entry.get("aliases") or []
    marks = [f"@{a}" for a in aliases]
    if entry.get("deployment_status") and entry["deployment_status"] not in aliases:
        marks.append(str(entry["deployment_status"]))
    return f"v{entry['version']}" + (f" [{', '.join(marks)}]" if marks else "")


def _counts_line(counts: dict[str, int]) -> str:
    """``simulator 4000, app 12``; rows without a value (e.g. feedback that carried its
    own features, served by no model) count as ``(none)``."""
    named = {("(none)" if value == "None" else value): n for value, n in counts.items()}
    return ", ".join(f"{value} {n}" for value, n in named.items()) or "-"


def _chain_line(lineage: dict[str, Any]) -> str:
    steps = [f"v{lineage['version']} ({lineage.get('mode') or '?'})"]
    for entry in lineage["init_chain"]:
        if entry.get("missing"):
            steps.append(f"v{entry['version']} (not in the registry)")
        else:
            steps.append(f"v{entry['version']} ({entry.get('mode') or '?'})")
    return " <- ".join(steps)


def render_version_lineage(lineage: dict[str, Any]) -> str:
    if lineage.get("deleted"):
        deleted = lineage["deleted"]
        return "\n".join(
            [
                f"model {lineage['model_name']} v{lineage['version']}: deleted by gc at "
                f"{deleted['when']} ({deleted['why']})",
                f"  run          {lineage['run_id'] or '-'}  "
                f"created {lineage['created_at'] or '-'}",
                f"  dataset      {lineage['dataset_version'] or '-'}",
            ]
        )
    lines = [
        f"model {lineage['model_name']} {_status_of(lineage)}",
        f"  run          {lineage['run_id']}  created {lineage['created_at']}",
        f"  trained by   trigger {lineage['trigger'] or '-'}, mode {lineage['mode'] or '-'}, "
        f"dagster run {lineage['dagster_run_id'] or '-'}, code {lineage['code_version'] or '-'}",
    ]
    if lineage["init_model_version"]:
        lines.append(
            f"  continues    v{lineage['init_model_version']} on rows after log offset "
            f"{lineage['new_after_offset']}; chain {_chain_line(lineage)}"
        )
    dataset = lineage["dataset"]
    if dataset is None:
        lines.append("  dataset      none recorded (no ct.dataset_version tag)")
        return "\n".join(lines)
    if not dataset["exists"]:
        lines.append(f"  dataset      {dataset['version']}: file missing ({dataset['path']})")
        return "\n".join(lines)
    counts = lineage["counts"]
    lines += [
        f"  dataset      {dataset['version']}  {counts['rows']} rows "
        f"({dataset['train_rows']} train, {dataset['holdout_rows']} holdout), "
        f"log position {dataset['log_position']}",
        f"               {dataset['path']}",
        _partitions_header(lineage["partitions"]),
        *_partition_rows(lineage["partitions"]),
    ]
    labels = (
        ("source", "by_source"),
        ("split", "by_split"),
        ("window part", "by_window_part"),
        ("label source", "by_label_source"),
        ("served by", "by_model_version"),
        ("arm", "by_arm"),
    )
    lines += [f"  {label:<12} {_counts_line(counts.get(key, {}))}" for label, key in labels]
    return "\n".join(lines)


def _partitions_header(partitions: list[dict[str, Any]]) -> str:
    if not partitions:
        return "  partitions   none"
    span = f"{partitions[0]['date']} .. {partitions[-1]['date']}"
    return f"  partitions   {len(partitions)} event dates, {span}"


def _partition_rows(partitions: list[dict[str, Any]]) -> list[str]:
    header = (
        f"    {'date':<10} {'rows':>6} {'train':>6} {'hold':>5} {'of log':>7}  "
        f"{'log offsets':<17} event ids"
    )
    rows = [header]
    for p in partitions:
        logged = "-" if p["log_feedback_events"] is None else str(p["log_feedback_events"])
        offsets = f"{p['first_log_offset']}..{p['last_log_offset']}"
        rows.append(
            f"    {p['date']:<10} {p['rows']:>6} {p['train']:>6} {p['holdout']:>5} {logged:>7}  "
            f"{offsets:<17} {p['first_event_id']} .. {p['last_event_id']}"
        )
    return rows


def render_event_lineage(lineage: dict[str, Any]) -> str:
    lines = [f"event {lineage['event_id']} ({lineage['kind']})"]
    logged = lineage["log"]
    if logged is None:
        lines.append("  log          not in the event log (known only to the curated tables)")
    else:
        fields = EVENT_FIELDS[lineage["kind"]]
        described = ", ".join(f"{k} {logged[k]}" for k in fields if logged.get(k) is not None)
        lines.append(
            f"  log          date {logged['date']}, log offset {logged['log_offset']}, "
            f"at {logged['timestamp']} (received {logged['received_at']})"
        )
        lines.append(f"               {described or '-'}")
    curation = lineage["curation"]
    if curation is not None:
        lines.append(f"  curation     {_curation_line(curation)}")
    for fb in lineage["attributed_feedback"]:
        lines.append(
            f"  feedback     {fb['event_id']} (date {fb['date']}, log offset {fb['log_offset']}): "
            f"{fb['status']}" + (f" ({fb['reason']})" if fb["reason"] else "")
        )
    if lineage["kind"] == "prediction" and not lineage["attributed_feedback"]:
        lines.append("  feedback     none curated yet")
    datasets = lineage["datasets"]
    lines.append(f"  datasets     {len(datasets) or 'none'}")
    models = {m["version"]: m for m in lineage["models"]}
    for entry in datasets:
        trained = ", ".join(_status_of(models[v]) for v in entry["model_versions"]) or "no model"
        held = f" holds {entry['event_id']}" if lineage["kind"] == "prediction" else ""
        lines.append(f"    {entry['dataset_version']}{held}  {entry['split']:<7} -> {trained}")
    return "\n".join(lines)


def _curation_line(curation: dict[str, Any]) -> str:
    if curation["state"] == NOT_CURATED:
        where = " (its date's table predates it)" if curation["table"] else ""
        return f"not curated yet{where}"
    text = f"{curation['state']} (validated_feedback, date {curation['date']})"
    if curation["reason"]:
        text += f": {curation['reason']}"
        if curation["reason_detail"]:
            text += f" - {curation['reason_detail']}"
    return text
