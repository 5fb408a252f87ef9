"""The house rules of ARCHITECTURE.md, checked on the source: plain rooms never import
Dagster; imports point downward (a room imports only the rooms below it); the retrain
triggers' decisions live in one package."""

from __future__ import annotations

import ast
from pathlib import Path

import ct_assets

ROOT = Path(ct_assets.__file__).resolve().parent

#: Entry points and the Dagster layer: they may import Dagster.
DAGSTER_ROOMS = {"defs", "definitions", "backtest", "demo", "status", "cli", "instance", "cluster"}
#: Each plain room and the rooms of ours it must never import (anything above it).
FORBIDDEN = {
    "schema": {"settings", "eventlog", "data", "training", "registry", "triggers", "defs"},
    "keys": {"settings", "eventlog", "data", "training", "registry", "triggers", "defs"},
    "eventlog": {"data", "training", "registry", "triggers", "monitoring", "defs", "api"},
    "data": {"training", "registry", "triggers", "monitoring", "defs", "api", "serving"},
    "training": {"registry", "triggers", "monitoring", "defs", "api", "serving", "lineage"},
    "triggers": {"defs", "api", "serving", "lineage", "status"},
    "monitoring": {"defs", "api", "lineage", "status"},
    "api": {"defs", "training", "triggers", "pipeline"},
    "eventstream": {"data", "training", "registry", "triggers", "monitoring", "defs", "api"},
    "pipeline": {"defs", "api", "cli", "demo", "backtest", "status"},
    "registry": {"defs", "pipeline", "triggers", "api", "serving"},
    "retention": {"defs", "api", "serving", "cli"},
    # the object-store seam: below everything that keeps objects
    "storage": {
        "eventlog",
        "data",
        "training",
        "registry",
        "triggers",
        "monitoring",
        "defs",
        "api",
        "serving",
        "pipeline",
        "lineage",
        "status",
    },
}


def modules() -> list[tuple[str, Path]]:
    """(room, path) of every module of the package; a room is the first path part."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        room = relative.parts[0].removesuffix(".py")
        found.append((room, path))
    return found


def imported(path: Path) -> set[str]:
    """Top-level names imported anywhere in the module (function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def ours(names: set[str]) -> set[str]:
    """The rooms of ct_assets among imported names."""
    return {n.split(".")[1] for n in names if n.startswith("ct_assets.") and n.count(".") >= 1}


def test_plain_rooms_never_import_dagster() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for room, path in modules()
        if room not in DAGSTER_ROOMS
        and any(n == "dagster" or n.startswith("dagster.") for n in imported(path))
    ]
    assert offenders == [], f"plain modules importing dagster: {offenders}"


def test_imports_point_downward() -> None:
    offenders = []
    for room, path in modules():
        for target in ours(imported(path)) & FORBIDDEN.get(room, set()):
            offenders.append(f"{path.relative_to(ROOT)} imports ct_assets.{target}")
    assert offenders == [], "\n".join(offenders)


def test_every_retrain_trigger_decides_in_one_package_and_is_wired_in_one_module() -> None:
    triggers = {p.stem for p in (ROOT / "triggers").glob("*.py")}
    triggers |= {p.parent.name for p in (ROOT / "triggers").glob("*/__init__.py")}
    assert {"volume", "drift", "performance", "change", "decay", "evidence"} <= triggers
    wiring = (ROOT / "defs" / "triggers.py").read_text()
    for name in ("volume_sensor", "drift_sensor", "performance_sensor", "retrain_schedule"):
        assert f"def build_{name}(" in wiring
    for room, path in modules():
        if room == "defs" and path.name != "triggers.py":
            text = path.read_text()
            assert "def build_volume_sensor" not in text and "def build_drift_sensor" not in text
