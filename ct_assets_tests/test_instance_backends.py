"""Choosing the instance template (CT_DAGSTER_INSTANCE) and reporting what a CT_HOME runs
on (``status --json`` ``backends``), credentials redacted; no server is contacted."""

from __future__ import annotations

import pytest

from ct_assets.instance import instance_backends, instance_kind, prepare_dagster_home
from ct_assets.settings import Settings
from ct_assets.status import collect_status

SECRET_ENV = {
    "CT_DAGSTER_POSTGRES_URL": "postgresql://ct:s3cret@db.internal:5432/dagster",
    "CT_CELERY_BROKER_URL": "amqp://ct:s3cret@rabbit.internal:5672//",
    "CT_CELERY_BACKEND_URL": "redis://:s3cret@redis.internal:6379/0",
}


def test_instance_kind_comes_from_the_environment() -> None:
    assert instance_kind({}) == "sqlite"
    assert instance_kind({"CT_DAGSTER_INSTANCE": "celery"}) == "celery"
    with pytest.raises(ValueError, match="CT_DAGSTER_INSTANCE"):
        instance_kind({"CT_DAGSTER_INSTANCE": "kubernetes"})


def test_embedded_default_backends(settings: Settings) -> None:
    prepare_dagster_home(settings, "sqlite")
    backends = collect_status(settings)["backends"]
    assert backends == {
        "instance": {"kind": "sqlite", "location": str(settings.dagster_home)},
        "run_launcher": "DefaultRunLauncher",
        "compute_logs": "LocalComputeLogManager",
        "tracking_uri": settings.tracking_uri,
        "artifact_root": settings.artifact_root,
        "table_root": str(settings.tables_dir),
        "event_store": {"kind": "embedded", "location": str(settings.eventlog_dir)},
        "object_store": str(settings.home),
        "dataset_root": str(settings.datasets_dir),
        "drift_root": str(settings.drift_dir),
    }


def test_celery_instance_is_selected_by_env_and_reported_redacted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_DAGSTER_INSTANCE", "celery")
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    home = prepare_dagster_home(settings)
    assert (home / ".ct-instance-kind").read_text() == "celery"
    backends = instance_backends(settings)
    assert backends == {
        "instance": {"kind": "postgres", "location": "postgresql://***@db.internal:5432/dagster"},
        "run_launcher": "MonitoredCeleryRunLauncher",
        "compute_logs": "LocalComputeLogManager",
    }
    assert "s3cret" not in str(backends)


def test_compute_logs_on_s3_are_reported_with_their_bucket(settings: Settings) -> None:
    home = prepare_dagster_home(settings, "celery")
    path = home / "dagster.yaml"
    path.write_text(
        path.read_text() + "\ncompute_logs:\n  module: dagster_aws.s3.compute_log_manager\n"
        "  class: S3ComputeLogManager\n  config:\n    bucket:\n      env: CT_TEST_BUCKET\n"
        "    prefix: dagster/compute-logs\n"
    )
    backends = instance_backends(settings, {"CT_TEST_BUCKET": "ct-logs"})
    assert backends["compute_logs"] == "S3ComputeLogManager s3://ct-logs/dagster/compute-logs"


def test_celery_instance_config_is_valid_for_dagster(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template's launcher config passes Dagster's schema (the launcher itself is
    built lazily, on first use, so no server is needed here)."""
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    home = prepare_dagster_home(settings, "celery")
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(home))
    assert config["run_launcher"]["class"] == "MonitoredCeleryRunLauncher"
    assert config["run_monitoring"]["max_resume_run_attempts"] == 0


def test_dagster_home_command_writes_the_chosen_template(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ct_assets.cli import main

    monkeypatch.setenv("CT_HOME", str(settings.home))
    assert main(["dagster-home", "--storage", "celery"]) == 0
    written = (settings.dagster_home / "dagster.yaml").read_text()
    assert "MonitoredCeleryRunLauncher" in written
    monkeypatch.setenv("CT_DAGSTER_INSTANCE", "kubernetes")
    capsys.readouterr()
    assert main(["dagster-home"]) == 2
    assert "CT_DAGSTER_INSTANCE='kubernetes'" in capsys.readouterr().err
    monkeypatch.setenv("CT_DAGSTER_INSTANCE", "sqlite")
    assert main(["dagster-home"]) == 0
    assert "MonitoredCeleryRunLauncher" not in (settings.dagster_home / "dagster.yaml").read_text()
