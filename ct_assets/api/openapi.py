"""The OpenAPI 3.1 document of the API, generated from the schema-v1 and serving structs."""

from __future__ import annotations

from typing import Any

import msgspec

from ct_assets.schema import FeedbackEvent, PredictionEvent
from ct_assets.serving.bodies import PredictInstance

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["errors", "error_count"],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "field", "message", "reason"],
                "properties": {
                    "index": {
                        "type": "integer",
                        "description": "0-based record index in the batch; -1 for the request",
                    },
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "reason": {"type": "string", "description": "a stable reason code"},
                },
            },
        },
        "error_count": {"type": "integer"},
    },
}
_ACCEPTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["accepted", "duplicates"],
    "properties": {"accepted": {"type": "integer"}, "duplicates": {"type": "integer"}},
}


def _ingest_operation(name: str, summary: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{name}"}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}
    return {
        "summary": summary,
        "security": [{"bearer": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": [ref, {"type": "array", "items": ref}]}},
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": f"one {name} JSON per line"}
                },
            },
        },
        "responses": {
            "202": {
                "description": "every event is durable (or was already stored: a duplicate)",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                },
            },
            "400": {"description": "the body is not JSON / NDJSON", **error},
            "401": {"description": "missing or wrong bearer token", **error},
            "413": {"description": "the body is over the configured limit", **error},
            "415": {"description": "content type is not JSON or NDJSON", **error},
            "422": {"description": "records break schema v1; nothing was written", **error},
            "503": {
                "description": (
                    "CT_EVENT_STORE=nats: the stream did not acknowledge every event; nothing "
                    "is acknowledged, retry the same batch (stream_unavailable)"
                ),
                **error,
            },
        },
    }


_PREDICTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prediction_id", "prediction", "scores", "model_version", "arm"],
    "properties": {
        "prediction_id": {
            "type": "string",
            "description": (
                "the instance's prediction_id, or one the server issued; send it with feedback"
            ),
        },
        "prediction": {"type": "string", "description": "the most probable class"},
        "scores": {
            "type": "object",
            "additionalProperties": {"type": "number"},
            "description": "probability of every class of the model that answered",
        },
        "model_version": {"type": "string", "description": "the registered version"},
        "arm": {
            "type": "string",
            "enum": ["champion", "canary", "a", "b"],
            "description": "champion (off/shadow, or not in the canary), canary, or a/b",
        },
    },
}
_PREDICT_DESCRIPTION = """\
Scores instances with the registry's `champion`, or with the `challenger` as the
deployment mode (`ct-assets deploy`, registered-model tags `ct.deployment.mode` and
`ct.deployment.fraction`) routes them:

* `off`: the champion answers (arm `champion`);
* `shadow`: the champion answers (arm `champion`); the challenger scores the same
  instance and is logged under arm `shadow`, never returned;
* `canary`: a `fraction` of the traffic is answered by the challenger (arm `canary`);
* `ab`: a `fraction` goes to the challenger (arm `b`), the rest to the champion (arm `a`).

Canary and A/B assignment is sticky per `user_id` (else `entity_id`): a stable BLAKE2b
hash of the key, salted with the challenger's version, picks the arm, the same in every
worker and across restarts; each new challenger draws its own users. An instance
without either gets a random draw per request.

`prediction_id`: the server issues one for every instance that brings none. A
client-given id must be new: one that another request already used (or that appears
twice in the body) is refused with 409 `duplicate_prediction_id` and nothing is served.

The body is one instance, `{"instances": [...]}`, or a JSON array of instances (at most
{max_instances} per request). The response is always `{"predictions": [...]}`, one item
per instance in order (a single instance gives a list of one).

Features are checked against the served models: an unknown feature, a string for a
numeric feature or a number for a categorical one is a 422 naming `features.<name>` and
the instance `index`; a missing or null feature is allowed (treated as missing, as is an
unseen category).

Every answered prediction is logged as a prediction event (its `prediction_id`,
`model_version`, `arm`, features and scores) to the event log. The answer comes before
the log record is durable: records wait in a bounded in-memory queue
(`CT_SERVING_LOG_QUEUE`, default 10000) drained in batches, one fsynced commit each; a
crash loses at most the queued records. When the queue is full a request waits up to
`CT_SERVING_LOG_TIMEOUT_SECONDS` and is then refused with 503 `log_full` (nothing
logged, nothing answered).
"""


def _predict_operation(max_instances: int) -> dict[str, Any]:
    instance = {"$ref": "#/components/schemas/PredictInstance"}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}
    batch = {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {
            "instances": {
                "type": "array",
                "items": instance,
                "minItems": 1,
                "maxItems": max_instances,
            }
        },
    }
    array = {"type": "array", "items": instance, "minItems": 1, "maxItems": max_instances}
    return {
        "summary": "Predict with the served model (champion, canary, A/B; shadow logged)",
        "description": _PREDICT_DESCRIPTION.replace("{max_instances}", str(max_instances)),
        "security": [{"bearer": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [instance, batch, array]}}},
        },
        "responses": {
            "200": {
                "description": "one prediction per instance, in order; each is logged",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["predictions"],
                            "properties": {
                                "predictions": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Prediction"},
                                }
                            },
                        }
                    }
                },
            },
            "400": {"description": "the body is not JSON", **error},
            "401": {"description": "missing or wrong bearer token", **error},
            "409": {
                "description": (
                    "duplicate_prediction_id: an instance brings a prediction_id another "
                    "request already used (or that appears twice in this one); nothing was "
                    "served. Send a new id, or none to get one issued"
                ),
                **error,
            },
            "413": {"description": "the body is over the configured limit", **error},
            "415": {"description": "content type is not application/json", **error},
            "422": {
                "description": (
                    "instances break the request schema or the model's features (reasons "
                    "unknown_field, schema, missing_field, too_large, ...); nothing was served"
                ),
                **error,
            },
            "503": {
                "description": (
                    "no_model: no champion is loaded yet; log_full: the inference log queue "
                    "stayed full (retry later); shutting_down"
                ),
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                **error,
            },
        },
    }


def openapi_document(max_body_bytes: int, max_instances: int = 1000) -> dict[str, Any]:
    (_, components) = msgspec.json.schema_components(
        [FeedbackEvent, PredictionEvent, PredictInstance],
        ref_template="#/components/schemas/{name}",
    )
    for name in ("FeedbackEvent", "PredictionEvent"):
        # each endpoint takes one kind: the `kind` tag may be left out (if sent, it must match)
        schema = components[name]
        schema["required"] = [field for field in schema.get("required", []) if field != "kind"]
    components["Errors"] = _ERROR_SCHEMA
    components["Accepted"] = _ACCEPTED_SCHEMA
    components["Prediction"] = _PREDICTION_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ct_assets API",
            "version": "1",
            "description": (
                "Feedback and inference-log ingestion into the durable event log. A batch is "
                "atomic: 202 only after every event in it is fsynced; otherwise 4xx with the "
                "errors and nothing written. Re-sending an event_id is acknowledged as a "
                f"duplicate. Bodies are limited to {max_body_bytes} bytes. "
                "POST /v1/predict serves the registry's champion (and challenger) and logs "
                "every prediction it answers."
            ),
        },
        "paths": {
            "/v1/feedback": {"post": _ingest_operation("FeedbackEvent", "Ingest feedback events")},
            "/v1/predictions": {
                "post": _ingest_operation("PredictionEvent", "Log served predictions")
            },
            "/v1/predict": {"post": _predict_operation(max_instances)},
            "/v1/labeling-queue": {
                "get": {
                    "summary": "The most uncertain recent predictions that have no feedback yet",
                    "description": (
                        "Written by the labeling_queue asset. Label an item by posting "
                        "explicit feedback with its prediction_id to /v1/feedback."
                    ),
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the queue, most uncertain first",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["items", "count"],
                                        "properties": {
                                            "items": {"type": "array", "items": {"type": "object"}},
                                            "count": {"type": "integer"},
                                            "generated_at": {"type": ["string", "null"]},
                                            "method": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        "401": {"description": "missing or wrong bearer token"},
                        "422": {"description": "limit out of range"},
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: whether the worker can commit to the event log",
                    "description": (
                        'Without a token the body is only `{"status": "ok"}` (or '
                        "`down`, with 503). With a valid bearer token it adds `pid` and "
                        "`serving`: what /v1/predict serves in the worker that answered "
                        "(champion and challenger versions, deployment mode and fraction, "
                        "and the inference log queue: pending records, capacity)"
                    ),
                    "responses": {"200": {"description": "the API can write the event log"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Prometheus text format"}},
                }
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
