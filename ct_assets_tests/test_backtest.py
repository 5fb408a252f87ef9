"""``ct-assets backtest`` on simulated streams: the real pipeline, replayed."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ct_assets.cli import main

REPORT_FIELDS = {
    "rows_scored",
    "accuracy",
    "retrains",
    "promotions",
    "rejections",
    "triggers",
    "static_accuracy",
    "wall_seconds",
}


def test_backtest_on_a_sudden_drift_beats_the_never_retrained_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_HOME", str(tmp_path / "unused-home"))
    monkeypatch.setenv("CT_VOLUME_THRESHOLD", "800")
    data = tmp_path / "stream.csv"
    simulate = ["simulate", "--rows", "5600", "--seed", "3", "--drift", "sudden"]
    assert main([*simulate, "--drift-at", "0.45", "--format", "csv", "--out", str(data)]) == 0
    out = tmp_path / "report"
    replay = ["backtest", "--data", str(data), "--target", "label", "--time-col", "timestamp"]
    code = main(
        [*replay, "--batch-rows", "100", "--warmup-rows", "1600", "--out", str(out), "--quiet"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy (never retrained)" in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= REPORT_FIELDS
    assert report["rows_scored"] == 5600 - 1600
    assert report["promotions"] >= 1 and report["retrains"] >= report["promotions"]
    assert report["retrains"] == report["promotions"] + report["rejections"] + report["failed_runs"]
    assert sum(report["triggers"].values()) == report["retrains"]
    assert report["accuracy"] > report["static_accuracy"] + 0.05, report
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    promoted = [e for e in report["timeline"] if e["decision"] == "promote" and e["row"] > 0]
    assert promoted and all(e["reason"] for e in promoted), "every retrain says why"
    assert not (tmp_path / "unused-home").exists(), "the replay runs on its own CT_HOME"


def test_backtest_refuses_a_stream_it_cannot_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "one_class.csv"
    pl.DataFrame({"x": list(range(300)), "y": ["a"] * 300}).write_csv(data)
    args = ["backtest", "--data", str(data), "--warmup-rows", "100", "--out", str(tmp_path)]
    assert main([*args, "--target", "label"]) == 2
    assert "target column 'label' is not in" in capsys.readouterr().err
    assert main([*args, "--target", "y"]) == 2
    assert "has a single value" in capsys.readouterr().err
    assert main([*args, "--target", "y", "--time-col", "when"]) == 2
    assert "time column 'when'" in capsys.readouterr().err


def test_a_warm_up_the_gate_rejects_is_named_with_the_failed_criterion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Labels that are noise: the first model cannot pass the gate's AUC floor, and the
    error says so instead of only that nothing was promoted."""
    import numpy as np

    monkeypatch.setenv("CT_HOME", str(tmp_path / "unused-home"))
    rng = np.random.default_rng(8)
    n = 1400
    data = tmp_path / "noise.csv"
    pl.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "y": rng.integers(0, 2, size=n)}
    ).write_csv(data)
    args = ["backtest", "--data", str(data), "--target", "y", "--out", str(tmp_path / "r")]
    assert main([*args, "--warmup-rows", "1200", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the warm-up retrain did not promote a model (candidate auc" in err, err
    assert "< floor 0.5500" in err and "--warmup-rows" in err, err


def test_backtest_replays_a_multiclass_stream_without_a_time_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row order is time; three classes; a categorical column."""
    import numpy as np

    monkeypatch.setenv("CT_HOME", str(tmp_path / "unused-home"))
    monkeypatch.setenv("CT_VOLUME_THRESHOLD", "600")
    rng = np.random.default_rng(4)
    n = 2600
    a, b = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    grade = np.where(a + 0.5 * (color == "red") < -0.4, "low", np.where(a < 0.4, "mid", "high"))
    data = tmp_path / "grades.csv"
    pl.DataFrame({"a": a, "b": b, "color": color, "grade": grade}).write_csv(data)
    out = tmp_path / "report"
    args = ["backtest", "--data", str(data), "--target", "grade", "--out", str(out), "--quiet"]
    assert main([*args, "--batch-rows", "200", "--warmup-rows", "1000"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["rows_scored"] == 1600
    assert report["features"] == ["a", "b", "color"]
    assert report["accuracy"] > 0.7 and report["static_accuracy"] > 0.7
    assert report["retrains"] >= 1


def test_the_never_retrained_reference_is_plain_lightgbm_on_the_warm_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first champion, trained by the real retrain job on the warm-up (validated on its
    newest fifth, then refit with it), scores exactly as ``lightgbm.LGBMClassifier`` with
    the same parameters fitted plainly on every warm-up row: the reference the loop is
    compared with is a real model."""
    import os

    import lightgbm
    import numpy as np

    from ct_assets.backtest import BacktestSpec, load_stream, run_backtest
    from ct_assets.registry import Registry
    from ct_assets.settings import Settings

    monkeypatch.setenv("CT_VOLUME_THRESHOLD", "100000")  # few retrains: the reference matters
    rng = np.random.default_rng(8)
    n = 3000
    x = rng.normal(size=(n, 4))
    noisy = (x[:, 0] - x[:, 1] + x[:, 2] * x[:, 3] > 0) ^ (rng.random(n) < 0.1)
    data = tmp_path / "noisy.csv"
    pl.DataFrame({**{f"x{j}": x[:, j] for j in range(4)}, "y": noisy.astype(int)}).write_csv(data)
    spec = BacktestSpec(data=data, target="y", out=tmp_path / "out", batch_rows=100)
    home = tmp_path / "home"
    report = run_backtest(spec, Settings.from_env(), dict(os.environ), home=home)
    settings = Settings.from_env().with_home(home)
    registry = Registry.from_settings(settings)
    first = registry.version("1")
    model = registry.load_model("1")
    dataset = pl.read_parquet(settings.datasets_dir / f"{first.dataset_version}.parquet")
    assert dataset.filter(pl.col("split") == "train").height == 1600
    train = dataset.sort(["timestamp", "log_offset"])
    assert train.height == 2000 and model.booster.current_iteration() == 100
    plain = lightgbm.LGBMClassifier(verbose=-1).fit(
        model.spec.matrix(train), model.spec.label_indices(train["label"])
    )
    scored = load_stream(spec).frame.slice(2000)
    truth = np.asarray(model.spec.label_indices(scored["label"]))
    expected = float(np.mean(plain.predict(model.spec.matrix(scored)) == truth))
    assert report["static_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert report["static_accuracy"] > 0.8
