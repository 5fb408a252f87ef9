"""A poisoning scenario end to end: a clean simulated stream in the event log, a label
flipping clique and a flooding bot source injected into it, curation of every date, and
three models trained with the project's own code on the same features and scored on the
same clean, time-later holdout:

* ``clean``: every feedback event of the clean stream, whatever curation said of it;
* ``unfiltered``: every feedback event, poison included (status ignored);
* ``filtered``: the accepted examples of curation (:attr:`Curated.examples`).

The filtered model must be within one point of the clean one and clearly better than
the unfiltered one. Everything is seeded and timestamped from a fixed date.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from ct_assets.data.attribution import LabelPolicy, attribute_feedback
from ct_assets.data.dataset import LABEL, SPLIT, compile_dataset
from ct_assets.defs.resources import CurationResource, resources_from_settings
from ct_assets.eventlog import EventLog
from ct_assets.pipeline.curation import Curated, curate
from ct_assets.schema import convert_record, validate_events
from ct_assets.settings import Settings
from ct_assets.simulate import SimulationSpec, simulate_events
from ct_assets.training.train import TrainParams, evaluate, train_model

END = datetime(2025, 3, 10, tzinfo=UTC)
ROWS = 6000
DAYS = 6
HOLDOUT_SHARE = 0.2
FLIPPERS = ("user-flip-a", "user-flip-b", "user-flip-c")
FLIP_CHANNEL = "store"  # the flippers contradict the model on one channel, where it is sure
FLIP_CONFIDENCE = 0.9
BOT_USERS = 20
FLOOD_HOURS = 2  # one-hour bursts, at a third and two thirds of the training period
FLOOD_PER_HOUR = 1000  # the clean stream sends ROWS / (DAYS * 24) ~ 42 an hour: 24x that
PARAMS = TrainParams(num_boost_round=60, learning_rate=0.1, early_stopping_rounds=20, seed=7)


def _stream() -> list[dict[str, Any]]:
    spec = SimulationSpec(
        rows=ROWS, seed=21, drift="none", kind="both", days=DAYS, end=END, n_users=60
    )
    return list(simulate_events(spec))


def _ts(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def _feedback(
    event_id: str, prediction: dict[str, Any], at: datetime, label: int, user: str, source: str
) -> dict[str, Any]:
    return {
        "kind": "feedback",
        "schema_version": 1,
        "event_id": event_id,
        "timestamp": at.isoformat(),
        "feedback_type": "explicit",
        "prediction_id": prediction["prediction_id"],
        "label": label,
        "user_id": user,
        "source": source,
    }


def _flippers(training: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A few ordinary-looking users who, minutes after each prediction on one channel where
    the model is confident, label it the opposite of what was served."""
    targets = [
        p
        for p in training
        if p["features"]["channel"] == FLIP_CHANNEL and max(p["scores"].values()) >= FLIP_CONFIDENCE
    ]
    return [
        _feedback(
            f"flip-{k:05d}",
            p,
            _ts(p) + timedelta(minutes=5),
            1 - int(p["prediction"]),
            FLIPPERS[k % len(FLIPPERS)],
            "simulator",
        )
        for k, p in enumerate(targets)
    ]


def _flood(training: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """A bot source that, in a few one-hour bursts, labels earlier predictions (each once)
    the opposite of what was served, at more than 20x the usual rate of the whole stream."""
    span = _ts(training[-1]) - _ts(training[0])
    used: set[str] = set()
    out: list[dict[str, Any]] = []
    for burst in range(FLOOD_HOURS):
        start = _ts(training[0]) + span * (burst + 1) / (FLOOD_HOURS + 1)
        start = start.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        earlier = [
            p
            for p in training
            if _ts(p) < start - timedelta(minutes=10) and p["prediction_id"] not in used
        ]
        for k, p in enumerate(rng.sample(earlier, FLOOD_PER_HOUR)):
            used.add(p["prediction_id"])
            at = start + timedelta(hours=1) * (k + 0.5) / FLOOD_PER_HOUR
            user = f"bot-{k % BOT_USERS:02d}"
            eid = f"flood-{burst}-{k:05d}"
            out.append(_feedback(eid, p, at, 1 - int(p["prediction"]), user, "bot"))
    return out


def _ingest(settings: Settings, events: list[dict[str, Any]]) -> None:
    valid = validate_events([convert_record(e, i) for i, e in enumerate(events)])
    assert EventLog.from_settings(settings).append(valid).accepted == len(events)


def _dataset(examples: pl.DataFrame, holdout: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    """Training examples before ``cutoff`` and the shared holdout, flattened by the project's
    compile_dataset; the split is set by time, so every model is scored on the same rows."""
    rows = pl.concat([examples.filter(pl.col("timestamp") < cutoff), holdout], how="vertical")
    frame = compile_dataset(rows, rows.height, 0.0)
    holdout_ids = holdout["event_id"].implode()
    return frame.with_columns(
        pl.when(pl.col("event_id").is_in(holdout_ids))
        .then(pl.lit("holdout"))
        .otherwise(pl.lit("train"))
        .alias(SPLIT)
    )


def _fit(
    name: str, examples: pl.DataFrame, holdout: pl.DataFrame, cutoff: datetime
) -> dict[str, float]:
    """Train with the project's train_model and score on the shared holdout."""
    frame = _dataset(examples, holdout, cutoff)
    result = train_model(frame, PARAMS)
    scored = evaluate(result.model, frame.filter(pl.col(SPLIT) == "holdout"))
    assert scored == result.holdout_metrics
    train = frame.filter(pl.col(SPLIT) == "train")
    positive = float(train[LABEL].cast(pl.Float64).mean())  # type: ignore[arg-type]
    print(
        f"{name:>10}: accuracy {scored['accuracy']:.4f}  auc {scored['auc']:.4f}"
        f"  (train rows {train.height}, label 1 share {positive:.3f},"
        f" holdout rows {int(scored['rows'])}, best iteration {result.best_iteration})"
    )
    return scored


def test_poisoned_feedback_is_quarantined_and_filtering_recovers_the_clean_model(
    settings: Settings,
) -> None:
    started = time.perf_counter()
    clean = _stream()
    predictions = [e for e in clean if e["kind"] == "prediction"]
    n_train = int(len(predictions) * (1 - HOLDOUT_SHARE))
    # the holdout: the clean feedback of the latest predictions; all poison comes before it
    cutoff = _ts(predictions[n_train])
    training = [p for p in predictions[:n_train] if _ts(p) < cutoff - timedelta(minutes=10)]
    flips = _flippers(training)
    flood = _flood(training, random.Random(5))
    assert len(flips) >= 300 and len(flood) == FLOOD_HOURS * FLOOD_PER_HOUR
    assert FLOOD_PER_HOUR >= 20 * ROWS / (DAYS * 24), "the bots flood at 20x the usual rate"
    assert all(_ts(e) < cutoff for e in flips + flood)
    _ingest(settings, clean + flips + flood)

    log = EventLog.from_settings(settings)
    days = list(log.counts_by_date())
    curation = resources_from_settings(settings)["curation"]
    assert isinstance(curation, CurationResource)
    policy = LabelPolicy()
    curated: Curated = curate(log, days, curation.rules(), policy, None)
    validated = curated.validated
    assert validated.height == len(clean) // 2 + len(flips) + len(flood)

    kind = pl.col("event_id").str.extract(r"^(flip|flood)").fill_null("clean")
    judged = validated.with_columns(kind.alias("kind"))
    summary = judged.group_by("kind", "status", "reason").len().sort("kind", "status", "reason")
    print(f"\n{summary}")
    for injected, reason in (("flip", "label_flipping"), ("flood", "rate_abuse")):
        rows = judged.filter(pl.col("kind") == injected)
        caught = rows.filter((pl.col("status") == "quarantined") & (pl.col("reason") == reason))
        assert caught.height >= 0.9 * rows.height, (injected, reason)
    clean_rows = judged.filter(pl.col("kind") == "clean")
    lost = clean_rows.filter(pl.col("status") != "accepted").height
    assert lost < 0.02 * clean_rows.height

    logged = log.read("prediction", dates=days)
    everything = attribute_feedback(validated, logged, policy)
    clean_examples = attribute_feedback(clean_rows.drop("kind"), logged, policy)
    holdout = clean_examples.filter(pl.col("timestamp") >= cutoff)
    assert holdout.height >= 0.19 * ROWS
    figures = {
        "clean": _fit("clean", clean_examples, holdout, cutoff),
        "unfiltered": _fit("unfiltered", everything, holdout, cutoff),
        "filtered": _fit("filtered", curated.examples, holdout, cutoff),
    }
    print(f"elapsed {time.perf_counter() - started:.1f} s")
    acc = {name: m["accuracy"] for name, m in figures.items()}
    auc = {name: m["auc"] for name, m in figures.items()}
    assert {int(m["rows"]) for m in figures.values()} == {holdout.height}
    assert abs(acc["filtered"] - acc["clean"]) <= 0.01
    assert abs(auc["filtered"] - auc["clean"]) <= 0.01
    assert acc["filtered"] - acc["unfiltered"] >= 0.03
    assert auc["filtered"] - auc["unfiltered"] >= 0.03
