"""The bodies of ``POST /v1/predict``: instances decoded, or errors naming every bad one.

A body is one instance ``{"features": {...}, "user_id"?, "entity_id"?, "prediction_id"?}``,
a batch ``{"instances": [instance, ...]}``, or a JSON array of instances. Errors name the
instance (``index``, 0-based) and the field (``features.<name>`` where msgspec's path stops
at ``features[...]``), in the shape of the ingestion errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ct_assets.schema import Features, FeatureValue, FieldError, Id, ReasonCode, decode_field_error


class PredictInstance(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One row to score: its features, who it is for (routing) and an optional id."""

    features: Features
    user_id: Id | None = None
    entity_id: Id | None = None
    prediction_id: Id | None = None


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A JSON object body: one instance, or ``instances`` (a batch)."""

    features: Features | None = None
    user_id: Id | None = None
    entity_id: Id | None = None
    prediction_id: Id | None = None
    instances: list[PredictInstance] | None = None


class _RawBatch(msgspec.Struct, gc=False):
    instances: list[msgspec.Raw]


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_INSTANCE = msgspec.json.Decoder(PredictInstance)
_INSTANCES = msgspec.json.Decoder(list[PredictInstance])
_RAW_BATCH = msgspec.json.Decoder(_RawBatch)
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


class PredictError(Exception):
    """The request is refused: an HTTP status, the errors and a reason code."""

    def __init__(self, status: int, errors: Sequence[FieldError], reason: str) -> None:
        self.status = status
        self.errors = list(errors)
        self.reason = reason
        super().__init__(f"{status} {reason}: {len(self.errors)} error(s)")

    @classmethod
    def request(cls, status: int, reason: str, message: str) -> PredictError:
        """An error of the request as a whole: ``index`` -1, field ``$``."""
        return cls(status, [FieldError(-1, "$", message, reason)], reason)


def parse_request(body: bytes, max_instances: int) -> list[PredictInstance]:
    """The instances of a body, or :class:`PredictError` naming every bad one."""
    start = body.lstrip()[:1]
    try:
        if start == b"{":
            instances = _parse_object(body)
        elif start == b"[":
            instances = _parse_array(body)
        else:
            raise PredictError.request(
                400,
                ReasonCode.MALFORMED.value,
                'body must be a JSON object (an instance, or {"instances": [...]}) '
                "or a JSON array of instances",
            )
    except msgspec.ValidationError as exc:
        raise PredictError(422, [decode_field_error(0, exc)], "invalid") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise PredictError.request(400, ReasonCode.MALFORMED.value, f"not JSON: {exc}") from None
    except RecursionError:
        raise PredictError.request(
            422, ReasonCode.TOO_DEEP.value, "values are nested too deeply"
        ) from None
    if not instances:
        raise PredictError.request(422, ReasonCode.EMPTY_BATCH.value, "the body holds no instances")
    if len(instances) > max_instances:
        raise PredictError.request(
            422,
            ReasonCode.TOO_LARGE.value,
            f"{len(instances)} instances; at most {max_instances} per request",
        )
    return instances


def _parse_object(body: bytes) -> list[PredictInstance]:
    try:
        envelope = _ENVELOPE.decode(body)
    except msgspec.ValidationError as exc:
        if "`$.instances[" in str(exc):
            errors = _item_errors(_RAW_BATCH.decode(body).instances)
            raise PredictError(422, errors, "invalid") from None
        raise PredictError(422, [_field_error(0, exc, body)], "invalid") from None
    if envelope.instances is not None:
        single = (envelope.features, envelope.user_id, envelope.entity_id, envelope.prediction_id)
        if any(value is not None for value in single):
            raise PredictError.request(
                422,
                ReasonCode.SCHEMA.value,
                "a body holds either one instance (`features`, ...) or `instances`, not both",
            )
        return envelope.instances
    if envelope.features is None:
        raise PredictError(
            422,
            [
                FieldError(
                    0,
                    "features",
                    "missing required field `features` (or `instances` for a batch)",
                    ReasonCode.MISSING_FIELD.value,
                )
            ],
            "invalid",
        )
    return [
        PredictInstance(
            envelope.features, envelope.user_id, envelope.entity_id, envelope.prediction_id
        )
    ]


def _parse_array(body: bytes) -> list[PredictInstance]:
    try:
        instances: list[PredictInstance] = _INSTANCES.decode(body)
        return instances
    except msgspec.ValidationError:
        pass  # find every bad instance below
    try:
        raws = _RAW_LIST.decode(body)
    except msgspec.ValidationError:
        raise PredictError.request(
            422, ReasonCode.SCHEMA.value, "a JSON array body must hold instance objects"
        ) from None
    raise PredictError(422, _item_errors(raws), "invalid")


def _item_errors(raws: Sequence[msgspec.Raw]) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, raw in enumerate(raws):
        try:
            _INSTANCE.decode(raw)
        except msgspec.ValidationError as exc:
            errors.append(_field_error(index, exc, bytes(raw)))
    return errors


def _field_error(index: int, exc: msgspec.ValidationError, raw: bytes) -> FieldError:
    """The decode error, naming the feature (msgspec's path stops at ``features[...]``)."""
    error = decode_field_error(index, exc)
    if error.field != "features[...]":
        return error
    try:
        features = msgspec.json.decode(raw).get("features")
    except (msgspec.DecodeError, AttributeError, RecursionError):
        return error
    for name, value in features.items() if isinstance(features, dict) else ():
        try:
            msgspec.convert(value, FeatureValue)
        except msgspec.ValidationError:
            return FieldError(index, f"features.{name}", error.message, error.reason)
    return error
