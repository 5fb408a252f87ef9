"""The simulator's drift generators: what a model trained before the drift sees after it.

A logistic regression fit on rows before ``drift_at`` is the "production model": it must
stay accurate without drift and under a covariate shift, break after a sudden drift,
break progressively over a gradual one, and break only in the ``B`` phases of a
recurring one. The kinds that existed before these generators (``none``, ``concept``,
``covariate``) must keep giving exactly the same events: the digests below were
computed from the simulator as it was before they were added.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pytest
from scipy.stats import ks_2samp
from sklearn.linear_model import LogisticRegression

from ct_assets.cli import main
from ct_assets.simulate import (
    CHANNELS,
    FEATURES,
    N_NUMERIC,
    SimulationSpec,
    simulate_events,
    simulate_frame,
    simulate_rows,
)

END = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
ROWS = 8000
CUT = ROWS // 2
TRAIN = slice(0, CUT - 1000)  # the model's training rows: before the drift
HOLDOUT = slice(CUT - 1000, CUT)  # its accuracy before the drift, on unseen rows
NUMERIC = [f"x{j}" for j in range(N_NUMERIC)]

# (spec arguments, sha256 of the NDJSON events, sha256 of simulate_rows without
# "concept" and with logit_before to 9 decimals), computed before drift kinds beyond
# none/concept/covariate existed.
GOLDEN: list[tuple[dict[str, Any], str, str]] = [
    (
        {"rows": 200, "seed": 0, "drift": "none", "kind": "both"},
        "60abf0973f81a8593a6a996d329a363467d41b35f74d5a033af6f9f9a261a9e8",
        "59a767428d6f0141a0744dcb0e5f89326bd9bcfddec236ab668f497c6afe69b3",
    ),
    (
        {"rows": 200, "seed": 1, "drift": "concept", "drift_at": 0.5, "kind": "feedback"},
        "5604fb7383a05254f58d6d20e6370473bdfc7ecf4f1e1bfcf72e627d441d8f51",
        "ed96ebc4bbbec01c9a80ba29bf0c356b6b2dead96bbbdaa30bb28616d8d359d0",
    ),
    (
        {"rows": 200, "seed": 2, "drift": "concept", "drift_at": 0.3, "kind": "both"},
        "ac08d57b622c9a72dc3b3f5552ab1907bf094c55b6b299599bcf15156ea27f00",
        "99a0c247f9a0862d911c3b89aa2f0224e7dd7631c187a3750f62bab0aa295d3c",
    ),
    (
        {"rows": 200, "seed": 3, "drift": "covariate", "drift_at": 0.5, "kind": "predictions"},
        "9faea3515d732603e159b3cd8e8a7c3d5d09ba4f8d479ad37565501be2fd6147",
        "67b9c830b145edb522a1620359bc653fa52b188a7b58084541f05cf54d80db1a",
    ),
    (
        {
            "rows": 150,
            "seed": 4,
            "drift": "covariate",
            "drift_at": 0.0,
            "kind": "both",
            "days": 3,
            "n_users": 10,
        },
        "4945f370e5530b35f2bea64cdaa3058b91066b36402be6f04122f7006f10d151",
        "7b6d60e6849aad72ae67bc1e7183e846e10392d1d869139489340d71d2189b47",
    ),
    (
        {"rows": 120, "seed": 7, "drift": "concept", "drift_at": 1.0, "kind": "feedback"},
        "6e08831d48b7cee9341a00a0da04d8d7494a0384ee99ccf01340c8a2928d4124",
        "ea3cd05a08b5ec424e5b210ad16121312a10a3b3db2c0d9888e7c0da24603cc3",
    ),
]


def _stable(key: str, value: Any) -> Any:
    """``logit_before`` is a dot product whose last bits depend on the CPU's BLAS kernel."""
    return round(value, 9) if key == "logit_before" else value


def _matrix(frame: pl.DataFrame) -> np.ndarray[Any, Any]:
    numeric = frame.select(NUMERIC).to_numpy()
    channel = np.stack([(frame["channel"] == c).to_numpy() for c in CHANNELS[1:]], axis=1)
    return np.hstack([numeric, channel.astype(float)])


class Trained:
    """A model fit on the rows before the drift, and its accuracy on any slice."""

    def __init__(self, frame: pl.DataFrame) -> None:
        train = frame[TRAIN]
        self.model = LogisticRegression().fit(_matrix(train), train["label"].to_numpy())
        self.before = self.accuracy(frame[HOLDOUT])

    def accuracy(self, frame: pl.DataFrame) -> float:
        return float((self.model.predict(_matrix(frame)) == frame["label"].to_numpy()).mean())


def _frame(drift: str, seed: int = 3, **kwargs: Any) -> pl.DataFrame:
    spec = SimulationSpec(rows=ROWS, seed=seed, drift=drift, drift_at=0.5, end=END, **kwargs)  # type: ignore[arg-type]
    return simulate_frame(spec)


# -- existing kinds: unchanged ------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "events_digest", "rows_digest"), GOLDEN)
def test_existing_kinds_give_the_same_events(
    kwargs: dict[str, Any], events_digest: str, rows_digest: str
) -> None:
    spec = SimulationSpec(end=END, **kwargs)
    encoder = msgspec.json.Encoder()
    events = b"".join(encoder.encode(e) + b"\n" for e in simulate_events(spec))
    assert hashlib.sha256(events).hexdigest() == events_digest
    rows = b"".join(
        encoder.encode(
            {
                **{k: _stable(k, v) for k, v in row.items() if k != "concept"},
                "timestamp": row["timestamp"].isoformat(),
            }
        )
        + b"\n"
        for row in simulate_rows(spec)
    )
    assert hashlib.sha256(rows).hexdigest() == rows_digest


# -- the drift kinds, seen by a model trained before the drift -----------------------------


def test_no_drift_keeps_a_model_accurate() -> None:
    frame = _frame("none")
    trained = Trained(frame)
    assert trained.before > 0.75
    assert set(frame["concept"]) == {"A"}
    for start in range(CUT, ROWS, 1000):
        assert trained.accuracy(frame[start : start + 1000]) > trained.before - 0.05


@pytest.mark.parametrize("drift", ["sudden", "concept"])
def test_sudden_drift_breaks_a_model_at_drift_at(drift: str) -> None:
    frame = _frame(drift)
    assert frame["concept"].to_list() == ["A"] * CUT + ["B"] * (ROWS - CUT)
    trained = Trained(frame)
    after = trained.accuracy(frame[CUT:])
    assert trained.before > 0.75
    assert after < trained.before - 0.25
    assert after < 0.55


def test_concept_is_an_alias_of_sudden() -> None:
    assert _frame("concept").equals(_frame("sudden"))


def test_gradual_drift_degrades_a_model_progressively() -> None:
    frame = _frame("gradual", drift_width=0.3)  # the ramp: rows 4000 .. 6400
    width = int(ROWS * 0.3)
    concept = frame["concept"]
    assert set(concept[:CUT]) == {"A"}
    assert set(concept[CUT + width :]) == {"B"}
    trained = Trained(frame)
    windows = [frame[CUT + k * width // 3 : CUT + (k + 1) * width // 3] for k in range(3)]
    shares = [(w["concept"] == "B").sum() / w.height for w in windows]
    accuracies = [trained.accuracy(w) for w in windows]
    # B's share rises linearly: about 1/6, 1/2, 5/6 in the ramp's thirds
    assert shares == pytest.approx([1 / 6, 1 / 2, 5 / 6], abs=0.07)
    after = trained.accuracy(frame[CUT + width :])
    assert trained.before > accuracies[0] > accuracies[1] > accuracies[2]
    assert after < accuracies[2] + 0.02  # all B now: no better than the ramp's end
    assert after < trained.before - 0.25


def test_gradual_drift_of_zero_width_is_sudden() -> None:
    frame = _frame("gradual", drift_width=0.0)
    assert frame.drop("concept").equals(_frame("sudden").drop("concept"))
    assert frame["concept"].equals(_frame("sudden")["concept"])


def test_recurring_drift_breaks_a_model_in_the_b_phases_only() -> None:
    period = 1000
    frame = _frame("recurring", period_rows=period)
    trained = Trained(frame)
    for phase, start in enumerate(range(CUT, ROWS, period)):
        rows = frame[start : start + period]
        expected = "B" if phase % 2 == 0 else "A"
        assert set(rows["concept"]) == {expected}
        accuracy = trained.accuracy(rows)
        if expected == "B":
            assert accuracy < trained.before - 0.25
        else:
            assert accuracy > trained.before - 0.05


def test_recurring_period_defaults_to_a_quarter_of_the_rows() -> None:
    frame = simulate_frame(SimulationSpec(rows=400, drift="recurring", drift_at=0.25, end=END))
    assert frame["concept"].to_list() == ["A"] * 100 + ["B"] * 100 + ["A"] * 100 + ["B"] * 100


def test_covariate_drift_shifts_the_features_not_the_concept() -> None:
    frame = _frame("covariate")
    before, after = frame[:CUT], frame[CUT:]
    assert set(frame["concept"]) == {"A"}
    for column, shifted in (("x0", True), ("x1", True), ("x5", True), ("x3", False)):
        statistic = ks_2samp(before[column].to_numpy(), after[column].to_numpy()).statistic
        assert (statistic > 0.3) if shifted else (statistic < 0.05), column
    trained = Trained(frame)
    # the concept holds: the old model is as good (here: better, the shift pushes rows
    # away from its decision boundary) after the shift
    assert trained.accuracy(after) > trained.before - 0.03


# -- what does not change ------------------------------------------------------------------


@pytest.mark.parametrize(
    "drift", ["none", "sudden", "concept", "gradual", "recurring", "covariate"]
)
def test_same_seed_same_stream(drift: str) -> None:
    def spec(seed: int) -> SimulationSpec:
        return SimulationSpec(rows=500, seed=seed, drift=drift, kind="both", end=END)  # type: ignore[arg-type]

    assert simulate_frame(spec(9)).equals(simulate_frame(spec(9)))
    assert list(simulate_events(spec(9))) == list(simulate_events(spec(9)))
    assert not simulate_frame(spec(9)).equals(simulate_frame(spec(10)))


def _unlabeled(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "label"}


@pytest.mark.parametrize("drift", ["sudden", "gradual", "recurring"])
def test_concept_drifts_change_labels_only(drift: str) -> None:
    """Same features, timestamps, ids and event shapes as the undrifted stream."""
    base = list(
        simulate_events(SimulationSpec(rows=300, seed=2, drift="none", kind="both", end=END))
    )
    spec = SimulationSpec(rows=300, seed=2, drift=drift, kind="both", end=END)  # type: ignore[arg-type]
    drifted = list(simulate_events(spec))
    assert [e.keys() for e in drifted] == [e.keys() for e in base]
    assert [_unlabeled(e) for e in drifted] == [_unlabeled(e) for e in base]
    labels = [e["label"] for e in drifted if "label" in e]
    assert labels != [e["label"] for e in base if "label" in e]


def test_frame_columns_and_types() -> None:
    frame = simulate_frame(SimulationSpec(rows=50, drift="gradual", end=END))
    assert frame.columns == [*FEATURES, "label", "timestamp", "concept"]
    assert frame.schema["channel"] == pl.String
    assert all(frame.schema[c] == pl.Float64 for c in NUMERIC)
    assert frame.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert set(frame["label"]) <= {0, 1}
    assert frame["timestamp"].is_sorted()
    assert frame["timestamp"].to_list()[-1] < END
    assert simulate_frame(SimulationSpec(rows=0, end=END)).columns == frame.columns


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drift": "abrupt"},
        {"drift_at": 1.5},
        {"drift_at": -0.1},
        {"drift_width": -0.1},
        {"period_rows": 0},
    ],
)
def test_invalid_specs_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimulationSpec(**kwargs)


# -- the command ---------------------------------------------------------------------------


def test_cli_writes_a_backtest_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stream" / "drift.csv"
    args = ["simulate", "--rows", "600", "--seed", "5", "--drift", "recurring"]
    args += ["--drift-at", "0.5", "--period-rows", "100", "--format", "csv", "--out", str(out)]
    assert main(args) == 0
    assert "wrote 600 labeled rows" in capsys.readouterr().out
    header = out.read_text().splitlines()[0]
    assert header == "x0,x1,x2,x3,x4,x5,x6,x7,channel,label,timestamp"  # no ground truth
    table = pl.read_csv(out)
    assert table.height == 600
    assert set(table["label"]) == {0, 1}
    times = table["timestamp"].str.to_datetime(time_zone="UTC")
    assert times.null_count() == 0 and times.is_sorted()
    expected = simulate_frame(
        SimulationSpec(rows=600, seed=5, drift="recurring", drift_at=0.5, period_rows=100, end=END)
    )
    assert expected["concept"].to_list()[300:500] == ["B"] * 100 + ["A"] * 100
    assert table.drop("timestamp").equals(expected.drop("timestamp", "concept"))


def test_cli_ndjson_stays_the_default(tmp_path: Path) -> None:
    out = tmp_path / "events.ndjson"
    args = [
        "simulate",
        "--rows",
        "40",
        "--drift",
        "gradual",
        "--drift-width",
        "0.5",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 40
    assert all(msgspec.json.decode(line)["kind"] == "feedback" for line in lines)


def test_cli_refuses_a_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.csv"
    assert main(["simulate", "--rows", "10", "--drift-at", "2", "--out", str(out)]) == 2
    assert "drift_at" in capsys.readouterr().err
    assert not out.exists()
