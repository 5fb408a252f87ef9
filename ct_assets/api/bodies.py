"""Request bodies to validated, encoded batches: the ingestion rules, without HTTP.

A body is one JSON object, a JSON array of objects, or NDJSON (one object per
line; blank lines are ignored). The fast path decodes the whole body in one
msgspec call; only a body that fails is decoded again record by record, so the
errors name every bad record. Every rejection is a :class:`Rejection` carrying
the HTTP status and the machine-readable errors; nothing of a rejected body is
ever written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ct_assets.eventlog.writer import PreparedBatch, prepare_batch
from ct_assets.schema import (
    EVENT_TYPES,
    Event,
    EventKind,
    EventValidationError,
    FieldError,
    ReasonCode,
    check_event,
    decode_field_error,
)

JSON = "application/json"
NDJSON = "application/x-ndjson"
MEDIA_TYPES = (JSON, NDJSON)
# At most this many errors are listed in a response; `error_count` gives the total.
MAX_LISTED_ERRORS = 100


class Rejection(Exception):
    """The request is refused: ``status`` and the errors for the response body."""

    def __init__(self, status: int, errors: Sequence[FieldError], reason: str) -> None:
        self.status = status
        self.errors = list(errors)
        self.reason = reason
        super().__init__(f"{status} {reason}: {len(self.errors)} error(s)")

    def body(self) -> dict[str, Any]:
        listed = self.errors[:MAX_LISTED_ERRORS]
        return {
            "errors": [msgspec.structs.asdict(error) for error in listed],
            "error_count": len(self.errors),
        }


def request_error(status: int, reason: ReasonCode | str, message: str) -> Rejection:
    """A rejection of the request as a whole (not of one record): ``index`` is -1."""
    return Rejection(status, [FieldError(-1, "$", message, str(reason))], str(reason))


@dataclass(frozen=True)
class _Decoders:
    one: msgspec.json.Decoder[Any]
    many: msgspec.json.Decoder[Any]


_DECODERS: dict[EventKind, _Decoders] = {
    kind: _Decoders(msgspec.json.Decoder(cls), msgspec.json.Decoder(list[cls]))  # type: ignore[valid-type]
    for kind, cls in EVENT_TYPES.items()
}
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def media_type_of(content_type: str | None) -> str | None:
    """``application/json`` or ``application/x-ndjson`` (parameters ignored), else None."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    return media if media in MEDIA_TYPES else None


def parse_batch(
    body: bytes,
    media_type: str,
    kind: EventKind,
    max_skew: timedelta,
    max_event_bytes: int,
    now: datetime | None = None,
) -> PreparedBatch:
    """A body to a batch ready for the log, or :class:`Rejection` listing every bad record."""
    now = now or datetime.now(UTC)
    rules = _Rules(now, max_skew)
    raw_lines: list[bytes] | None = None
    if media_type == NDJSON:
        events = _decode_ndjson(body, kind, rules)
        raw_lines = _standalone_lines(body, len(events))
    else:
        events = _decode_json(body, kind, rules)
    if not events:
        raise request_error(422, ReasonCode.EMPTY_BATCH, "the body holds no events")
    errors: list[FieldError] = []
    for index, event in enumerate(events):
        errors.extend(rules.check(event, index))
    if errors:
        raise Rejection(422, errors, "invalid")
    try:
        # NDJSON lines are stored as sent (each decoded to exactly one valid event), which
        # saves re-encoding; anything else is encoded from the decoded events.
        return prepare_batch(events, max_event_bytes, raw_lines)
    except EventValidationError as exc:
        raise Rejection(422, exc.errors, "invalid") from None


def _standalone_lines(body: bytes, count: int) -> list[bytes] | None:
    """The body's lines if each is exactly one JSON object, so that storing them as sent is
    storing exactly the decoded events; else None (the events are encoded again).

    ``decode_lines`` accepts any whitespace between values, so a line might hold two
    objects while another object spans two lines. A line that starts with ``{`` and ends
    with ``}`` cannot continue on the next line (JSON strings hold no raw newlines and
    the next token after a complete value inside an object is ``,`` or ``}``), so with
    as many such lines as events, each line is one event. A ``\r`` inside a line is JSON
    whitespace but a line break to some NDJSON readers: such bodies are encoded again.
    """
    if b"\r" in body:
        return None
    lines = [line for line in (part.strip() for part in body.split(b"\n")) if line]
    if len(lines) != count:
        return None
    for line in lines:
        if line[:1] != b"{" or line[-1:] != b"}":
            return None
    return lines


@dataclass(frozen=True)
class _Rules:
    now: datetime
    max_skew: timedelta

    def check(self, event: Event, index: int) -> list[FieldError]:
        return check_event(event, index, self.now, self.max_skew, check_finite=False)


def _decode_json(body: bytes, kind: EventKind, rules: _Rules) -> list[Event]:
    decoders = _DECODERS[kind]
    start = body.lstrip()[:1]
    if start == b"{":
        try:
            return [decoders.one.decode(body)]
        except msgspec.ValidationError as exc:
            raise Rejection(422, [decode_field_error(0, exc)], "invalid") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise _unparseable(0, body, exc) from None
    if start != b"[":
        raise request_error(
            400, ReasonCode.MALFORMED, "body must be a JSON object, a JSON array or NDJSON"
        )
    try:
        events: list[Event] = decoders.many.decode(body)
        return events
    except msgspec.ValidationError:
        pass  # find every bad element below
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _unparseable(-1, body, exc) from None
    except RecursionError:
        raise request_error(422, ReasonCode.TOO_DEEP, "values are nested too deeply") from None
    try:
        raws = _RAW_LIST.decode(body)
    except msgspec.ValidationError:
        raise request_error(
            422, ReasonCode.SCHEMA, "a JSON array body must hold event objects"
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _unparseable(-1, body, exc) from None
    except RecursionError:
        raise request_error(422, ReasonCode.TOO_DEEP, "values are nested too deeply") from None
    errors: list[FieldError] = []
    for index, raw in enumerate(raws):
        errors.extend(_record_errors(decoders.one, bytes(raw), index, rules))
    raise Rejection(422, errors, "invalid")


def _decode_ndjson(body: bytes, kind: EventKind, rules: _Rules) -> list[Event]:
    decoders = _DECODERS[kind]
    try:
        events: list[Event] = decoders.one.decode_lines(body)
        return events
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass  # find every bad line below
    errors: list[FieldError] = []
    malformed = False
    index = 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        found = _record_errors(decoders.one, line, index, rules)
        errors.extend(found)
        malformed = malformed or any(e.reason == ReasonCode.MALFORMED.value for e in found)
        index += 1
    if malformed:
        raise Rejection(400, errors, ReasonCode.MALFORMED.value)
    raise Rejection(422, errors, "invalid")


_BYTE_RE = re.compile(r"\(byte (\d+)\)")
_NON_FINITE_TOKENS = (b"NaN", b"Infinity", b"-Infinity")


def _malformed(index: int, raw: bytes, exc: msgspec.DecodeError | UnicodeDecodeError) -> FieldError:
    """A record that is not JSON; NaN and Infinity (not JSON either) get their own reason."""
    match = _BYTE_RE.search(str(exc))
    if match is not None:
        at = raw[int(match.group(1)) :]
        if at.startswith(_NON_FINITE_TOKENS) or raw[int(match.group(1)) - 1 :].startswith(
            b"-Infinity"
        ):
            return FieldError(
                index, "$", f"NaN or Infinity is not allowed: {exc}", ReasonCode.NOT_FINITE.value
            )
    return FieldError(index, "$", f"not JSON: {exc}", ReasonCode.MALFORMED.value)


def _unparseable(
    index: int, body: bytes, exc: msgspec.DecodeError | UnicodeDecodeError
) -> Rejection:
    error = _malformed(index, body, exc)
    status = 422 if error.reason == ReasonCode.NOT_FINITE.value else 400
    return Rejection(status, [error], error.reason)


def _record_errors(
    decoder: msgspec.json.Decoder[Any], raw: bytes, index: int, rules: _Rules
) -> list[FieldError]:
    """Everything wrong with one record: its decode error, or the rules it breaks."""
    try:
        event: Event = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return [decode_field_error(index, exc)]
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return [_malformed(index, raw, exc)]
    except RecursionError:
        return [FieldError(index, "$", "values are nested too deeply", ReasonCode.TOO_DEEP.value)]
    return rules.check(event, index)
