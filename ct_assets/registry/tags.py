"""The names the registry writes: the two aliases, the tags on every registered version
(the lineage contract, ``ct.*``) and the tags on the registered model (deployment mode,
audit trail)."""

from __future__ import annotations

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

#: Registered-model tags holding how the challenger meets live traffic (``ct-assets deploy``).
TAG_DEPLOY_MODE = "ct.deployment.mode"
TAG_DEPLOY_FRACTION = "ct.deployment.fraction"
#: When the current deployment began meeting traffic (UTC, ISO 8601): set whenever the
#: mode/fraction changes or a new challenger gets the alias. The canary analysis compares
#: only outcomes of predictions served from then on, so both arms come from one period.
TAG_DEPLOY_STARTED = "ct.deployment.started_at"
