"""The retrain job's typed hand-offs: each run judges its own candidate, even when another
retrain runs in between; an asset materialized alone loads its upstream's latest record."""

from __future__ import annotations

import json
import threading
from typing import Any

import dagster as dg

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.defs.handoffs import CandidateHandoff, HandoffIOManager
from ct_assets.settings import Settings

from .conftest import ingest, simulated_events


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    return next(
        {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
        for e in result.all_events
        if e.is_step_materialization and e.asset_key.to_user_string() == asset
    )


def test_interleaved_retrains_each_judge_their_own_candidate(
    settings: Settings, monkeypatch: Any
) -> None:
    """Run A's candidate is done; run B (a whole retrain) completes; then A's
    validation_report runs, and it judges A's candidate, not B's newer one."""
    ingest(settings, simulated_events(3000, drift_at=1.0))
    defs = build_definitions(settings)
    job = defs.resolve_job_def(keys.RETRAIN_JOB)

    first_thread: dict[str, int] = {}
    a_waits, b_done = threading.Event(), threading.Event()
    load_input = HandoffIOManager.load_input

    def paused(self: HandoffIOManager, context: dg.InputContext) -> Any:
        # run A stops right before its validation_report loads the candidate
        if (
            threading.get_ident() == first_thread.get("id")
            and context.asset_key.to_user_string() == keys.CANDIDATE_MODEL
        ):
            a_waits.set()
            assert b_done.wait(timeout=600), "run B never finished"
        return load_input(self, context)

    monkeypatch.setattr(HandoffIOManager, "load_input", paused)

    with dg.instance_for_test() as instance:
        results: dict[str, dg.ExecuteInProcessResult] = {}

        def run_a() -> None:
            first_thread["id"] = threading.get_ident()
            results["a"] = job.execute_in_process(
                instance=instance, tags={keys.RUN_TAG_TRIGGER: "manual"}, raise_on_error=False
            )

        thread = threading.Thread(target=run_a)
        thread.start()
        try:
            assert a_waits.wait(timeout=600), "run A never reached its validation_report"
            results["b"] = job.execute_in_process(
                instance=instance, tags={keys.RUN_TAG_TRIGGER: "volume"}, raise_on_error=False
            )
        finally:
            b_done.set()
            thread.join(timeout=600)
        a, b = results["a"], results["b"]

        a_candidate = str(_metadata(a, keys.CANDIDATE_MODEL)[keys.META_MODEL_VERSION])
        b_candidate = str(_metadata(b, keys.CANDIDATE_MODEL)[keys.META_MODEL_VERSION])
        assert a_candidate != b_candidate
        # B's candidate was materialized after A's: "the latest" would be B's
        latest = instance.get_latest_materialization_event(dg.AssetKey(keys.CANDIDATE_MODEL))
        assert latest is not None and latest.run_id == b.run_id
        assert b.success
        assert str(_metadata(b, keys.VALIDATION_REPORT)[keys.META_MODEL_VERSION]) == b_candidate
        assert a.is_node_success(keys.VALIDATION_REPORT)
        assert str(_metadata(a, keys.VALIDATION_REPORT)[keys.META_MODEL_VERSION]) == a_candidate

    def stored(asset: str, run_id: str) -> dict[str, Any]:
        path = settings.handoffs_dir / asset / "runs" / f"{run_id}.json"
        return dict(json.loads(path.read_text()))

    for run, version in ((a, a_candidate), (b, b_candidate)):
        candidate = CandidateHandoff(**stored(keys.CANDIDATE_MODEL, run.run_id))
        assert candidate.model_version == version
        assert candidate.dagster_run_id == run.run_id
        assert stored(keys.VALIDATION_REPORT, run.run_id)["model_version"] == version


def test_an_asset_alone_loads_the_latest_record_or_says_what_to_materialize(
    settings: Settings,
) -> None:
    ingest(settings, simulated_events(3000, drift_at=1.0))
    defs = build_definitions(settings)
    job = defs.resolve_job_def(keys.RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        alone = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(keys.VALIDATION_REPORT)],
            raise_on_error=False,
        )
        assert not alone.success
        failure = alone.failure_data_for_node(keys.VALIDATION_REPORT)
        assert failure is not None and failure.error is not None
        assert f"materialize {keys.CANDIDATE_MODEL} first" in failure.error.to_string()

        trained = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(keys.TRAINING_DATASET), dg.AssetKey(keys.CANDIDATE_MODEL)],
        )
        version = str(_metadata(trained, keys.CANDIDATE_MODEL)[keys.META_MODEL_VERSION])
        report = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(keys.VALIDATION_REPORT)],
            raise_on_error=False,
        )
        assert report.is_node_success(keys.VALIDATION_REPORT)
        assert str(_metadata(report, keys.VALIDATION_REPORT)[keys.META_MODEL_VERSION]) == version
