"""The code location loads, holds every definition, and keeps heavy imports out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.settings import PROJECT_ROOT, Settings

EXPECTED_ASSETS = {
    keys.RAW_FEEDBACK,
    keys.RAW_PREDICTIONS,
    keys.VALIDATED_FEEDBACK,
    keys.FEEDBACK_QUARANTINE,
    keys.ATTRIBUTED_EXAMPLES,
    keys.LABELING_QUEUE,
    keys.TRAINING_DATASET,
    keys.REFERENCE_SCHEMA,
    keys.CANDIDATE_MODEL,
    keys.VALIDATION_REPORT,
    keys.CHAMPION_MODEL,
    keys.DEPLOYMENT_HISTORY,
    keys.CANARY_ANALYSIS,
    keys.SHADOW_EVALUATION,
    keys.DRIFT_MONITOR,
    keys.PERFORMANCE_MONITOR,
    keys.PIPELINE_HEALTH,
    keys.FEEDBACK_AGGREGATES,
    keys.FEEDBACK_LOOP_LATENCY,
    keys.FEEDBACK_BIAS_REPORT,
}


def test_every_asset_check_job_and_sensor_is_defined(settings: Settings) -> None:
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == EXPECTED_ASSETS
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert checks == {
        (keys.VALIDATION_REPORT, keys.GATE_CHECK),
        *(
            (keys.TRAINING_DATASET, name)
            for name in (
                "not_empty",
                "class_balance",
                "quarantine_rate",
                "null_rates",
                "schema_vs_reference",
            )
        ),
        (keys.VALIDATED_FEEDBACK, "quarantine_rate"),
        (keys.ATTRIBUTED_EXAMPLES, "null_rates"),
        (keys.ATTRIBUTED_EXAMPLES, "schema_vs_reference"),
        *(
            (keys.FEEDBACK_BIAS_REPORT, name)
            for name in ("selection_bias", "label_shift", "concentration")
        ),
    }
    blocking = {
        spec.name
        for a in defs.assets or []
        if isinstance(a, dg.AssetsDefinition)
        for spec in a.check_specs
        if spec.blocking
    }
    assert blocking >= {keys.GATE_CHECK, "not_empty", "class_balance", "quarantine_rate"}
    job = defs.resolve_job_def(keys.RETRAIN_JOB)
    assert job.tags[keys.RUN_TAG_JOB] == keys.RETRAIN_JOB
    monitoring = defs.resolve_job_def(keys.MONITORING_JOB)
    assert {k.to_user_string() for k in monitoring.asset_layer.selected_asset_keys} >= {
        keys.PIPELINE_HEALTH
    }
    for key in monitoring.asset_layer.selected_asset_keys:
        assert graph.get(key).group_name == keys.MONITORING
    for key in (keys.FEEDBACK_AGGREGATES, keys.FEEDBACK_LOOP_LATENCY, keys.PIPELINE_HEALTH):
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == keys.MONITORING and node.owners and node.description
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key.to_user_string()} says what it holds"
        assert node.owners, f"{key.to_user_string()} names who answers for it"
    schedule = defs.resolve_schedule_def(keys.MONITORING_SCHEDULE)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == settings.monitoring_cron
    sensor = defs.resolve_sensor_def(keys.VOLUME_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    raw_sensor = defs.resolve_sensor_def(keys.RAW_PARTITIONS_SENSOR)
    assert raw_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    raw_job = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB)
    assert isinstance(raw_job.partitions_def, dg.DailyPartitionsDefinition)
    for raw in (keys.RAW_FEEDBACK, keys.RAW_PREDICTIONS):
        partitions = graph.get(dg.AssetKey(raw)).partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition)
        assert partitions.start.strftime("%Y-%m-%d") == settings.partition_start_date
    assert graph.get(dg.AssetKey(keys.TRAINING_DATASET)).partitions_def is None
    assert set(defs.resources or {}) >= {
        "event_log",
        "dataset_store",
        "registry",
        "training_config",
    }


def test_curation_depends_on_the_reference_schema_the_dataset_records(settings: Settings) -> None:
    """The graph shows the file curation validates against: an asset upstream of
    validated_feedback, recorded by training_dataset's step (not materialized on its own)."""
    graph = build_definitions(settings).resolve_asset_graph()
    reference = dg.AssetKey(keys.REFERENCE_SCHEMA)
    assert reference in graph.get(dg.AssetKey(keys.VALIDATED_FEEDBACK)).parent_keys
    node = graph.get(reference)
    assert node.group_name == keys.CURATION
    assert not node.parent_keys and not node.is_materializable


def test_sensors_run_from_the_start_and_the_retrain_schedule_waits_to_be_switched_on(
    settings: Settings,
) -> None:
    defs = build_definitions(settings)
    for name in (
        keys.VOLUME_SENSOR,
        keys.DRIFT_SENSOR,
        keys.PERFORMANCE_SENSOR,
        keys.CANARY_SENSOR,
    ):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, name
        assert sensor.minimum_interval_seconds == settings.sensor_interval_seconds, name
    schedule = defs.resolve_schedule_def(keys.RETRAIN_SCHEDULE)
    assert schedule.cron_schedule == settings.retrain_cron
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.tags[keys.RUN_TAG_TRIGGER] == "schedule"
    switched_on = build_definitions(replace(settings, retrain_schedule_on=True))
    on = switched_on.resolve_schedule_def(keys.RETRAIN_SCHEDULE)
    assert on.default_status == dg.DefaultScheduleStatus.RUNNING


def test_assets_have_groups_kinds_and_descriptions(settings: Settings) -> None:
    graph = build_definitions(settings).resolve_asset_graph()
    groups = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        kinds = {
            t.removeprefix("dagster/kind/") for t in node.tags if t.startswith("dagster/kind/")
        }
        assert kinds, f"{key} has no kinds"
        groups[key.to_user_string()] = node.group_name
    assert groups[keys.RAW_FEEDBACK] == keys.INGESTION
    assert groups[keys.TRAINING_DATASET] == keys.CURATION
    assert groups[keys.CANDIDATE_MODEL] == keys.TRAINING
    assert groups[keys.VALIDATION_REPORT] == keys.VALIDATION
    assert groups[keys.CHAMPION_MODEL] == keys.DEPLOYMENT
    assert groups[keys.DRIFT_MONITOR] == groups[keys.PERFORMANCE_MONITOR] == keys.MONITORING


def test_resources_point_under_ct_home(settings: Settings) -> None:
    defs = build_definitions(settings)
    resources = defs.resources or {}
    assert Path(resources["event_log"].root).is_relative_to(settings.home)
    assert Path(resources["dataset_store"].datasets_dir).is_relative_to(settings.home)
    assert str(settings.home) in resources["registry"].tracking_uri


def test_loading_the_code_location_leaves_heavy_modules_out(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from ct_assets.definitions import defs\n"
        "d = defs() if callable(defs) else defs\n"
        "d.resolve_job_def('retrain')\n"
        "heavy = ['mlflow', 'lightgbm', 'alibi_detect', 'sklearn', 'starlette', 'uvicorn']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    env = {**os.environ, "CT_HOME": str(tmp_path / "ct")}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_workspace_loads_the_location_named_ct_assets(tmp_path: Path) -> None:
    env = {**os.environ, "CT_HOME": str(tmp_path / "ct"), "DAGSTER_HOME": str(tmp_path / "dh")}
    (tmp_path / "dh").mkdir()
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ct_assets" in out.stdout + out.stderr


def test_blocking_on_bias_puts_the_report_in_front_of_training(settings: Settings) -> None:
    def upstream_of_dataset(defs: dg.Definitions) -> set[str]:
        node = defs.resolve_asset_graph().get(dg.AssetKey(keys.TRAINING_DATASET))
        return {k.to_user_string() for k in node.parent_keys}

    def retrained(defs: dg.Definitions) -> set[str]:
        job = defs.resolve_job_def(keys.RETRAIN_JOB)
        return {k.to_user_string() for k in job.asset_layer.selected_asset_keys}

    warn = build_definitions(settings)
    assert upstream_of_dataset(warn) == {keys.ATTRIBUTED_EXAMPLES}
    assert keys.FEEDBACK_BIAS_REPORT not in retrained(warn)
    block = build_definitions(replace(settings, bias_block_training=True))
    assert upstream_of_dataset(block) == {keys.ATTRIBUTED_EXAMPLES, keys.FEEDBACK_BIAS_REPORT}
    assert keys.FEEDBACK_BIAS_REPORT in retrained(block)
