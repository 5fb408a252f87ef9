"""The MLflow side of ct_assets: runs, registered versions, the ``champion``/``challenger`` aliases.

Everything goes through an explicit :class:`mlflow.MlflowClient` built from the
tracking URI; no global MLflow state is set. mlflow is imported inside methods so
loading the code location stays fast.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_assets.data.dataset import DatasetInfo
from ct_assets.settings import PROJECT_ROOT, Settings
from ct_assets.training.model import TrainedModel
from ct_assets.training.train import TrainResult

if TYPE_CHECKING:
    import polars as pl
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

SQLITE_PREFIX = "sqlite:///"
CHAMPION = "champion"
CHALLENGER = "challenger"

# Tags on every registered version (and its run): the lineage contract.
TAG_DATASET_VERSION = "ct.dataset_version"
TAG_DATASET_PATH = "ct.dataset_path"
TAG_LOG_POSITION = "ct.log_position"
TAG_DAGSTER_RUN_ID = "ct.dagster_run_id"
TAG_TRIGGER = "ct.trigger"
TAG_MODE = "ct.mode"
TAG_CODE_VERSION = "ct.code_version"
TAG_REPORT = "ct.validation_report"
TAG_DECISION = "ct.gate_decision"
TAG_PREVIOUS_CHAMPION = "ct.previous_champion"
TAG_PROMOTED_AT = "ct.promoted_at"
TAG_TRAIN_PARAMS = "ct.train_params"
TAG_INIT_VERSION = "ct.init_model_version"
TAG_NEW_AFTER_OFFSET = "ct.new_after_offset"
#: The change point the version's dataset window starts at (absent: the configured window).
TAG_WINDOW_START = "ct.window_start"
#: Which candidate window won the retrain, and every candidate's holdout figures (JSON).
TAG_CANDIDATE_WINDOW = "ct.candidate_window"
TAG_CANDIDATES = "ct.candidates"
#: The Launchpad run config fields a retrain was launched with (JSON; only those set).
TAG_RUN_CONFIG = "ct.run_config"
#: Incremental versions in a row ending with this one (0 for a full training).
TAG_INCREMENTAL_CHAIN = "ct.incremental_chain"
#: Set when the registered model was refit with the holdout: the artifact path of the
#: model the gate validated (trained without it).
TAG_VALIDATED_MODEL = "ct.validated_model"
VALIDATED_MODEL_PATH = "validated_model"
TAG_ENVIRONMENT = "ct.environment_digest"
#: Where the registered model was trained: local (one process) or dask (lightgbm.dask).
TAG_TRAINING_BACKEND = "ct.training_backend"
#: Where a version stands: candidate (registered, not yet judged by the gate), challenger
#: (passed the gate, meets live traffic), champion, retired (replaced by a newer champion),
#: rejected (by the gate), superseded (a challenger replaced by a newer one before its
#: canary ended) or rolled_back (replaced by an older champion, or a failed canary).
TAG_DEPLOYMENT_STATUS = "ct.deployment_status"
#: Registered-model tags ``ct.audit.<UTC time>`` hold the audit trail, one JSON record each.
AUDIT_PREFIX = "ct.audit."
#: Versions read per request by :meth:`Registry.versions`.
VERSIONS_PAGE = 1000


#: Registered-model tags holding how the challenger meets live traffic (``ct-assets deploy``).
TAG_DEPLOY_MODE = "ct.deployment.mode"
TAG_DEPLOY_FRACTION = "ct.deployment.fraction"
#: When the current deployment began meeting traffic (UTC, ISO 8601): set whenever the
#: mode/fraction changes or a new challenger gets the alias. The canary analysis compares
#: only outcomes of predictions served from then on, so both arms come from one period.
TAG_DEPLOY_STARTED = "ct.deployment.started_at"
DEPLOY_MODES = ("off", "shadow", "canary", "ab")


@dataclass(frozen=True)
class Deployment:
    """``off``: the gate promotes directly. ``shadow``: the challenger scores every request,
    the champion answers. ``canary``: ``fraction`` of the traffic (sticky per user) is
    served by the challenger. ``ab``: a fixed split of ``fraction`` for an experiment."""

    mode: str = "off"
    fraction: float = 0.0
    started_at: str = ""  # when this mode and challenger began meeting traffic; "" unknown

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"mode": self.mode, "fraction": self.fraction}
        if self.started_at:
            status["started_at"] = self.started_at
        return status


def check_deployment(mode: str, fraction: float | None) -> Deployment:
    """The deployment ``mode``/``fraction`` asks for, or a ValueError naming what is wrong."""
    if mode not in DEPLOY_MODES:
        raise ValueError(f"unknown deployment mode {mode!r}: use one of {', '.join(DEPLOY_MODES)}")
    if mode == "off":
        return Deployment("off", 0.0)
    if mode == "shadow":
        return Deployment("shadow", 1.0)
    value = fraction if fraction is not None else (0.1 if mode == "canary" else 0.5)
    if not 0.0 < value < 1.0:
        raise ValueError(f"--fraction for {mode} must be in (0, 1), got {value}")
    return Deployment(mode, value)


class RollbackError(RuntimeError):
    """A rollback that cannot be done (no champion, no previous one, unknown version)."""


@dataclass(frozen=True)
class AuditRecord:
    """One change of who serves: what, to which version, from which, who, why."""

    action: str  # promote | rollback | deploy | challenge (a new challenger)
    version: str
    previous: str | None
    by: str
    reason: str
    at: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AuditRecord:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class VersionInfo:
    version: str
    run_id: str
    dataset_version: str | None
    created_at: str
    tags: dict[str, str]

    def as_status(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "dataset_version": self.dataset_version,
            "run_id": self.run_id,
            "created_at": self.created_at,
        }


class ModelCache:
    """Loaded models by (tracking URI, run id, source), the ``size`` most recently used."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, str, str], TrainedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> TrainedModel | None:
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
            return model

    def put(self, key: tuple[str, str, str], model: TrainedModel) -> TrainedModel:
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


#: Models loaded from the registry in this process (champion, challenger, candidates).
LOADED_MODELS = ModelCache(size=8)


@functools.cache
def resolved_requirements() -> str:
    """Every installed distribution as ``name==version``, sorted: the environment a model
    was trained in (logged with it, and its digest tagged). Read from the ``.dist-info``
    folder names on ``sys.path`` (``name-version.dist-info``), without parsing metadata."""
    pins: set[str] = set()
    for entry in sys.path:
        folder = Path(entry or ".")
        if not folder.is_dir():
            continue
        for info in folder.glob("*.dist-info"):
            name, _, version = info.name.removesuffix(".dist-info").partition("-")
            if name and version:
                pins.add(f"{name}=={version}")
    return "\n".join(sorted(pins, key=str.lower)) + "\n"


def code_version() -> str:
    """The git sha of the project, or ``unknown`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


class Registry:
    def __init__(self, tracking_uri: str, model_name: str, artifact_root: str) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_root = artifact_root

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(settings.tracking_uri, settings.model_name, settings.artifact_root)

    @classmethod
    def existing(cls, settings: Settings) -> Registry | None:
        """The registry, or None when its SQLite store was never created (nothing was
        registered): a lookup must not create an empty store as a side effect."""
        uri = settings.tracking_uri
        if uri.startswith(SQLITE_PREFIX) and not Path(uri.removeprefix(SQLITE_PREFIX)).exists():
            return None
        return cls.from_settings(settings)

    @cached_property
    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        if self.tracking_uri.startswith(SQLITE_PREFIX):
            Path(self.tracking_uri.removeprefix(SQLITE_PREFIX)).parent.mkdir(
                parents=True, exist_ok=True
            )

        # downloads of our own small artifacts need no progress bar on the console
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.model_name)
        if experiment is not None:
            return str(experiment.experiment_id)
        # a tracking server places (and proxies) the artifacts itself: its
        # --artifacts-destination; a client-side location would bypass it
        served = self.tracking_uri.lower().startswith(("http://", "https://"))
        location = None if served else self.artifact_root
        return str(self.client.create_experiment(self.model_name, artifact_location=location))

    def log_candidate(
        self,
        result: TrainResult,
        dataset: DatasetInfo,
        tags: dict[str, str],
        example: pl.DataFrame,
        validated: TrainedModel | None = None,
    ) -> VersionInfo:
        """One MLflow run (params, metrics, dataset input, model), registered as ``challenger``.

        ``validated``: the model the gate is to judge when ``result`` is that model's recipe
        refit on more rows (kept as the run's ``validated_model`` artifact)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

        client = self.client
        run_tags = {
            "mlflow.runName": f"candidate-{dataset.version}",
            TAG_DATASET_VERSION: dataset.version,
            TAG_DATASET_PATH: dataset.path,
            TAG_LOG_POSITION: str(dataset.log_position),
            TAG_MODE: result.mode,
            TAG_TRAINING_BACKEND: result.backend,
            TAG_CODE_VERSION: code_version(),
            **({TAG_VALIDATED_MODEL: VALIDATED_MODEL_PATH} if validated is not None else {}),
            **tags,
        }
        run = client.create_run(self.experiment_id(), tags=run_tags)
        run_id = run.info.run_id
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        params = {k: str(v) for k, v in result.model.spec.params.items()}
        params.update(
            best_iteration=str(result.best_iteration),
            train_rows=str(result.train_rows),
            features=",".join(result.model.spec.feature_names)[:500],
        )
        metrics = [
            Metric(f"holdout_{k}", float(v), now_ms, 0)
            for k, v in result.holdout_metrics.items()
            if v == v
        ]
        metrics += [
            Metric(f"validation_{k}", float(v), now_ms, 0)
            for k, v in result.validation_metrics.items()
            if v == v
        ]
        metrics.append(Metric("train_seconds", result.seconds, now_ms, 0))
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in run_tags.items()],
        )
        remote = "://" in dataset.path  # kept on an object store (s3://...)
        client.log_inputs(
            run_id,
            datasets=[
                DatasetInput(
                    Dataset(
                        name=f"training_dataset-{dataset.version}",
                        digest=dataset.version,
                        source_type="s3" if remote else "local",
                        source=json.dumps(
                            {"uri": dataset.path if remote else Path(dataset.path).as_uri()}
                        ),
                        schema=json.dumps({"features": dataset.feature_names}),
                        profile=json.dumps(
                            {"rows": dataset.rows, "holdout_rows": dataset.holdout_rows}
                        ),
                    ),
                    tags=[InputTag("mlflow.data.context", "training")],
                )
            ],
        )
        requirements = resolved_requirements()
        digest = hashlib.sha256(requirements.encode()).hexdigest()[:16]
        run_tags[TAG_ENVIRONMENT] = digest
        client.set_tag(run_id, TAG_ENVIRONMENT, digest)
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = self._save_mlflow_model(result.model, example, Path(tmp) / "model")
            client.log_artifacts(run_id, str(model_dir), "model")
            if validated is not None:
                local = validated.save(Path(tmp) / VALIDATED_MODEL_PATH)
                client.log_artifacts(run_id, str(local), VALIDATED_MODEL_PATH)
            environment = Path(tmp) / "requirements.txt"
            environment.write_text(requirements)
            client.log_artifact(run_id, str(environment), "environment")
        client.set_terminated(run_id)
        self._ensure_registered_model()
        version = client.create_model_version(
            self.model_name,
            source=f"{run.info.artifact_uri}/model",
            run_id=run_id,
            tags={
                **{
                    k: v
                    for k, v in run_tags.items()
                    if k.startswith("ct.") and k != TAG_DATASET_PATH
                },
                TAG_DEPLOYMENT_STATUS: "candidate",
            },
        )
        return self._info(client.get_model_version(self.model_name, version.version))

    def _save_mlflow_model(self, model: TrainedModel, example: pl.DataFrame, path: Path) -> Path:
        import lightgbm
        import mlflow.lightgbm
        import pandas as pd
        from mlflow.models import infer_signature

        inputs = pd.DataFrame(model.spec.matrix(example), columns=model.spec.feature_names)
        signature = infer_signature(inputs, model.booster.predict(inputs.to_numpy()))
        mlflow.lightgbm.save_model(
            model.booster,
            str(path),
            signature=signature,
            input_example=inputs.head(3),
            pip_requirements=[f"lightgbm=={lightgbm.__version__}"],
        )
        (path / "ct_model").mkdir()
        model.save(path / "ct_model")
        return path

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(
                self.model_name,
                description="Continuously trained by ct_assets; aliases champion and challenger.",
            )

    def alias(self, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(self.model_name, alias))
        except MlflowException:
            return None

    def version(self, version: str) -> VersionInfo:
        return self._info(self.client.get_model_version(self.model_name, version))

    def versions(self) -> dict[str, VersionInfo]:
        """Every registered version of the model by number, read with one search (a page
        per :data:`VERSIONS_PAGE` versions) instead of one request per version."""
        found: dict[str, VersionInfo] = {}
        token: str | None = None
        while True:
            page = self.client.search_model_versions(
                f"name='{self.model_name}'", max_results=VERSIONS_PAGE, page_token=token
            )
            found.update((str(mv.version), self._info(mv)) for mv in page)
            token = page.token
            if not token:
                return found

    def promote(self, version: str, reason: str, by: str = "ct_assets") -> VersionInfo | None:
        """Move ``champion`` to ``version``, recording the previous one (returned) on it,
        both versions' deployment status and an audit record."""
        previous = self.alias(CHAMPION)
        client = self.client
        now = datetime.now(UTC).isoformat()
        client.set_model_version_tag(
            self.model_name, version, TAG_PREVIOUS_CHAMPION, previous.version if previous else ""
        )
        client.set_model_version_tag(self.model_name, version, TAG_PROMOTED_AT, now)
        client.set_model_version_tag(self.model_name, version, "ct.promotion_reason", reason)
        client.set_registered_model_alias(self.model_name, CHAMPION, version)
        challenger = self.alias(CHALLENGER)
        if challenger is not None and challenger.version == version:
            # the challenger became the champion: no challenger until the next candidate
            client.delete_registered_model_alias(self.model_name, CHALLENGER)
        self.set_version_tag(version, TAG_DEPLOYMENT_STATUS, "champion")
        if previous is not None and previous.version != version:
            self.set_version_tag(previous.version, TAG_DEPLOYMENT_STATUS, "retired")
        self.audit(
            AuditRecord("promote", version, previous.version if previous else None, by, reason, now)
        )
        return previous

    def rollback(self, to: str | None, by: str, reason: str) -> AuditRecord:
        """Move ``champion`` back to ``to`` (default: the version the current champion
        replaced). The displaced version is marked ``rolled_back``; the change is audited."""
        from mlflow.exceptions import MlflowException

        current = self.alias(CHAMPION)
        if current is None:
            raise RollbackError("there is no champion to roll back")
        target = to or current.tags.get(TAG_PREVIOUS_CHAMPION) or ""
        if not target:
            raise RollbackError(
                f"champion v{current.version} replaced no earlier champion; pass --to VERSION"
            )
        if target == current.version:
            raise RollbackError(f"v{target} is already the champion")
        try:
            self.version(target)
        except MlflowException as exc:
            raise RollbackError(f"{self.model_name} has no version {target!r}") from exc
        now = datetime.now(UTC).isoformat()
        self.client.set_registered_model_alias(self.model_name, CHAMPION, target)
        self.set_version_tag(target, TAG_DEPLOYMENT_STATUS, "champion")
        self.set_version_tag(target, "ct.restored_at", now)
        self.set_version_tag(current.version, TAG_DEPLOYMENT_STATUS, "rolled_back")
        record = AuditRecord("rollback", target, current.version, by, reason, now)
        self.audit(record)
        return record

    def deployment(self) -> Deployment:
        """The deployment mode stored on the registered model (``off`` when never set)."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.model_name).tags or {}
        except MlflowException:
            return Deployment()
        mode = tags.get(TAG_DEPLOY_MODE, "off")
        return Deployment(
            mode,
            float(tags.get(TAG_DEPLOY_FRACTION, "0") or 0),
            tags.get(TAG_DEPLOY_STARTED, ""),
        )

    def set_deployment(self, deployment: Deployment, by: str, reason: str) -> AuditRecord:
        """Store the deployment mode (visible to every API worker) and audit the change."""
        before = self.deployment()
        self._ensure_registered_model()
        self._mark_start()
        self.client.set_registered_model_tag(self.model_name, TAG_DEPLOY_MODE, deployment.mode)
        self.client.set_registered_model_tag(
            self.model_name, TAG_DEPLOY_FRACTION, str(deployment.fraction)
        )
        challenger = self.alias(CHALLENGER)
        record = AuditRecord(
            "deploy",
            challenger.version if challenger else "",
            None,
            by,
            f"{before.mode} {before.fraction:g} -> {deployment.mode} {deployment.fraction:g}"
            + (f": {reason}" if reason else ""),
            datetime.now(UTC).isoformat(),
        )
        self.audit(record)
        return record

    def set_challenger(self, version: str, mode: str, reason: str, by: str = "ct_assets") -> None:
        """Point ``challenger`` at ``version`` (a candidate that passed the gate) so it meets
        live traffic in ``mode``; a previous challenger still waiting is ``superseded``."""
        previous = self.alias(CHALLENGER)
        self._mark_start()
        self.client.set_registered_model_alias(self.model_name, CHALLENGER, version)
        self.set_version_tag(version, TAG_DEPLOYMENT_STATUS, f"challenger in {mode}")
        if previous is not None and previous.version != version:
            self.set_version_tag(previous.version, TAG_DEPLOYMENT_STATUS, "superseded")
        self.audit(
            AuditRecord(
                "challenge",
                version,
                previous.version if previous else None,
                by,
                reason,
                datetime.now(UTC).isoformat(),
            )
        )

    def _mark_start(self) -> None:
        """Record now as the start of the deployment (before the change it starts, so every
        prediction the new arrangement serves is at or after it)."""
        self.client.set_registered_model_tag(
            self.model_name, TAG_DEPLOY_STARTED, datetime.now(UTC).isoformat()
        )

    def audit(self, record: AuditRecord) -> None:
        stamp = datetime.fromisoformat(record.at).strftime("%Y%m%dT%H%M%S%fZ")
        self._ensure_registered_model()
        self.client.set_registered_model_tag(
            self.model_name, f"{AUDIT_PREFIX}{stamp}", record.to_json()
        )

    def audit_trail(self) -> list[AuditRecord]:
        """Every champion change, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.model_name).tags or {}
        except MlflowException:
            return []
        return [
            AuditRecord.from_json(tags[key])
            for key in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))
        ]

    def set_version_tag(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.model_name, version, key, value)

    def run_metric(self, run_id: str, name: str) -> float | None:
        """A metric of a version's run (e.g. ``holdout_accuracy`` logged by the gate)."""
        value = self.client.get_run(run_id).data.metrics.get(name)
        return None if value is None else float(value)

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Metrics computed after training (e.g. the gate's, on the holdout) on its run."""
        from mlflow.entities import Metric

        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        values = [Metric(k, float(v), now_ms, 0) for k, v in metrics.items() if v == v]
        if values:
            self.client.log_batch(run_id, metrics=values)

    def log_report(
        self, run_id: str, report: dict[str, Any], plots: dict[str, bytes] | None = None
    ) -> str:
        """The validation report (JSON) and its plots (PNG) as artifacts of the candidate's
        run under ``validation/``; returns the report's URI."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "validation"
            folder.mkdir()
            (folder / "validation_report.json").write_text(
                json.dumps(report, indent=2, sort_keys=True, default=str)
            )
            for name, png in (plots or {}).items():
                (folder / f"{name}.png").write_bytes(png)
            self.client.log_artifacts(run_id, str(folder), "validation")
        run = self.client.get_run(run_id)
        return f"{run.info.artifact_uri}/validation/validation_report.json"

    def load_model(self, version: str) -> TrainedModel:
        """The model of ``version``. Its files are written once, with its run: the loaded
        model is kept in process (:data:`LOADED_MODELS`), keyed by the run and the source
        the version resolves to now, so a version deleted and registered again is read
        anew. Callers must not change the model they get."""
        info = self.client.get_model_version(self.model_name, version)
        key = (self.tracking_uri, str(info.run_id), str(info.source))
        model = LOADED_MODELS.get(key)
        if model is None:
            with tempfile.TemporaryDirectory() as tmp:
                local = self.client.download_artifacts(str(info.run_id), "model/ct_model", tmp)
                model = LOADED_MODELS.put(key, TrainedModel.load(Path(local)))
        return model

    def load_validated_model(self, version: str) -> TrainedModel:
        """The model the gate judges for ``version``: the one trained without the holdout
        when the registered model was refit with it, else the registered model."""
        info = self.client.get_model_version(self.model_name, version)
        path = dict(info.tags or {}).get(TAG_VALIDATED_MODEL)
        if not path:
            return self.load_model(version)
        key = (self.tracking_uri, str(info.run_id), f"{info.source}#{path}")
        model = LOADED_MODELS.get(key)
        if model is None:
            with tempfile.TemporaryDirectory() as tmp:
                local = self.client.download_artifacts(str(info.run_id), path, tmp)
                model = LOADED_MODELS.put(key, TrainedModel.load(Path(local)))
        return model

    def _info(self, mv: ModelVersion) -> VersionInfo:
        tags = dict(mv.tags or {})
        created = datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, UTC).isoformat()
        return VersionInfo(
            version=str(mv.version),
            run_id=str(mv.run_id),
            dataset_version=tags.get(TAG_DATASET_VERSION),
            created_at=created,
            tags=tags,
        )
