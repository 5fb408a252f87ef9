"""Every ``ct-assets`` subcommand, its arguments and the function that runs it."""

from __future__ import annotations

import argparse

from ct_assets.cli.events import cmd_api, cmd_export, cmd_ingest, cmd_simulate, cmd_stream_consume
from ct_assets.cli.experiments import cmd_backtest, cmd_calibrate
from ct_assets.cli.models import cmd_deploy, cmd_lineage, cmd_reproduce, cmd_rollback, cmd_status
from ct_assets.cli.operations import (
    cmd_cluster_demo,
    cmd_config,
    cmd_dagster_home,
    cmd_demo,
    cmd_gc,
)


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _version_number(raw: str) -> str:
    from ct_assets.lineage import parse_version

    try:
        return parse_version(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    sim.set_defaults(func=cmd_simulate)

    ing = sub.add_parser("ingest", help="validate a file (NDJSON, CSV, Parquet) and append it")
    ing.add_argument("file")
    ing.add_argument("--kind", choices=["feedback", "prediction"], default=None)
    ing.add_argument("--quiet", action="store_true", help="no progress bar")
    ing.set_defaults(func=cmd_ingest)

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
    api.set_defaults(func=cmd_api)

    events = sub.add_parser("events", help="the event log")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    export = events_sub.add_parser("export", help="every durable event of a kind to Parquet")
    export.add_argument("--kind", choices=["feedback", "prediction"], required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(func=cmd_export)

    consume = sub.add_parser(
        "stream-consume",
        help="materialize the event stream (CT_EVENT_STORE=nats) into the event log",
    )
    consume.add_argument("--batch", type=_positive, default=2000, help="messages per commit")
    consume.add_argument("--durable", default="ct-eventlog", help="the durable consumer's name")
    consume.add_argument(
        "--until-idle", action="store_true", help="exit once nothing is pending (else: SIGTERM)"
    )
    consume.set_defaults(func=cmd_stream_consume)

    status = sub.add_parser("status", help="champion, challenger, last trigger and retrain")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    home = sub.add_parser("dagster-home", help="write $CT_HOME/dagster/dagster.yaml")
    home.add_argument(
        "--storage",
        choices=["sqlite", "postgres", "celery"],
        default=None,
        help="the instance template (default: CT_DAGSTER_INSTANCE, else sqlite)",
    )
    home.set_defaults(func=cmd_dagster_home)

    rollback = sub.add_parser("rollback", help="move the champion alias back, audited")
    rollback.add_argument("--to", help="version to restore (default: the previous champion)")
    rollback.add_argument("--reason", default="", help="why, for the audit trail")
    rollback.add_argument("--by", default="", help="who (default: the current user)")
    rollback.add_argument("--json", action="store_true")
    rollback.set_defaults(func=cmd_rollback)

    deploy = sub.add_parser("deploy", help="how the challenger meets live traffic")
    deploy.add_argument("--mode", required=True, help="shadow | canary | ab | off")
    deploy.add_argument("--fraction", type=float, default=None, help="canary / A/B share")
    deploy.add_argument("--reason", default="", help="why, for the audit trail")
    deploy.add_argument("--by", default="", help="who (default: the current user)")
    deploy.set_defaults(func=cmd_deploy)

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
    backtest.set_defaults(func=cmd_backtest)

    again = sub.add_parser(
        "reproduce", help="train a registered version again and compare its predictions"
    )
    again.add_argument("version")
    again.add_argument("--json", action="store_true")
    again.set_defaults(func=cmd_reproduce)

    cal = sub.add_parser(
        "calibrate",
        help="measure the configured gate's and canary's error rates on the champion's data",
    )
    cal.add_argument("--runs", type=int, default=100, help="simulated candidates per case")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--json", action="store_true")
    cal.set_defaults(func=cmd_calibrate)

    config = sub.add_parser(
        "config", help="the effective settings by section, each with where it came from"
    )
    config.add_argument("--json", action="store_true")
    config.set_defaults(func=cmd_config)

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
    lineage.set_defaults(func=cmd_lineage)

    gc = sub.add_parser(
        "gc", help="retention: delete old versions, datasets, reports nothing kept needs"
    )
    gc.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    gc.add_argument("--json", action="store_true")
    gc.set_defaults(func=cmd_gc)

    demo = sub.add_parser("demo", help="the closed loop on simulated drifting feedback")
    demo.set_defaults(func=cmd_demo)

    cluster = sub.add_parser(
        "cluster-demo", help="the closed loop on the distributed profile, on this host"
    )
    cluster.set_defaults(func=cmd_cluster_demo)
    return parser
