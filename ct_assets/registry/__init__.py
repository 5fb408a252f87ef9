"""The MLflow side of ct_assets: runs, registered versions, the ``champion``/``challenger`` aliases.

Everything goes through an explicit :class:`mlflow.MlflowClient` built from the
tracking URI; no global MLflow state is set. mlflow is imported inside methods so
loading the code location stays fast.

:class:`Registry` gathers one class per responsibility, each in its module:

* ``client``: the client, the experiment, reading versions and aliases (:class:`VersionInfo`);
* ``runs``: logging a candidate run (model, signature, dataset input, environment) and
  registering it, the gate's metrics and report on the run;
* ``audit``, ``deployment``, ``promotion``: who serves (aliases, the deployment mode),
  each change audited;
* ``rollback``: the champion moved back;
* ``models``: loading a version's model, kept in process (:data:`LOADED_MODELS`);
* ``tags``: the aliases and the ``ct.*`` tags, the lineage contract.
"""

from __future__ import annotations

from ct_assets.registry.audit import AuditRecord
from ct_assets.registry.client import SQLITE_PREFIX, VERSIONS_PAGE, VersionInfo
from ct_assets.registry.deployment import DEPLOY_MODES, Deployment, check_deployment
from ct_assets.registry.models import LOADED_MODELS, ModelCache, ModelLoading
from ct_assets.registry.promotion import Promotion
from ct_assets.registry.rollback import Rollback, RollbackError
from ct_assets.registry.runs import CandidateRuns, code_version, resolved_requirements
from ct_assets.registry.tags import (
    AUDIT_PREFIX,
    CHALLENGER,
    CHAMPION,
    TAG_CANDIDATE_WINDOW,
    TAG_CANDIDATES,
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN_ID,
    TAG_DATASET_PATH,
    TAG_DATASET_VERSION,
    TAG_DECISION,
    TAG_DEPLOY_FRACTION,
    TAG_DEPLOY_MODE,
    TAG_DEPLOY_STARTED,
    TAG_DEPLOYMENT_STATUS,
    TAG_ENVIRONMENT,
    TAG_INCREMENTAL_CHAIN,
    TAG_INIT_VERSION,
    TAG_LOG_POSITION,
    TAG_MODE,
    TAG_NEW_AFTER_OFFSET,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTED_AT,
    TAG_REPORT,
    TAG_RUN_CONFIG,
    TAG_TRAIN_PARAMS,
    TAG_TRAINING_BACKEND,
    TAG_TRIGGER,
    TAG_VALIDATED_MODEL,
    TAG_WINDOW_START,
    VALIDATED_MODEL_PATH,
)

__all__ = [
    "AUDIT_PREFIX",
    "CHALLENGER",
    "CHAMPION",
    "DEPLOY_MODES",
    "LOADED_MODELS",
    "SQLITE_PREFIX",
    "TAG_CANDIDATES",
    "TAG_CANDIDATE_WINDOW",
    "TAG_CODE_VERSION",
    "TAG_DAGSTER_RUN_ID",
    "TAG_DATASET_PATH",
    "TAG_DATASET_VERSION",
    "TAG_DECISION",
    "TAG_DEPLOYMENT_STATUS",
    "TAG_DEPLOY_FRACTION",
    "TAG_DEPLOY_MODE",
    "TAG_DEPLOY_STARTED",
    "TAG_ENVIRONMENT",
    "TAG_INCREMENTAL_CHAIN",
    "TAG_INIT_VERSION",
    "TAG_LOG_POSITION",
    "TAG_MODE",
    "TAG_NEW_AFTER_OFFSET",
    "TAG_PREVIOUS_CHAMPION",
    "TAG_PROMOTED_AT",
    "TAG_REPORT",
    "TAG_RUN_CONFIG",
    "TAG_TRAINING_BACKEND",
    "TAG_TRAIN_PARAMS",
    "TAG_TRIGGER",
    "TAG_VALIDATED_MODEL",
    "TAG_WINDOW_START",
    "VALIDATED_MODEL_PATH",
    "VERSIONS_PAGE",
    "AuditRecord",
    "Deployment",
    "ModelCache",
    "Registry",
    "RollbackError",
    "VersionInfo",
    "check_deployment",
    "code_version",
    "resolved_requirements",
]


class Registry(CandidateRuns, Promotion, Rollback, ModelLoading):
    """One registered model: its candidate runs, versions and aliases, deployment mode,
    audit trail, rollback and loaded models (see the modules named above)."""
