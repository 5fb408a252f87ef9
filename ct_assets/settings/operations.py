"""Settings of sections bias, monitoring, serving, retention, storage and cluster."""

from __future__ import annotations

from dataclasses import dataclass

from ct_assets.settings.declare import (
    above,
    at_least,
    check_cron,
    check_endpoint_url,
    check_storage_uri,
    parse_flag,
    parse_fraction,
    parse_non_negative_float,
    parse_non_negative_int,
    parse_positive_float,
    parse_positive_int,
    parse_queue_size,
    setting,
)


@dataclass(frozen=True)
class OperationsSettings:
    # --- bias: thresholds of the feedback bias checks -----------------------------------------
    bias_max_top_users_share: float = setting(
        0.25,
        env="CT_BIAS_MAX_TOP_USERS_SHARE",
        section="bias",
        parse=parse_fraction,
        help="share of labels from the top 1% of users",
    )
    bias_max_hhi: float = setting(
        0.05,
        env="CT_BIAS_MAX_HHI",
        section="bias",
        parse=parse_fraction,
        help="label concentration",
    )
    bias_max_label_shift: float = setting(
        0.15,
        env="CT_BIAS_MAX_LABEL_SHIFT",
        section="bias",
        parse=parse_fraction,
        help="label-rate shift per segment",
    )
    bias_max_selection_ratio: float = setting(
        3.0,
        env="CT_BIAS_MAX_SELECTION_RATIO",
        section="bias",
        parse=float,
        check=at_least(1.0),
        help="highest/lowest score-decile selection ratio",
    )
    bias_block_training: bool = setting(
        False,
        env="CT_BIAS_BLOCK_TRAINING",
        section="bias",
        parse=parse_flag,
        help="the bias checks block the retrain",
    )

    # --- monitoring: the loop itself (group monitoring) ---------------------------------------
    monitoring_segments: str = setting(
        "",
        env="CT_MONITORING_SEGMENTS",
        section="monitoring",
        help="segment columns of the feedback figures (empty: the categorical features)",
    )
    api_metrics_url: str = setting(
        "",
        env="CT_API_METRICS_URL",
        section="monitoring",
        uri=True,
        help="the API's /metrics, for pipeline_health",
    )
    monitoring_cron: str = setting(
        "0 * * * *",
        env="CT_MONITORING_CRON",
        section="monitoring",
        check=check_cron,
        help="cron of monitoring_schedule",
    )

    # --- serving: POST /v1/predict in each API worker (see ct_assets.serving) ----------------
    serving_poll_seconds: float = setting(
        2.0,
        env="CT_SERVING_POLL_SECONDS",
        section="serving",
        parse=parse_positive_float,
        check=above(0.0),
        help="how often a worker reads the registry's aliases and deployment tags",
    )
    serving_log_queue: int = setting(
        10_000,
        env="CT_SERVING_LOG_QUEUE",
        section="serving",
        parse=parse_queue_size,
        check=at_least(2),
        help="prediction records a worker may hold not yet durable",
    )
    serving_log_timeout_seconds: float = setting(
        2.0,
        env="CT_SERVING_LOG_TIMEOUT_SECONDS",
        section="serving",
        parse=parse_non_negative_float,
        check=at_least(0.0),
        help="how long a request waits for room in a full queue before a 503",
    )
    serving_max_instances: int = setting(
        1000,
        env="CT_SERVING_MAX_INSTANCES",
        section="serving",
        parse=parse_positive_int,
        check=at_least(1),
        help="instances per request",
    )
    serving_log: bool = setting(
        True,
        env="CT_SERVING_LOG",
        section="serving",
        parse=parse_flag,
        help="log served predictions (0: only for measurements and emergencies)",
    )

    # --- retention: what ``ct-assets gc`` keeps (see ct_assets.retention) ---------------------
    # Besides these, gc keeps every version an alias or a deployment points at and what each
    # kept version's lineage needs (its dataset, the versions it continued from, ...).
    keep_versions: int = setting(
        10,
        env="CT_KEEP_VERSIONS",
        section="retention",
        parse=parse_positive_int,
        check=at_least(1),
        help="newest registered model versions gc keeps",
    )
    gc_checkpoint_age_hours: int = setting(
        24,
        env="CT_GC_CHECKPOINT_AGE_HOURS",
        section="retention",
        parse=parse_positive_int,
        check=at_least(1),
        help="hours since its last write before gc deletes a training checkpoint",
    )
    retention_days: int = setting(
        0,
        env="CT_RETENTION_DAYS",
        section="retention",
        parse=parse_non_negative_int,
        help="event dates older than this many days have their segments archived (0: never)",
    )
    gc_cron: str = setting(
        "30 3 * * *",
        env="CT_GC_CRON",
        section="retention",
        check=check_cron,
        help="cron of gc_schedule (stopped until turned on)",
    )

    # --- storage: where datasets and drift references live (see ct_assets.storage) ----------
    storage_uri: str = setting(
        "",
        env="CT_STORAGE_URI",
        section="storage",
        uri=True,
        check=check_storage_uri,
        help="object store: empty (CT_HOME), file:///path or s3://bucket/prefix",
    )
    s3_endpoint_url: str = setting(
        "",
        env="CT_S3_ENDPOINT_URL",
        section="storage",
        uri=True,
        check=check_endpoint_url,
        help="S3-compatible server, e.g. http://127.0.0.1:8333 (empty: AWS)",
    )
    s3_access_key_id: str | None = setting(
        None, env="CT_S3_ACCESS_KEY_ID", section="storage", secret=True, help="S3 access key"
    )
    s3_secret_access_key: str | None = setting(
        None,
        env="CT_S3_SECRET_ACCESS_KEY",
        section="storage",
        secret=True,
        help="S3 secret key",
    )
    s3_region: str = setting("us-east-1", env="CT_S3_REGION", section="storage", help="S3 region")

    # --- cluster: the machine's servers ``make cluster-demo`` uses (see ct_assets.cluster) -----
    cluster_postgres_url: str = setting(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        env="CT_CLUSTER_POSTGRES_URL",
        section="cluster",
        uri=True,
        help="PostgreSQL server the cluster demo creates its two databases on",
    )
    cluster_broker_url: str = setting(
        "amqp://guest:guest@127.0.0.1:5672//",
        env="CT_CLUSTER_BROKER_URL",
        section="cluster",
        uri=True,
        help="RabbitMQ broker of the cluster demo's Celery workers",
    )
    cluster_redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        env="CT_CLUSTER_REDIS_URL",
        section="cluster",
        uri=True,
        help="Redis keeping the cluster demo's Celery task states",
    )
