"""The ``ct-assets`` command. Thin: parses arguments and calls the modules that do the work.

``parser.py`` declares every subcommand and its arguments; the commands themselves live
by what they touch: ``events.py`` (simulate, ingest, api, events export, stream-consume),
``models.py`` (status, deploy, rollback, reproduce, lineage), ``experiments.py``
(backtest, calibrate) and ``operations.py`` (gc, config, dagster-home, demo, cluster-demo).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from ct_assets.cli.experiments import calibration_text
from ct_assets.cli.parser import build_parser
from ct_assets.settings import Settings, SettingsError

__all__ = ["build_parser", "calibration_text", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result: Any = args.func(args, settings)
    return int(result)
