"""Settings of sections core, api, eventlog and eventstream: where state lives, the
ingestion API, the event log and the event stream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ct_assets.settings.declare import (
    DEFAULT_HOME,
    at_least,
    between,
    check_iso_date,
    check_nats_url,
    check_stream_name,
    one_of,
    parse_home,
    parse_non_negative_int,
    parse_positive_float,
    parse_positive_int,
    setting,
)


@dataclass(frozen=True)
class IngestSettings:
    # --- core: where state lives and which model --------------------------------------------
    home: Path = setting(  # noqa: RUF009 (setting() is dataclasses.field)
        DEFAULT_HOME, env="CT_HOME", section="core", parse=parse_home, help="all state"
    )
    model_name: str = setting(
        "ct_model",
        env="CT_MODEL_NAME",
        section="core",
        help="registered model and experiment name",
    )
    # None: SQLite + local artifacts under CT_HOME/mlflow.
    tracking_uri_override: str | None = setting(
        None,
        env="CT_MLFLOW_TRACKING_URI",
        section="core",
        uri=True,
        help="another MLflow server (default: SQLite under CT_HOME)",
    )

    # --- api: the ingestion API -------------------------------------------------------------
    api_token: str | None = setting(
        None, env="CT_API_TOKEN", section="api", secret=True, help="bearer token of the API"
    )
    api_max_body_bytes: int = setting(
        5 * 1024 * 1024,
        env="CT_API_MAX_BODY_BYTES",
        section="api",
        parse=parse_non_negative_int,
        check=at_least(1024),
        help="larger bodies get 413",
    )
    max_future_skew_seconds: int = setting(
        300,
        env="CT_MAX_FUTURE_SKEW_SECONDS",
        section="api",
        parse=parse_non_negative_int,
        help="tolerated clock skew of event timestamps",
    )

    # --- eventlog: the log and the daily partitions of the raw assets ------------------------
    segment_max_bytes: int = setting(
        64 * 1024 * 1024,
        env="CT_SEGMENT_MAX_BYTES",
        section="eventlog",
        parse=parse_non_negative_int,
        check=at_least(4096),
        help="segment size before it is closed",
    )
    max_event_bytes: int = setting(
        32 * 1024,
        env="CT_MAX_EVENT_BYTES",
        section="eventlog",
        parse=parse_non_negative_int,
        check=at_least(1024),
        help="largest event",
    )
    partition_start_date: str = setting(
        "2020-01-01",
        env="CT_PARTITION_START_DATE",
        section="eventlog",
        check=check_iso_date,
        help="first daily partition of the raw assets (UTC event dates)",
    )
    raw_sensor_interval_seconds: int = setting(
        60,
        env="CT_RAW_SENSOR_INTERVAL_SECONDS",
        section="eventlog",
        parse=parse_non_negative_int,
        check=at_least(1),
        help="how often raw_partitions_sensor looks",
    )

    # --- eventstream: where the API sends accepted events (see ct_assets.eventstream) --------
    event_store: str = setting(
        "embedded",
        env="CT_EVENT_STORE",
        section="eventstream",
        check=one_of("embedded", "nats"),
        help="embedded: the API writes the log; nats: it publishes to JetStream",
    )
    nats_url: str = setting(
        "nats://127.0.0.1:4222",
        env="CT_NATS_URL",
        section="eventstream",
        uri=True,
        check=check_nats_url,
        help="a NATS server of the cluster (the client learns the others from it)",
    )
    nats_stream: str = setting(
        "CT_EVENTS",
        env="CT_NATS_STREAM",
        section="eventstream",
        check=check_stream_name,
        help="JetStream stream (subjects <stream>.feedback, <stream>.prediction)",
    )
    nats_replicas: int = setting(
        1,
        env="CT_NATS_REPLICAS",
        section="eventstream",
        parse=parse_positive_int,
        check=between(1, 5, closed="[]"),
        help="replicas of a stream this creates (3 in production)",
    )
    nats_timeout_seconds: float = setting(
        5.0,
        env="CT_NATS_TIMEOUT_SECONDS",
        section="eventstream",
        parse=parse_positive_float,
        help="longest wait for the stream's acknowledgements before a 503",
    )
    nats_ack_wait_seconds: float = setting(
        60.0,
        env="CT_NATS_ACK_WAIT_SECONDS",
        section="eventstream",
        parse=parse_positive_float,
        help="a delivery the log's consumer has not acknowledged this long is sent again",
    )
