"""The PostgreSQL instance config against a real server: materialize, read the event back."""

from __future__ import annotations

import os
import uuid

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.eventlog import EventLog
from ct_assets.instance import prepare_dagster_home
from ct_assets.settings import Settings

from .conftest import ingest, simulated_events


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("CT_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CT_REQUIRE_POSTGRES") == "1":
            pytest.fail("CT_REQUIRE_POSTGRES=1 but CT_TEST_POSTGRES_URL is not set")
        pytest.skip("CT_TEST_POSTGRES_URL is not set")
    return url


@pytest.mark.postgres
def test_materialization_round_trips_through_postgres_storage(
    settings: Settings, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_DAGSTER_POSTGRES_URL", postgres_url)
    home = prepare_dagster_home(settings, "postgres")
    assert "postgres_url" in (home / "dagster.yaml").read_text()
    ingest(settings, simulated_events(250, seed=int(uuid.uuid4().int % 10_000)))
    by_date = EventLog.from_settings(settings).counts_by_date()
    day = max(by_date, key=lambda d: by_date[d].feedback)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        defs = build_definitions(settings)
        result = dg.materialize(
            [
                a
                for a in defs.assets or []
                if isinstance(a, dg.AssetsDefinition) and dg.AssetKey(keys.RAW_FEEDBACK) in a.keys
            ],
            instance=instance,
            resources=defs.resources,
            partition_key=day,
        )
        assert result.success
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(keys.RAW_FEEDBACK)), limit=10
        ).records
        mine = [r for r in records if r.run_id == result.run_id]
        assert len(mine) == 1
        metadata = mine[0].asset_materialization.metadata  # type: ignore[union-attr]
        assert metadata["dagster/row_count"].value == by_date[day].feedback > 0
        assert mine[0].asset_materialization.partition == day  # type: ignore[union-attr]
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
