"""The ``ct-assets`` command. Thin: parses arguments and calls the modules that do the work."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from ct_assets.settings import Settings, SettingsError

INGEST_CHUNK = 5000


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.simulate import (
        SimulationSpec,
        simulate_events,
        simulate_frame,
        write_csv,
        write_ndjson,
    )

    try:
        spec = SimulationSpec(
            rows=args.rows,
            seed=args.seed,
            drift=args.drift,
            drift_at=args.drift_at,
            kind=args.kind,
            drift_width=args.drift_width,
            period_rows=args.period_rows,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "csv":
        count = write_csv(simulate_frame(spec), Path(args.out))
        print(f"wrote {count} labeled rows to {args.out}")
        return 0
    count = write_ndjson(simulate_events(spec), Path(args.out))
    print(f"wrote {count} events to {args.out}")
    return 0


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from ct_assets.eventlog import EventLog
    from ct_assets.eventlog.files import UnsupportedFileError, load_events, location_of
    from ct_assets.schema import EventValidationError

    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    try:
        events = load_events(path, args.kind, timedelta(seconds=settings.max_future_skew_seconds))
    except UnsupportedFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EventValidationError as exc:
        where = location_of(path)
        print(
            f"error: {path}: {len(exc.errors)} invalid record(s); nothing was ingested",
            file=sys.stderr,
        )
        for error in exc.errors[:20]:
            print(
                f"  line {where.line(error.index)}: field {error.field!r}: {error.message} "
                f"[{error.reason}]",
                file=sys.stderr,
            )
        if len(exc.errors) > 20:
            print(f"  ... and {len(exc.errors) - 20} more", file=sys.stderr)
        return 2
    log = EventLog.from_settings(settings)
    accepted = duplicates = 0
    with tqdm(total=len(events), unit="ev", desc=f"ingest {path.name}", disable=args.quiet) as bar:
        for start in range(0, len(events), INGEST_CHUNK):
            chunk = events[start : start + INGEST_CHUNK]
            result = log.append(chunk)
            accepted += result.accepted
            duplicates += result.duplicates
            bar.update(len(chunk))
    print(f"{path}: {accepted} accepted, {duplicates} duplicates")
    return 0


def _cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.api.server import ServerConfigError, serve

    if args.max_body_bytes is not None:
        settings = replace(settings, api_max_body_bytes=args.max_body_bytes)
    try:
        settings.validate()
        print(
            f"ct-assets api on http://{args.host}:{args.port} ({args.workers} worker(s)), "
            f"event log {settings.eventlog_dir}",
            flush=True,
        )
        serve(settings, args.host, args.port, args.workers, args.insecure_no_auth)
    except (ServerConfigError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.eventlog import EventLog

    count = EventLog.from_settings(settings).export(args.kind, Path(args.out))
    print(f"wrote {count} {args.kind} events to {args.out}")
    return 0


def _cmd_stream_consume(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from ct_assets.eventstream import StreamUnavailableError
    from ct_assets.eventstream.consumer import run_consumer

    if settings.event_store == "embedded":
        print("error: CT_EVENT_STORE=embedded: there is no stream to consume", file=sys.stderr)
        return 2
    try:
        stats = asyncio.run(
            run_consumer(
                settings, consumer=args.durable, batch=args.batch, until_idle=args.until_idle
            )
        )
    except StreamUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"stored {stats.stored} events ({stats.duplicates} duplicates, {stats.rejected} "
        f"rejected) in {stats.commits} commits to {settings.eventlog_dir}"
    )
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.status import collect_status, render_status

    status = collect_status(settings)
    print(json.dumps(status, indent=2, default=str) if args.json else render_status(status))
    return 0


def _cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from ct_assets.registry import Registry, RollbackError

    registry = Registry.from_settings(settings)
    try:
        record = registry.rollback(
            args.to, by=args.by or getpass.getuser(), reason=args.reason or "manual rollback"
        )
    except RollbackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(record.to_json())
    else:
        print(
            f"champion {registry.model_name}: v{record.previous} -> v{record.version} "
            f"(by {record.by} at {record.at}: {record.reason})"
        )
    return 0


def _cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from ct_assets.registry import Registry, check_deployment

    try:
        wanted = check_deployment(args.mode, args.fraction)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    registry = Registry.from_settings(settings)
    record = registry.set_deployment(wanted, by=args.by or getpass.getuser(), reason=args.reason)
    print(
        f"deployment of {registry.model_name}: {wanted.mode}"
        + (f" (fraction {wanted.fraction:g})" if wanted.mode in ("canary", "ab") else "")
        + f"; {record.reason}"
    )
    return 0


def _cmd_reproduce(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.pipeline.reproduce import ReproduceError, reproduce
    from ct_assets.registry import Registry
    from ct_assets.storage import store_from_settings

    try:
        result = reproduce(
            Registry.from_settings(settings),
            args.version,
            settings.datasets_dir,
            store_from_settings(settings),
        )
    except ReproduceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        verdict = "identical" if result.identical else "DIFFERENT"
        print(
            f"v{result.version} retrained from dataset {result.dataset_version} "
            f"({result.mode}): predictions on {result.holdout_rows} holdout rows are "
            f"{verdict} (max |difference| {result.max_abs_difference:.3g})"
        )
        for note in result.notes:
            print(f"  - {note}")
    return 0 if result.identical else 1


def _cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    import polars as pl

    from ct_assets.calibration import CalibrationError, CalibrationSpec, calibrate
    from ct_assets.monitoring.canary import CanaryConfig
    from ct_assets.registry import CHAMPION, Registry
    from ct_assets.training.evaluation import gate_config
    from ct_assets.training.train import TrainParams

    champion = Registry.from_settings(settings).alias(CHAMPION)
    if champion is None or not champion.dataset_version:
        print("error: no champion to calibrate on: train one first (make demo)", file=sys.stderr)
        return 1
    from ct_assets.data.dataset_objects import dataset_file
    from ct_assets.storage import store_from_settings

    store = store_from_settings(settings)
    path = dataset_file(store, settings.datasets_dir, champion.dataset_version)
    if not path.exists():
        print(f"error: the champion's dataset {path} is missing", file=sys.stderr)
        return 1
    spec = CalibrationSpec(
        runs=args.runs,
        seed=args.seed,
        gate=replace(gate_config(settings), seed=args.seed),
        params=TrainParams(
            num_boost_round=settings.num_boost_round,
            learning_rate=settings.learning_rate,
            num_leaves=settings.num_leaves,
            seed=settings.seed,
            early_stopping_min_rows=settings.early_stopping_min_rows,
            balance_classes=settings.balance_classes,
        ),
        canary=CanaryConfig(
            min_samples=settings.canary_min_samples,
            margin=settings.canary_margin,
            alpha=settings.canary_alpha,
        ),
    )

    def progress(done: int, total: int) -> None:
        filled = 30 * done // total
        end = "\n" if done == total else ""
        print(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} runs",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    try:
        result = calibrate(pl.read_parquet(path), spec, progress)
    except CalibrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["champion_version"] = champion.version
    result["dataset_version"] = champion.dataset_version
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(calibration_text(result, args.runs))
    return 0


def calibration_text(result: dict[str, Any], runs: int) -> str:
    gate, canary = result["gate"], result["canary"]
    worse, forgot = gate["false_promotion"], gate["forgetting_caught"]
    return "\n".join(
        [
            f"gate (tolerance {gate['tolerance']:g}, {gate['confidence']:.0%} intervals, "
            f"{gate['holdout_rows']} holdout rows of v{result['champion_version']}'s dataset):",
            f"  equivalent candidate not promoted: {gate['false_rejection']['rate']:.1%}",
            f"  candidate {worse['auc_drop_measured']:.3f} AUC worse promoted: {worse['rate']:.1%}",
            f"  {forgot['auc_drop_searched']:.3f} AUC forgotten on {forgot['slice']} caught: "
            f"{forgot['rate']:.1%}",
            f"canary (margin {canary['margin']:g}, alpha {canary['alpha']:g}, fraction "
            f"{canary['fraction']:g}, champion accuracy {canary['champion_accuracy']:.3f}):",
            f"  equivalent challenger rolled back: {canary['false_rollback']['rate']:.1%}",
            f"  challenger {canary['margin']:g} worse promoted: "
            f"{canary['false_promotion']['rate']:.1%}",
            f"  median labeled requests to a decision: {canary['median_samples']:.0f}",
            f"each over {runs} runs",
        ]
    )


def _cmd_lineage(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.lineage import (
        LineageNotFoundError,
        event_lineage,
        render_event_lineage,
        render_version_lineage,
        version_lineage,
    )
    from ct_assets.registry import Registry

    registry = Registry.existing(settings)
    try:
        if args.version is not None:
            lineage = version_lineage(settings, registry, args.version)
            text = render_version_lineage(lineage)
        else:
            lineage = event_lineage(settings, registry, args.event)
            text = render_event_lineage(lineage)
    except LineageNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(lineage, indent=2, default=str) if args.json else text)
    return 0


def _cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from ct_assets.registry import Registry
    from ct_assets.retention import run_gc

    registry = Registry.existing(settings)
    if registry is None:
        out: dict[str, Any] = {"kept": [], "deleted": [], "dry_run": args.dry_run}
        print(json.dumps(out) if args.json else "nothing registered: nothing to collect")
        return 0
    plan = run_gc(settings, registry, dry_run=args.dry_run, by=getpass.getuser())
    if args.json:
        print(json.dumps(plan.as_json(args.dry_run), indent=2, default=str))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for item in plan.kept:
        print(f"keep   {item.what} {item.id}: {'; '.join(item.why)}")
    mark = "delete" if args.dry_run else "gone  "
    for item in plan.deleted:
        print(f"{mark} {item.what} {item.id}: {'; '.join(item.why)}")
    print(f"{verb} {len(plan.deleted)} object(s), kept {len(plan.kept)}")
    return 0


def _version_number(raw: str) -> str:
    from ct_assets.lineage import parse_version

    try:
        return parse_version(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from tqdm import tqdm

    from ct_assets.backtest import (
        BacktestError,
        BacktestSpec,
        batches,
        load_stream,
        run_backtest,
        summary_table,
    )

    spec = BacktestSpec(
        data=Path(args.data),
        target=args.target,
        out=Path(args.out),
        time_col=args.time_col,
        batch_rows=args.batch_rows,
        warmup_rows=args.warmup_rows,
        retrain_every=args.retrain_every,
    )
    try:
        total = sum(batch.height for _, batch in batches(load_stream(spec), spec))
        with tqdm(total=total, unit="row", desc="backtest", disable=args.quiet) as bar:
            report = run_backtest(spec, settings, dict(os.environ), progress=bar.update)
    except BacktestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(report))
    print(f"report: {spec.out / 'report.json'}; plot: {spec.out / 'accuracy.png'}")
    return 0


def _cmd_dagster_home(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.instance import prepare_dagster_home

    try:
        print(prepare_dagster_home(settings, args.storage))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.config_report import print_config

    return print_config(settings, as_json=args.json)


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.demo import run_demo

    return run_demo(settings)


def _cmd_cluster_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.cluster.demo import run_cluster_demo

    return run_cluster_demo(settings)


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ct-assets", description="Continuous training for production ML, on Dagster."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate", help="write simulated schema-v1 events as NDJSON, or a labeled CSV table"
    )
    sim.add_argument("--rows", type=int, default=10_000)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--drift",
        choices=["none", "sudden", "concept", "gradual", "recurring", "covariate"],
        default="concept",
        help="concept is the same as sudden",
    )
    sim.add_argument("--drift-at", type=float, default=0.5, help="share of rows before the drift")
    sim.add_argument(
        "--drift-width",
        type=float,
        default=0.2,
        help="gradual: share of rows over which the new concept takes over",
    )
    sim.add_argument(
        "--period-rows",
        type=int,
        default=None,
        help="recurring: rows per concept phase after the drift (default: rows // 4)",
    )
    sim.add_argument(
        "--kind",
        choices=["feedback", "predictions", "both"],
        default="feedback",
        help="events to write (ndjson only)",
    )
    sim.add_argument(
        "--format",
        choices=["ndjson", "csv"],
        default="ndjson",
        help="csv: one labeled row per interaction (features, label, timestamp, concept)",
    )
    sim.add_argument("--out", required=True)
    sim.set_defaults(func=_cmd_simulate)

    ing = sub.add_parser("ingest", help="validate a file (NDJSON, CSV, Parquet) and append it")
    ing.add_argument("file")
    ing.add_argument("--kind", choices=["feedback", "prediction"], default=None)
    ing.add_argument("--quiet", action="store_true", help="no progress bar")
    ing.set_defaults(func=_cmd_ingest)

    api = sub.add_parser("api", help="serve the ingestion API (feedback, predictions, metrics)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    api.add_argument(
        "--max-body-bytes", type=int, default=None, help="413 above this (CT_API_MAX_BODY_BYTES)"
    )
    api.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept requests without CT_API_TOKEN (loopback addresses only)",
    )
    api.set_defaults(func=_cmd_api)

    events = sub.add_parser("events", help="the event log")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    export = events_sub.add_parser("export", help="every durable event of a kind to Parquet")
    export.add_argument("--kind", choices=["feedback", "prediction"], required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(func=_cmd_export)

    consume = sub.add_parser(
        "stream-consume",
        help="materialize the event stream (CT_EVENT_STORE=nats) into the event log",
    )
    consume.add_argument("--batch", type=_positive, default=2000, help="messages per commit")
    consume.add_argument("--durable", default="ct-eventlog", help="the durable consumer's name")
    consume.add_argument(
        "--until-idle", action="store_true", help="exit once nothing is pending (else: SIGTERM)"
    )
    consume.set_defaults(func=_cmd_stream_consume)

    status = sub.add_parser("status", help="champion, challenger, last trigger and retrain")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)

    home = sub.add_parser("dagster-home", help="write $CT_HOME/dagster/dagster.yaml")
    home.add_argument(
        "--storage",
        choices=["sqlite", "postgres", "celery"],
        default=None,
        help="the instance template (default: CT_DAGSTER_INSTANCE, else sqlite)",
    )
    home.set_defaults(func=_cmd_dagster_home)

    rollback = sub.add_parser("rollback", help="move the champion alias back, audited")
    rollback.add_argument("--to", help="version to restore (default: the previous champion)")
    rollback.add_argument("--reason", default="", help="why, for the audit trail")
    rollback.add_argument("--by", default="", help="who (default: the current user)")
    rollback.add_argument("--json", action="store_true")
    rollback.set_defaults(func=_cmd_rollback)

    deploy = sub.add_parser("deploy", help="how the challenger meets live traffic")
    deploy.add_argument("--mode", required=True, help="shadow | canary | ab | off")
    deploy.add_argument("--fraction", type=float, default=None, help="canary / A/B share")
    deploy.add_argument("--reason", default="", help="why, for the audit trail")
    deploy.add_argument("--by", default="", help="who (default: the current user)")
    deploy.set_defaults(func=_cmd_deploy)

    backtest = sub.add_parser(
        "backtest", help="replay a labeled CSV stream through the real pipeline"
    )
    backtest.add_argument("--data", required=True, help="CSV with features and the target")
    backtest.add_argument("--target", required=True, help="the label column")
    backtest.add_argument("--time-col", default=None, help="event time (default: row order)")
    backtest.add_argument("--batch-rows", type=_positive, default=48)
    backtest.add_argument("--warmup-rows", type=_positive, default=2000)
    backtest.add_argument("--out", default="backtest", help="folder for report.json and plot")
    backtest.add_argument("--quiet", action="store_true", help="no progress bar")
    backtest.add_argument(
        "--retrain-every",
        type=_positive,
        default=None,
        help="a fixed-period policy instead of the sensors: full retrain every N rows",
    )
    backtest.set_defaults(func=_cmd_backtest)

    again = sub.add_parser(
        "reproduce", help="train a registered version again and compare its predictions"
    )
    again.add_argument("version")
    again.add_argument("--json", action="store_true")
    again.set_defaults(func=_cmd_reproduce)

    cal = sub.add_parser(
        "calibrate",
        help="measure the configured gate's and canary's error rates on the champion's data",
    )
    cal.add_argument("--runs", type=int, default=100, help="simulated candidates per case")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--json", action="store_true")
    cal.set_defaults(func=_cmd_calibrate)

    config = sub.add_parser(
        "config", help="the effective settings by section, each with where it came from"
    )
    config.add_argument("--json", action="store_true")
    config.set_defaults(func=_cmd_config)

    lineage = sub.add_parser(
        "lineage", help="model version <-> dataset <-> partitions and events, both ways"
    )
    target = lineage.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--version",
        type=_version_number,
        help="a registered model version (3 or v3): its dataset, partitions and events",
    )
    target.add_argument(
        "--event",
        help="an event id (feedback or prediction): its log entry, curation, datasets, models",
    )
    lineage.add_argument("--json", action="store_true")
    lineage.set_defaults(func=_cmd_lineage)

    gc = sub.add_parser(
        "gc", help="retention: delete old versions, datasets, reports nothing kept needs"
    )
    gc.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    gc.add_argument("--json", action="store_true")
    gc.set_defaults(func=_cmd_gc)

    demo = sub.add_parser("demo", help="the closed loop on simulated drifting feedback")
    demo.set_defaults(func=_cmd_demo)

    cluster = sub.add_parser(
        "cluster-demo", help="the closed loop on the distributed profile, on this host"
    )
    cluster.set_defaults(func=_cmd_cluster_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result: Any = args.func(args, settings)
    return int(result)


if __name__ == "__main__":
    raise SystemExit(main())
