"""``POST /v1/predict`` without HTTP: validation, routing, scoring, records.

Request bodies are parsed by :mod:`ct_assets.serving.bodies`. Every instance is checked
against the served models' signature: a feature the models do not take is an
``unknown_field`` error, a string for a numeric feature or a number for a categorical
one a ``schema`` error; a missing or null feature is allowed (LightGBM treats it as
missing, as an unseen category is). Errors name the instance (``index``, 0-based) and the
field (``features.<name>``), in the shape of the ingestion errors; nothing is served or
logged for a request with any error.

Prediction ids: the server issues one (a UUID) for every instance that brings none. An
instance may bring its own ``prediction_id`` only if no other request used it: the
prediction event of a served instance has an event id derived from its prediction id
(:func:`served_event_id`), so the log's own index of event ids (plus the records still
queued for it) tells whether an id was already served, without scanning the history;
a reused id is refused with 409 (``duplicate_prediction_id``, see :func:`reused_ids`)
rather than letting feedback be attributed to a prediction its sender never saw.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from ct_assets.eventlog.writer import event_date
from ct_assets.schema import (
    FieldError,
    PredictionEvent,
    ReasonCode,
)
from ct_assets.serving.bodies import PredictError, PredictInstance
from ct_assets.serving.inference_log import LogRecord
from ct_assets.serving.models import ServedModel, Snapshot
from ct_assets.serving.routing import ARM_SHADOW, Route, route, routing_key

NO_MODEL = "no_model"
DUPLICATE = ReasonCode.DUPLICATE_PREDICTION_ID.value
LOG_FULL = "log_full"
SHUTTING_DOWN = "shutting_down"
_MAX_LISTED_NAMES = 20


# -- validation against the models -----------------------------------------------------------


def check_features(instances: Sequence[PredictInstance], snapshot: Snapshot) -> list[FieldError]:
    """Every feature the served models do not take, or whose type they cannot use."""
    signature = snapshot.signature
    errors: list[FieldError] = []
    for index, instance in enumerate(instances):
        for name, value in instance.features.items():
            categorical = signature.get(name)
            if categorical is None:
                errors.append(
                    FieldError(
                        index,
                        f"features.{name}",
                        f"unknown feature {name!r}; the model takes {_names(signature)}",
                        ReasonCode.UNKNOWN_FIELD.value,
                    )
                )
            elif value is None:
                continue
            elif categorical and not isinstance(value, str):
                errors.append(
                    FieldError(
                        index,
                        f"features.{name}",
                        f"expected a string (a category) or null for the categorical feature "
                        f"{name!r}, got {_json_type(value)}",
                        ReasonCode.SCHEMA.value,
                    )
                )
            elif not categorical and isinstance(value, str):
                errors.append(
                    FieldError(
                        index,
                        f"features.{name}",
                        f"expected a number or null for the numeric feature {name!r}, got a string",
                        ReasonCode.SCHEMA.value,
                    )
                )
    return errors


def _names(signature: Mapping[str, bool]) -> str:
    names = sorted(signature)
    listed = ", ".join(names[:_MAX_LISTED_NAMES])
    return listed + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED_NAMES else "")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    return "a number"


# -- serving ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """The response items, and the prediction events to log (served, then shadow)."""

    predictions: list[dict[str, Any]]
    records: list[LogRecord]


def new_id() -> str:
    return uuid.uuid4().hex


def served_event_id(prediction_id: str, shadow: bool = False) -> str:
    """The event id of the prediction event /v1/predict logs for ``prediction_id`` (the
    served one, or the challenger's shadow score): derived from it, so that whether an id
    was served is a lookup in the log's index of event ids."""
    person = b"ct-shadow" if shadow else b"ct-served"
    digest = hashlib.blake2b(prediction_id.encode("utf-8"), digest_size=16, person=person)
    return ("s-" if shadow else "p-") + digest.hexdigest()


def reused_ids(
    instances: Sequence[PredictInstance], served: Callable[[str], bool]
) -> list[FieldError]:
    """One error per instance whose client-given ``prediction_id`` was already served
    (``served`` answers for an event id of :func:`served_event_id`) or appears earlier in
    the same request."""
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, instance in enumerate(instances):
        given = instance.prediction_id
        if given is None:
            continue
        if given in seen or served(served_event_id(given)):
            errors.append(
                FieldError(
                    index,
                    "prediction_id",
                    f"prediction_id {given!r} was already used by another prediction; "
                    "feedback citing it goes to that one. Send a new id, or none and use the "
                    "one the server issues",
                    DUPLICATE,
                )
            )
        seen.add(given)
    return errors


def _scores(served: ServedModel, rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    """(predicted class, {class: probability}) per row."""
    if not rows:
        return []
    classes = served.classes
    out: list[tuple[str, dict[str, float]]] = []
    for probabilities in served.score(rows).tolist():
        best = max(range(len(classes)), key=probabilities.__getitem__)
        out.append((classes[best], dict(zip(classes, probabilities, strict=True))))
    return out


def serve(
    snapshot: Snapshot,
    instances: Sequence[PredictInstance],
    *,
    model_name: str,
    now: datetime,
    log: bool = True,
    max_event_bytes: int = 32768,
    draw: Callable[[], float] = random.random,
) -> Served:
    """Route, score and describe every instance with one snapshot.

    Raises :class:`PredictError` (422 ``too_large``) when an instance's prediction event
    would be over ``max_event_bytes`` (it could not be logged)."""
    champion, challenger = snapshot.champion, snapshot.challenger
    if champion is None:
        raise PredictError.request(503, NO_MODEL, "no champion model is being served yet")
    routes: list[Route] = [
        route(
            snapshot.mode,
            snapshot.fraction,
            routing_key(i.user_id, i.entity_id),
            has_challenger=challenger is not None,
            salt=challenger.version if challenger is not None else "",
            draw=draw,
        )
        for i in instances
    ]
    by_champion = [k for k, r in enumerate(routes) if not r.challenger_serves]
    by_challenger = [k for k, r in enumerate(routes) if r.challenger_serves or r.shadow]
    results: dict[tuple[int, bool], tuple[str, dict[str, float]]] = {}
    features = [i.features for i in instances]
    scored = _scores(champion, [features[k] for k in by_champion])
    for k, result in zip(by_champion, scored, strict=True):
        results[(k, False)] = result
    if challenger is not None:
        scored = _scores(challenger, [features[k] for k in by_challenger])
        for k, result in zip(by_challenger, scored, strict=True):
            results[(k, True)] = result
    date = event_date(now)
    predictions: list[dict[str, Any]] = []
    records: list[LogRecord] = []
    too_large: list[FieldError] = []
    for k, (instance, chosen) in enumerate(zip(instances, routes, strict=True)):
        by_the_challenger = chosen.challenger_serves and challenger is not None
        served = challenger if by_the_challenger and challenger is not None else champion
        label, scores = results[(k, by_the_challenger)]
        prediction_id = instance.prediction_id or new_id()
        predictions.append(
            {
                "prediction_id": prediction_id,
                "prediction": label,
                "scores": scores,
                "model_version": served.version,
                "arm": chosen.arm_served,
            }
        )
        if not log:
            continue
        logged = [(served.version, chosen.arm_served, label, scores)]
        if chosen.shadow and challenger is not None:
            shadow_label, shadow_scores = results[(k, True)]
            logged.append((challenger.version, ARM_SHADOW, shadow_label, shadow_scores))
        for version, arm, value, probabilities in logged:
            event = PredictionEvent(
                event_id=served_event_id(prediction_id, shadow=arm == ARM_SHADOW),
                prediction_id=prediction_id,
                timestamp=now,
                features=instance.features,
                prediction=value,
                scores=probabilities,
                model_name=model_name,
                model_version=version,
                arm=arm,
                entity_id=instance.entity_id,
            )
            line = msgspec.json.encode(event)
            if len(line) > max_event_bytes:
                too_large.append(
                    FieldError(
                        k,
                        "features",
                        f"the prediction event would be {len(line)} bytes; "
                        f"the log takes at most {max_event_bytes}",
                        ReasonCode.TOO_LARGE.value,
                    )
                )
                break
            records.append(LogRecord(event.event_id, line, date))
    if too_large:
        raise PredictError(422, too_large, "invalid")
    return Served(predictions, records)
