"""``ct-assets gc``: retention on a real registry filled by the real retrain job; a dry run
deletes nothing, lineage of a deleted version answers from its tombstone, and a gc killed
midway (SIGKILL) and run again leaves a consistent store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.cli import main
from ct_assets.defs import build_definitions
from ct_assets.registry import (
    TAG_INIT_VERSION,
    TAG_PREVIOUS_CHAMPION,
    Deployment,
    Registry,
)
from ct_assets.retention import KILL_AFTER_ENV, kept_versions, plan_path, tombstones_path
from ct_assets.settings import PROJECT_ROOT, Settings

from .conftest import ingest, simulated_events


def gc_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["gc", "--json", *args]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def ids(items: list[dict[str, Any]], what: str) -> set[str]:
    return {i["id"] for i in items if i["what"] == what}


def test_kept_versions_follow_aliases_deployment_newest_and_chains() -> None:
    from ct_assets.registry import VersionInfo

    def v(n: int, **tags: str) -> VersionInfo:
        return VersionInfo(str(n), f"r{n}", f"d{n}", "", dict(tags))

    versions = {
        "1": v(1),
        "2": v(2, **{TAG_INIT_VERSION: "1"}),
        "3": v(3, **{TAG_INIT_VERSION: "2"}),
        "4": v(4),
        "5": v(5),
        "6": v(6),
    }
    keep = kept_versions(versions, {"champion": "3", "challenger": "5"}, Deployment("canary"), 1)
    assert set(keep) == {"1", "2", "3", "5", "6"}
    assert keep["5"] == ["alias challenger", "deployed (canary)"]
    assert keep["1"] == ["continued from by kept v2"]
    # with no deployment the challenger is still kept for its alias
    assert set(kept_versions(versions, {}, Deployment(), 2)) == {"5", "6"}


def test_gc_keeps_what_is_needed_and_finishes_after_a_kill(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = replace(settings, num_boost_round=20, report_plots=False, training_window=2000)
    monkeypatch.setenv("CT_HOME", str(s.home))
    monkeypatch.setenv("CT_KEEP_VERSIONS", "1")
    events = simulated_events(5000, drift_at=1.0)
    job = build_definitions(s).resolve_job_def(keys.RETRAIN_JOB)
    registry = Registry.from_settings(s)
    with dg.instance_for_test() as instance:
        for n, mode in enumerate(["full", "incremental", "full", "full", "full"]):
            ingest(s, events[n * 1000 : (n + 1) * 1000])
            tags = {keys.RUN_TAG_TRIGGER: "manual", keys.RUN_TAG_MODE: mode}
            job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    versions = registry.versions()
    assert sorted(versions, key=int) == ["1", "2", "3", "4", "5"]
    assert versions["2"].tags.get(TAG_INIT_VERSION) == "1"
    # champion v2 (continued from v1), challenger v4 in a canary, newest v5: v3 goes
    registry.promote("2", "test")
    registry.set_version_tag("2", TAG_PREVIOUS_CHAMPION, "1")
    registry.set_challenger("4", "canary", "test")
    registry.set_deployment(Deployment("canary", 0.2), by="test", reason="test")
    for version in ("2", "3"):
        (s.drift_dir / version).mkdir(parents=True)
        (s.drift_dir / version / "meta.json").write_text("{}")
    datasets = {v: i.dataset_version for v, i in registry.versions().items()}
    assert len(set(datasets.values())) == 5
    doomed = s.datasets_dir / f"{datasets['3']}.parquet"
    run3 = versions["3"].run_id
    handoffs = {p: json.loads(p.read_text()) for p in sorted(s.handoffs_dir.glob("*/runs/*.json"))}
    of_v3 = {
        p
        for p, r in handoffs.items()
        if r.get("model_version") == "3"
        or datasets["3"] in (r.get("version"), r.get("dataset_version"))
    }
    assert len(of_v3) == 3, "the dataset, candidate and gate hand-offs of v3's run"
    latest = sorted(s.handoffs_dir.glob("*.json"))
    assert len(latest) == 3
    # a training killed two days ago and never resumed, and one killed a minute ago
    stale, fresh = s.checkpoints_dir / "stale-job", s.checkpoints_dir / "fresh-job"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "model-0000010.txt").write_text("tree")
        (folder / "state.json").write_text("{}")
    two_days_ago = time.time() - 48 * 3600
    for path in (stale / "model-0000010.txt", stale / "state.json", stale):
        os.utime(path, (two_days_ago, two_days_ago))

    def consistent() -> None:
        now = registry.versions()
        assert {"1", "2", "4", "5"} <= set(now)
        for version in ("1", "2", "4", "5"):
            assert (s.datasets_dir / f"{datasets[version]}.parquet").exists(), version
            assert (s.datasets_dir / f"{datasets[version]}.json").exists(), version
        assert (s.drift_dir / "2").exists()
        assert all(p.exists() for p in latest), "each asset's latest hand-off stays"
        for path, record in handoffs.items():
            if path not in of_v3:
                assert path.exists(), (path, record)
        assert fresh.exists()

    dry = gc_json(capsys, "--dry-run")
    assert dry["dry_run"] is True
    assert ids(dry["deleted"], "model_version") == {"3"}
    assert ids(dry["kept"], "model_version") == {"1", "2", "4", "5"}
    assert ids(dry["deleted"], "dataset") == {datasets["3"]}
    assert ids(dry["deleted"], "drift_reference") == {"3"}
    assert ids(dry["deleted"], "report") == {"3"}
    assert {Path(p) for i in dry["deleted"] if i["what"] == "handoff" for p in i["paths"]} == of_v3
    assert ids(dry["deleted"], "checkpoint") == {"stale-job"}
    assert ids(dry["kept"], "checkpoint") == {"fresh-job"}
    reasons = {i["id"]: i["why"] for i in dry["kept"] if i["what"] == "model_version"}
    assert "alias champion" in reasons["2"] and "deployed (canary)" in reasons["4"]
    assert "continued from by kept v2" in reasons["1"]
    assert "3" in registry.versions() and doomed.exists() and (s.drift_dir / "3").exists()
    assert not tombstones_path(s).exists()

    # killed after its first deletion (the version), then run again
    env = {**os.environ, KILL_AFTER_ENV: "1", "PYTHONPATH": str(PROJECT_ROOT)}
    killed = subprocess.run(
        [sys.executable, "-m", "ct_assets.cli", "gc"], env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert plan_path(s).exists()
    assert "3" not in registry.versions() and doomed.exists()
    consistent()
    # killed again, in the middle of the files (after the run and one hand-off)
    env[KILL_AFTER_ENV] = "2"
    killed = subprocess.run(
        [sys.executable, "-m", "ct_assets.cli", "gc"], env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert doomed.exists() and sum(p.exists() for p in of_v3) == 2 and stale.exists()
    consistent()
    again = gc_json(capsys)
    assert again["dry_run"] is False
    assert ids(again["deleted"], "model_version") == set()
    assert ids(again["deleted"], "dataset") == {datasets["3"]}
    assert ids(again["deleted"], "mlflow_run") == set(), "deleted by the second gc"
    assert len(ids(again["deleted"], "handoff")) == 2
    assert not any(p.exists() for p in of_v3) and not stale.exists()
    assert not doomed.exists() and not (s.drift_dir / "3").exists()
    assert not list(s.reports_dir.glob("validation-v3*"))
    assert registry.client.get_run(run3).info.lifecycle_stage == "deleted"
    assert not plan_path(s).exists()
    consistent()
    assert gc_json(capsys)["deleted"] == []
    assert any(r.action == "gc" and r.version == "3" for r in registry.audit_trail())

    # lineage of the deleted version answers from its tombstone
    capsys.readouterr()
    assert main(["lineage", "--version", "3", "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    assert lineage["deleted"]["when"] and "not among the newest 1" in lineage["deleted"]["why"]
    assert lineage["dataset_version"] == datasets["3"]
    assert main(["lineage", "--version", "3"]) == 0
    assert "deleted by gc" in capsys.readouterr().out
    records = [json.loads(line) for line in tombstones_path(s).read_text().splitlines()]
    assert {(r["what"], r["id"]) for r in records} >= {
        ("model_version", "3"),
        ("dataset", datasets["3"]),
    }
    assert Path(s.datasets_dir / f"{datasets['2']}.parquet").exists()
    assert main(["lineage", "--version", "2", "--json"]) == 0
    kept_lineage = json.loads(capsys.readouterr().out)
    assert kept_lineage["dataset_version"] == datasets["2"] and not kept_lineage.get("deleted")


def test_gc_job_runs_gc_and_its_schedule_starts_stopped(settings: Settings) -> None:
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def(keys.GC_SCHEDULE)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == settings.gc_cron and schedule.job_name == keys.GC_JOB
    stale = settings.checkpoints_dir / "stale-job"
    stale.mkdir(parents=True)
    (stale / "state.json").write_text("{}")
    old = time.time() - (settings.gc_checkpoint_age_hours + 1) * 3600
    for path in (stale / "state.json", stale):
        os.utime(path, (old, old))
    job = defs.resolve_job_def(keys.GC_JOB)
    with dg.instance_for_test() as instance:
        dry = job.execute_in_process(
            instance=instance,
            run_config={"ops": {"collect_garbage": {"config": {"dry_run": True}}}},
        )
        assert dry.success and dry.output_for_node("collect_garbage") == 1
        assert stale.exists()
        real = job.execute_in_process(instance=instance)
        assert real.success and real.output_for_node("collect_garbage") == 1
    assert not stale.exists()
    record = json.loads(tombstones_path(settings).read_text().splitlines()[-1])
    assert (record["what"], record["id"]) == ("checkpoint", "stale-job")


def test_stored_reports_and_drift_references_are_grouped_by_version(tmp_path: Path) -> None:
    """One listing of the store gives each version its report, plots and drift reference,
    and nothing of another version (v1 is not a prefix match of v12)."""
    from ct_assets.retention.stored import stored_drift_references, stored_reports
    from ct_assets.storage import LocalStore, write_bytes

    store = LocalStore(tmp_path / "store")
    for key in (
        "reports/validation-v1.json",
        "reports/validation-v1-roc.png",
        "reports/validation-v12.json",
        "reports/notes.txt",
        "drift/1/reference.json",
        "drift/12/reference.npz",
    ):
        write_bytes(store, key, b"{}")
    uri = store.uri
    assert stored_reports(store, set()) == {
        "1": [f"{uri}/reports/validation-v1-roc.png", f"{uri}/reports/validation-v1.json"],
        "12": [f"{uri}/reports/validation-v12.json"],
    }
    assert stored_drift_references(store, set()) == {
        "1": [f"{uri}/drift/1/reference.json"],
        "12": [f"{uri}/drift/12/reference.npz"],
    }
    # objects that are local files gc already lists are not listed again
    local = {str(tmp_path / "store" / "reports" / "validation-v12.json")}
    assert "12" not in stored_reports(store, local)
    assert stored_reports(None, set()) == {} == stored_drift_references(None, set())
