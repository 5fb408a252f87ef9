"""Does the pipeline's automatic retraining pay off? Sensors against simple baselines.

Streams: the synthetic drift generators of the ``river`` package (seeded; every drift
falls after the warm-up), ``ct_assets simulate`` streams (sudden, gradual, recurring
concept drift) and one stationary stream, each written as a CSV with a ``label`` column.
On every stream, all scored on the same rows (everything after the first 2,000):

(a) sensors: ``ct-assets backtest`` (the real pipeline: assets, sensors, gate, registry)
    with 48-row batches; its accuracy, retrains and their triggers;
(b) fixed period: bare LightGBM (``bare_replay.py``, the backtest's protocol) with a full
    retrain every N scored rows on the newest W labeled rows, for every N x W of the
    grid; the best cell is reported (chosen after the fact, so an optimistic baseline);
(c) never retrained: bare LightGBM fitted on the warm-up rows only;
(d) river's adaptive random forest and Hoeffding adaptive tree: they learn the warm-up
    rows one by one, then each 48-row batch is predicted before any of its rows is
    learned (the same information the batch policies have), then learned row by row.

Prints a table and a summary (the streams where the sensors reach the best fixed
period's accuracy with no more retrains; their mean gap to ARF), writes every number
as JSON with ``--out DIR``, and with ``--readme`` rewrites the table in README.md;
``--from-json`` tabulates earlier runs' JSON instead of measuring (the baselines are
seeded and deterministic, so runs of different subsets combine). Needs the ``bench``
extra (river). Usage: python benchmarks/bench_drift_policies.py [--rows N]
[--streams a,b] [--skip-sensors] [--out DIR] [--readme] [--from-json FILE ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_replay import Prepared, fixed_period_grid, never, prepare, replay

WARMUP_ROWS = 2000
BATCH_ROWS = 48
PERIODS = (500, 1000, 2000, 4000)
WINDOWS: tuple[int | None, ...] = (1000, 3000, 10_000, None)
SEED = 1
README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- drift-policies:begin -->", "<!-- drift-policies:end -->"
#: Integer-coded categorical features of river's generators, written as strings.
CATEGORIES: dict[str, Callable[[str, Any], str]] = {
    "elevel": lambda name, v: f"{name}_{v}",
    "car": lambda name, v: f"{name}_{v}",
    "zipcode": lambda name, v: f"{name}_{v}",
    "size": lambda name, v: ("small", "medium", "large")[v],
    "color": lambda name, v: ("red", "blue", "green")[v],
    "shape": lambda name, v: ("circle", "square", "triangle")[v],
}


@dataclass(frozen=True)
class StreamDef:
    name: str
    description: str
    #: Writes ``rows`` rows as CSV to the path; the time column's name, if any.
    write: Callable[[int, Path], str | None]


def at(rows: int, share: float) -> int:
    """The row a share of the way through the scored part (after the warm-up)."""
    return WARMUP_ROWS + int((rows - WARMUP_ROWS) * share)


def drifting(concepts: list[Any], rows: int, width: int = 50) -> Any:
    """river concepts one after the other, switching at equal shares of the scored part
    (``width``: rows over which the new concept takes over)."""
    from river.datasets import synth

    stream = concepts[0]
    for i, following in enumerate(concepts[1:], start=1):
        position = at(rows, i / len(concepts))
        # river's sigmoid computes exp(4 * (position - row) / width) from row 1 on, which
        # overflows once position / width exceeds ~177: widen abrupt drifts that far out.
        wide = max(width, math.ceil(4 * position / 700))
        stream = synth.ConceptDriftStream(
            stream, following, position=position, width=wide, seed=SEED + i
        )
    return stream


def river_frame(dataset: Any, rows: int) -> pl.DataFrame:
    """``rows`` samples of a river dataset: features (booleans as 0/1, categories as
    strings, integer keys as ``x0``...), then ``label``."""
    records = []
    for x, y in dataset.take(rows):
        record = {_column(k): _value(_column(k), v) for k, v in x.items()}
        record["label"] = int(y) if isinstance(y, bool) else y
        records.append(record)
    return pl.DataFrame(records)


def _column(key: Any) -> str:
    return f"x{key}" if isinstance(key, int) else str(key)


def _value(name: str, value: Any) -> Any:
    if name in CATEGORIES:
        return CATEGORIES[name](name, value)
    return int(value) if isinstance(value, bool) else value


def river_stream(build: Callable[[int], Any]) -> Callable[[int, Path], str | None]:
    def write(rows: int, path: Path) -> str | None:
        river_frame(build(rows), rows).write_csv(path)
        return None

    return write


def simulated_stream(drift: str) -> Callable[[int, Path], str | None]:
    def write(rows: int, path: Path) -> str | None:
        from ct_assets.simulate import SimulationSpec, simulate_frame, write_csv

        share = at(rows, 0.4) / rows
        spec = SimulationSpec(
            rows=rows,
            seed=7,
            drift=drift,  # type: ignore[arg-type]
            drift_at=share,
            period_rows=rows // 5,
        )
        write_csv(simulate_frame(spec), path)
        return "timestamp"

    return write


def _agrawal(rows: int) -> Any:
    from river.datasets import synth

    functions = (0, 2, 5)
    return drifting([synth.Agrawal(f, seed=11 + f) for f in functions], rows)


def _agrawal_stationary(rows: int) -> Any:
    from river.datasets import synth

    return synth.Agrawal(1, seed=21, perturbation=0.05)


def _sea(rows: int) -> Any:
    from river.datasets import synth

    return drifting([synth.SEA(variant=v, noise=0.1, seed=31 + v) for v in range(4)], rows)


def _hyperplane(rows: int) -> Any:
    from river.datasets import synth

    return synth.Hyperplane(
        seed=41, n_features=10, n_drift_features=5, mag_change=0.001, noise_percentage=0.05
    )


def _rbf(rows: int) -> Any:
    from river.datasets import synth

    return synth.RandomRBFDrift(
        seed_model=51, seed_sample=52, n_classes=3, n_features=10, change_speed=0.0001
    )


def _stagger(rows: int) -> Any:
    from river.datasets import synth

    return drifting([synth.STAGGER(f, seed=61 + f) for f in range(3)], rows)


def _led(rows: int) -> Any:
    from river.datasets import synth

    concepts = [
        synth.LEDDrift(
            seed=71 + d, noise_percentage=0.1, irrelevant_features=True, n_drift_features=d
        )
        for d in (1, 5)
    ]
    return drifting(concepts, rows, width=1000)


def _sine(rows: int) -> Any:
    from river.datasets import synth

    return drifting([synth.Sine(f, seed=81 + f) for f in (0, 1, 2)], rows)


def _mixed(rows: int) -> Any:
    from river.datasets import synth

    return drifting([synth.Mixed(f, seed=91 + i) for i, f in enumerate((0, 1, 0))], rows)


STREAMS = [
    StreamDef("agrawal", "Agrawal functions 0 -> 2 -> 5, abrupt", river_stream(_agrawal)),
    StreamDef("sea", "SEA variants 0 -> 1 -> 2 -> 3, 10% noise, abrupt", river_stream(_sea)),
    StreamDef("hyperplane", "rotating hyperplane, 5 of 10 features", river_stream(_hyperplane)),
    StreamDef("rbf", "RandomRBFDrift, 3 classes, moving centroids", river_stream(_rbf)),
    StreamDef("stagger", "STAGGER functions 0 -> 1 -> 2, abrupt", river_stream(_stagger)),
    StreamDef("led", "LEDDrift, 1 -> 5 drifted digits, 10 classes", river_stream(_led)),
    StreamDef("sine", "Sine: SINE1 -> reversed -> SINE2, abrupt", river_stream(_sine)),
    StreamDef("mixed", "Mixed functions 0 -> 1 -> 0, abrupt", river_stream(_mixed)),
    StreamDef("sim_sudden", "ct_assets simulate, sudden", simulated_stream("sudden")),
    StreamDef("sim_gradual", "ct_assets simulate, gradual", simulated_stream("gradual")),
    StreamDef("sim_recurring", "ct_assets simulate, recurring", simulated_stream("recurring")),
    StreamDef(
        "stationary", "Agrawal function 1, 5% noise, no drift", river_stream(_agrawal_stationary)
    ),
]


def run_sensors(csv: Path, time_col: str | None, out: Path) -> dict[str, Any]:
    """(a) the real pipeline's sensors on the stream; ``error`` when it cannot replay it
    (e.g. the gate rejected the warm-up model, so there is no first champion)."""
    from ct_assets.backtest import BacktestError, BacktestSpec, run_backtest
    from ct_assets.settings import Settings

    spec = BacktestSpec(
        data=csv,
        target="label",
        out=out,
        time_col=time_col,
        batch_rows=BATCH_ROWS,
        warmup_rows=WARMUP_ROWS,
    )
    try:
        report = run_backtest(spec, Settings.from_env(), dict(os.environ))
    except BacktestError as error:
        return {"error": str(error)}
    keep = ("accuracy", "static_accuracy", "retrains", "promotions", "rejections")
    return {
        **{k: report[k] for k in keep},
        "failed_runs": report["failed_runs"],
        "rows_scored": report["rows_scored"],
        "triggers": report["triggers"],
        "wall_seconds": report["wall_seconds"],
        "timeline": report["timeline"],
    }


def run_fixed(data: Prepared) -> dict[str, Any]:
    """(b) and (c): the fixed-period grid and the never-retrained model, bare LightGBM."""
    started = time.perf_counter()
    grid = fixed_period_grid(data, PERIODS, WINDOWS, warmup_rows=WARMUP_ROWS, batch_rows=BATCH_ROWS)
    cells = [
        {"period": p, "window": w or "all", "accuracy": r.accuracy, "retrains": r.retrains}
        for (p, w), r in grid.items()
    ]
    best = max(cells, key=lambda c: (c["accuracy"], -c["retrains"]))
    static = replay(data, never, warmup_rows=WARMUP_ROWS, batch_rows=BATCH_ROWS)
    return {
        "grid": cells,
        "best": best,
        "never": {"accuracy": static.accuracy, "rows_scored": static.rows_scored},
        "seconds": time.perf_counter() - started,
    }


def online_rows(frame: pl.DataFrame, time_col: str | None) -> Iterator[tuple[dict[str, Any], Any]]:
    features = frame.drop(["label", *([time_col] if time_col else [])])
    yield from zip(features.iter_rows(named=True), frame["label"].to_list(), strict=True)


def run_online(
    frame: pl.DataFrame, time_col: str | None, make: Callable[[], Any]
) -> dict[str, Any]:
    """(d) a river model: learns the warm-up, then predicts each batch before learning it."""
    started = time.perf_counter()
    model = make()
    rows = list(online_rows(frame, time_col))
    for x, y in rows[:WARMUP_ROWS]:
        model.learn_one(x, y)
    hits = 0
    for start in range(WARMUP_ROWS, len(rows), BATCH_ROWS):
        batch = rows[start : start + BATCH_ROWS]
        hits += sum(model.predict_one(x) == y for x, y in batch)
        for x, y in batch:
            model.learn_one(x, y)
    scored = len(rows) - WARMUP_ROWS
    return {"accuracy": hits / scored, "seconds": time.perf_counter() - started}


def arf() -> Any:
    from river import forest

    return forest.ARFClassifier(seed=SEED)


def hat() -> Any:
    from river import tree

    return tree.HoeffdingAdaptiveTreeClassifier(seed=SEED)


def measure(stream: StreamDef, rows: int, work: Path, reports: Path | None) -> dict[str, Any]:
    """Every policy on one stream; ``reports``: where the backtest writes (None: skip it)."""
    csv = work / f"{stream.name}.csv"
    time_col = stream.write(rows, csv)
    frame = pl.read_csv(csv, infer_schema_length=10_000)
    data = prepare(frame, "label", drop=[time_col] if time_col else [])
    result: dict[str, Any] = {
        "description": stream.description,
        "rows": frame.height,
        "features": [c for c in frame.columns if c not in ("label", time_col)],
        "classes": frame["label"].n_unique(),
        "fixed": run_fixed(data),
        "arf": run_online(frame, time_col, arf),
        "hat": run_online(frame, time_col, hat),
    }
    if reports is not None:
        result["sensors"] = run_sensors(csv, time_col, reports / "sensors" / stream.name)
    return result


HEADER = (
    "stream",
    "sensors (retrains, drift)",
    "best fixed period (N, W, retrains)",
    "never retrained",
    "ARF",
    "HAT",
)


def table_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for name, r in results.items():
        best = r["fixed"]["best"]
        sensors = r.get("sensors")
        cell = "skipped"
        if sensors is not None and "error" in sensors:
            cell = "failed"
        elif sensors is not None:
            drift = sensors["triggers"].get("drift", 0)
            cell = f"{sensors['accuracy']:.3f} ({sensors['retrains']}, {drift})"
        rows.append(
            (
                name,
                cell,
                f"{best['accuracy']:.3f} ({best['period']}, {best['window']}, {best['retrains']})",
                f"{r['fixed']['never']['accuracy']:.3f}",
                f"{r['arf']['accuracy']:.3f}",
                f"{r['hat']['accuracy']:.3f}",
            )
        )
    return rows


def text_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    head = "  ".join(c.ljust(w) for c, w in zip(HEADER, widths, strict=True))
    return "\n".join([head, "-" * len(head), *lines])


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def best_within(fixed: dict[str, Any], retrains: int) -> float:
    """The best accuracy of the fixed-period cells (and the never-retrained model) that
    retrain at most ``retrains`` times."""
    cells = [c["accuracy"] for c in fixed["grid"] if c["retrains"] <= retrains]
    return max([fixed["never"]["accuracy"], *cells])


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Where the sensors reach the best fixed period with no more retrains; gaps to ARF."""
    ran = {name: r for name, r in results.items() if "accuracy" in r.get("sensors", {})}
    reach = [
        name
        for name, r in ran.items()
        if r["sensors"]["accuracy"] >= r["fixed"]["best"]["accuracy"]
        and r["sensors"]["retrains"] <= r["fixed"]["best"]["retrains"]
    ]
    within_2 = [
        name
        for name, r in ran.items()
        if r["sensors"]["accuracy"] >= r["fixed"]["best"]["accuracy"] - 0.02
        and r["sensors"]["retrains"] <= r["fixed"]["best"]["retrains"]
    ]
    same_budget = [
        name
        for name, r in ran.items()
        if r["sensors"]["accuracy"] >= best_within(r["fixed"], r["sensors"]["retrains"])
    ]
    gaps = [r["sensors"]["accuracy"] - r["arf"]["accuracy"] for r in ran.values()]
    fixed_gaps = [r["fixed"]["best"]["accuracy"] - r["arf"]["accuracy"] for r in results.values()]
    return {
        "streams": len(results),
        "sensor_streams": len(ran),
        "sensors_failed": [n for n, r in results.items() if "error" in r.get("sensors", {})],
        "sensors_reach_best_fixed": reach,
        "sensors_within_2_points_of_best_fixed": within_2,
        "sensors_reach_best_fixed_with_no_more_retrains_than_them": same_budget,
        "mean_gap_sensors_minus_arf": sum(gaps) / len(gaps) if gaps else None,
        "mean_gap_best_fixed_minus_arf": sum(fixed_gaps) / len(fixed_gaps),
    }


def summary_line(s: dict[str, Any]) -> str:
    fixed = (
        f"best fixed period minus ARF: {s['mean_gap_best_fixed_minus_arf'] * 100:+.1f} points "
        f"over all {s['streams']} streams"
    )
    failed = (
        f"; the sensors failed on {', '.join(s['sensors_failed'])}" if s["sensors_failed"] else ""
    )
    if not s["sensor_streams"]:
        return f"sensors skipped; mean gap, {fixed}{failed}"
    return (
        f"sensors reach the best fixed period's accuracy with no more retrains on "
        f"{len(s['sensors_reach_best_fixed'])} of {s['sensor_streams']} streams "
        f"({len(s['sensors_within_2_points_of_best_fixed'])} within 2 points), and the best "
        f"cell retraining no more often than they do on "
        f"{len(s['sensors_reach_best_fixed_with_no_more_retrains_than_them'])}; mean gap, "
        f"sensors minus ARF: {s['mean_gap_sensors_minus_arf'] * 100:+.1f} points over those "
        f"{s['sensor_streams']}, {fixed}{failed}"
    )


def rewrite_readme(table: str, line: str, rows: int) -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = f"{BEGIN}\n{rows:,} rows per stream, accuracy on the rows after the warm-up:\n\n"
    README.write_text(f"{head}{body}{table}\n\n{line}.\n{END}{tail}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument(
        "--streams", help="comma-separated subset of: " + ", ".join(s.name for s in STREAMS)
    )
    parser.add_argument("--skip-sensors", action="store_true", help="baselines only")
    parser.add_argument("--out", type=Path, help="write results.json (every number) here")
    parser.add_argument("--readme", action="store_true", help="rewrite the table in README.md")
    parser.add_argument(
        "--from-json",
        type=Path,
        action="append",
        help="measure nothing: tabulate results.json files of earlier runs (repeatable; "
        "a stream measured with sensors wins over one without)",
    )
    args = parser.parse_args()
    if args.rows <= WARMUP_ROWS + BATCH_ROWS:
        parser.error(f"--rows must be more than {WARMUP_ROWS + BATCH_ROWS}")
    known = {s.name for s in STREAMS}
    chosen = args.streams.split(",") if args.streams else [s.name for s in STREAMS]
    unknown = sorted(set(chosen) - known)
    if unknown:
        parser.error(f"unknown streams {unknown}; known: {sorted(known)}")
    args.chosen = chosen
    return args


def load_results(paths: list[Path], chosen: list[str]) -> tuple[int, dict[str, dict[str, Any]]]:
    """Streams of earlier runs' results.json, in this benchmark's order; and their rows."""
    found: dict[str, dict[str, Any]] = {}
    rows = set()
    for path in paths:
        payload = json.loads(path.read_text())
        rows.add(payload["rows"])
        for name, result in payload["streams"].items():
            if name not in found or "sensors" in result:
                found[name] = result
    if len(rows) != 1:
        raise SystemExit(f"the results were measured on different --rows: {sorted(rows)}")
    ordered = {s.name: found[s.name] for s in STREAMS if s.name in found and s.name in chosen}
    return rows.pop(), ordered


def measure_all(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ct-bench-drift-") as tmp:
        reports = None if args.skip_sensors else (args.out or Path(tmp))
        for stream in (s for s in STREAMS if s.name in args.chosen):
            started = time.perf_counter()
            results[stream.name] = measure(stream, args.rows, Path(tmp), reports)
            print(f"  {stream.name}: {time.perf_counter() - started:.0f} s", flush=True)
    return results


def main() -> int:
    args = parse_args()
    if args.from_json:
        args.rows, results = load_results(args.from_json, args.chosen)
    else:
        results = measure_all(args)
    rows = table_rows(results)
    table, stats = text_table(rows), summary(results)
    print(table)
    print(summary_line(stats))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"rows": args.rows, "warmup_rows": WARMUP_ROWS, "batch_rows": BATCH_ROWS}
        payload |= {"periods": PERIODS, "windows": WINDOWS, "streams": results, "summary": stats}
        (args.out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    if args.readme:
        rewrite_readme(markdown_table(rows), summary_line(stats), args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
