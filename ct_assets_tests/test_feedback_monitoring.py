"""Monitoring of the feedback loop: aggregates, latency and bias, first as plain functions on
hand-built tables whose every figure is computed here by hand, then as Dagster assets on a
real instance, with a real MLflow registry and a real promotion."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from ct_assets import keys
from ct_assets.data.attribution import LABEL_COLUMN, LabelPolicy, labeled_feedback
from ct_assets.data.tables import TableStore
from ct_assets.defs import build_definitions
from ct_assets.defs.bias_checks import retrain_assets
from ct_assets.defs.jobs import RETRAIN_ASSETS
from ct_assets.defs.observability import (
    build_feedback_aggregates,
    build_feedback_bias_report,
    build_feedback_loop_latency,
    build_monitoring_assets,
)
from ct_assets.defs.resources import resources_from_settings
from ct_assets.eventlog import EventLog
from ct_assets.monitoring.feedback import (
    AGGREGATE_SCHEMA,
    BiasReport,
    BiasThresholds,
    Concentration,
    LabelShift,
    bias_summary_markdown,
    choose_segments,
    daily_plot_png,
    empty_bias_report,
    feedback_aggregates,
    feedback_bias,
    judge_bias,
    latest_day_totals,
    policy_flags_sql,
)
from ct_assets.monitoring.latency import (
    VersionLatency,
    event_latency,
    first_promotions,
    latency_document,
    prometheus_text,
    write_latency_exports,
)
from ct_assets.registry import (
    CHAMPION,
    TAG_DAGSTER_RUN_ID,
    AuditRecord,
    Registry,
)
from ct_assets.schema import convert_record, validate_events
from ct_assets.settings import Settings
from ct_assets.simulate import SimulationSpec, simulate_events

D1, D2 = "2026-03-01", "2026-03-02"
UTC_DATETIME = pl.Datetime("us", "UTC")


def _at(day: str, seconds: int = 0) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC) + timedelta(
        seconds=seconds
    )


def _predictions(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Logged predictions shaped like ``tables/raw_predictions``."""
    return pl.DataFrame(
        {
            "log_offset": [r.get("offset", i) for i, r in enumerate(rows)],
            "event_id": [f"pe-{r['id']}-{i}" for i, r in enumerate(rows)],
            "timestamp": [r["at"] for r in rows],
            "prediction_id": [r["id"] for r in rows],
            "model_version": ["1"] * len(rows),
            "arm": ["champion"] * len(rows),
            "prediction": [r.get("prediction", "1") for r in rows],
            "features": [r["features"] for r in rows],
            "scores": [{"0": 1 - r.get("score", 0.5), "1": r.get("score", 0.5)} for r in rows],
        },
        schema_overrides={"timestamp": UTC_DATETIME},
    )


def _feedback(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Validated feedback shaped like ``tables/validated_feedback``."""
    own = [r.get("features") for r in rows]
    frame = pl.DataFrame(
        {
            "log_offset": list(range(len(rows))),
            "event_id": [r["event_id"] for r in rows],
            "timestamp": [r["at"] for r in rows],
            "feedback_type": [r["type"] for r in rows],
            "prediction_id": [r.get("prediction_id") for r in rows],
            "user_id": [r.get("user_id") for r in rows],
            "source": [r.get("source") for r in rows],
            "signal": [r.get("signal") for r in rows],
            "value": [r.get("value") for r in rows],
            "label": [r.get("label") for r in rows],
            "status": [r["status"] for r in rows],
        },
        schema_overrides={
            "timestamp": UTC_DATETIME,
            "prediction_id": pl.String,
            "user_id": pl.String,
            "source": pl.String,
            "signal": pl.String,
            "value": pl.Float64,
            "label": pl.String,
        },
    )
    if any(f is not None for f in own):
        frame = frame.with_columns(pl.Series("features", own))
    return frame


def _examples(rows: list[dict[str, Any]], day: str) -> pl.DataFrame:
    """Attributed examples shaped like ``tables/attributed_examples``."""
    return pl.DataFrame(
        {
            "event_id": [f"ex-{i}" for i in range(len(rows))],
            "log_offset": list(range(len(rows))),
            "timestamp": [_at(day, i) for i in range(len(rows))],
            "prediction_id": [r.get("prediction_id") for r in rows],
            "label": [r["label"] for r in rows],
            "label_source": [r.get("label_source", "explicit") for r in rows],
            "user_id": [r.get("user_id") for r in rows],
            "features": [r.get("features", {"channel": "web"}) for r in rows],
        },
        schema_overrides={"timestamp": UTC_DATETIME, "prediction_id": pl.String},
    )


# --- feedback aggregates ------------------------------------------------------------------


D1_CHANNELS = ("app", "web", "web", "app", "app")


def _hand_built_day_tables(store: TableStore) -> None:
    """Two days. D1: predictions p0 (app), p1 (web), p2 (web), p3 (app), p4 (app); D2: p5
    (web), p6 (app). Feedback D1: f1 explicit 1 on p1 (accepted), f2 explicit 0 on p2
    (quarantined), f3 click on p1 (accepted), f4 dwell 10 s on p3 (pending), f5 dwell 45 s
    with its own features, channel store (accepted). D2: f6 explicit 1 on p4, a D1
    prediction (accepted), f7 skip on p5 (expired), f8 explicit 1 on p5 (accepted)."""

    def p(pid: str, day: str, channel: str) -> dict[str, Any]:
        return {"id": pid, "at": _at(day, 60), "features": {"channel": channel, "x0": 0.5}}

    store.write(
        keys.RAW_PREDICTIONS,
        D1,
        _predictions([p(f"p{i}", D1, channel) for i, channel in enumerate(D1_CHANNELS)]),
    )
    store.write(keys.RAW_PREDICTIONS, D2, _predictions([p("p5", D2, "web"), p("p6", D2, "app")]))
    at1, at2 = _at(D1, 600), _at(D2, 600)
    store.write(
        keys.VALIDATED_FEEDBACK,
        D1,
        _feedback(
            [
                {"event_id": "f1", "at": at1, "type": "explicit", "prediction_id": "p1"}
                | {"label": "1", "source": "s-a", "user_id": "u1", "status": "accepted"},
                {"event_id": "f2", "at": at1, "type": "explicit", "prediction_id": "p2"}
                | {"label": "0", "source": "s-a", "user_id": "u2", "status": "quarantined"},
                {"event_id": "f3", "at": at1, "type": "implicit", "prediction_id": "p1"}
                | {"signal": "click", "source": "s-b", "status": "accepted"},
                {"event_id": "f4", "at": at1, "type": "implicit", "prediction_id": "p3"}
                | {"signal": "dwell", "value": 10.0, "source": "s-b", "status": "pending"},
                {"event_id": "f5", "at": at1, "type": "implicit", "signal": "dwell"}
                | {"value": 45.0, "status": "accepted"}
                | {"features": {"channel": "store", "x0": 0.1}},
            ]
        ),
    )
    store.write(
        keys.VALIDATED_FEEDBACK,
        D2,
        _feedback(
            [
                {"event_id": "f6", "at": at2, "type": "explicit", "prediction_id": "p4"}
                | {"label": "1", "source": "s-a", "status": "accepted"},
                {"event_id": "f7", "at": at2, "type": "implicit", "prediction_id": "p5"}
                | {"signal": "skip", "source": "s-b", "status": "expired"},
                {"event_id": "f8", "at": at2, "type": "explicit", "prediction_id": "p5"}
                | {"label": "1", "source": "s-a", "status": "accepted"},
            ]
        ),
    )


def _row(table: pl.DataFrame, day: str, dimension: str, value: str) -> dict[str, Any]:
    rows = table.filter(
        (pl.col("day") == date.fromisoformat(day))
        & (pl.col("dimension") == dimension)
        & (pl.col("value") == value)
    )
    assert rows.height == 1, (day, dimension, value, rows)
    return rows.row(0, named=True)


def test_aggregates_count_rates_and_coverage_per_day_and_dimension(tmp_path: Path) -> None:
    store = TableStore(tmp_path / "tables")
    _hand_built_day_tables(store)
    result = feedback_aggregates(store, LabelPolicy())
    table = result.table
    assert result.reason is None
    assert dict(table.schema) == AGGREGATE_SCHEMA
    assert result.segments.names == ("channel",), "the string feature is the default segment"

    d1 = _row(table, D1, "all", "all")
    assert (d1["events"], d1["accepted"], d1["quarantined"], d1["pending"]) == (5, 3, 1, 1)
    assert d1["acceptance_rate"] == pytest.approx(3 / 5)
    assert d1["quarantine_rate"] == pytest.approx(1 / 5)
    assert (d1["explicit_labels"], d1["positive_labels"]) == (2, 1)
    assert d1["label_rate"] == pytest.approx(0.5)
    # click (positive), dwell 10 s (negative), dwell 45 s (positive)
    assert (d1["implicit_events"], d1["implicit_labeled"], d1["implicit_positive"]) == (3, 3, 2)
    assert d1["reward_rate"] == pytest.approx(2 / 3)
    assert d1["mean_value"] == pytest.approx((10 + 45) / 2)
    # p1, p2, p3 and p4 (answered on D2) of the five D1 predictions: p0 never
    assert (d1["predictions"], d1["predictions_with_feedback"]) == (5, 4)
    assert d1["coverage"] == pytest.approx(4 / 5)

    d2 = _row(table, D2, "all", "all")
    assert (d2["events"], d2["accepted"], d2["expired"]) == (3, 2, 1)
    assert d2["acceptance_rate"] == pytest.approx(2 / 3)
    assert d2["label_rate"] == pytest.approx(1.0)
    assert d2["reward_rate"] == pytest.approx(0.0), "a skip is a negative signal"
    assert d2["mean_value"] is None
    assert d2["coverage"] == pytest.approx(1 / 2)

    explicit = _row(table, D1, "feedback_type", "explicit")
    assert explicit["events"] == 2
    assert explicit["coverage"] == pytest.approx(3 / 5), "p1, p2 and p4 got explicit labels"
    implicit = _row(table, D1, "feedback_type", "implicit")
    assert implicit["events"] == 3
    assert implicit["coverage"] == pytest.approx(2 / 5), "p1 and p3; f5 refers to none"
    dwell = _row(table, D1, "signal", "dwell")
    assert (dwell["events"], dwell["reward_rate"], dwell["mean_value"]) == (2, 0.5, 27.5)
    assert _row(table, D1, "source", "(none)")["events"] == 1
    assert _row(table, D1, "source", "s-b")["quarantine_rate"] == 0.0
    assert _row(table, D1, "label", "0")["label_rate"] == pytest.approx(0.5)

    web = _row(table, D1, "segment:channel", "web")
    assert (web["events"], web["predictions"], web["coverage"]) == (3, 2, 1.0)
    app = _row(table, D1, "segment:channel", "app")
    assert (app["events"], app["predictions"]) == (1, 3)
    assert app["coverage"] == pytest.approx(2 / 3)
    store_segment = _row(table, D1, "segment:channel", "store")
    assert store_segment["events"] == 1, "feedback with its own features keeps its segment"
    assert store_segment["coverage"] is None, "no prediction of that segment"
    late = _row(table, D2, "segment:channel", "app")
    assert (late["events"], late["predictions"], late["coverage"]) == (1, 1, 0.0)

    day, totals = latest_day_totals(table)
    assert day == D2
    assert totals["events"] == 3 and totals["coverage"] == pytest.approx(0.5)
    png = daily_plot_png(table)
    assert png is not None and png.startswith(b"\x89PNG")


def test_aggregates_with_no_tables_are_empty_with_a_reason(tmp_path: Path) -> None:
    result = feedback_aggregates(TableStore(tmp_path / "tables"), LabelPolicy())
    assert result.table.height == 0 and dict(result.table.schema) == AGGREGATE_SCHEMA
    assert result.reason is not None and "no validated_feedback tables" in result.reason
    assert latest_day_totals(result.table) == (None, {})
    assert daily_plot_png(result.table) is None


IMPLICIT_SIGNALS = ["click", "skip", "dwell", "dwell", "dwell", "dwell", "wink", None]
IMPLICIT_VALUES = [None, None, 10.0, 30.0, None, float("nan"), 1.0, None]


def test_policy_sql_labels_every_row_as_the_label_policy_does() -> None:
    policy = LabelPolicy()
    frame = pl.DataFrame(
        {
            "feedback_type": [*["explicit"] * 3, *["implicit"] * 8, "other"],
            "label": ["1", "0", None, *[None] * 8, "1"],
            "signal": [None] * 3 + IMPLICIT_SIGNALS + [None],
            "value": [None] * 3 + IMPLICIT_VALUES + [None],
        },
        schema_overrides={"label": pl.String, "signal": pl.String, "value": pl.Float64},
    ).with_row_index("row")
    flags = ", ".join(f"{sql} AS {name}" for name, sql in policy_flags_sql(policy).items())
    con = duckdb.connect()
    con.register("f", frame.to_arrow())
    by_sql = con.sql(f"SELECT row, {flags} FROM f ORDER BY row").pl()
    labels = labeled_feedback(
        frame.with_columns(
            event_id=pl.col("row").cast(pl.String),
            log_offset=pl.col("row").cast(pl.Int64),
            timestamp=pl.lit(datetime(2026, 1, 1, tzinfo=UTC)),
            prediction_id=pl.lit(None, dtype=pl.String),
        ),
        policy,
    )
    expected = dict(zip(labels["event_id"].cast(pl.Int64), labels[LABEL_COLUMN], strict=True))
    for row in by_sql.iter_rows(named=True):
        label = expected.get(row["row"])
        labeled = row["explicit_label"] or row["implicit_labeled"]
        assert labeled == (label is not None), row
        positive = row["explicit_positive"] or row["implicit_positive"]
        assert positive == (label == policy.positive_label), row


def test_segments_are_the_categorical_features_unless_named() -> None:
    features = {"channel": pl.String(), "x0": pl.Float64(), "tier": pl.Int64()}
    assert choose_segments("", features).names == ("channel",)
    named = choose_segments("tier, x0, nope, channel", features)
    assert named.names == ("tier", "channel")
    assert set(named.skipped) == {"x0", "nope"}
    assert "continuous" in named.skipped["x0"]


# --- latency ------------------------------------------------------------------------------


def _dataset(path: Path, waits: list[float], promoted: datetime, holdout: list[float]) -> Path:
    rows = len(waits) + len(holdout)
    pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(rows)],
            "log_offset": list(range(rows)),
            "timestamp": [promoted - timedelta(seconds=s) for s in [*waits, *holdout]],
            "label": ["1"] * rows,
            "split": ["train"] * len(waits) + ["holdout"] * len(holdout),
        },
        schema_overrides={"timestamp": UTC_DATETIME},
    ).write_parquet(path)
    return path


def test_event_latency_percentiles_over_the_rows_a_version_learned_from(tmp_path: Path) -> None:
    promoted = datetime(2026, 3, 5, 12, tzinfo=UTC)
    dataset = _dataset(tmp_path / "d.parquet", [100, 10, 40, 20, 30], promoted, holdout=[5])
    full = event_latency(dataset, promoted)
    # sorted 10 20 30 40 100: median 30; p95 at rank 0.95 * 4 = 3.8: 40 + 0.8 * 60
    assert full.events == 5, "the holdout only judged the model"
    assert (full.p50_seconds, full.max_seconds, full.min_seconds) == (30.0, 100.0, 10.0)
    assert full.p95_seconds == pytest.approx(88.0)
    incremental = event_latency(dataset, promoted, new_after_offset=2)
    assert incremental.events == 2, "only the rows after the offset are new (20 s, 30 s)"
    assert incremental.p50_seconds == pytest.approx(25.0)
    assert incremental.p95_seconds == pytest.approx(29.5)
    assert incremental.max_seconds == 30.0
    nothing = event_latency(dataset, promoted, new_after_offset=10)
    assert nothing.events == 0 and nothing.p50_seconds is None


def test_latency_exports_hold_every_version_and_the_champion_as_gauges(tmp_path: Path) -> None:
    records = [
        AuditRecord("promote", "1", None, "x", "r", "2026-03-01T00:00:00+00:00"),
        AuditRecord("deploy", "", None, "x", "r", "2026-03-01T01:00:00+00:00"),
        AuditRecord("promote", "2", "1", "x", "r", "2026-03-02T00:00:00+00:00"),
        AuditRecord("rollback", "1", "2", "x", "r", "2026-03-03T00:00:00+00:00"),
        AuditRecord("promote", "2", "1", "x", "r", "2026-03-04T00:00:00+00:00"),
    ]
    assert first_promotions(records) == {
        "1": datetime(2026, 3, 1, tzinfo=UTC),
        "2": datetime(2026, 3, 2, tzinfo=UTC),
    }
    entries = [
        VersionLatency("1", "2026-03-01T00:00:00+00:00", "manual", 5, 30.0, 88.0, 100.0, 12.5),
        VersionLatency("2", "2026-03-02T00:00:00+00:00", "volume", 2, 25.0, 29.5, 30.0, None),
    ]
    document = latency_document(entries, champion="1")
    assert [v["version"] for v in document["versions"]] == ["1", "2"]
    assert document["champion"] == entries[0].as_dict()
    json_path, prom_path = tmp_path / "m" / "latency.json", tmp_path / "metrics" / "l.prom"
    write_latency_exports(document, json_path, prom_path)
    assert json.loads(json_path.read_text()) == document
    samples = _prometheus_samples(prom_path.read_text())
    assert samples == {
        'ct_feedback_loop_latency_seconds{version="1",quantile="0.5"}': 30.0,
        'ct_feedback_loop_latency_seconds{version="1",quantile="0.95"}': 88.0,
        'ct_feedback_loop_latency_seconds{version="1",quantile="1"}': 100.0,
        'ct_trigger_to_promotion_seconds{version="1"}': 12.5,
    }
    for metric in ("ct_feedback_loop_latency_seconds", "ct_trigger_to_promotion_seconds"):
        assert f"# TYPE {metric} gauge" in prom_path.read_text()
    without = prometheus_text(latency_document(entries, champion=None))
    assert _prometheus_samples(without) == {} and "# HELP" in without


def _prometheus_samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


# --- bias ---------------------------------------------------------------------------------


def _scored_predictions(store: TableStore, n: int = 1000, day: str = D1) -> list[str]:
    """``n`` predictions with distinct scores (i + 0.5) / n, predicted 1 from 0.5 up; their
    ids are not in the order of their scores."""
    rows: list[dict[str, Any]] = [
        {
            "id": f"s{(i * 7919) % n:04d}-{i}",
            "at": _at(day, i),
            "score": (i + 0.5) / n,
            "prediction": "1" if (i + 0.5) / n >= 0.5 else "0",
            "features": {"channel": "web"},
        }
        for i in range(n)
    ]
    store.write(keys.RAW_PREDICTIONS, day, _predictions(rows))
    return [str(r["id"]) for r in rows]


def test_feedback_only_on_high_scores_is_selection_bias(tmp_path: Path) -> None:
    thresholds = BiasThresholds()
    biased, fair = TableStore(tmp_path / "biased"), TableStore(tmp_path / "fair")
    answered_when: list[tuple[TableStore, Callable[[int], bool]]] = [
        (biased, lambda i: i >= 500),  # feedback only on predicted positives
        (fair, lambda i: i % 2 == 0),  # every other prediction, whatever its score
    ]
    for store, answered in answered_when:
        ids = _scored_predictions(store)
        examples = [{"prediction_id": ids[i], "label": "1"} for i in range(1000) if answered(i)]
        store.write(keys.ATTRIBUTED_EXAMPLES, D1, _examples(examples, D1))

    report = feedback_bias(biased, LabelPolicy(), None)
    selection = report.selection
    assert selection.score == "score of class '1'"
    assert [r.predictions for r in selection.by_decile] == [100] * 10
    assert [r.rate for r in selection.by_decile] == [0.0] * 5 + [1.0] * 5
    assert selection.by_decile[0].min_score == pytest.approx(0.0005)
    assert selection.ratio == math.inf
    assert {r.group: r.rate for r in selection.by_class} == {"0": 0.0, "1": 1.0}
    verdict = {v.check: v for v in judge_bias(report, thresholds)}["selection_bias"]
    assert verdict.evaluated and not verdict.passed
    assert "selection_bias" in bias_summary_markdown(report, judge_bias(report, thresholds))

    fair_report = feedback_bias(fair, LabelPolicy(), None)
    assert [r.rate for r in fair_report.selection.by_decile] == [0.5] * 10
    assert fair_report.selection.ratio == pytest.approx(1.0)
    fair_verdict = {v.check: v for v in judge_bias(fair_report, thresholds)}["selection_bias"]
    assert fair_verdict.evaluated and fair_verdict.passed


def test_one_user_giving_most_labels_is_concentration(tmp_path: Path) -> None:
    thresholds = BiasThresholds()
    crowd, spread, many = (TableStore(tmp_path / n) for n in ("crowd", "spread", "many"))
    _scored_predictions(crowd, 20)
    one_user = [{"label": "1", "user_id": "loud"}] * 60
    others = [{"label": "0", "user_id": f"u{i}"} for i in range(40)]
    crowd.write(keys.ATTRIBUTED_EXAMPLES, D1, _examples(one_user + others, D1))
    report = feedback_bias(crowd, LabelPolicy(), None)
    users = report.concentration
    # 41 users: the top 1% is ceil(0.41) = 1 user, with 60 of the 100 labels
    assert (users.labels, users.users, users.top_users) == (100, 41, 1)
    assert users.top_share == pytest.approx(0.6)
    assert users.hhi == pytest.approx(0.6**2 + 40 * 0.01**2)
    verdicts = {v.check: v for v in judge_bias(report, thresholds)}
    assert not verdicts["concentration"].passed
    assert not verdicts["selection_bias"].evaluated, "20 predictions are too few for deciles"
    assert verdicts["selection_bias"].passed

    _scored_predictions(spread, 20)
    labels = [{"label": "1", "user_id": f"u{i}"} for i in range(100)]
    unknown = [{"label": "1", "user_id": None}] * 7
    spread.write(keys.ATTRIBUTED_EXAMPLES, D1, _examples(labels + unknown, D1))
    even = feedback_bias(spread, LabelPolicy(), None).concentration
    assert (even.labels, even.users, even.labels_without_user) == (100, 100, 7)
    assert even.top_share == pytest.approx(0.01) and even.hhi == pytest.approx(0.01)
    assert {v.check: v for v in judge_bias(_only_concentration(even), thresholds)}[
        "concentration"
    ].passed

    _scored_predictions(many, 20)
    ranked = [
        {"label": "1", "user_id": f"u{i:03d}"} for i in range(150) for _ in range(1 + (i < 3))
    ]
    many.write(keys.ATTRIBUTED_EXAMPLES, D1, _examples(ranked, D1))
    top = feedback_bias(many, LabelPolicy(), None).concentration
    # 150 users: ceil(1.5) = 2 top users, each with 2 of the 153 labels
    assert (top.users, top.top_users) == (150, 2)
    assert top.top_share == pytest.approx(4 / 153)


def _only_concentration(concentration: Concentration) -> BiasReport:
    return replace(empty_bias_report("only concentration"), concentration=concentration)


def _reference_dataset(path: Path) -> Path:
    """Train split: web 100 labels, app 100, store 20, each half positive. Holdout: 100
    positive web labels that must not count."""
    channel = ["web"] * 100 + ["app"] * 100 + ["store"] * 20 + ["web"] * 100
    label = ["1", "0"] * 110 + ["1"] * 100
    pl.DataFrame(
        {
            "event_id": [f"r{i}" for i in range(320)],
            "log_offset": list(range(320)),
            "timestamp": [_at(D1, i) for i in range(320)],
            "label": label,
            "split": ["train"] * 220 + ["holdout"] * 100,
            "channel": channel,
        },
        schema_overrides={"timestamp": UTC_DATETIME},
    ).write_parquet(path)
    return path


def test_a_segment_whose_label_rate_moved_is_label_shift(tmp_path: Path) -> None:
    reference = _reference_dataset(tmp_path / "reference.parquet")
    thresholds = BiasThresholds()
    moved, steady = TableStore(tmp_path / "moved"), TableStore(tmp_path / "steady")
    for store, web_positives in ((moved, 36), (steady, 20)):
        _scored_predictions(store, 20)
        web = [
            {"label": "1" if i < web_positives else "0", "features": {"channel": "web"}}
            for i in range(40)
        ]
        app = [{"label": "1" if i < 20 else "0", "features": {"channel": "app"}} for i in range(40)]
        rare = [{"label": "1", "features": {"channel": "store"}}] * 5
        store.write(keys.ATTRIBUTED_EXAMPLES, D1, _examples(web + app + rare, D1))

    shift = feedback_bias(moved, LabelPolicy(), reference).label_shift
    rows = {(r.segment, r.value): r for r in shift.rows}
    assert rows[("segment:channel", "web")].shift == pytest.approx(0.9 - 0.5)
    assert rows[("segment:channel", "web")].current_positive_rate == pytest.approx(0.9)
    assert rows[("segment:channel", "web")].reference_labels == 100, "the holdout is left out"
    assert rows[("segment:channel", "app")].shift == pytest.approx(0.0)
    few = rows[("segment:channel", "store")]
    assert few.shift == pytest.approx(0.5), "all 5 positive against half of 20"
    assert not few.judged, "5 labels are too few to judge"
    # all: 36 + 20 + 5 positives of 85 against 110 of 220
    assert rows[("all", "all")].shift == pytest.approx(61 / 85 - 0.5)
    assert shift.max_shift == pytest.approx(0.4) and shift.worst == "segment:channel=web"
    assert not {v.check: v for v in judge_bias(_only_shift(shift), thresholds)}[
        "label_shift"
    ].passed

    steady_shift = feedback_bias(steady, LabelPolicy(), reference).label_shift
    # web and app unchanged; all: 45 of 85 against 0.5
    assert steady_shift.max_shift == pytest.approx(45 / 85 - 0.5)
    assert {v.check: v for v in judge_bias(_only_shift(steady_shift), thresholds)}[
        "label_shift"
    ].passed

    no_champion = feedback_bias(steady, LabelPolicy(), None).label_shift
    assert no_champion.max_shift is None and "no champion" in (no_champion.reason or "")


def _only_shift(shift: LabelShift) -> BiasReport:
    return replace(empty_bias_report("only label shift"), label_shift=shift)


def test_position_effects_when_the_payload_has_a_position(tmp_path: Path) -> None:
    store = TableStore(tmp_path / "tables")
    rows = [
        {"id": f"q{i}", "at": _at(D1, i), "features": {"position": 2 + 8 * (i % 2)}}
        for i in range(8)
    ]
    store.write(keys.RAW_PREDICTIONS, D1, _predictions(rows))
    # position 2: q0 q2 q4 q6, all answered; position 10: q1 only, skipped
    examples = [
        {"prediction_id": f"q{i}", "label": label, "label_source": source}
        | {"features": {"position": 2 + 8 * (i % 2)}}
        for i, label, source in [
            (0, "1", "implicit:click"),
            (2, "1", "implicit:click"),
            (4, "0", "implicit:skip"),
            (6, "1", "explicit"),
            (1, "0", "implicit:skip"),
        ]
    ]
    store.write(keys.ATTRIBUTED_EXAMPLES, D1, _examples(examples, D1))
    position = feedback_bias(store, LabelPolicy(), None).position
    assert position.reason is None
    first, second = position.rows
    assert (first.position, first.predictions, first.with_feedback) == ("2", 4, 4)
    assert first.implicit_labels == 3
    assert first.implicit_positive_rate == pytest.approx(2 / 3)
    assert (second.position, second.predictions, second.with_feedback) == ("10", 4, 1)
    assert (second.feedback_rate, second.implicit_positive_rate) == (0.25, 0.0)

    plain = TableStore(tmp_path / "plain")
    _scored_predictions(plain, 20)
    reason = feedback_bias(plain, LabelPolicy(), None).position.reason
    assert reason is not None and reason.startswith("not available")


def test_bias_with_no_tables_is_not_evaluated_and_passes(tmp_path: Path) -> None:
    report = feedback_bias(TableStore(tmp_path / "none"), LabelPolicy(), None)
    assert report.window_start is None and report.predictions == 0
    verdicts = judge_bias(report, BiasThresholds())
    assert all(v.passed and not v.evaluated for v in verdicts)
    assert all("no raw_predictions" in v.description for v in verdicts)


def test_only_the_window_of_recent_days_is_judged(tmp_path: Path) -> None:
    store = TableStore(tmp_path / "tables")
    old = (date.fromisoformat(D1) - timedelta(days=40)).isoformat()
    ids = _scored_predictions(store, 20, day=old)
    loud = [{"prediction_id": ids[0], "label": "1", "user_id": "loud"}] * 50
    store.write(keys.ATTRIBUTED_EXAMPLES, old, _examples(loud, old))
    _scored_predictions(store, 20, day=D1)
    quiet = [{"label": "1", "user_id": f"u{i}"} for i in range(100)]
    store.write(keys.ATTRIBUTED_EXAMPLES, D1, _examples(quiet, D1))
    report = feedback_bias(store, LabelPolicy(), None, window_days=30)
    assert (report.window_start, report.window_end) == (D1, D1)
    assert report.predictions == 20 and report.concentration.users == 100
    assert feedback_bias(store, LabelPolicy(), None, window_days=41).concentration.users == 101


# --- the assets ---------------------------------------------------------------------------


def _check_results(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        out[materialization.asset_key.to_user_string()] = {
            k: getattr(v, "value", v) for k, v in materialization.metadata.items()
        }
    return out


def test_the_assets_on_a_real_promotion_report_its_latency(settings: Settings) -> None:
    spec = SimulationSpec(rows=1600, seed=4, drift="none", kind="both", days=4, n_users=60)
    events = list(simulate_events(spec))
    valid = validate_events([convert_record(e, i) for i, e in enumerate(events)])
    EventLog.from_settings(settings).append(valid)
    defs = build_definitions(settings)
    registry = Registry.from_settings(settings)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(instance=instance).success
        champion = registry.alias(CHAMPION)
        assert champion is not None
        result = dg.materialize(
            build_monitoring_assets(settings),
            instance=instance,
            resources=resources_from_settings(settings),
        )
        assert result.success
        run = instance.get_run_record_by_id(champion.tags[TAG_DAGSTER_RUN_ID])
        assert run is not None
        latest = settings.tables_dir / keys.FEEDBACK_AGGREGATES / "latest.parquet"
        first = pl.read_parquet(latest)
        again = dg.materialize(
            build_monitoring_assets(settings)[:1],
            instance=instance,
            resources=resources_from_settings(settings),
        )
        assert _materialized(again)[keys.FEEDBACK_AGGREGATES]["days_computed"] == 0
        assert pl.read_parquet(latest).equals(first), "nothing changed: the same figures"
    meta = _materialized(result)
    assert meta[keys.FEEDBACK_AGGREGATES]["days_computed"] == meta[keys.FEEDBACK_AGGREGATES]["days"]

    (promoted_at,) = [
        datetime.fromisoformat(r.at) for r in registry.audit_trail() if r.action == "promote"
    ]
    dataset = pl.read_parquet(settings.datasets_dir / f"{champion.dataset_version}.parquet")
    train = dataset.filter(pl.col("split") == "train")
    waits = np.array(
        [(promoted_at - t).total_seconds() for t in train["timestamp"].to_list()], dtype=float
    )
    document = json.loads(settings.loop_latency_path.read_text())
    entry = document["champion"]
    assert [v["version"] for v in document["versions"]] == [champion.version]
    assert entry["version"] == champion.version and entry["trigger"] == "manual"
    assert entry["promoted_at"] == promoted_at.isoformat()
    assert entry["events"] == train.height
    assert entry["p50_seconds"] == pytest.approx(np.percentile(waits, 50), abs=1e-3)
    assert entry["p95_seconds"] == pytest.approx(np.percentile(waits, 95), abs=1e-3)
    assert entry["max_seconds"] == pytest.approx(waits.max(), abs=1e-3)
    trigger_to_promotion = (promoted_at - run.create_timestamp).total_seconds()
    assert entry["trigger_to_promotion_seconds"] == pytest.approx(trigger_to_promotion)
    assert 0 < trigger_to_promotion < 600
    samples = _prometheus_samples(settings.loop_latency_metrics_path.read_text())
    version = champion.version
    assert samples[
        f'ct_feedback_loop_latency_seconds{{version="{version}",quantile="0.95"}}'
    ] == pytest.approx(entry["p95_seconds"])
    assert samples[f'ct_trigger_to_promotion_seconds{{version="{version}"}}'] == pytest.approx(
        trigger_to_promotion
    )
    latency = meta[keys.FEEDBACK_LOOP_LATENCY]
    assert latency["champion_version"] == version
    assert latency["p50_seconds"] == pytest.approx(entry["p50_seconds"])
    assert latency["trigger_to_promotion_seconds"] == pytest.approx(trigger_to_promotion)

    aggregates = meta[keys.FEEDBACK_AGGREGATES]
    table = pl.read_parquet(settings.tables_dir / keys.FEEDBACK_AGGREGATES / "latest.parquet")
    assert aggregates["dagster/row_count"] == table.height > 0
    totals = table.filter(pl.col("dimension") == "all")
    assert totals["events"].sum() == sum(1 for e in events if e["kind"] == "feedback")
    assert aggregates["coverage"] == 1.0, "every simulated prediction got its label"
    assert aggregates["plot"].startswith("![")

    bias = meta[keys.FEEDBACK_BIAS_REPORT]
    assert bias["flagged"] == 0
    checks = _check_results(result)
    assert set(checks) == {"selection_bias", "label_shift", "concentration"}
    assert all(c.passed for c in checks.values())
    assert checks["label_shift"].metadata["evaluated"].value is True, "against the champion"
    assert 1.0 <= bias["selection_ratio"] < 1.1
    assert bias["max_label_shift"] < 0.15


def _biased_tables(settings: Settings) -> None:
    """One user gives 60 of 100 labels."""
    store = TableStore(settings.tables_dir)
    _scored_predictions(store, 20)
    labels = [{"label": "1", "user_id": "loud"}] * 60
    labels += [{"label": "0", "user_id": f"u{i}"} for i in range(40)]
    store.write(keys.ATTRIBUTED_EXAMPLES, D1, _examples(labels, D1))


@dg.asset(deps=[keys.FEEDBACK_BIAS_REPORT])
def trained_after_bias_report() -> dg.MaterializeResult:  # type: ignore[type-arg]
    return dg.MaterializeResult()


@pytest.mark.parametrize("blocking", [False, True])
def test_flagged_bias_warns_or_blocks_what_depends_on_the_report(
    settings: Settings, blocking: bool
) -> None:
    settings = replace(settings, bias_block_training=blocking)
    _biased_tables(settings)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [build_feedback_bias_report(settings), trained_after_bias_report],
            instance=instance,
            resources=resources_from_settings(settings),
            raise_on_error=False,
        )
    checks = _check_results(result)
    assert checks["concentration"].passed is False
    assert checks["selection_bias"].passed and checks["label_shift"].passed
    severity = dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
    assert checks["concentration"].severity == severity
    materialized = _materialized(result)
    assert materialized[keys.FEEDBACK_BIAS_REPORT]["flagged"] == 1
    assert "concentration" in materialized[keys.FEEDBACK_BIAS_REPORT]["summary"]
    assert ("trained_after_bias_report" in materialized) is not blocking
    assert result.success is not blocking
    expected = [keys.FEEDBACK_BIAS_REPORT, *RETRAIN_ASSETS] if blocking else RETRAIN_ASSETS
    assert retrain_assets(settings, RETRAIN_ASSETS) == expected
    document = json.loads(settings.bias_report_path.read_text())
    assert document["report"]["concentration"]["top_share"] == pytest.approx(0.6)


def test_before_any_data_or_champion_the_assets_say_why(settings: Settings) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [
                build_feedback_aggregates(settings),
                build_feedback_loop_latency(settings),
                build_feedback_bias_report(settings),
            ],
            instance=instance,
            resources=resources_from_settings(settings),
        )
    assert result.success
    meta = _materialized(result)
    assert meta[keys.FEEDBACK_AGGREGATES]["dagster/row_count"] == 0
    assert "no validated_feedback tables" in meta[keys.FEEDBACK_AGGREGATES]["reason"]
    assert meta[keys.FEEDBACK_LOOP_LATENCY]["champion_version"] == "(none)"
    assert "no champion" in meta[keys.FEEDBACK_LOOP_LATENCY]["reason"]
    assert json.loads(settings.loop_latency_path.read_text()) == {
        "versions": [],
        "champion": None,
    }
    assert _prometheus_samples(settings.loop_latency_metrics_path.read_text()) == {}
    assert meta[keys.FEEDBACK_BIAS_REPORT]["flagged"] == 0
    assert all(c.passed for c in _check_results(result).values())
    assert (settings.tables_dir / keys.FEEDBACK_AGGREGATES / "latest.parquet").exists()


def test_building_the_monitoring_assets_imports_nothing_heavy(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ct_assets.settings import Settings\n"
        "from ct_assets.defs.observability import build_monitoring_assets\n"
        "assets = build_monitoring_assets(Settings().with_home(Path(sys.argv[1])))\n"
        "assert [a.key.to_user_string() for a in assets]\n"
        "heavy = ['mlflow', 'lightgbm', 'duckdb', 'matplotlib', 'sklearn']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ct")],
        env={**os.environ, "CT_HOME": str(tmp_path / "ct")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_assets_belong_to_the_monitoring_group(settings: Settings) -> None:
    for asset in build_monitoring_assets(settings):
        (key,) = asset.keys
        spec = asset.specs_by_key[key]
        assert spec.group_name == keys.MONITORING
        assert spec.owners == ["team:ml-platform"]
        assert spec.kinds and spec.description
    blocking = build_feedback_bias_report(replace(settings, bias_block_training=True))
    assert all(spec.blocking for spec in blocking.check_specs)
    assert not any(spec.blocking for spec in build_feedback_bias_report(settings).check_specs)


def test_with_blocking_on_a_concentrated_stream_stops_the_retrain_job(settings: Settings) -> None:
    """The real wiring: one user gives about half of the labels; the curation's dominance
    rule is off, so they are accepted; the retrain job's bias report stops the dataset."""
    from .conftest import ingest, simulated_events

    settings = replace(settings, bias_block_training=True, dominance_share=1.0, rate_factor=1e6)
    events = simulated_events(2400, drift_at=1.0)
    for i, event in enumerate(events):
        if i % 2 == 0:
            event["user_id"] = "loud"
    ingest(settings, events)
    days = sorted(EventLog.from_settings(settings).counts_by_date())
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        curated = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB).execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": days[0],
                "dagster/asset_partition_range_end": days[-1],
            },
        )
        assert curated.success
        result = defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert not result.success
    checks = _check_results(result)
    assert checks["concentration"].passed is False
    assert checks["concentration"].severity == dg.AssetCheckSeverity.ERROR
    materialized = _materialized(result)
    assert keys.FEEDBACK_BIAS_REPORT in materialized
    assert keys.TRAINING_DATASET not in materialized and keys.CHAMPION_MODEL not in materialized
