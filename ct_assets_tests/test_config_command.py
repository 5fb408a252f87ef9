"""``ct-assets config`` and the settings declarations it is derived from.

The command runs for real through ``ct_assets.cli.main`` on a monkeypatched environment.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from ct_assets.backtest import BACKTEST_DEFAULTS, backtest_settings
from ct_assets.cli import main
from ct_assets.serving import ServingConfig
from ct_assets.settings import (
    SECTIONS,
    Settings,
    SettingsError,
    declarations,
    env_var,
    names_set_in,
)

PROJECT_README = Path(__file__).resolve().parents[1] / "README.md"
TOKEN = "tok-s3cret-value"
PASSWORD = "hunter2pw"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``CT_*`` setting from the developer's environment; ``CT_HOME`` in tmp_path."""
    for decl in declarations():
        monkeypatch.delenv(decl.env, raising=False)
    home = tmp_path / "ct"
    monkeypatch.setenv("CT_HOME", str(home))
    return home.resolve()


def config(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["config", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def config_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, err = config(capsys, "--json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def listed_vars(text: str) -> list[str]:
    """The variable of each setting line of the text report, in order."""
    return re.findall(r"^  (CT_[A-Z0-9_]+) ", text, flags=re.MULTILINE)


def changed_settings(home: Path) -> Settings:
    """Every setting away from its default, still valid."""
    text = {
        "model_name": "churn",
        "tracking_uri_override": f"postgresql://ct:{PASSWORD}@db:5432/mlflow",
        "api_token": TOKEN,
        "partition_start_date": "2021-02-03",
        "window_mode": "all",
        "labeling_method": "entropy",
        "volume_mode": "full",
        "retrain_cron": "5 4 * * 1",
        "candidate_windows": "window,recent",
        "slice_columns": "country,arm",
        "drift_detector": "ks",
        "drift_mode": "incremental",
        "performance_mode": "auto",
        "monitoring_segments": "country",
        "api_metrics_url": "http://127.0.0.1:8080/metrics",
        "monitoring_cron": "*/5 * * * *",
        "event_store": "nats",
        "nats_url": f"nats://ct:{PASSWORD}@nats:4222",
        "nats_stream": "EVENTS",
        "storage_uri": "s3://ct-bucket/prod",
        "s3_endpoint_url": "http://127.0.0.1:8333",
        "s3_access_key_id": "ct-access",
        "s3_secret_access_key": f"s3-{PASSWORD}",
        "s3_region": "eu-west-1",
        "gc_cron": "0 2 * * 0",
        "dask_scheduler": "tcp://dask-scheduler:8786",
        "cluster_postgres_url": f"postgresql://ct:{PASSWORD}@db:5432/postgres",
        "cluster_broker_url": "amqp://guest:guest@rabbit:5672//",
        "cluster_redis_url": "redis://redis:6379/1",
    }
    values: dict[str, Any] = {"home": home}
    for decl in declarations():
        if decl.name in values:
            continue
        if decl.name in text:
            values[decl.name] = text[decl.name]
        elif isinstance(decl.default, bool):
            values[decl.name] = not decl.default
        elif isinstance(decl.default, int):
            values[decl.name] = decl.default + 1
        elif isinstance(decl.default, float):
            values[decl.name] = decl.default / 2
    changed = replace(Settings(), **values)
    changed.validate()
    return changed


# --- the declarations --------------------------------------------------------------------------


def test_every_field_is_declared_once_with_its_own_variable() -> None:
    decls = declarations()
    assert [d.name for d in decls] == [f.name for f in fields(Settings)]
    envs = [d.env for d in decls]
    assert len(envs) == len(set(envs))
    assert all(re.fullmatch(r"CT_[A-Z0-9_]+", env) for env in envs)
    assert {d.section for d in decls} == set(SECTIONS)
    assert env_var("drift_p_value") == "CT_DRIFT_P_VALUE"
    assert all(d.help for d in decls)


def test_every_variable_round_trips_through_as_env_and_from_env(tmp_path: Path) -> None:
    changed = changed_settings(tmp_path / "home")
    default = Settings()
    for decl in declarations():
        assert getattr(changed, decl.name) != getattr(default, decl.name), decl.name
    env = changed.as_env()
    assert {d.env for d in declarations()} <= set(env)
    assert Settings.from_env(env) == changed
    assert names_set_in(env) == {d.name for d in declarations()}
    # one variable at a time: each reaches exactly its own field
    for decl in declarations():
        alone = Settings.from_env({decl.env: env[decl.env]})
        differs = {
            d.name for d in declarations() if getattr(alone, d.name) != getattr(default, d.name)
        }
        assert differs == {decl.name}, decl.env
    assert Settings.from_env(Settings().as_env()) == Settings()


def test_sections_are_read_only_views() -> None:
    settings = Settings(drift_p_value=0.01)
    drift = settings.section("drift")
    assert drift["drift_p_value"] == 0.01
    assert set(drift) == {d.name for d in declarations() if d.section == "drift"}
    with pytest.raises(TypeError):
        drift["drift_p_value"] = 0.5  # type: ignore[index]
    with pytest.raises(KeyError, match="unknown settings section"):
        settings.section("nope")
    # every field is in exactly one section
    names = [name for section in SECTIONS for name in settings.section(section)]
    assert sorted(names) == sorted(f.name for f in fields(Settings))


def test_check_messages_name_the_variable_and_the_value() -> None:
    with pytest.raises(SettingsError, match=r"CT_DRIFT_MIN_WINDOW .*CT_DRIFT_WINDOW.*got 600"):
        Settings.from_env({"CT_DRIFT_WINDOW": "500", "CT_DRIFT_MIN_WINDOW": "600"})
    with pytest.raises(SettingsError, match=r"CT_RETRAIN_CRON .*5 fields.*got 'daily'"):
        Settings.from_env({"CT_RETRAIN_CRON": "daily"})
    with pytest.raises(SettingsError, match=r"CT_CANDIDATE_WINDOWS"):
        Settings(candidate_windows="window,yesterday").validate()


def test_serving_reads_its_section_of_the_settings() -> None:
    assert ServingConfig.from_settings(Settings()) == ServingConfig()
    config = ServingConfig.from_env(
        {"CT_SERVING_POLL_SECONDS": "0.5", "CT_SERVING_LOG": "0", "CT_SERVING_LOG_QUEUE": " 8 "}
    )
    assert (config.poll_seconds, config.log_predictions, config.log_queue) == (0.5, False, 8)
    with pytest.raises(ValueError, match=r"CT_SERVING_LOG_QUEUE='1': .*>= 2"):
        ServingConfig.from_env({"CT_SERVING_LOG_QUEUE": "1"})
    with pytest.raises(ValueError, match="CT_SERVING_POLL_SECONDS"):
        ServingConfig.from_env({"CT_SERVING_POLL_SECONDS": "0"})


def test_backtest_defaults_yield_to_the_environment(tmp_path: Path) -> None:
    base = Settings(volume_threshold=77)
    assert (
        backtest_settings(base, tmp_path, {}).volume_threshold
        == (BACKTEST_DEFAULTS["volume_threshold"])
    )
    kept = backtest_settings(base, tmp_path, {"CT_VOLUME_THRESHOLD": "77"})
    assert kept.volume_threshold == 77
    assert kept.training_window == BACKTEST_DEFAULTS["training_window"]
    assert kept.home == tmp_path.resolve()


# --- ct-assets config -------------------------------------------------------------------------


def test_sources_are_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    monkeypatch.setenv("CT_DRIFT_WINDOW", "3000")
    monkeypatch.setenv("CT_REPORT_PLOTS", "off")
    monkeypatch.setenv("CT_SLICE_COLUMNS", "")  # empty: the default
    report = config_json(capsys)
    assert list(report) == list(SECTIONS)
    assert report["drift"]["drift_window"] == {
        "value": 3000,
        "source": "environment",
        "env": "CT_DRIFT_WINDOW",
    }
    assert report["drift"]["drift_p_value"] == {
        "value": 0.05,
        "source": "default",
        "env": "CT_DRIFT_P_VALUE",
    }
    assert report["gate"]["report_plots"] == {
        "value": False,
        "source": "environment",
        "env": "CT_REPORT_PLOTS",
    }
    assert report["gate"]["slice_columns"]["source"] == "default"
    assert report["core"]["home"] == {
        "value": str(clean_env),
        "source": "environment",
        "env": "CT_HOME",
    }
    assert report["core"]["tracking_uri_override"]["value"] is None
    assert report["api"]["api_token"] == {"value": None, "source": "default", "env": "CT_API_TOKEN"}
    sources = {entry["source"] for section in report.values() for entry in section.values()}
    assert sources == {"default", "environment"}

    code, text, _ = config(capsys)
    assert code == 0
    assert re.search(r"^  CT_DRIFT_WINDOW +environment +3000$", text, flags=re.MULTILINE)
    assert re.search(r"^  CT_DRIFT_P_VALUE +default +0.05$", text, flags=re.MULTILINE)
    assert re.search(r"^  CT_REPORT_PLOTS +environment +0$", text, flags=re.MULTILINE)
    assert "[drift]" in text and "[serving]" in text


def test_every_variable_is_listed_exactly_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    for var, value in changed_settings(clean_env).as_env().items():
        monkeypatch.setenv(var, value)
    declared = sorted(d.env for d in declarations())
    _, text, _ = config(capsys)
    assert sorted(listed_vars(text)) == declared
    report = config_json(capsys)
    entries = [entry for section in report.values() for entry in section.values()]
    assert sorted(entry["env"] for entry in entries) == declared
    assert {entry["source"] for entry in entries} == {"environment"}


def test_secrets_are_redacted_in_text_and_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_API_TOKEN", TOKEN)
    monkeypatch.setenv("CT_MLFLOW_TRACKING_URI", f"postgresql://ct:{PASSWORD}@db:5432/mlflow")
    monkeypatch.setenv("CT_API_METRICS_URL", f"http://api:8080/metrics?token={PASSWORD}")
    code, text, _ = config(capsys)
    assert code == 0
    report = config_json(capsys)
    for out in (text, json.dumps(report)):
        assert TOKEN not in out
        assert PASSWORD not in out
    assert re.search(r"^  CT_API_TOKEN +environment +\*\*\*$", text, flags=re.MULTILINE)
    assert "postgresql://***@db:5432/mlflow" in text
    assert report["api"]["api_token"]["value"] == "***"
    assert report["core"]["tracking_uri_override"] == {
        "value": "postgresql://***@db:5432/mlflow",
        "source": "environment",
        "env": "CT_MLFLOW_TRACKING_URI",
    }
    assert report["monitoring"]["api_metrics_url"]["value"] == ("http://api:8080/metrics?token=***")


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("CT_VOLUME_THRESHOLD", "many"),
        ("CT_DRIFT_MIN_DISTANCE", "1"),
        ("CT_SERVING_MAX_INSTANCES", "0"),
        ("CT_MONITORING_CRON", "hourly"),
    ],
)
def test_a_bad_value_exits_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, var: str, raw: str
) -> None:
    monkeypatch.setenv(var, raw)
    for args in ((), ("--json",)):
        code, out, err = config(capsys, *args)
        assert code == 2
        assert out == ""
        assert err.startswith(f"error: {var}")
        assert raw in err


def test_readme_lists_every_variable_and_the_command() -> None:
    readme = PROJECT_README.read_text()
    settings_table = readme.split("### Settings", 1)[1].split("\n## ", 1)[0]
    for decl in declarations():
        assert f"`{decl.env}`" in settings_table, decl.env
    assert "| `ct-assets config [--json]` |" in readme
