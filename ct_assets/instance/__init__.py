"""The Dagster instance of a CT_HOME: its dagster.yaml, written from the project's templates,
and what it runs on (``ct-assets status --json`` ``backends``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast, get_args

from ct_assets.settings import PROJECT_ROOT, Settings
from ct_assets.uris import redact_uri

InstanceKind = Literal["sqlite", "postgres", "celery"]
INSTANCE_KINDS: tuple[str, ...] = get_args(InstanceKind)
# Which template prepare_dagster_home uses when the caller names none.
INSTANCE_ENV = "CT_DAGSTER_INSTANCE"

TEMPLATES: dict[str, Path] = {
    "sqlite": PROJECT_ROOT / "dagster.yaml",
    "postgres": Path(__file__).with_name("dagster_postgres.yaml"),
    "celery": Path(__file__).with_name("dagster_celery.yaml"),
}
# The Celery worker's config (dagster-celery worker start -y ...), beside its instance.
CELERY_WORKER_CONFIG = Path(__file__).with_name("celery_worker.yaml")


def instance_kind(environ: Mapping[str, str] | None = None) -> InstanceKind:
    """The instance kind ``CT_DAGSTER_INSTANCE`` names (``sqlite`` when unset)."""
    raw = (os.environ if environ is None else environ).get(INSTANCE_ENV, "").strip() or "sqlite"
    if raw not in INSTANCE_KINDS:
        raise ValueError(f"{INSTANCE_ENV}={raw!r}: expected one of {', '.join(INSTANCE_KINDS)}")
    return cast(InstanceKind, raw)


def prepare_dagster_home(settings: Settings, kind: InstanceKind | None = None) -> Path:
    """Create ``$CT_HOME/dagster`` with the chosen ``dagster.yaml``; returns the directory.

    ``kind`` None takes ``CT_DAGSTER_INSTANCE`` (default ``sqlite``). An existing
    dagster.yaml is left alone unless it came from another template, so a hand-edited
    instance config survives.
    """
    kind = instance_kind() if kind is None else kind
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


def _env_value(value: Any, environ: Mapping[str, str]) -> str | None:
    """A dagster.yaml string value, or the variable its ``{env: NAME}`` names."""
    if isinstance(value, dict) and "env" in value:
        return environ.get(str(value["env"]))
    return None if value is None else str(value)


def instance_backends(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Where the instance of ``settings.dagster_home`` keeps runs and how it launches
    them, read from its dagster.yaml without connecting to anything: ``instance``
    (``{"kind": "sqlite"|"postgres", "location": ...}``, URLs redacted) and
    ``run_launcher`` (the class name; Dagster's default without a dagster.yaml) and
    ``compute_logs`` (the compute log manager's class and, for one on S3, its
    ``s3://bucket/prefix``; Dagster's local default without a ``compute_logs`` block)."""
    import yaml  # type: ignore[import-untyped]

    environ = os.environ if environ is None else environ
    path = settings.dagster_home / "dagster.yaml"
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        config = {}
    if not isinstance(config, dict):
        config = {}
    storage = config.get("storage") or {}
    instance: dict[str, Any] = {"kind": "sqlite", "location": str(settings.dagster_home)}
    postgres = storage.get("postgres") if isinstance(storage, dict) else None
    if isinstance(postgres, dict):
        url = _env_value(postgres.get("postgres_url"), environ)
        if url is None and isinstance(postgres.get("postgres_db"), dict):
            db = postgres["postgres_db"]
            url = (
                f"postgresql://{_env_value(db.get('hostname'), environ)}"
                f"/{_env_value(db.get('db_name'), environ)}"
            )
        instance = {"kind": "postgres", "location": redact_uri(url) if url else None}
    launcher = config.get("run_launcher") or {}
    launcher_class = (
        str(launcher.get("class")) if isinstance(launcher, dict) and launcher.get("class") else None
    )
    return {
        "instance": instance,
        "run_launcher": launcher_class or "DefaultRunLauncher",
        "compute_logs": _compute_logs(config.get("compute_logs"), environ),
    }


def _compute_logs(block: Any, environ: Mapping[str, str]) -> str:
    """The compute log manager of a dagster.yaml ``compute_logs`` block, as people read it."""
    if not isinstance(block, dict) or not block.get("class"):
        return "LocalComputeLogManager"
    name = str(block["class"])
    found = block.get("config")
    config: dict[str, Any] = found if isinstance(found, dict) else {}
    bucket = _env_value(config.get("bucket"), environ)
    if bucket:
        prefix = _env_value(config.get("prefix"), environ) or ""
        return f"{name} s3://{bucket}/{prefix}".rstrip("/")
    return name
