"""One settings object for the whole project, each setting declared once.

Every path lives under ``CT_HOME`` (default ``.ct/`` in the project root). Values
come from defaults, overridden by ``CT_*`` environment variables; nothing reads
the environment at import time: call :meth:`Settings.from_env` where needed.

Each field of :class:`Settings` is declared by :func:`setting`: its default, its
environment variable, the parser of that variable's text, the check of its value, its
section (``drift``, ``gate``, ...) and whether it is a secret. ``from_env``, ``as_env``,
``validate``, :meth:`Settings.section` and ``ct-assets config`` are all derived from
these declarations (see :func:`declarations`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ct_assets.settings.declare import (
    DECLARATION_KEY,
    DEFAULT_HOME,
    PROJECT_ROOT,
    SECTIONS,
    Check,
    Declaration,
    SettingsError,
    TrainingMode,
    setting,
)
from ct_assets.settings.ingest import IngestSettings
from ct_assets.settings.judging import JudgingSettings
from ct_assets.settings.learning import LearningSettings
from ct_assets.settings.operations import OperationsSettings

__all__ = [
    "DEFAULT_HOME",
    "PROJECT_ROOT",
    "SECTIONS",
    "Check",
    "Declaration",
    "Settings",
    "SettingsError",
    "TrainingMode",
    "declaration",
    "declarations",
    "env_var",
    "names_set_in",
    "setting",
]


# The sections' fields, in the order of SECTIONS: a dataclass takes its bases' fields from
# the last base to the first.
@dataclass(frozen=True)
class Settings(OperationsSettings, JudgingSettings, LearningSettings, IngestSettings):
    @property
    def eventlog_dir(self) -> Path:
        return self.home / "eventlog"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def handoffs_dir(self) -> Path:
        """The retrain job's typed hand-offs between its assets (``<asset>.json``)."""
        return self.home / "handoffs"

    @property
    def drift_dir(self) -> Path:
        return self.home / "drift"

    @property
    def tables_dir(self) -> Path:
        return self.home / "tables"

    @property
    def monitoring_dir(self) -> Path:
        """Exports of the monitoring assets (e.g. feedback_loop_latency.json)."""
        return self.home / "monitoring"

    @property
    def metrics_dir(self) -> Path:
        """Prometheus textfiles (``*.prom``) the API appends to its ``/metrics``."""
        return self.home / "metrics"

    @property
    def loop_latency_path(self) -> Path:
        """feedback_loop_latency's export, which ``ct-assets status`` shows."""
        return self.monitoring_dir / "feedback_loop_latency.json"

    @property
    def loop_latency_metrics_path(self) -> Path:
        """feedback_loop_latency's Prometheus gauges, served by the API's ``/metrics``."""
        return self.metrics_dir / "feedback_loop_latency.prom"

    @property
    def bias_report_path(self) -> Path:
        return self.monitoring_dir / "feedback_bias_report.json"

    @property
    def api_scrape_path(self) -> Path:
        """pipeline_health's previous scrape of the API's metrics (for rates)."""
        return self.monitoring_dir / "api_metrics_last.json"

    @property
    def labeling_queue_path(self) -> Path:
        return self.tables_dir / "labeling_queue" / "latest.json"

    @property
    def reference_dir(self) -> Path:
        return self.home / "reference"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def tracking_uri(self) -> str:
        if self.tracking_uri_override:
            return self.tracking_uri_override
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by ``CT_*`` variables from ``environ`` (default ``os.environ``);
        :class:`SettingsError` naming the variable when one holds a value it cannot use."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for decl in declarations():
            raw = _raw(env, decl.env)
            if raw is None:
                continue
            try:
                values[decl.name] = decl.parse(raw)
            except ValueError as exc:
                shown = "***" if decl.secret else repr(raw)
                raise SettingsError(f"{decl.env}={shown}: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def with_home(self, home: Path) -> Settings:
        return replace(self, home=home.resolve())

    def validate(self) -> None:
        """Every declared check; :class:`SettingsError` naming the first variable that fails."""
        for decl in declarations():
            if decl.check is None:
                continue
            value = getattr(self, decl.name)
            problem = decl.check(value, self)
            if problem is not None:
                shown = "***" if decl.secret else repr(value)
                raise SettingsError(f"{decl.env} {problem}, got {shown}")

    def as_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        out: dict[str, str] = {}
        for decl in declarations():
            value = getattr(self, decl.name)
            if value is not None:
                out[decl.env] = str(value)
        out["DAGSTER_HOME"] = str(self.dagster_home)
        return out

    def section(self, name: str) -> Mapping[str, Any]:
        """The settings of one section (see :data:`SECTIONS`), read-only, by field name."""
        if name not in SECTIONS:
            raise KeyError(f"unknown settings section {name!r}; one of {', '.join(SECTIONS)}")
        return MappingProxyType(
            {d.name: getattr(self, d.name) for d in declarations() if d.section == name}
        )


def declarations() -> tuple[Declaration, ...]:
    """Every setting, in declaration order."""
    return _DECLARATIONS


def declaration(name: str) -> Declaration:
    """The declaration of the field ``name`` of :class:`Settings`."""
    for decl in _DECLARATIONS:
        if decl.name == name:
            return decl
    raise KeyError(f"no setting {name!r}")


def env_var(name: str) -> str:
    """The environment variable of the field ``name`` (``"drift_window"`` ->
    ``"CT_DRIFT_WINDOW"``)."""
    return declaration(name).env


def names_set_in(environ: Mapping[str, str]) -> frozenset[str]:
    """The fields whose variables ``environ`` sets (an empty value means unset)."""
    return frozenset(d.name for d in _DECLARATIONS if _raw(environ, d.env) is not None)


def _raw(environ: Mapping[str, str], var: str) -> str | None:
    raw = environ.get(var)
    if raw is None or not raw.strip():
        return None
    return raw


def _declarations() -> tuple[Declaration, ...]:
    out = []
    for f in fields(Settings):
        spec = f.metadata.get(DECLARATION_KEY)
        if spec is None:
            raise TypeError(f"Settings.{f.name} is not declared with setting()")
        out.append(Declaration(name=f.name, default=f.default, **spec))
    envs = [d.env for d in out]
    duplicates = {e for e in envs if envs.count(e) > 1}
    if duplicates:
        raise TypeError(f"environment variables declared twice: {sorted(duplicates)}")
    return tuple(out)


_DECLARATIONS = _declarations()
