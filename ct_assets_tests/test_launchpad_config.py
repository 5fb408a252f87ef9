"""The retrain job's run config, as an ML engineer sets it from the Launchpad: typed,
validated, applied and recorded on the model version (real instance, real registry)."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.defs.training import CandidateConfig
from ct_assets.registry import TAG_RUN_CONFIG, TAG_TRAIN_PARAMS, Registry
from ct_assets.settings import Settings

from .conftest import ingest, simulated_events


def candidate_config(**fields: object) -> dict[str, object]:
    return {"ops": {keys.CANDIDATE_MODEL: {"config": fields}}}


def test_the_launchpad_shows_every_field_with_its_default_and_meaning() -> None:
    fields = CandidateConfig.to_config_schema().as_field().config_type.fields  # type: ignore[attr-defined]
    assert set(fields) == {"mode", "num_boost_round", "learning_rate", "num_leaves", "reason"}
    assert all(not field.is_required for field in fields.values())
    assert "CT_NUM_BOOST_ROUND" in fields["num_boost_round"].description
    assert "full | incremental | auto" in fields["mode"].description


def test_overrides_shape_the_model_and_are_recorded_on_the_version(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    ingest(settings, simulated_events(2000, drift_at=1.0))
    job = build_definitions(settings).resolve_job_def(keys.RETRAIN_JOB)
    registry = Registry.from_settings(settings)
    with dg.instance_for_test() as instance:
        bad = job.execute_in_process(
            instance=instance,
            run_config=candidate_config(num_leaves=1),
            raise_on_error=False,
        )
        assert not bad.success
        failure = next(e for e in bad.all_events if e.is_step_failure)
        message = failure.step_failure_data.error.message  # type: ignore[union-attr]
        assert "run config of candidate_model" in message and "num_leaves must be >= 2" in message

        config = candidate_config(num_boost_round=30, learning_rate=0.2, reason="fewer rounds")
        result = job.execute_in_process(instance=instance, run_config=config)
        assert result.success
    versions = registry.client.search_model_versions(f"name='{settings.model_name}'")
    info = registry.version(str(max(int(v.version) for v in versions)))
    recorded = json.loads(info.tags[TAG_RUN_CONFIG])
    assert recorded == {"num_boost_round": 30, "learning_rate": 0.2, "reason": "fewer rounds"}
    params = json.loads(info.tags[TAG_TRAIN_PARAMS])
    assert params["num_boost_round"] == 30 and params["learning_rate"] == 0.2
    assert params["num_leaves"] == settings.num_leaves
    assert registry.load_model(info.version).booster.current_iteration() == 30
