"""Commands about registered models: status, rollback, deploy, reproduce, lineage."""

from __future__ import annotations

import argparse
import json
import sys

from ct_assets.settings import Settings


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.status import collect_status, render_status

    status = collect_status(settings)
    print(json.dumps(status, indent=2, default=str) if args.json else render_status(status))
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_reproduce(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_lineage(args: argparse.Namespace, settings: Settings) -> int:
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
