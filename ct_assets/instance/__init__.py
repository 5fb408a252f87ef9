"""The Dagster instance of a CT_HOME: its dagster.yaml, written from the project's templates."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from ct_assets.settings import PROJECT_ROOT, Settings

InstanceKind = Literal["sqlite", "postgres"]

TEMPLATES: dict[str, Path] = {
    "sqlite": PROJECT_ROOT / "dagster.yaml",
    "postgres": Path(__file__).with_name("dagster_postgres.yaml"),
}


def prepare_dagster_home(settings: Settings, kind: InstanceKind = "sqlite") -> Path:
    """Create ``$CT_HOME/dagster`` with the chosen ``dagster.yaml``; returns the directory.

    An existing dagster.yaml is left alone unless it came from another template,
    so a hand-edited instance config survives.
    """
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    template = TEMPLATES[kind]
    if not template.exists():
        raise FileNotFoundError(f"instance template {template} is missing")
    marker = home / ".ct-instance-kind"
    if not target.exists() or (marker.exists() and marker.read_text().strip() != kind):
        shutil.copyfile(template, target)
        marker.write_text(kind)
    elif not marker.exists():
        marker.write_text(kind)
    return home
