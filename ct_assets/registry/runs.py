"""Logging a candidate: one MLflow run with its params, metrics, dataset input, model
(signature, input example, pinned environment), registered as a new version; and what the
gate adds to the run afterwards (metrics, the validation report)."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_assets.data.dataset import DatasetInfo
from ct_assets.registry.client import RegistryClient, VersionInfo
from ct_assets.registry.tags import (
    TAG_CODE_VERSION,
    TAG_DATASET_PATH,
    TAG_DATASET_VERSION,
    TAG_DEPLOYMENT_STATUS,
    TAG_ENVIRONMENT,
    TAG_LOG_POSITION,
    TAG_MODE,
    TAG_TRAINING_BACKEND,
    TAG_VALIDATED_MODEL,
    VALIDATED_MODEL_PATH,
)
from ct_assets.settings import PROJECT_ROOT
from ct_assets.training.model import TrainedModel
from ct_assets.training.train import TrainResult

if TYPE_CHECKING:
    import polars as pl


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


class CandidateRuns(RegistryClient):
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
