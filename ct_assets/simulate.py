"""Simulated production traffic: schema-v1 events from a known, optionally drifting, concept.

The world: eight numeric features ``x0..x7`` and a categorical ``channel``. The
label is drawn from a logistic model of them. A ``concept`` drift swaps which
features matter after ``drift_at`` (a share of the rows); a ``covariate`` drift
shifts the feature distribution instead and keeps the concept. Rows are spread
evenly in time over ``days`` days ending at ``end``. Everything is determined by
``seed``: the same arguments always give the same events, ``event_id``s included.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

DriftKind = Literal["none", "concept", "covariate"]
SimKind = Literal["feedback", "predictions", "both"]

CHANNELS = ("web", "app", "store")
N_NUMERIC = 8
_WEIGHTS_BEFORE = np.array([2.0, -1.5, 1.0, 0.0, 0.0, 0.5, 0.0, 0.0])
_WEIGHTS_AFTER = np.array([-1.0, 0.0, 0.0, 2.0, 1.5, 0.0, -1.0, 0.0])
_CHANNEL_EFFECT = {"web": 0.0, "app": 0.6, "store": -0.6}


@dataclass(frozen=True)
class SimulationSpec:
    rows: int = 10_000
    seed: int = 0
    drift: DriftKind = "concept"
    drift_at: float = 0.5
    kind: SimKind = "feedback"
    days: int = 14
    end: datetime | None = None
    n_users: int = 200


def simulate_rows(spec: SimulationSpec) -> Iterator[dict[str, Any]]:
    """One dict per simulated interaction: features, true label, timestamp, drifted flag."""
    rng = np.random.default_rng(spec.seed)
    end = spec.end or datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    start = end - timedelta(days=spec.days)
    step = (end - start) / max(spec.rows, 1)
    x = rng.normal(size=(spec.rows, N_NUMERIC))
    channels = rng.choice(len(CHANNELS), size=spec.rows, p=[0.5, 0.3, 0.2])
    noise = rng.uniform(size=spec.rows)
    users = rng.integers(0, spec.n_users, size=spec.rows)
    cut = int(spec.rows * spec.drift_at) if spec.drift != "none" else spec.rows
    for i in range(spec.rows):
        drifted = i >= cut
        features = x[i].copy()
        weights = _WEIGHTS_BEFORE
        if drifted and spec.drift == "concept":
            weights = _WEIGHTS_AFTER
        if drifted and spec.drift == "covariate":
            features = features + np.array([1.5, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
        channel = CHANNELS[int(channels[i])]
        logit = float(features @ weights) + _CHANNEL_EFFECT[channel]
        label = int(noise[i] < 1.0 / (1.0 + np.exp(-logit)))
        yield {
            "index": i,
            "timestamp": start + step * i,
            "features": {
                **{f"x{j}": round(float(features[j]), 6) for j in range(N_NUMERIC)},
                "channel": channel,
            },
            "label": label,
            "user_id": f"user-{int(users[i]):04d}",
            "drifted": drifted,
            "logit_before": float(features @ _WEIGHTS_BEFORE) + _CHANNEL_EFFECT[channel],
        }


def simulate_events(spec: SimulationSpec) -> Iterator[dict[str, Any]]:
    """Schema-v1 events (as JSON-ready dicts) for ``spec.kind``."""
    for row in simulate_rows(spec):
        i = row["index"]
        ts: datetime = row["timestamp"]
        prediction_id = f"pred-{spec.seed}-{i:08d}"
        if spec.kind in ("predictions", "both"):
            score = 1.0 / (1.0 + float(np.exp(-row["logit_before"])))
            yield {
                "kind": "prediction",
                "schema_version": 1,
                "event_id": f"pe-{spec.seed}-{i:08d}",
                "prediction_id": prediction_id,
                "timestamp": ts.isoformat(),
                "model_name": "simulated",
                "model_version": "0",
                "arm": "champion",
                "entity_id": f"entity-{i:08d}",
                "features": row["features"],
                "prediction": int(score >= 0.5),
                "scores": {"0": round(1.0 - score, 6), "1": round(score, 6)},
            }
        if spec.kind in ("feedback", "both"):
            event: dict[str, Any] = {
                "kind": "feedback",
                "schema_version": 1,
                "event_id": f"fb-{spec.seed}-{i:08d}",
                "timestamp": (ts + timedelta(seconds=30)).isoformat(),
                "feedback_type": "explicit",
                "label": row["label"],
                "user_id": row["user_id"],
                "source": "simulator",
            }
            if spec.kind == "both":
                event["prediction_id"] = prediction_id
            else:
                event["features"] = row["features"]
            yield event


def write_ndjson(events: Iterator[dict[str, Any]], out: Path) -> int:
    """Write events one JSON object per line; returns how many."""
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    count = 0
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as handle:
        for event in events:
            handle.write(encoder.encode(event) + b"\n")
            count += 1
    tmp.replace(out)
    return count
