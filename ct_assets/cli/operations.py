"""Commands that run or look after the installation: gc, config, dagster-home, demo,
cluster-demo."""

from __future__ import annotations

import argparse
import json
import sys

from ct_assets.settings import Settings


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from ct_assets.registry import Registry
    from ct_assets.retention import run_gc

    registry = Registry.existing(settings)  # None: nothing registered, only old segments
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


def cmd_dagster_home(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.instance import prepare_dagster_home

    try:
        print(prepare_dagster_home(settings, args.storage))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.config_report import print_config

    return print_config(settings, as_json=args.json)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.demo import run_demo

    return run_demo(settings)


def cmd_cluster_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ct_assets.cluster.demo import run_cluster_demo

    return run_cluster_demo(settings)
