"""The OpenAPI 3.1 document of the ingestion API, generated from the schema-v1 structs."""

from __future__ import annotations

from typing import Any

import msgspec

from ct_assets.schema import FeedbackEvent, PredictionEvent

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
        },
    }


def openapi_document(max_body_bytes: int) -> dict[str, Any]:
    (_, components) = msgspec.json.schema_components(
        [FeedbackEvent, PredictionEvent], ref_template="#/components/schemas/{name}"
    )
    for name in ("FeedbackEvent", "PredictionEvent"):
        # each endpoint takes one kind: the `kind` tag may be left out (if sent, it must match)
        schema = components[name]
        schema["required"] = [field for field in schema.get("required", []) if field != "kind"]
    components["Errors"] = _ERROR_SCHEMA
    components["Accepted"] = _ACCEPTED_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ct_assets ingestion API",
            "version": "1",
            "description": (
                "Feedback and inference-log ingestion into the durable event log. A batch is "
                "atomic: 202 only after every event in it is fsynced; otherwise 4xx with the "
                "errors and nothing written. Re-sending an event_id is acknowledged as a "
                f"duplicate. Bodies are limited to {max_body_bytes} bytes."
            ),
        },
        "paths": {
            "/v1/feedback": {"post": _ingest_operation("FeedbackEvent", "Ingest feedback events")},
            "/v1/predictions": {
                "post": _ingest_operation("PredictionEvent", "Log served predictions")
            },
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
                    "summary": "Liveness and the log's committed counts",
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
