"""Online serving for ``POST /v1/predict``: models from the registry, routing, inference log.

* :mod:`.models` keeps the registry's champion (and challenger) loaded and hot-swaps them;
* :mod:`.routing` decides which arm answers a request (off, shadow, canary, A/B);
* :mod:`.predict` parses and validates request bodies and scores them on one snapshot;
* :mod:`.inference_log` writes every served prediction to the event log, batched.

Settings, read from the environment of each API worker (``ct-assets api`` passes its
environment on):

``CT_SERVING_POLL_SECONDS`` (default 2)
    how often each worker reads the registry's aliases and deployment tags.
``CT_SERVING_LOG_QUEUE`` (default 10000)
    prediction records a worker may hold not yet durable; the most a crash can lose.
``CT_SERVING_LOG_TIMEOUT_SECONDS`` (default 2)
    how long a request waits for room in a full queue before it is answered 503.
``CT_SERVING_MAX_INSTANCES`` (default 1000)
    instances per request.
``CT_SERVING_LOG`` (default 1)
    ``0`` serves predictions without logging them (feedback can then not be attributed
    to them: only for measurements and emergencies).

The model registry is the one of the settings (``CT_HOME`` / ``CT_MLFLOW_TRACKING_URI``,
``CT_MODEL_NAME``); the deployment mode is read from the registered model's tags
``ct.deployment.mode`` and ``ct.deployment.fraction`` (written by ``ct-assets deploy``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

POLL_ENV = "CT_SERVING_POLL_SECONDS"
QUEUE_ENV = "CT_SERVING_LOG_QUEUE"
TIMEOUT_ENV = "CT_SERVING_LOG_TIMEOUT_SECONDS"
MAX_INSTANCES_ENV = "CT_SERVING_MAX_INSTANCES"
LOG_ENV = "CT_SERVING_LOG"


@dataclass(frozen=True)
class ServingConfig:
    poll_seconds: float = 2.0
    log_queue: int = 10_000
    log_timeout_seconds: float = 2.0
    max_instances: int = 1000
    log_predictions: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingConfig:
        """Defaults overridden by the ``CT_SERVING_*`` variables; ValueError naming a bad one."""
        env = os.environ if environ is None else environ
        parsers: dict[str, tuple[str, Callable[[str], Any]]] = {
            "poll_seconds": (POLL_ENV, _positive_float),
            "log_queue": (QUEUE_ENV, _queue_size),
            "log_timeout_seconds": (TIMEOUT_ENV, _non_negative_float),
            "max_instances": (MAX_INSTANCES_ENV, _positive_int),
            "log_predictions": (LOG_ENV, _flag),
        }
        values: dict[str, Any] = {}
        for name, (var, parse) in parsers.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                raise ValueError(f"{var}={raw!r}: {exc}") from None
        return cls(**values)


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be a number >= 0")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def _queue_size(raw: str) -> int:
    value = int(raw)
    if value < 2:
        raise ValueError("must be an integer >= 2 (a shadowed prediction makes two records)")
    return value


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")
