"""The ct-assets command as a user runs it: simulate, ingest, export, status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ct_assets.eventlog import EventLog
from ct_assets.settings import Settings

CT_ASSETS = str(Path(sys.executable).with_name("ct-assets"))


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env()}
    return subprocess.run([CT_ASSETS, *args], env=env, capture_output=True, text=True, timeout=120)


def test_simulate_ingest_export_roundtrip(settings: Settings, tmp_path: Path) -> None:
    stream = tmp_path / "stream.ndjson"
    out = run(
        settings, "simulate", "--rows", "300", "--seed", "4", "--kind", "both", "--out", str(stream)
    )
    assert out.returncode == 0, out.stderr
    lines = stream.read_text().splitlines()
    assert len(lines) == 600
    ids = [json.loads(line)["event_id"] for line in lines]
    assert len(set(ids)) == len(ids)

    out = run(settings, "ingest", "--quiet", str(stream))
    assert out.returncode == 0, out.stderr
    assert "600 accepted, 0 duplicates" in out.stdout
    again = run(settings, "ingest", "--quiet", str(stream))
    assert "0 accepted, 600 duplicates" in again.stdout
    assert EventLog.from_settings(settings).counts().feedback == 300

    parquet = tmp_path / "fb.parquet"
    out = run(settings, "events", "export", "--kind", "feedback", "--out", str(parquet))
    assert out.returncode == 0, out.stderr
    frame = pl.read_parquet(parquet)
    assert frame.height == 300
    assert frame["event_id"].n_unique() == 300
    assert set(frame["prediction_id"].to_list()) <= {
        json.loads(line)["prediction_id"] for line in lines if '"prediction"' in line
    }


GOOD = (
    '{"kind":"feedback","event_id":"e%d","timestamp":"2026-01-01T00:00:00Z",'
    '"feedback_type":"explicit","label":1,"features":{"x":1.0}}'
)


@pytest.mark.parametrize(
    ("bad_line", "field"),
    [
        ('{"kind":"feedback", "event_id": "e3", oops}', "$"),
        (GOOD.replace('"label":1', '"label":[1]') % 3, "label"),
        (GOOD.replace('"event_id":"e%d",', "").replace("%d", ""), "event_id"),
        (GOOD.replace('"x":1.0', '"x":1.0,"y":{"z":1}') % 3, "features"),
        (GOOD.replace("2026-01-01T00:00:00Z", "yesterday") % 3, "timestamp"),
        (GOOD.replace('"label":1', '"lable":1') % 3, "lable"),
    ],
)
def test_a_malformed_file_writes_nothing_and_names_line_and_field(
    settings: Settings, tmp_path: Path, bad_line: str, field: str
) -> None:
    ingest_file = tmp_path / "bad.ndjson"
    ingest_file.write_text("\n".join([GOOD % 1, GOOD % 2, bad_line, GOOD % 4]) + "\n")
    out = run(settings, "ingest", "--quiet", str(ingest_file))
    assert out.returncode == 2
    assert "nothing was ingested" in out.stderr
    assert "line 3:" in out.stderr
    assert f"field '{field}" in out.stderr
    assert EventLog.from_settings(settings).counts().feedback == 0


def test_ingest_csv_with_flat_feature_columns(settings: Settings, tmp_path: Path) -> None:
    csv = tmp_path / "fb.csv"
    csv.write_text(
        "kind,event_id,timestamp,feedback_type,label,features.x,features.c\n"
        "feedback,a,2026-01-01T00:00:00Z,explicit,1,0.5,web\n"
        "feedback,b,2026-01-01T00:01:00Z,explicit,0,1.5,app\n"
    )
    out = run(settings, "ingest", "--quiet", str(csv))
    assert out.returncode == 0, out.stderr
    frame = EventLog.from_settings(settings).read("feedback")
    assert frame["features"].struct.field("c").to_list() == ["web", "app"]


def test_ingest_of_a_missing_or_unknown_file_fails_clearly(
    settings: Settings, tmp_path: Path
) -> None:
    assert "no such file" in run(settings, "ingest", str(tmp_path / "nope.ndjson")).stderr
    weird = tmp_path / "events.xml"
    weird.write_text("<x/>")
    out = run(settings, "ingest", str(weird))
    assert out.returncode == 2 and "unknown format" in out.stderr


def test_status_json_on_an_empty_home(settings: Settings) -> None:
    out = run(settings, "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    for key in (
        "model_name",
        "tracking_uri",
        "champion",
        "challenger",
        "deployment",
        "last_trigger",
        "last_retrain",
        "drift",
        "performance",
    ):
        assert key in status
    assert status["champion"] is None and status["challenger"] is None
    assert status["model_name"] == settings.model_name
    assert status["feedback_loop_latency"] is None
    assert "loop latency not measured yet" in run(settings, "status").stdout


def test_status_shows_the_champions_feedback_loop_latency(settings: Settings) -> None:
    entry = {
        "version": "3",
        "promoted_at": "2026-01-02T03:04:05+00:00",
        "trigger": "volume",
        "events": 1200,
        "p50_seconds": 7200.0,
        "p95_seconds": 90.0 * 60,
        "max_seconds": 3 * 86400.0,
        "trigger_to_promotion_seconds": 42.0,
    }
    exported = settings.loop_latency_path
    exported.parent.mkdir(parents=True)
    exported.write_text(json.dumps({"versions": [entry], "champion": entry}))
    status = json.loads(run(settings, "status", "--json").stdout)
    assert status["feedback_loop_latency"] == entry
    text = run(settings, "status").stdout
    assert "loop latency v3: event to promotion p50 2.0h, p95 1.5h, max 3.0d" in text
    assert "trigger to promotion 42s" in text
    exported.write_text("{not json")
    broken = json.loads(run(settings, "status", "--json").stdout)["feedback_loop_latency"]
    assert "feedback_loop_latency.json is unreadable" in broken["error"]
    assert "loop latency " + broken["error"] in run(settings, "status").stdout


def test_bad_settings_are_named(settings: Settings) -> None:
    env = {**os.environ, **settings.as_env(), "CT_VOLUME_THRESHOLD": "many"}
    out = subprocess.run([CT_ASSETS, "status"], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "CT_VOLUME_THRESHOLD" in out.stderr
