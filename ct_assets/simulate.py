"""Simulated production traffic: schema-v1 events from a known, optionally drifting, concept.

The world: eight numeric features ``x0..x7`` and a categorical ``channel``. The
label is drawn from a logistic model of them: concept ``A`` before the drift, and,
depending on ``drift``, after ``drift_at`` (a share of the rows):

- ``none``: concept ``A`` throughout;
- ``sudden`` (``concept`` is the same thing, its older name): concept ``B``, which
  weighs other features, from ``drift_at`` on;
- ``gradual``: between ``drift_at`` and ``drift_at + drift_width`` each row follows
  ``B`` with a probability rising linearly from 0 to 1, every row after follows ``B``;
- ``recurring``: from ``drift_at`` on the concept alternates ``B, A, B, A ...`` every
  ``period_rows`` rows (``rows // 4`` when unset);
- ``covariate``: the feature distribution shifts at ``drift_at``; the concept stays ``A``.

Rows are spread evenly in time over ``days`` days ending at ``end``. Everything is
determined by ``seed``: the same arguments always give the same events, ``event_id``s
included.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec
import numpy as np
import polars as pl

DriftKind = Literal["none", "sudden", "concept", "gradual", "recurring", "covariate"]
SimKind = Literal["feedback", "predictions", "both"]
Concept = Literal["A", "B"]

DRIFT_KINDS: tuple[str, ...] = get_args(DriftKind)
CHANNELS = ("web", "app", "store")
N_NUMERIC = 8
FEATURES = (*(f"x{j}" for j in range(N_NUMERIC)), "channel")
_WEIGHTS_BEFORE = np.array([2.0, -1.5, 1.0, 0.0, 0.0, 0.5, 0.0, 0.0])
_WEIGHTS_AFTER = np.array([-1.0, 0.0, 0.0, 2.0, 1.5, 0.0, -1.0, 0.0])
_WEIGHTS = {"A": _WEIGHTS_BEFORE, "B": _WEIGHTS_AFTER}
_COVARIATE_SHIFT = np.array([1.5, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
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
    #: ``gradual``: the share of rows over which the new concept takes over.
    drift_width: float = 0.2
    #: ``recurring``: rows per concept phase after ``drift_at``; ``None``: ``rows // 4``.
    period_rows: int | None = None

    def __post_init__(self) -> None:
        if self.drift not in DRIFT_KINDS:
            raise ValueError(f"drift {self.drift!r} is not one of {DRIFT_KINDS}")
        if not 0.0 <= self.drift_at <= 1.0:
            raise ValueError(f"drift_at {self.drift_at} is not a share of rows in [0, 1]")
        if self.drift_width < 0.0:
            raise ValueError(f"drift_width {self.drift_width} is negative")
        if self.period_rows is not None and self.period_rows < 1:
            raise ValueError(f"period_rows {self.period_rows} is not a positive row count")

    @property
    def period(self) -> int:
        """Rows per ``recurring`` phase."""
        return self.period_rows if self.period_rows is not None else max(self.rows // 4, 1)


def _concepts(spec: SimulationSpec, cut: int, mix: np.ndarray[Any, Any] | None) -> list[Concept]:
    """Which concept labels each row. ``mix``: uniform draws, for ``gradual`` only."""
    concepts: list[Concept] = ["A"] * spec.rows
    if spec.drift in ("sudden", "concept"):
        concepts[cut:] = ["B"] * (spec.rows - cut)
    elif spec.drift == "gradual":
        assert mix is not None
        width = int(spec.rows * spec.drift_width)
        for i in range(cut, spec.rows):
            p_new = (i - cut) / width if width > 0 else 1.0
            concepts[i] = "B" if p_new >= 1.0 or mix[i] < p_new else "A"
    elif spec.drift == "recurring":
        for i in range(cut, spec.rows):
            concepts[i] = "B" if ((i - cut) // spec.period) % 2 == 0 else "A"
    return concepts


def simulate_rows(spec: SimulationSpec) -> Iterator[dict[str, Any]]:
    """One dict per simulated interaction: features, true label, timestamp, drifted flag.

    ``drifted`` is true from ``drift_at`` on (for any kind but ``none``); ``concept``
    says which concept (``"A"`` or ``"B"``) drew the label.
    """
    rng = np.random.default_rng(spec.seed)
    end = spec.end or datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    start = end - timedelta(days=spec.days)
    step = (end - start) / max(spec.rows, 1)
    x = rng.normal(size=(spec.rows, N_NUMERIC))
    channels = rng.choice(len(CHANNELS), size=spec.rows, p=[0.5, 0.3, 0.2])
    noise = rng.uniform(size=spec.rows)
    users = rng.integers(0, spec.n_users, size=spec.rows)
    # Drawn after everything else, and only when used, so the other kinds' rows stay
    # exactly what they were before ``gradual`` existed.
    mix = rng.uniform(size=spec.rows) if spec.drift == "gradual" else None
    cut = int(spec.rows * spec.drift_at) if spec.drift != "none" else spec.rows
    concepts = _concepts(spec, cut, mix)
    for i in range(spec.rows):
        drifted = i >= cut
        features = x[i].copy()
        weights = _WEIGHTS[concepts[i]]
        if drifted and spec.drift == "covariate":
            features = features + _COVARIATE_SHIFT
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
            "concept": concepts[i],
            "logit_before": float(features @ _WEIGHTS_BEFORE) + _CHANNEL_EFFECT[channel],
        }


def simulate_frame(spec: SimulationSpec) -> pl.DataFrame:
    """The rows as a labeled table: ``x0..x7``, ``channel``, ``label`` (0/1), ``timestamp``
    (UTC) and ``concept`` (which concept drew the label).

    Written as CSV it is a backtest stream; ``concept`` is ground truth for analysis, not a
    feature: leave it (and ``timestamp``) out of what a model sees.
    """
    rows = list(simulate_rows(spec))
    columns: dict[str, pl.Series] = {
        name: pl.Series(name, [r["features"][name] for r in rows], dtype=dtype)
        for name, dtype in zip(FEATURES, [pl.Float64] * N_NUMERIC + [pl.String], strict=True)
    }
    columns["label"] = pl.Series("label", [r["label"] for r in rows], dtype=pl.Int64)
    columns["timestamp"] = pl.Series(
        "timestamp", [r["timestamp"] for r in rows], dtype=pl.Datetime("us", "UTC")
    )
    columns["concept"] = pl.Series("concept", [r["concept"] for r in rows], dtype=pl.String)
    return pl.DataFrame(columns)


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


def write_csv(frame: pl.DataFrame, out: Path) -> int:
    """Write a :func:`simulate_frame` table as CSV (ISO-8601 UTC timestamps); returns rows.

    The ``concept`` column is left out: it is the simulator's ground truth, not something
    a model could observe, and a backtest would otherwise learn it as a feature."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    frame.drop("concept", strict=False).write_csv(tmp)
    tmp.replace(out)
    return frame.height
