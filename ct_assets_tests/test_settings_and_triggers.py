"""Unit tests of ct_assets.settings and ct_assets.triggers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ct_assets.settings import DEFAULT_HOME, PROJECT_ROOT, Settings, SettingsError
from ct_assets.triggers.volume import VolumeDecision, volume_decision

# --- settings ---------------------------------------------------------------------------------


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.home == DEFAULT_HOME == PROJECT_ROOT / ".ct"
    assert (settings.volume_threshold, settings.volume_mode) == (2000, "auto")
    assert (settings.training_window, settings.holdout_fraction) == (4000, 0.2)
    assert (settings.gate_tolerance, settings.gate_min_auc) == (0.02, 0.55)
    assert settings.tracking_uri_override is None


def test_ct_home_places_every_path(tmp_path: Path) -> None:
    settings = Settings.from_env({"CT_HOME": str(tmp_path / "home")})
    home = (tmp_path / "home").resolve()
    assert settings.home == home
    assert settings.eventlog_dir == home / "eventlog"
    assert settings.datasets_dir == home / "datasets"
    assert settings.reports_dir == home / "reports"
    assert settings.mlflow_dir == home / "mlflow"
    assert settings.dagster_home == home / "dagster"
    assert settings.tracking_uri == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    assert settings.artifact_root == (home / "mlflow" / "artifacts").as_uri()
    assert settings.artifact_root.startswith("file://")


def test_relative_and_user_homes_are_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"CT_HOME": "rel/ct"}).home == (tmp_path / "rel" / "ct").resolve()
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert Settings.from_env({"CT_HOME": "~/ct"}).home == (tmp_path / "user" / "ct").resolve()
    assert Settings().with_home(Path("other")).home == (tmp_path / "other").resolve()


def test_overrides_are_parsed(tmp_path: Path) -> None:
    env = {
        "CT_HOME": str(tmp_path),
        "CT_MODEL_NAME": "churn",
        "CT_MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "CT_VOLUME_THRESHOLD": "25",
        "CT_VOLUME_MODE": "full",
        "CT_SENSOR_INTERVAL_SECONDS": "5",
        "CT_TRAINING_WINDOW": "500",
        "CT_HOLDOUT_FRACTION": "0.25",
        "CT_GATE_TOLERANCE": "0.03",
        "CT_GATE_MIN_AUC": "0.6",
        "CT_NUM_BOOST_ROUND": "40",
        "CT_LEARNING_RATE": "0.2",
        "CT_NUM_LEAVES": "15",
        "CT_SEED": "-3",
        "CT_SEGMENT_MAX_BYTES": "4096",
        "CT_MAX_EVENT_BYTES": "2000",
        "UNRELATED": "ignored",
    }
    s = Settings.from_env(env)
    assert s.home == tmp_path.resolve()
    assert s.model_name == "churn"
    assert s.tracking_uri_override == "http://mlflow:5000"
    assert s.tracking_uri == "http://mlflow:5000"
    assert (s.volume_threshold, s.volume_mode, s.sensor_interval_seconds) == (25, "full", 5)
    assert (s.training_window, s.holdout_fraction) == (500, 0.25)
    assert (s.gate_tolerance, s.gate_min_auc) == (0.03, 0.6)
    assert (s.num_boost_round, s.learning_rate, s.num_leaves, s.seed) == (40, 0.2, 15, -3)
    assert (s.segment_max_bytes, s.max_event_bytes) == (4096, 2000)


def test_empty_variables_mean_default() -> None:
    assert Settings.from_env({"CT_VOLUME_THRESHOLD": "", "CT_HOME": ""}) == Settings()


def test_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CT_HOME", str(tmp_path))
    monkeypatch.setenv("CT_VOLUME_THRESHOLD", "7")
    settings = Settings.from_env()
    assert settings.home == tmp_path.resolve()
    assert settings.volume_threshold == 7


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("CT_VOLUME_THRESHOLD", "many"),
        ("CT_VOLUME_THRESHOLD", "-1"),
        ("CT_VOLUME_THRESHOLD", "0"),
        ("CT_VOLUME_THRESHOLD", "1.5"),
        ("CT_VOLUME_MODE", "sometimes"),
        ("CT_SENSOR_INTERVAL_SECONDS", "0"),
        ("CT_TRAINING_WINDOW", "9"),
        ("CT_HOLDOUT_FRACTION", "1.5"),
        ("CT_HOLDOUT_FRACTION", "0"),
        ("CT_HOLDOUT_FRACTION", "0.95"),
        ("CT_HOLDOUT_FRACTION", "nan"),
        ("CT_HOLDOUT_FRACTION", "a fifth"),
        ("CT_GATE_TOLERANCE", "-0.1"),
        ("CT_GATE_MIN_AUC", "2"),
        ("CT_NUM_BOOST_ROUND", "0"),
        ("CT_LEARNING_RATE", "fast"),
        ("CT_NUM_LEAVES", "-4"),
        ("CT_SEED", "0x10"),
        ("CT_SEGMENT_MAX_BYTES", "4095"),
        ("CT_MAX_EVENT_BYTES", "-1"),
    ],
)
def test_invalid_values_name_the_variable(var: str, raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({var: raw})
    assert var in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_errors_quote_the_raw_value() -> None:
    with pytest.raises(SettingsError, match=r"CT_NUM_LEAVES='lots'"):
        Settings.from_env({"CT_NUM_LEAVES": "lots"})


def test_boundaries_that_are_allowed() -> None:
    s = Settings.from_env(
        {
            "CT_VOLUME_THRESHOLD": "1",
            "CT_TRAINING_WINDOW": "10",
            "CT_HOLDOUT_FRACTION": "0.89",
            "CT_SEGMENT_MAX_BYTES": "4096",
            "CT_GATE_TOLERANCE": "0",
            "CT_GATE_MIN_AUC": "1",
        }
    )
    assert (s.volume_threshold, s.training_window, s.holdout_fraction) == (1, 10, 0.89)


def test_as_env_reproduces_the_settings(tmp_path: Path) -> None:
    original = Settings.from_env(
        {
            "CT_HOME": str(tmp_path),
            "CT_VOLUME_THRESHOLD": "33",
            "CT_VOLUME_MODE": "incremental",
            "CT_HOLDOUT_FRACTION": "0.3",
            "CT_LEARNING_RATE": "0.125",
            "CT_MLFLOW_TRACKING_URI": "http://x",
        }
    )
    env = original.as_env()
    assert env["CT_HOME"] == str(tmp_path.resolve())
    assert env["DAGSTER_HOME"] == str(original.dagster_home)
    assert env["CT_VOLUME_THRESHOLD"] == "33"
    assert Settings.from_env(env) == original
    assert "CT_MLFLOW_TRACKING_URI" not in Settings().as_env()  # None is not exported
    assert Settings.from_env(Settings().as_env()) == Settings()


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().volume_threshold = 3  # type: ignore[misc]


def test_validate_checks_directly_built_settings() -> None:
    with pytest.raises(SettingsError, match="CT_VOLUME_MODE"):
        Settings(volume_mode="weekly").validate()  # type: ignore[arg-type]
    Settings().validate()


# --- volume trigger ---------------------------------------------------------------------------


def test_volume_fires_exactly_at_the_threshold() -> None:
    decision = volume_decision(position=150, champion_cutoff=50, last_requested=0, threshold=100)
    assert decision == VolumeDecision(True, 100, 50, 150, 100)
    assert ">=" in decision.reason and "100 new" in decision.reason
    below = volume_decision(position=149, champion_cutoff=50, last_requested=0, threshold=100)
    assert not below.fire and below.new_examples == 99
    assert "<" in below.reason and ">=" not in below.reason
    above = volume_decision(position=151, champion_cutoff=50, last_requested=0, threshold=100)
    assert above.fire and above.new_examples == 101


def test_volume_baseline_is_the_later_of_cutoff_and_last_request() -> None:
    # the last request is later: count from it
    d = volume_decision(position=300, champion_cutoff=100, last_requested=250, threshold=50)
    assert (d.baseline, d.new_examples, d.fire) == (250, 50, True)
    d = volume_decision(position=299, champion_cutoff=100, last_requested=250, threshold=50)
    assert (d.baseline, d.new_examples, d.fire) == (250, 49, False)
    # the champion's cutoff is later: count from it
    d = volume_decision(position=300, champion_cutoff=250, last_requested=100, threshold=50)
    assert (d.baseline, d.new_examples, d.fire) == (250, 50, True)
    d = volume_decision(position=299, champion_cutoff=250, last_requested=100, threshold=50)
    assert (d.baseline, d.new_examples, d.fire) == (250, 49, False)


def test_volume_never_counts_negative() -> None:
    d = volume_decision(position=10, champion_cutoff=40, last_requested=20, threshold=1)
    assert (d.new_examples, d.fire, d.baseline, d.position) == (0, False, 40, 10)


def test_volume_first_run_counts_from_zero() -> None:
    assert volume_decision(position=2000, champion_cutoff=0, last_requested=0, threshold=2000).fire
    assert not volume_decision(1999, 0, 0, 2000).fire


def test_volume_reason_names_the_numbers() -> None:
    reason = volume_decision(
        position=130, champion_cutoff=30, last_requested=0, threshold=80
    ).reason
    assert reason == (
        "100 new labeled feedback events since log position 30 (now 130) >= threshold 80"
    )
