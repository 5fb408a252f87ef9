"""Online serving for ``POST /v1/predict``: models from the registry, routing, inference log.

* :mod:`.models` keeps the registry's champion (and challenger) loaded and hot-swaps them;
* :mod:`.routing` decides which arm answers a request (off, shadow, canary, A/B);
* :mod:`.bodies` parses request bodies into instances;
* :mod:`.predict` validates instances against the models and scores them on one snapshot;
* :mod:`.inference_log` writes every served prediction to the event log, batched.

Its settings are the ``serving`` section of :class:`ct_assets.settings.Settings`, read
from the environment of each API worker (``ct-assets api`` passes its environment on):
``CT_SERVING_POLL_SECONDS`` (how often each worker reads the registry's aliases and
deployment tags), ``CT_SERVING_LOG_QUEUE`` (prediction records a worker may hold not yet
durable: the most a crash can lose), ``CT_SERVING_LOG_TIMEOUT_SECONDS`` (how long a request
waits for room in a full queue before it is answered 503), ``CT_SERVING_MAX_INSTANCES``
(instances per request) and ``CT_SERVING_LOG`` (``0`` serves predictions without logging
them: feedback can then not be attributed to them, only for measurements and emergencies).
Their defaults and checks are declared there; ``ct-assets config`` lists them.

The model registry is the one of the settings (``CT_HOME`` / ``CT_MLFLOW_TRACKING_URI``,
``CT_MODEL_NAME``); the deployment mode is read from the registered model's tags
``ct.deployment.mode`` and ``ct.deployment.fraction`` (written by ``ct-assets deploy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ct_assets.settings import Settings, declaration


@dataclass(frozen=True)
class ServingConfig:
    """What an API worker needs of the ``serving`` settings (defaults: the declared ones)."""

    poll_seconds: float = declaration("serving_poll_seconds").default
    log_queue: int = declaration("serving_log_queue").default
    log_timeout_seconds: float = declaration("serving_log_timeout_seconds").default
    max_instances: int = declaration("serving_max_instances").default
    log_predictions: bool = declaration("serving_log").default

    @classmethod
    def from_settings(cls, settings: Settings) -> ServingConfig:
        """The ``serving`` section of ``settings``."""
        return cls(
            poll_seconds=settings.serving_poll_seconds,
            log_queue=settings.serving_log_queue,
            log_timeout_seconds=settings.serving_log_timeout_seconds,
            max_instances=settings.serving_max_instances,
            log_predictions=settings.serving_log,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingConfig:
        """The ``serving`` section of the settings of ``environ`` (default ``os.environ``);
        :class:`ct_assets.settings.SettingsError` (a ValueError) naming a bad variable."""
        return cls.from_settings(Settings.from_env(environ))
