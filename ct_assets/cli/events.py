"""Commands that put events in or take them out: simulate, ingest, api, events export,
stream-consume."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from ct_assets.settings import Settings, SettingsError

INGEST_CHUNK = 5000


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.eventlog import EventLog

    count = EventLog.from_settings(settings).export(args.kind, Path(args.out))
    print(f"wrote {count} {args.kind} events to {args.out}")
    return 0


def cmd_stream_consume(args: argparse.Namespace, settings: Settings) -> int:
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
