"""CT_MAX_INCREMENTAL_CHAIN: incremental versions do not stack trees without end (real
instance, real registry)."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.registry import CHAMPION, TAG_INCREMENTAL_CHAIN, Registry
from ct_assets.settings import Settings
from ct_assets.training.candidates import chain_is_full

from .conftest import ingest, simulated_events


def test_the_limit_counts_incremental_versions_in_a_row() -> None:
    assert not chain_is_full(0, 2) and not chain_is_full(1, 2) and chain_is_full(2, 2)
    assert not chain_is_full(1000, 0)  # 0: no limit


def test_after_the_limit_the_next_retrain_is_full(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    # each retrain adds as many rows as the last had: the gate, at its defaults, can tell
    # the candidate is no worse on a holdout of that size
    limited = replace(settings, max_incremental_chain=1)
    events = simulated_events(8000, drift_at=1.0)
    job = build_definitions(limited).resolve_job_def(keys.RETRAIN_JOB)
    registry = Registry.from_settings(limited)
    incremental = {keys.RUN_TAG_TRIGGER: "volume", keys.RUN_TAG_MODE: "incremental"}
    chains = []
    with dg.instance_for_test() as instance:
        for part in (events[:2000], events[2000:4000], events[4000:]):
            ingest(limited, part)
            tags = incremental if chains else {}
            assert job.execute_in_process(instance=instance, tags=tags).success
            champion = registry.alias(CHAMPION)
            assert champion is not None
            chains.append((champion.tags["ct.mode"], champion.tags[TAG_INCREMENTAL_CHAIN]))
        last = instance.get_latest_materialization_event(dg.AssetKey(keys.CANDIDATE_MODEL))
    assert chains == [("full", "0"), ("incremental", "1"), ("full", "0")]
    assert last is not None and last.asset_materialization is not None
    text = last.asset_materialization.metadata["notes"].value
    assert "ends 1 incremental versions in a row (CT_MAX_INCREMENTAL_CHAIN 1)" in str(text)
