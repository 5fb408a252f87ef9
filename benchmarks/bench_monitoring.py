"""The monitoring assets (feedback_aggregates, feedback_loop_latency, feedback_bias_report)
against the dataset compilation of the same data, in one process.

The per-date tables are those of ``bench_compile_dataset.generate`` (10M logged
predictions, 5M validated feedback events, 20 features), written into a CT_HOME's
``tables/`` folder. The bias report also reads ``attributed_examples``; they are made from
the same tables by the pipeline's own ``attribute_feedback``, date by date. Then, timed:

1. ``compile_from_tables`` over every date (what bench_compile_dataset measures);
2. the plain functions: ``feedback_aggregates``, ``event_latency`` over the compiled
   dataset, ``feedback_bias`` with that dataset as the training reference;
3. the three assets materialized through Dagster (an ephemeral instance, the project's
   resources, a real MLflow registry in which the compiled dataset's version is the
   promoted champion), one ``materialize`` each: the functions plus what the assets add
   (registry reads, the plot, exports, metadata).

4. one more date arrives (a day of predictions and its feedback, generated with the rest
   and held back until now) and ``feedback_aggregates`` is materialized again: its figures
   are kept per date, so only the new date and the dates its feedback answers are computed.

Prints seconds and peak RSS of each phase (the peak is reset between phases), the ratio
of the assets' total to the compilation (the issue's target: under 2x), and the ratio of
the second ``feedback_aggregates`` run to the first (cost follows new data: near
1 / the number of dates, plus reading every date's small figures file).
Usage: python benchmarks/bench_monitoring.py [--predictions N] [--feedback N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_compile_dataset import generate

TARGET_RATIO = 2.0
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS count of this process (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(name: str, action: Callable[[], Any], results: dict[str, tuple[float, float]]) -> Any:
    reset_peak_rss()
    started = time.perf_counter()
    value = action()
    results[name] = (time.perf_counter() - started, peak_rss_mb())
    seconds, peak = results[name]
    print(f"  {name:<34} {seconds:7.1f} s, peak {peak:,.0f} MB", flush=True)
    return value


def attribute_tables(tables: Path) -> int:
    """``attributed_examples`` of every date, by the pipeline's attribution."""
    import polars as pl

    from ct_assets import keys
    from ct_assets.data.attribution import LabelPolicy, attribute_feedback
    from ct_assets.data.tables import TableStore

    store = TableStore(tables)
    policy = LabelPolicy()
    rows = 0
    for day in store.days(keys.VALIDATED_FEEDBACK):
        feedback = pl.read_parquet(store.path(keys.VALIDATED_FEEDBACK, day))
        accepted = feedback.filter(pl.col("status") == "accepted")
        predictions = pl.read_parquet(store.path(keys.RAW_PREDICTIONS, day))
        examples = attribute_feedback(accepted, predictions, policy)
        store.write(keys.ATTRIBUTED_EXAMPLES, day, examples)
        rows += examples.height
    return rows


def hold_back_last_date(tables: Path, later: Path) -> list[Path]:
    """Move the newest date's tables out of ``tables`` (to arrive after the first runs)."""
    last = max(p.name for p in (tables / "raw_predictions").glob("date=*.parquet"))
    moved = []
    for table in ("raw_predictions", "validated_feedback"):
        (later / table).mkdir(parents=True)
        moved.append(Path(shutil.move(tables / table / last, later / table / last)))
    return moved


def compile_dataset(tables: Path, datasets: Path, memory_mb: int) -> Any:
    from ct_assets import keys
    from ct_assets.data.attribution import LabelPolicy
    from ct_assets.data.compile import CompileSpec, compile_from_tables
    from ct_assets.data.windows import WindowSpec

    end = datetime(2100, 1, 1, tzinfo=UTC)
    spec = CompileSpec(WindowSpec(mode="all"), end, 2**62, 0.2, memory_mb)
    return compile_from_tables(
        sorted((tables / keys.VALIDATED_FEEDBACK).glob("*.parquet")),
        sorted((tables / keys.RAW_PREDICTIONS).glob("*.parquet")),
        LabelPolicy(),
        spec,
        datasets,
    )


def promote_dataset(settings: Any, dataset_version: str) -> str:
    """A registered version of the compiled dataset, promoted to champion (no model: the
    latency and bias figures read only its tags and dataset)."""
    from ct_assets.registry import (
        TAG_DAGSTER_RUN_ID,
        TAG_DATASET_VERSION,
        TAG_TRIGGER,
        Registry,
    )

    registry = Registry.from_settings(settings)
    registry.client.create_registered_model(settings.model_name)
    source = settings.home / "mlflow" / "no-model"
    source.mkdir(parents=True, exist_ok=True)
    version = registry.client.create_model_version(
        settings.model_name,
        source=source.as_uri(),
        tags={
            TAG_DATASET_VERSION: dataset_version,
            TAG_TRIGGER: "volume",
            TAG_DAGSTER_RUN_ID: "bench-run-without-record",
        },
    )
    registry.promote(str(version.version), reason="benchmark")
    return str(version.version)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=10_000_000)
    parser.add_argument("--feedback", type=int, default=None, help="default: half")
    args = parser.parse_args()
    n_feedback = args.feedback or args.predictions // 2

    import dagster as dg

    from ct_assets.data.attribution import LabelPolicy
    from ct_assets.data.tables import TableStore
    from ct_assets.defs.observability import build_monitoring_assets
    from ct_assets.defs.resources import resources_from_settings
    from ct_assets.monitoring.feedback import feedback_aggregates, feedback_bias
    from ct_assets.monitoring.latency import event_latency
    from ct_assets.settings import Settings

    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ct-bench-monitoring-") as tmp:
        settings = Settings().with_home(Path(tmp) / "ct")
        tables = settings.tables_dir
        tables.mkdir(parents=True)
        started = time.perf_counter()
        days = -(-args.predictions // 86_400)
        generate(tables, args.predictions + 86_400, n_feedback + n_feedback // days)
        held_back = hold_back_last_date(tables, Path(tmp) / "later")
        examples = attribute_tables(tables)
        print(
            f"generated {args.predictions:,} predictions, {n_feedback:,} feedback events "
            f"(and one date more, held back) and "
            f"{examples:,} attributed examples in {time.perf_counter() - started:.0f} s"
        )
        memory = settings.compile_memory_mb
        info = measure(
            "compile_from_tables",
            lambda: compile_dataset(tables, settings.datasets_dir, memory),
            results,
        )
        promote_dataset(settings, info.version)
        dataset = Path(info.path)
        store, policy = TableStore(tables), LabelPolicy()
        print("plain functions:")
        measure(
            "feedback_aggregates()", lambda: feedback_aggregates(store, policy, "", memory), results
        )
        measure("event_latency()", lambda: event_latency(dataset, datetime.now(UTC)), results)
        measure(
            "feedback_bias()",
            lambda: feedback_bias(store, policy, dataset, memory_limit_mb=memory),
            results,
        )
        print("assets (dg.materialize, one each):")
        resources = resources_from_settings(settings)
        with dg.instance_for_test() as instance:
            for asset in build_monitoring_assets(settings):
                name = asset.key.to_user_string()
                outcome = measure(
                    name,
                    lambda a=asset: dg.materialize(
                        [a], instance=instance, resources=resources, run_config=QUIET
                    ),
                    results,
                )
                assert outcome.success, name
            for source in held_back:
                shutil.move(source, tables / source.parent.name / source.name)
            aggregates = build_monitoring_assets(settings)[0]
            outcome = measure(
                "feedback_aggregates, one date more",
                lambda: dg.materialize(
                    [aggregates], instance=instance, resources=resources, run_config=QUIET
                ),
                results,
            )
            assert outcome.success
            computed = (
                outcome.asset_materializations_for_node(aggregates.op.name)[0]
                .metadata["days_computed"]
                .value
            )
    again = results.pop("feedback_aggregates, one date more")
    first_run = results["feedback_aggregates"]
    compile_seconds, compile_peak = results["compile_from_tables"]
    assets = [k for k in results if not k.endswith(")") and k != "compile_from_tables"]
    functions = [k for k in results if k.endswith(")")]
    asset_seconds = sum(results[k][0] for k in assets)
    function_seconds = sum(results[k][0] for k in functions)
    ratio = asset_seconds / compile_seconds
    print(f"compile            : {compile_seconds:7.1f} s, peak {compile_peak:,.0f} MB")
    print(
        f"plain functions    : {function_seconds:7.1f} s, "
        f"peak {max(results[k][1] for k in functions):,.0f} MB"
    )
    print(
        f"assets (3)         : {asset_seconds:7.1f} s, "
        f"peak {max(results[k][1] for k in assets):,.0f} MB"
    )
    print(
        f"ratio assets / compile {ratio:.2f} (target < {TARGET_RATIO:g}: "
        f"{'met' if ratio < TARGET_RATIO else 'NOT met'}); "
        f"plain functions / compile {function_seconds / compile_seconds:.2f}"
    )
    print(
        f"feedback_aggregates after one more date: {again[0]:.1f} s against {first_run[0]:.1f} s "
        f"for all {days} dates (ratio {again[0] / first_run[0]:.2f}; {computed} dates computed)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
