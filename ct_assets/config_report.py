"""``ct-assets config``: the effective settings by section, each with where it came from.

Every setting declared in :mod:`ct_assets.settings` is listed once, under its section,
with its environment variable and its source: ``environment`` when that variable is set
(non-empty), else ``default``. There is no settings file. Secrets are never shown: the
API token is replaced by ``***`` and URIs have their credentials redacted
(:func:`ct_assets.uris.redact_uri`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ct_assets.settings import SECTIONS, Declaration, Settings, declarations, names_set_in
from ct_assets.uris import REDACTED, redact_uri

Source = Literal["default", "environment"]

#: ``{section: {setting: {"value", "source", "env"}}}``
ConfigReport = dict[str, dict[str, dict[str, Any]]]


def config_report(settings: Settings, environ: Mapping[str, str]) -> ConfigReport:
    """``settings`` (read from ``environ``) by section, each value shown as it may be
    printed, with its source and environment variable."""
    from_environment = names_set_in(environ)
    report: ConfigReport = {section: {} for section in SECTIONS}
    for decl in declarations():
        source: Source = "environment" if decl.name in from_environment else "default"
        report[decl.section][decl.name] = {
            "value": shown_value(decl, getattr(settings, decl.name)),
            "source": source,
            "env": decl.env,
        }
    return report


def shown_value(decl: Declaration, value: Any) -> Any:
    """``value`` as it may be printed: secrets redacted, paths as text."""
    if value is None or value == "":
        return value
    if decl.secret:
        return REDACTED
    if decl.uri:
        return redact_uri(str(value))
    if isinstance(value, Path):
        return str(value)
    return value


def render_text(report: ConfigReport) -> str:
    rows = [entry for section in report.values() for entry in section.values()]
    width = max((len(entry["env"]) for entry in rows), default=0)
    lines = ["settings: the environment over the defaults (no settings file)"]
    for section, entries in report.items():
        if not entries:
            continue
        lines.append("")
        lines.append(f"[{section}]")
        for entry in entries.values():
            env, source = entry["env"], entry["source"]
            lines.append(f"  {env:<{width}}  {source:<11}  {_text(entry['value'])}")
    return "\n".join(lines)


def print_config(
    settings: Settings, environ: Mapping[str, str] | None = None, as_json: bool = False
) -> int:
    """Print the report of ``settings`` (text, or JSON with ``as_json``); the exit code."""
    report = config_report(settings, os.environ if environ is None else environ)
    print(json.dumps(report, indent=2) if as_json else render_text(report))
    return 0


def _text(value: Any) -> str:
    if value is None:
        return "(unset)"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
