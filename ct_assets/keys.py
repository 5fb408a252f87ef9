"""Asset keys, metadata keys and run tags: the names sensors, the CLI and tests rely on."""

from __future__ import annotations

# assets
RAW_FEEDBACK = "raw_feedback"
RAW_PREDICTIONS = "raw_predictions"
VALIDATED_FEEDBACK = "validated_feedback"
FEEDBACK_QUARANTINE = "feedback_quarantine"
ATTRIBUTED_EXAMPLES = "attributed_examples"
TRAINING_DATASET = "training_dataset"
REFERENCE_SCHEMA = "reference_schema"
LABELING_QUEUE = "labeling_queue"
CANDIDATE_MODEL = "candidate_model"
VALIDATION_REPORT = "validation_report"
CHAMPION_MODEL = "champion_model"
FEEDBACK_AGGREGATES = "feedback_aggregates"
FEEDBACK_LOOP_LATENCY = "feedback_loop_latency"
FEEDBACK_BIAS_REPORT = "feedback_bias_report"
PIPELINE_HEALTH = "pipeline_health"

# who answers for the assets (shown in the Dagster UI)
OWNERS = ["team:ml-platform"]

# groups
INGESTION = "ingestion"
CURATION = "curation"
TRAINING = "training"
MONITORING = "monitoring"
VALIDATION = "validation"
DEPLOYMENT = "deployment"

# jobs, sensors, checks
RETRAIN_JOB = "retrain"
RAW_PARTITIONS_JOB = "raw_partitions"
LABELING_QUEUE_JOB = "labeling_queue_job"
ROLLBACK_JOB = "rollback"
RETRAIN_SCHEDULE = "retrain_schedule"
VOLUME_SENSOR = "volume_sensor"
RAW_PARTITIONS_SENSOR = "raw_partitions_sensor"
DRIFT_SENSOR = "drift_sensor"
PERFORMANCE_SENSOR = "performance_sensor"
DRIFT_MONITOR = "drift_monitor"
DEPLOYMENT_HISTORY = "deployment_history"
CANARY_ANALYSIS = "canary_analysis"
SHADOW_EVALUATION = "shadow_evaluation"
CANARY_JOB = "canary_job"
CANARY_SENSOR = "canary_sensor"
PERFORMANCE_MONITOR = "performance_monitor"
GATE_CHECK = "gate_passed"
MONITORING_JOB = "monitoring_job"
MONITORING_SCHEDULE = "monitoring_schedule"
GC_JOB = "gc_job"
GC_SCHEDULE = "gc_schedule"

# materialization metadata
META_LOG_POSITION = "ct/log_position"
META_DATASET_VERSION = "ct/dataset_version"
META_DATASET_PATH = "ct/dataset_path"
META_MODEL_VERSION = "ct/model_version"
META_MLFLOW_RUN_ID = "ct/mlflow_run_id"
# the MLflow UI page of the model version (a URL), or the file store holding it (a path)
META_MLFLOW_MODEL_VERSION = "ct/mlflow_model_version"
META_AUC = "ct/auc"
META_ACCURACY = "ct/accuracy"
META_DECISION = "ct/decision"
META_PREVIOUS_CHAMPION = "ct/previous_champion"
META_MODE = "ct/mode"
META_BASELINE_ACCURACY = "ct/baseline_accuracy"
META_TRIGGER = "ct/trigger"
#: Where the dataset's window starts after a detected change of the concept ("" if none).
META_WINDOW_START = "ct/window_start"

# Dagster run tags (``ct/...``); the MLflow tags of model versions are ``ct.*`` and live
# in ct_assets/registry/tags.py as ``TAG_*``.
RUN_TAG_TRIGGER = "ct/trigger"
RUN_TAG_REASON = "ct/reason"
RUN_TAG_MODE = "ct/mode"
RUN_TAG_JOB = "ct/job"
#: Set by the performance trigger when it found a change point: the retrain's dataset
#: starts there (ISO timestamp).
RUN_TAG_WINDOW_START = "ct/window_start"

#: Dagster pool of the steps that write per-date tables (``daily_events``,
#: ``training_dataset``, whose refresh curates stale dates again). No limit is set by
#: default: correctness comes from the per-table lock (ct_assets/data/table_files.py),
#: which is finer (one table and date, held only while that date is written) than any
#: static key can be; the pool names the writers so that an operator can serialize them
#: with ``dagster instance concurrency set ct_tables 1``.
TABLES_POOL = "ct_tables"

# object-store layout shared by writers and gc
#: The retrain job's hand-offs on the object store: ``handoffs/<asset>.json`` (the latest)
#: and ``handoffs/<asset>/runs/<run_id>.json``.
HANDOFFS_OBJECT_PREFIX = "handoffs"
#: Validation reports: ``reports/validation-v<N>.json`` and its plots
#: ``reports/validation-v<N>-<plot>.png``.
REPORTS_OBJECT_PREFIX = "reports"
#: The drift reference of champion version V: ``drift/<V>/``.
DRIFT_OBJECT_PREFIX = "drift"
