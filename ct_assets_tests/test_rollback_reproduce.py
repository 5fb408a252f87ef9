"""Rollback and reproduce round-trips on a real Dagster instance and MLflow registry."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest

from ct_assets import keys
from ct_assets.cli import main
from ct_assets.defs import build_definitions
from ct_assets.registry import (
    CHAMPION,
    TAG_DEPLOYMENT_STATUS,
    TAG_ENVIRONMENT,
    TAG_INIT_VERSION,
    TAG_TRAIN_PARAMS,
    TAG_VALIDATED_MODEL,
    Registry,
)
from ct_assets.settings import Settings
from ct_assets.training.train import evaluate

from .conftest import ingest, simulated_events

PRE, POST = 2000, 1200


@pytest.fixture
def two_champions(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """v1 (full) then v2 (incremental from v1), both promoted by the retrain job."""
    monkeypatch.setenv("CT_HOME", str(settings.home))
    events = simulated_events(PRE + POST, drift_at=1.0)
    registry = Registry.from_settings(settings)
    defs = build_definitions(settings)
    job = defs.resolve_job_def(keys.RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        ingest(settings, events[:PRE])
        assert job.execute_in_process(instance=instance).success
        ingest(settings, events[PRE:])
        tags = {keys.RUN_TAG_TRIGGER: "volume", keys.RUN_TAG_MODE: "incremental"}
        assert job.execute_in_process(instance=instance, tags=tags).success
    trail = registry.audit_trail()
    assert [r.action for r in trail] == ["promote", "promote"]
    first, second = trail[0].version, trail[1].version
    assert trail[1].previous == first
    return first, second


def test_rollback_restores_the_previous_champion_with_an_audit_record(
    settings: Settings, two_champions: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two_champions
    registry = Registry.from_settings(settings)
    assert registry.version(second).tags[TAG_DEPLOYMENT_STATUS] == "champion"
    assert registry.version(first).tags[TAG_DEPLOYMENT_STATUS] == "retired"

    code = main(["rollback", "--reason", "bad canary", "--by", "alice", "--json"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["version"], record["previous"]) == (first, second)
    assert (record["by"], record["reason"], record["action"]) == ("alice", "bad canary", "rollback")
    champion = registry.alias(CHAMPION)
    assert champion is not None and champion.version == first
    assert registry.version(second).tags[TAG_DEPLOYMENT_STATUS] == "rolled_back"
    assert registry.version(first).tags[TAG_DEPLOYMENT_STATUS] == "champion"
    assert registry.audit_trail()[-1].to_json() == json.dumps(record, sort_keys=True)

    # v1 replaced no earlier champion: nothing to roll back to, and nothing moves
    assert main(["rollback", "--reason", "again"]) == 1
    assert "replaced no earlier champion" in capsys.readouterr().err
    assert main(["rollback", "--to", "999", "--reason", "typo"]) == 1
    assert "no version '999'" in capsys.readouterr().err
    champion = registry.alias(CHAMPION)
    assert champion is not None and champion.version == first

    # the Dagster job does the same, and the champion_model asset shows it
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(keys.ROLLBACK_JOB).execute_in_process(
            instance=instance,
            run_config={
                "ops": {"rollback_champion": {"config": {"to": second, "reason": "fixed"}}}
            },
        )
        assert result.success
        (event,) = result.get_asset_materialization_events()
        meta = event.materialization.metadata
        assert event.materialization.asset_key == dg.AssetKey(keys.CHAMPION_MODEL)
        assert meta[keys.META_MODEL_VERSION].value == second
        assert meta[keys.META_PREVIOUS_CHAMPION].value == first
        assert meta["rollback_reason"].value == "fixed"
        # the champion's page points at the MLflow store holding the version (no server here)
        store = meta[keys.META_MLFLOW_MODEL_VERSION]
        assert isinstance(store, dg.PathMetadataValue)
        assert store.path == settings.tracking_uri.removeprefix("sqlite:///")
    champion = registry.alias(CHAMPION)
    assert champion is not None and champion.version == second
    assert [r.action for r in registry.audit_trail()] == [
        "promote",
        "promote",
        "rollback",
        "rollback",
    ]


def test_reproduce_trains_full_and_incremental_versions_to_identical_predictions(
    settings: Settings, two_champions: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two_champions
    registry = Registry.from_settings(settings)
    assert json.loads(registry.version(first).tags[TAG_TRAIN_PARAMS])["seed"] == settings.seed
    assert registry.version(first).tags[TAG_ENVIRONMENT]
    incremental = registry.version(second).tags
    assert incremental["ct.mode"] == "incremental" and incremental[TAG_INIT_VERSION] == first
    for version, mode in ((first, "full"), (second, "incremental")):
        assert main(["reproduce", version, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["identical"] is True and result["max_abs_difference"] == 0.0
        assert result["mode"] == mode and result["holdout_rows"] > 100
        assert "trained again with the holdout, as the registered model was" in result["notes"]

    # the registered model learned the holdout; the gate judged the one that did not
    for version in (first, second):
        info = registry.version(version)
        assert info.tags[TAG_VALIDATED_MODEL] == "validated_model"
        manifest = json.loads((settings.datasets_dir / f"{info.dataset_version}.json").read_text())
        holdout = pl.read_parquet(manifest["path"]).filter(pl.col("split") == "holdout")
        validated = evaluate(registry.load_validated_model(version), holdout)
        served = evaluate(registry.load_model(version), holdout)
        gate = registry.client.get_run(info.run_id).data.metrics
        assert gate["holdout_log_loss"] == pytest.approx(validated["log_loss"], abs=1e-9)
        assert served["log_loss"] < validated["log_loss"]
    # v2's gate judged v1 as validated too, not v1's refit
    report = json.loads((settings.reports_dir / f"validation-v{second}.json").read_text())
    manifest = json.loads(
        (settings.datasets_dir / f"{registry.version(second).dataset_version}.json").read_text()
    )
    holdout = pl.read_parquet(manifest["path"]).filter(pl.col("split") == "holdout")
    champion = evaluate(registry.load_validated_model(first), holdout)
    assert report["champion_version"] == first
    assert report["champion"]["log_loss"] == pytest.approx(champion["log_loss"], abs=1e-9)

    # a model that is not what its version says is caught: replace v1's dataset rows
    dataset = settings.datasets_dir / f"{registry.version(first).dataset_version}.json"
    info = json.loads(dataset.read_text())
    frame = pl.read_parquet(info["path"])
    frame.with_columns(pl.col("label").shuffle(seed=1)).write_parquet(info["path"])
    assert main(["reproduce", first, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["identical"] is False


def test_loaded_models_are_kept_per_run_and_an_alias_move_is_seen_at_once(
    settings: Settings, two_champions: tuple[str, str]
) -> None:
    from ct_assets.registry import LOADED_MODELS

    first, second = two_champions
    registry = Registry.from_settings(settings)
    LOADED_MODELS.clear()
    model = registry.load_model(second)
    assert Registry.from_settings(settings).load_model(second) is model  # files read once
    older = registry.load_model(first)
    assert older is not model
    assert older.booster.model_to_string() != model.booster.model_to_string()
    # every version in one search, with the tags a lookup of each gives
    versions = registry.versions()
    assert set(versions) == {first, second}
    for number, info in versions.items():
        assert info == registry.version(number)
    # the champion is asked of the registry each time: a rollback is seen at once
    registry.rollback(None, by="test", reason="alias move")
    champion = registry.alias(CHAMPION)
    assert champion is not None and champion.version == first
    assert registry.load_model(champion.version) is older
