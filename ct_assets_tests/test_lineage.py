"""``ct-assets lineage``: model version <-> dataset <-> partitions and events, on a real
event log, real retrain runs of the Dagster job and a real MLflow registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
import pytest

from ct_assets import keys
from ct_assets.cli import main
from ct_assets.defs import build_definitions
from ct_assets.registry import CHAMPION, Registry, VersionInfo
from ct_assets.settings import Settings
from ct_assets.simulate import SimulationSpec, simulate_events

from .conftest import ingest, simulated_events

PRE, POST = 2000, 1200
ORIGINAL, REPEAT = "fb-lineage-original", "fb-lineage-repeat"


@dataclass(frozen=True)
class History:
    """Two champions: v1 (full) on the first events, v2 (incremental from v1) after more."""

    settings: Settings
    first: VersionInfo
    second: VersionInfo
    feedback_ids: list[str]  # the simulated feedback, in time order
    prediction_ids: list[str]  # prediction events whose feedback refers to them


def _a_repeated_label(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Two labels from one user for one prediction: the second is quarantined as a
    duplicate. Their features are their own, their source is not the simulator's."""
    at = datetime.fromisoformat(str(template["timestamp"]))
    return [
        {
            "kind": "feedback",
            "schema_version": 1,
            "event_id": event_id,
            "timestamp": (at + timedelta(seconds=offset)).isoformat(),
            "feedback_type": "explicit",
            "label": 1,
            "prediction_id": "pred-lineage",
            "user_id": "user-lineage",
            "source": "mobile",
            "features": template["features"],
        }
        for offset, event_id in ((1, ORIGINAL), (2, REPEAT))
    ]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    settings = Settings(
        volume_threshold=1000,
        training_window=3000,
        num_boost_round=60,
        sensor_interval_seconds=1,
    ).with_home(tmp_path_factory.mktemp("lineage") / "ct")
    events = simulated_events(PRE + POST, drift_at=1.0)
    served = list(simulate_events(SimulationSpec(rows=40, seed=9, drift="none", kind="both")))
    job = build_definitions(settings).resolve_job_def(keys.RETRAIN_JOB)
    registry = Registry.from_settings(settings)
    with dg.instance_for_test() as instance:
        ingest(settings, events[:PRE] + served + _a_repeated_label(events[1000]))
        assert job.execute_in_process(instance=instance).success
        first = registry.alias(CHAMPION)
        ingest(settings, events[PRE:])
        tags = {keys.RUN_TAG_TRIGGER: "volume", keys.RUN_TAG_MODE: "incremental"}
        assert job.execute_in_process(instance=instance, tags=tags).success
        second = registry.alias(CHAMPION)
    assert first is not None and second is not None and first.version != second.version
    yield History(
        settings,
        first,
        second,
        [str(e["event_id"]) for e in events],
        [str(e["event_id"]) for e in served if e["kind"] == "prediction"],
    )


def lineage(
    history: History,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, str, str]:
    monkeypatch.setenv("CT_HOME", str(history.settings.home))
    code = main(["lineage", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def lineage_json(
    history: History,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> dict[str, Any]:
    code, out, err = lineage(history, monkeypatch, capsys, *args, "--json")
    assert code == 0, err
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def dataset_ids(history: History, version: VersionInfo) -> set[str]:
    path = history.settings.datasets_dir / f"{version.dataset_version}.parquet"
    return set(pl.read_parquet(path, columns=["event_id"])["event_id"].to_list())


def dataset_offset(history: History, version: VersionInfo, event_id: str) -> int:
    path = history.settings.datasets_dir / f"{version.dataset_version}.parquet"
    rows = pl.read_parquet(path, columns=["event_id", "log_offset"])
    return int(rows.filter(pl.col("event_id") == event_id)["log_offset"].item())


def test_an_event_ingested_after_the_first_champion_is_in_the_champions_lineage(
    history: History, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    champion = history.second
    event_id = history.feedback_ids[PRE + 300]
    assert event_id in dataset_ids(history, champion)

    found = lineage_json(history, monkeypatch, capsys, "--event", event_id)
    assert found["kind"] == "feedback"
    assert found["log"]["log_offset"] == dataset_offset(history, champion, event_id)
    assert found["curation"]["state"] == "accepted"
    assert [d["dataset_version"] for d in found["datasets"]] == [champion.dataset_version]
    assert [m["version"] for m in found["models"]] == [champion.version]
    assert found["models"][0]["aliases"] == [CHAMPION]
    day = found["log"]["date"]

    described = lineage_json(history, monkeypatch, capsys, "--version", champion.version)
    assert described["version"] == champion.version
    assert described["aliases"] == [CHAMPION]
    assert described["dataset_version"] == champion.dataset_version
    dataset = described["dataset"]
    assert dataset["version"] == champion.dataset_version and dataset["exists"]
    rows = len(dataset_ids(history, champion))
    assert dataset["rows"] == described["counts"]["rows"] == rows
    partitions = {p["date"]: p for p in described["partitions"]}
    assert day in partitions
    assert partitions[day]["first_log_offset"] <= found["log"]["log_offset"]
    assert found["log"]["log_offset"] <= partitions[day]["last_log_offset"]
    assert sum(p["rows"] for p in described["partitions"]) == rows
    assert sum(p["train"] + p["holdout"] for p in described["partitions"]) == rows
    counts = described["counts"]
    assert counts["by_source"] == {"mobile": 1, "simulator": rows - 1}
    for key in ("by_split", "by_window_part", "by_label_source", "by_model_version", "by_arm"):
        assert sum(counts[key].values()) == rows, key
    assert counts["by_split"]["holdout"] == dataset["holdout_rows"]
    assert counts["by_model_version"]["0"] == counts["by_arm"]["champion"] > 0


def test_an_incremental_version_names_the_chain_it_continued_from(
    history: History, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    described = lineage_json(
        history, monkeypatch, capsys, "--version", f"v{history.second.version}"
    )
    assert described["mode"] == "incremental"
    assert described["trigger"] == "volume"
    assert described["init_model_version"] == history.first.version
    assert isinstance(described["new_after_offset"], int)
    assert [(v["version"], v["mode"]) for v in described["init_chain"]] == [
        (history.first.version, "full")
    ]
    assert described["dagster_run_id"]

    first = lineage_json(history, monkeypatch, capsys, "--version", history.first.version)
    assert first["init_model_version"] is None and first["init_chain"] == []
    assert first["aliases"] == [] and first["deployment_status"] == "retired"


def test_the_human_output_is_a_tree_of_version_dataset_and_partitions(
    history: History, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    champion = history.second
    code, out, _ = lineage(history, monkeypatch, capsys, "--version", champion.version)
    assert code == 0
    assert f"v{champion.version} [@champion]" in out
    assert f"continues    v{history.first.version}" in out
    assert str(champion.dataset_version) in out
    assert "source       mobile 1, simulator" in out
    event_id = history.feedback_ids[PRE + 300]
    code, out, _ = lineage(history, monkeypatch, capsys, "--event", event_id)
    assert code == 0
    assert f"event {event_id} (feedback)" in out
    assert "curation     accepted" in out
    assert f"{champion.dataset_version}  train   -> v{champion.version} [@champion]" in out


def test_a_quarantined_event_is_reported_with_its_reason_and_in_no_dataset(
    history: History, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repeat = lineage_json(history, monkeypatch, capsys, "--event", REPEAT)
    assert repeat["log"]["source"] == "mobile"
    assert repeat["log"]["prediction_id"] == "pred-lineage"
    assert repeat["curation"]["state"] == "quarantined"
    assert repeat["curation"]["reason"] == "duplicate"
    assert ORIGINAL in repeat["curation"]["reason_detail"]
    assert repeat["datasets"] == [] and repeat["models"] == []

    original = lineage_json(history, monkeypatch, capsys, "--event", ORIGINAL)
    assert original["curation"]["state"] == "accepted"
    assert {d["dataset_version"] for d in original["datasets"]} == {
        history.first.dataset_version,
        history.second.dataset_version,
    }

    code, out, _ = lineage(history, monkeypatch, capsys, "--event", REPEAT)
    assert code == 0
    assert "quarantined" in out and "duplicate" in out and "datasets     none" in out


def test_an_event_lists_exactly_the_versions_trained_on_a_dataset_holding_it(
    history: History, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = history.first, history.second
    in_first, in_second = dataset_ids(history, first), dataset_ids(history, second)
    both = history.feedback_ids[1500]
    newer_only = history.feedback_ids[PRE + 500]
    older_only = history.feedback_ids[10]
    assert both in in_first and both in in_second
    assert newer_only in in_second and newer_only not in in_first
    assert older_only in in_first and older_only not in in_second, "slid out of the window"
    expected = {both: [first, second], newer_only: [second], older_only: [first]}
    for event_id, versions in expected.items():
        found = lineage_json(history, monkeypatch, capsys, "--event", event_id)
        assert [d["dataset_version"] for d in found["datasets"]] == sorted(
            str(v.dataset_version) for v in versions
        ), event_id
        assert [m["version"] for m in found["models"]] == [v.version for v in versions], event_id
        for entry in found["datasets"]:
            assert entry["event_id"] == event_id
            assert entry["split"] in ("train", "holdout")
    statuses = {
        m["version"]: m["deployment_status"]
        for m in lineage_json(history, monkeypatch, capsys, "--event", both)["models"]
    }
    assert statuses == {first.version: "retired", second.version: "champion"}


def test_a_prediction_event_shows_the_feedback_attributed_to_it(
    history: History, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prediction = history.prediction_ids[30]
    feedback = prediction.replace("pe-", "fb-")
    found = lineage_json(history, monkeypatch, capsys, "--event", prediction)
    assert found["kind"] == "prediction"
    assert found["curation"] is None
    assert found["log"]["prediction_id"] == "pred-9-00000030"
    assert found["log"]["model_version"] == "0"
    assert [(f["event_id"], f["status"]) for f in found["attributed_feedback"]] == [
        (feedback, "accepted")
    ]
    holding = {
        str(v.dataset_version)
        for v in (history.first, history.second)
        if feedback in dataset_ids(history, v)
    }
    assert holding
    assert {d["dataset_version"] for d in found["datasets"]} == holding
    assert all(d["event_id"] == feedback for d in found["datasets"])


def test_an_unknown_version_or_event_exits_1_naming_what_was_not_found(
    history: History, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = lineage(history, monkeypatch, capsys, "--version", "99")
    assert code == 1 and out == ""
    assert "model version 99 not found in registry 'ct_model'" in err
    code, out, err = lineage(history, monkeypatch, capsys, "--event", "no-such-event", "--json")
    assert code == 1 and out == ""
    assert "event 'no-such-event' not found in the event log" in err


def test_on_an_empty_home_nothing_is_found_and_nothing_is_created(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    assert main(["lineage", "--version", "1"]) == 1
    assert "model version 1 not found in registry 'ct_model'" in capsys.readouterr().err
    assert main(["lineage", "--event", "fb-1"]) == 1
    assert "event 'fb-1' not found in the event log" in capsys.readouterr().err
    assert not settings.home.exists()


@pytest.mark.parametrize(
    "args",
    [[], ["--version", "1", "--event", "x"], ["--version", "three"], ["--version", "0"]],
)
def test_usage_errors_exit_2(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    with pytest.raises(SystemExit) as exited:
        main(["lineage", *args])
    assert exited.value.code == 2


def test_the_human_output_names_what_an_analyst_looks_for(
    history: History, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    champion = history.second
    code, out, _ = lineage(history, monkeypatch, capsys, "--version", champion.version)
    assert code == 0
    assert f"v{champion.version} [@champion]" in out
    assert f"continues    v{history.first.version}" in out
    assert f"dataset      {champion.dataset_version}" in out
    counts = lineage_json(history, monkeypatch, capsys, "--version", champion.version)["counts"]
    sources = ", ".join(f"{s} {n}" for s, n in counts["by_source"].items())
    assert f"source       {sources}" in out
    served = counts["by_model_version"]
    assert "None" in served, "simulated feedback carries its own features: served by no model"
    assert f"(none) {served['None']}" in out and " None " not in out

    event_id = history.feedback_ids[PRE + 300]
    code, out, _ = lineage(history, monkeypatch, capsys, "--event", event_id)
    assert code == 0 and event_id in out and "accepted" in out
    assert f"v{champion.version}" in out
    code, out, _ = lineage(history, monkeypatch, capsys, "--event", REPEAT)
    assert code == 0 and "quarantined" in out and "duplicate" in out
