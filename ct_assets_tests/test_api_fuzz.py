"""Fuzzing the ingestion API over HTTP: no input gets a 5xx, no refused body is written.

Two generators drive a real ``ct-assets api`` (uvicorn on loopback):

* schemathesis, from the OpenAPI document the server serves (positive and negative
  cases of every operation), with its conformance checks;
* hypothesis, from the same document: valid events mutated at the object level
  (required fields dropped, types swapped, unknown fields, strings past their limit,
  deep nesting, bad timestamps, ...), at the byte level (NaN/Infinity tokens,
  invalid UTF-8, truncation, junk NDJSON lines, random bytes) and at the HTTP level
  (tokens, content types, oversized and chunked bodies).

Every answer must be one of 202/400/401/413/415/422 with the documented body; a 202
must count every record sent (accepted + duplicates, duplicates exactly the ids
already acknowledged); afterwards the log holds exactly the acknowledged ids.

Inputs the fuzzers once found to break the API are pinned by regression tests at
the end of this module.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from ct_assets.eventlog import EventLog
from ct_assets.schema import ReasonCode

pytestmark = pytest.mark.slow

CT_ASSETS = Path(sys.executable).parent / "ct-assets"
TOKEN = "fuzz-token-0123456789"
MAX_BODY = 64 * 1024  # --max-body-bytes of the server under test
ENDPOINTS = {"feedback": "/v1/feedback", "prediction": "/v1/predictions"}
JSON = "application/json"
NDJSON = "application/x-ndjson"
ALLOWED_STATUSES = {202, 400, 401, 413, 415, 422}
REASONS = {r.value for r in ReasonCode} | {
    "unauthorized",
    "unsupported_media_type",
    "body_too_large",
}
MAX_LISTED_ERRORS = 100


def _fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


# -- the server ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Api:
    """``ct-assets api`` on a free loopback port, in its own process group."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home = home
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def eventlog(self) -> Path:
        return self.home / "eventlog"

    def start(self) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(CT_HOME=str(self.home), DAGSTER_HOME=str(self.home / "dagster"))
        env["CT_API_TOKEN"] = TOKEN
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [CT_ASSETS, "api", "--port", str(port), "--max-body-bytes", str(MAX_BODY)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the API did not become healthy:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[_Api]:
    server = _Api(tmp_path / "ct", tmp_path / "api.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _media(content_type: str | None) -> str | None:
    return content_type.split(";", 1)[0].strip().lower() if content_type else None


# -- the ledger of acknowledged events -----------------------------------------------------------


@dataclass
class _Ledger:
    """Which ids the server acknowledged (202), under the kind that first stored them."""

    stored: dict[str, str] = field(default_factory=dict)  # event_id -> kind
    acked: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"feedback": [], "prediction": []}
    )
    statuses: dict[int, int] = field(default_factory=dict)

    def expect_202(self, kind: str, ids: list[str], body: dict[str, Any]) -> None:
        """Check a 202 against what is already stored, then record its ids."""
        duplicates = 0
        seen: set[str] = set()
        for event_id in ids:
            if event_id in self.stored or event_id in seen:
                duplicates += 1
            seen.add(event_id)
        assert body == {"accepted": len(ids) - duplicates, "duplicates": duplicates}, ids
        for event_id in ids:
            self.stored.setdefault(event_id, kind)

    def count(self, kind: str) -> int:
        return sum(1 for k in self.stored.values() if k == kind)

    def ids(self, kind: str) -> set[str]:
        return {i for i, k in self.stored.items() if k == kind}


def _check_errors(body: Any, status: int, n_records: int | None) -> list[dict[str, Any]]:
    """A 4xx body matches the Errors schema of the OpenAPI document."""
    assert isinstance(body, dict) and set(body) == {"errors", "error_count"}, body
    errors, count = body["errors"], body["error_count"]
    assert isinstance(errors, list) and isinstance(count, int), body
    assert 1 <= len(errors) <= MAX_LISTED_ERRORS, body
    assert count == len(errors) if count <= MAX_LISTED_ERRORS else len(errors) == 100, body
    for error in errors:
        assert set(error) == {"index", "field", "message", "reason"}, error
        assert isinstance(error["index"], int) and error["index"] >= -1, error
        assert isinstance(error["field"], str) and error["field"], error
        assert isinstance(error["message"], str) and error["message"], error
        assert error["reason"] in REASONS, error
        if n_records is not None:
            assert error["index"] < n_records, (error, n_records)
    if status in (401, 413, 415):
        assert [e["index"] for e in errors] == [-1], body
    return errors


def _check_answer(
    status: int, headers: dict[str, str], content: bytes, n_records: int | None
) -> Any:
    """Any answer of an ingestion endpoint: a documented status and body, never a 5xx.
    ``headers`` have lower-case names."""
    text = content[:500].decode(errors="replace")
    assert status < 500, f"{status}: {text}"
    assert status in ALLOWED_STATUSES, f"{status}: {text}"
    assert _media(headers.get("content-type")) == JSON, headers
    body = json.loads(content)
    if status == 202:
        assert isinstance(body, dict) and set(body) == {"accepted", "duplicates"}, body
        assert all(isinstance(v, int) and v >= 0 for v in body.values()), body
        if n_records is not None:
            assert body["accepted"] + body["duplicates"] == n_records, (body, n_records)
    else:
        _check_errors(body, status, n_records)
    if status == 401:
        assert headers.get("www-authenticate") == "Bearer", headers
    return body


def _check_response(response: httpx.Response, n_records: int | None) -> Any:
    headers = {k.lower(): v for k, v in response.headers.items()}
    return _check_answer(response.status_code, headers, response.content, n_records)


def _check_log(api: _Api, ledger: _Ledger) -> None:
    """The log holds exactly the acknowledged ids; it still takes writes after a restart."""
    log = EventLog(api.eventlog)
    counts = log.counts()
    for kind in ENDPOINTS:
        assert counts.of(kind) == ledger.count(kind), (kind, counts, ledger.count(kind))
        ids = log.read(kind)["event_id"].to_list()
        assert len(ids) == len(set(ids)), f"{kind}: an id is stored twice"
        assert set(ids) == ledger.ids(kind), kind
    assert httpx.get(f"{api.url}/healthz", timeout=5).status_code == 200
    api.restart()
    for kind, events in ledger.acked.items():
        if not events:
            continue
        lines: list[bytes] = []  # up to 10 of the newest, together under the body limit
        for line in reversed([json.dumps(e).encode() for e in events[-30:]]):
            if len(lines) < 10 and sum(len(x) + 1 for x in lines) + len(line) < MAX_BODY:
                lines.insert(0, line)
        response = httpx.post(
            api.url + ENDPOINTS[kind],
            content=b"\n".join(lines),
            headers={**_auth(), "content-type": NDJSON},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 0, "duplicates": len(lines)}
    assert EventLog(api.eventlog).counts() == counts


# -- valid events, from the schema -------------------------------------------------------------

_COUNTER = itertools.count()
_TEXT = st.text(max_size=24)
_NAME = st.text(min_size=1, max_size=12)
_INT = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # schema v1 integers are 64-bit
_FLOAT = st.floats(allow_nan=False, allow_infinity=False)
_SCALAR = st.one_of(st.none(), st.booleans(), _INT, _FLOAT, _TEXT)
_LABEL = st.one_of(st.booleans(), _INT, _FLOAT, _TEXT)
_FEATURES = st.dictionaries(_NAME, _SCALAR, max_size=5)
_ZONES = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-7)),
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=-12)),
    timezone(timedelta(minutes=1)),
]


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    naive = draw(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(2025, 1, 1)))
    text = naive.replace(tzinfo=draw(st.sampled_from(_ZONES))).isoformat()
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


def _new_id(draw: st.DrawFn) -> str:
    return f"fz-{next(_COUNTER)}-{draw(st.text(max_size=6))}"


def _maybe(draw: st.DrawFn, event: dict[str, Any], name: str, values: st.SearchStrategy) -> None:
    """An optional field: absent, explicitly null, or set."""
    choice = draw(st.integers(0, 3))
    if choice == 1:
        event[name] = None
    elif choice >= 2:
        event[name] = draw(values)


@st.composite
def _feedback(draw: st.DrawFn) -> dict[str, Any]:
    explicit = draw(st.booleans())
    event: dict[str, Any] = {
        "kind": "feedback",
        "event_id": _new_id(draw),
        "timestamp": draw(_timestamps()),
        "feedback_type": "explicit" if explicit else "implicit",
    }
    subject = draw(st.sampled_from(["prediction_id", "features", "both"]))
    if subject != "features":
        event["prediction_id"] = draw(_NAME)
    if subject != "prediction_id":
        event["features"] = draw(_FEATURES)
    if explicit:
        event["label"] = draw(_LABEL)
    else:
        event["signal"] = draw(_NAME)
        _maybe(draw, event, "value", _FLOAT)
    for name in ("entity_id", "user_id", "source"):
        _maybe(draw, event, name, _NAME)
    if draw(st.booleans()):
        event["schema_version"] = 1
    if draw(st.integers(0, 4)) == 0:
        event["received_at"] = draw(_timestamps())
    return dict(sorted(event.items(), key=lambda _: draw(st.integers(0, 3))))


@st.composite
def _prediction(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "prediction",
        "event_id": _new_id(draw),
        "prediction_id": draw(_NAME),
        "timestamp": draw(_timestamps()),
        "features": draw(_FEATURES),
        "prediction": draw(_LABEL),
    }
    _maybe(draw, event, "scores", st.dictionaries(_NAME, _FLOAT, max_size=3))
    for name in ("model_name", "model_version", "arm", "entity_id"):
        _maybe(draw, event, name, _NAME)
    if draw(st.booleans()):
        event["schema_version"] = 1
    return dict(sorted(event.items(), key=lambda _: draw(st.integers(0, 3))))


VALID = {"feedback": _feedback(), "prediction": _prediction()}


# -- mutations ---------------------------------------------------------------------------------

_MARK = "\u2063marker\u2063"  # replaced by raw bytes after serialisation
_RAW_TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"nan",
    b"inf",
    b"1e999",
    b"-1e999",
    b"+1",
    b"01",
    b"1.",
    b".5",
    b"0x10",
    b"undefined",
    b"True",
    b"None",
    b"'x'",
]
_BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82"]
_BAD_TIMESTAMPS = [
    "",
    "now",
    "2024-01-01",
    "2024-01-01T00:00:00",  # no offset
    "2024-13-01T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01T24:00:01Z",
    "2024-01-01T00:00:00+25:00",
    "9999-12-31T23:59:59Z",  # far in the future
    "1 Jan 2024",
]
_WRONG_VALUES: list[Any] = [None, True, 0, 1.5, "x", [], {}, [1], {"a": 1}, 2**70]
_JUNK_LINES = [b"garbage", b"{", b"[]", b"null", b"1", b"{}", b'"str"', b"[{}]", b"\x00", b"}{"]
_JUNK_BODIES = [b"", b" ", b"\n\n", b"null", b"1", b'"x"', b"true", b"[1,2]", b"[[]]", b"{}", b"[]"]
_JUNK_BODIES += [b"[{}]", b"[null]", b'{"kind":"feedback"', b"{}{}", b"[{},]", b"\xef\xbb\xbf{}"]


def _accepts(schema: dict[str, Any], value: Any) -> bool:
    """Whether ``value`` has a JSON type the property schema allows (formats aside)."""
    if "anyOf" in schema:
        return any(_accepts(s, value) for s in schema["anyOf"])
    if "enum" in schema:
        return any(value == v and type(value) is type(v) for v in schema["enum"])
    kind = schema.get("type")
    checks = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    return kind is None or checks[kind]


def _nested(depth: int) -> bytes:
    """``depth`` nested JSON arrays (as text: too deep for ``json.dumps``)."""
    return b"[" * depth + b"1" + b"]" * depth


@dataclass
class _Record:
    """One record of a body: a dict to serialise, with raw replacements for its marker."""

    event: Any
    bad: bool = False
    late: bool = False  # a rule checked only once every record passed the others
    raw: bytes | None = None  # replaces the marker in the serialised text

    def encode(self, pretty: bool, ascii_only: bool) -> bytes:
        text = json.dumps(
            self.event,
            ensure_ascii=ascii_only,
            separators=(" , ", " : ") if pretty else (",", ":"),
        ).encode()
        if self.raw is not None:
            text = text.replace(json.dumps(_MARK, ensure_ascii=ascii_only).encode(), self.raw)
        return text


def _string_properties(schema: dict[str, Any]) -> list[tuple[str, int]]:
    out = []
    for name, prop in schema["properties"].items():
        for option in prop.get("anyOf", [prop]):
            if option.get("type") == "string" and "maxLength" in option:
                out.append((name, int(option["maxLength"])))
    return out


def _mutate(data: st.DataObject, record: _Record, kind: str, schema: dict[str, Any]) -> str:
    """Make one record invalid, one way or another; returns the way."""
    event: dict[str, Any] = record.event
    properties: dict[str, Any] = schema["properties"]
    how = data.draw(
        st.sampled_from(
            [
                "drop_required",
                "wrong_type",
                "unknown_field",
                "string_too_long",
                "feature_too_long",
                "too_many_features",
                "int_out_of_range",
                "event_too_large",
                "nested_feature",
                "deep_record",
                "bad_timestamp",
                "business_rule",
                "wrong_kind",
                "raw_token",
                "invalid_utf8",
                "truncated",
            ]
        )
    )
    record.bad = True
    if how == "drop_required":
        del event[data.draw(st.sampled_from(sorted(schema["required"])))]
    elif how == "wrong_type":
        name = data.draw(st.sampled_from(sorted(properties)))
        wrong = [v for v in _WRONG_VALUES if not _accepts(properties[name], v)]
        if name == "features":  # an object of the wrong shape
            wrong.append({"a": {"b": 1}})
        event[name] = data.draw(st.sampled_from(wrong))
    elif how == "unknown_field":
        name = data.draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in properties))
        event[name] = data.draw(_SCALAR)
    elif how == "string_too_long":
        name, limit = data.draw(st.sampled_from(_string_properties(schema)))
        event[name] = "x" * (limit + data.draw(st.integers(1, 200)))
    elif how == "feature_too_long":
        if data.draw(st.booleans()):
            event["features"] = {"f": "x" * (1025 + data.draw(st.integers(0, 100)))}
        else:
            event["features"] = {"n" * (129 + data.draw(st.integers(0, 10))): 1}
    elif how == "too_many_features":
        event["features"] = {f"f{i}": i for i in range(513 + data.draw(st.integers(0, 20)))}
    elif how == "int_out_of_range":  # one integer feature beyond 64 bits
        big = data.draw(st.sampled_from([2**63, -(2**63) - 1, 2**200]))
        event["features"] = {**(event.get("features") or {}), "big": big}
    elif how == "event_too_large":  # every field within its limit, the event over 32 KiB
        event["features"] = {f"f{i}": "y" * 1000 for i in range(40)}
        record.late = True
    elif how == "nested_feature":
        event["features"] = {"f": _MARK}
        record.raw = _nested(data.draw(st.integers(1, 3000)))
    elif how == "deep_record":
        record.event, record.raw = _MARK, _nested(data.draw(st.integers(1, 5000)))
    elif how == "bad_timestamp":
        event["timestamp"] = data.draw(st.sampled_from(_BAD_TIMESTAMPS))
    elif how == "business_rule":
        if kind == "prediction":
            now = datetime.now(UTC) + timedelta(minutes=data.draw(st.integers(10, 10**6)))
            event["timestamp"] = now.isoformat()
        elif event["feedback_type"] == "explicit":
            event.pop("label", None)
        else:
            event.pop("signal", None)
        if kind == "feedback" and data.draw(st.booleans()):
            event.pop("prediction_id", None)
            event.pop("features", None)
    elif how == "wrong_kind":
        event["kind"] = "prediction" if kind == "feedback" else "feedback"
    elif how == "raw_token":
        name = data.draw(
            st.sampled_from(
                ["label", "value", "features"]
                if kind == "feedback"
                else ["prediction", "scores", "features"]
            )
        )
        if name in ("features", "scores"):
            event[name] = {"f": _MARK}
        else:
            event[name] = _MARK
        record.raw = data.draw(st.sampled_from(_RAW_TOKENS))
    elif how == "invalid_utf8":
        name = data.draw(st.sampled_from(["event_id", "timestamp", "features", "kind"]))
        if name == "features":
            event["features"] = {data.draw(st.sampled_from(["f", _MARK])): _MARK}
        else:
            event[name] = _MARK
        record.raw = b'"ok' + data.draw(st.sampled_from(_BAD_UTF8)) + b'"'
    elif how == "truncated":
        text = record.encode(False, True)
        cut = 1 + data.draw(st.integers(0, 2**20)) % (len(text) - 1)  # ids vary in length
        record.event, record.raw = _MARK, text[:cut]
    return how


@dataclass
class _Request:
    kind: str
    body: bytes
    headers: dict[str, str]
    chunked: bool
    n_records: int | None
    records: list[_Record]
    expect: set[int]
    valid_ids: list[str]


_GOOD_AUTH = [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}"]
_BAD_AUTH = [None, "", "Bearer", f"Basic {TOKEN}", f"Token {TOKEN}", "Bearer wrong"]
_BAD_AUTH += [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN, f"Bearer {TOKEN.upper()}"]
_GOOD_TYPES = {
    JSON: [JSON, "application/json; charset=utf-8", "Application/JSON"],
    NDJSON: [NDJSON, "application/x-ndjson; charset=utf-8", "APPLICATION/X-NDJSON"],
}
_BAD_TYPES = [None, "", "text/plain", "application/xml", "application/ndjson", "json"]
_BAD_TYPES += ["application/jsonl", "multipart/form-data; boundary=x", "text/json"]
_BAD_TYPES += ["application/x-www-form-urlencoded", "application/json-seq"]


def _draw_request(data: st.DataObject, ledger: _Ledger, schemas: dict[str, Any]) -> _Request:
    kind = data.draw(st.sampled_from(sorted(ENDPOINTS)), label="kind")
    schema = schemas["FeedbackEvent" if kind == "feedback" else "PredictionEvent"]
    count = data.draw(st.integers(1, 6))
    records = [_Record(dict(data.draw(VALID[kind]))) for _ in range(count)]
    # re-send acknowledged events (drawn whatever the pool holds: generation must not
    # depend on the server's earlier answers, or hypothesis cannot replay an example)
    resend = data.draw(st.integers(0, 3)) == 0
    picks = data.draw(st.lists(st.integers(0, 2**16), min_size=1, max_size=4))
    pool = ledger.acked[kind]
    if resend and pool:
        records += [_Record(dict(pool[p % len(pool)])) for p in picks]
    if data.draw(st.integers(0, 5)) == 0:  # the same id twice in one batch
        records.append(_Record(dict(records[0].event)))
    if data.draw(st.integers(0, 6)) == 0:  # strings and counts exactly at their limits
        records[0].event["event_id"] = (records[0].event["event_id"] + "z" * 128)[:128]
        records[0].event["features"] = {f"f{i:03d}": "w" * 1024 for i in range(20)}
        records[0].event["features"].update({f"g{i:03d}": i for i in range(512 - 20)})
    n_bad = min(count, data.draw(st.sampled_from([0, 0, 1, 1, 2])))
    for index in data.draw(st.permutations(range(count)))[:n_bad]:
        records[index].event = dict(records[index].event)
        note(f"record {index}: {_mutate(data, records[index], kind, schema)}")

    fmt = data.draw(st.sampled_from(["array", "ndjson", "object"]))
    if fmt == "object" and len(records) > 1:
        fmt = "array"
    ascii_only = data.draw(st.booleans())
    pretty = data.draw(st.booleans())
    lines = [r.encode(pretty, ascii_only) for r in records]
    bad_body = False
    n_records: int | None = len(records)
    if fmt == "ndjson":
        junk = data.draw(st.lists(st.sampled_from(_JUNK_LINES), max_size=2))
        for line in junk:
            at = data.draw(st.integers(0, 2**16)) % (len(lines) + 1)
            lines.insert(at, line)
            records.insert(at, _Record(None, bad=True))
        n_records = len(lines)
        separators = data.draw(
            st.lists(
                st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\n \n", b"\n\t\r\n"]),
                min_size=16,
                max_size=16,
            )
        )
        body = b"".join(line + sep for line, sep in zip(lines, separators, strict=False))
        if not data.draw(st.booleans()):
            body = body.rstrip(b"\r\n")
        media = NDJSON
    else:
        if fmt == "object":
            body = lines[0]
        else:
            glue = data.draw(st.sampled_from([b",", b", ", b",\r\n  ", b"\n,\t"]))
            body = b"[" + glue.join(lines) + b"]"
        body = data.draw(st.sampled_from([b"", b" ", b"\r\n\t"])) + body
        body += data.draw(st.sampled_from([b"", b"\n", b" \r\n"]))
        media = JSON
    if data.draw(st.integers(0, 9)) == 0:  # the other media type than the body's format
        # one NDJSON line is a JSON object; an array is never one NDJSON event
        bad_body = fmt == "array" or (fmt == "ndjson" and len(lines) > 1)
        media = NDJSON if media == JSON else JSON
        n_records = None
    if data.draw(st.integers(0, 9)) == 0:  # no events at all
        body, bad_body, n_records, records = (
            data.draw(st.sampled_from(_JUNK_BODIES)),
            True,
            None,
            [],
        )
    elif data.draw(st.integers(0, 14)) == 0:
        body, bad_body, n_records, records = data.draw(st.binary(max_size=300)), True, None, []

    headers: dict[str, str] = {}
    expect: set[int] | None = None
    auth = data.draw(
        st.sampled_from(_GOOD_AUTH + _BAD_AUTH)
        if data.draw(st.integers(0, 11)) == 0
        else st.just(_GOOD_AUTH[0])
    )
    if auth is not None:
        headers["authorization"] = auth
    if auth not in _GOOD_AUTH:
        expect = {401}
    ctype: str | None = data.draw(st.sampled_from(_GOOD_TYPES[media]))
    if data.draw(st.integers(0, 11)) == 0:
        ctype = data.draw(st.sampled_from(_BAD_TYPES))
        expect = expect or {415}
    if ctype is not None:
        headers["content-type"] = ctype
    if data.draw(st.integers(0, 14)) == 0:
        body += b" " * (MAX_BODY + 1 - len(body) + data.draw(st.integers(0, 4096)))
    if len(body) > MAX_BODY:
        expect = expect or {413}
    invalid = bad_body or any(r.bad for r in records)
    if expect is None:
        expect = {400, 422} if invalid else {202}
    valid_ids = [] if invalid else [r.event["event_id"] for r in records]
    return _Request(
        kind=kind,
        body=body,
        headers=headers,
        chunked=data.draw(st.integers(0, 4)) == 0,
        n_records=n_records if expect & {202, 400, 422} else None,
        records=records,
        expect=expect,
        valid_ids=valid_ids,
    )


def _send(client: httpx.Client, request: _Request) -> httpx.Response:
    url = ENDPOINTS[request.kind]
    if not request.chunked:
        return client.post(url, content=request.body, headers=request.headers)
    body = request.body

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    return client.post(url, content=chunks(), headers=request.headers)


def test_mutated_bodies_never_get_a_5xx_nor_get_written(api: _Api) -> None:
    document = httpx.get(f"{api.url}/openapi.json", timeout=5).json()
    schemas = document["components"]["schemas"]
    ledger = _Ledger()
    client = httpx.Client(base_url=api.url, timeout=30)

    @given(data=st.data())
    @_fuzz_settings(examples=600)
    def fuzz(data: st.DataObject) -> None:
        request = _draw_request(data, ledger, schemas)
        note(f"{request.kind} {request.headers} chunked={request.chunked}")
        note(f"body={request.body[:2000]!r}")
        response = _send(client, request)
        ledger.statuses[response.status_code] = 1 + ledger.statuses.get(response.status_code, 0)
        body = _check_response(response, request.n_records)
        assert response.status_code in request.expect, (response.status_code, body)
        if response.status_code == 202:
            fresh = {
                r.event["event_id"]: r.event
                for r in request.records
                if r.event["event_id"] not in ledger.stored
            }
            ledger.expect_202(request.kind, request.valid_ids, body)
            ledger.acked[request.kind].extend(fresh.values())
            return
        if response.status_code in (400, 422) and request.n_records is not None:
            indices = {e["index"] for e in body["errors"]}
            bad = {i for i, r in enumerate(request.records) if r.bad}
            assert indices <= bad | {-1}, (indices, bad, body)
            must = {i for i, r in enumerate(request.records) if r.bad and not r.late}
            if -1 not in indices and body["error_count"] <= MAX_LISTED_ERRORS:
                assert must <= indices, (must, indices)

    try:
        fuzz()
    finally:
        client.close()
    print(f"statuses {sorted(ledger.statuses.items())}")
    assert ledger.statuses.get(202, 0) >= 30, ledger.statuses
    assert sum(n for s, n in ledger.statuses.items() if s != 202) >= 100, ledger.statuses
    _check_log(api, ledger)


# -- schemathesis, from the served OpenAPI document ----------------------------------------------


def _sent_events(body: bytes, content_type: str | None) -> list[dict[str, Any]]:
    """The records of a body the server accepted (so it is JSON or NDJSON of objects)."""
    if _media(content_type) == NDJSON:
        return [json.loads(line) for line in body.split(b"\n") if line.strip()]
    parsed = json.loads(body)
    return parsed if isinstance(parsed, list) else [parsed]


def _run_schemathesis(
    strategy: Any,
    examples: int,
    kind: str | None,
    api: _Api,
    ledger: _Ledger,
    session: Any,
    checks: list[Any],
) -> None:
    """Send ``examples`` schemathesis cases of one operation; check every answer."""
    import requests

    @given(case=strategy)
    @_fuzz_settings(examples)
    def fuzz(case: Any) -> None:
        try:
            response = case.call(base_url=api.url, headers=_auth(), session=session)
        except requests.exceptions.InvalidJSONError:
            return  # the client cannot write the body (NaN for a number): nothing was sent
        sent = response.request.body or b""
        sent = sent.encode() if isinstance(sent, str) else sent
        got = {k.lower(): v[0] for k, v in response.headers.items() if v}
        status = response.status_code
        ledger.statuses[status] = 1 + ledger.statuses.get(status, 0)
        ctype = response.request.headers.get("content-type")
        case.validate_response(response, checks=checks)
        if kind is None:
            assert status == 200, status
            return
        body = _check_answer(status, got, response.content, None)
        if status == 202:
            events = _sent_events(sent, ctype)
            fresh = {e["event_id"]: e for e in events if e["event_id"] not in ledger.stored}
            ledger.expect_202(kind, [e["event_id"] for e in events], body)
            ledger.acked[kind].extend(fresh.values())

    fuzz()


def test_schemathesis_cases_from_the_served_openapi_document_never_get_a_5xx(api: _Api) -> None:
    import requests
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    @schemathesis.serializer(NDJSON)
    def ndjson(ctx: Any, value: Any) -> bytes:
        """The document gives NDJSON bodies as strings; anything else goes one JSON per line."""
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8", "surrogatepass")
        items = value if isinstance(value, list) else [value]
        return b"".join(json.dumps(item).encode() + b"\n" for item in items)

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    assert set(schema) >= {"/v1/feedback", "/v1/predictions", "/healthz", "/metrics"}
    ledger = _Ledger()
    session = requests.Session()
    operations = [
        ("/v1/feedback", "POST", "feedback", 150),
        ("/v1/predictions", "POST", "prediction", 150),
        ("/healthz", "GET", None, 10),
        ("/metrics", "GET", None, 10),
    ]
    for path, method, kind, examples in operations:
        # nothing of a GET without parameters can be negated
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if kind else [])
        for mode in modes:
            strategy = schema[path][method].as_strategy(generation_mode=mode)
            _run_schemathesis(strategy, examples, kind, api, ledger, session, checks)
    session.close()
    print(f"statuses {sorted(ledger.statuses.items())}")
    assert ledger.statuses.get(202, 0) >= 5, ledger.statuses
    _check_log(api, ledger)


# -- inputs the fuzzers found to break ct_assets: regression tests ------------------------------


def _post(api: _Api, kind: str, body: bytes, media: str = JSON) -> httpx.Response:
    return httpx.post(
        api.url + ENDPOINTS[kind],
        content=body,
        headers={**_auth(), "content-type": media},
        timeout=30,
    )


def _feedback_json(event_id: str, timestamp: str = "2024-01-01T00:00:00Z", **extra: Any) -> bytes:
    event = {
        "kind": "feedback",
        "event_id": event_id,
        "timestamp": timestamp,
        "feedback_type": "implicit",
        "signal": "click",
        "prediction_id": "p1",
        **extra,
    }
    return json.dumps(event).encode()


def _export(api: _Api, kind: str, out: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
    env["CT_HOME"] = str(api.home)
    return subprocess.run(
        [CT_ASSETS, "events", "export", "--kind", kind, "--out", str(out)],
        env=env,
        capture_output=True,
        timeout=120,
    )


def test_invalid_utf8_inside_a_string_is_a_400(api: _Api) -> None:
    bad = _feedback_json("utf8-\u00e9").replace(b"\\u00e9", b"\xff")
    assert b"\xff" in bad
    answers = {
        "object": _post(api, "feedback", bad),
        "array": _post(api, "feedback", b"[" + bad + b"]"),
        "ndjson": _post(api, "feedback", _feedback_json("ok") + b"\n" + bad + b"\n", NDJSON),
    }
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 400)
    for response in answers.values():
        _check_response(response, None)
    assert EventLog(api.eventlog).counts().feedback == 0


def test_malformed_json_array_is_a_400(api: _Api) -> None:
    for body in (b"[1,2", b'[{"kind":"feedback"}, {', b'[{"unknown":1},{"a":]'):
        response = _post(api, "feedback", body)
        assert response.status_code == 400, (body, response.status_code, response.text)
        _check_response(response, None)


def test_timestamp_before_year_1_in_utc_is_a_422_not_a_500(api: _Api) -> None:
    for media, tail in ((JSON, b""), (NDJSON, b"\n")):
        body = _feedback_json(f"y1-{media}", "0001-01-01T00:00:00+01:00") + tail
        response = _post(api, "feedback", body, media)
        assert response.status_code == 422, response.text
        assert [e["field"] for e in _check_response(response, 1)["errors"]] == ["timestamp"]
    # in range once in UTC: stored, and the log still reads
    response = _post(api, "feedback", _feedback_json("y1-ok", "0001-01-01T05:00:00+01:00"))
    assert response.status_code == 202, response.text
    assert EventLog(api.eventlog).read("feedback")["event_id"].to_list() == ["y1-ok"]


def test_bare_cr_inside_an_ndjson_line_leaves_the_log_readable(api: _Api, tmp_path: Path) -> None:
    line = _feedback_json("cr-1").replace(b'"event_id"', b'\r"event_id"')
    response = _post(api, "feedback", line + b"\n", NDJSON)
    _check_response(response, 1)
    acked = 1 if response.status_code == 202 else 0
    assert response.status_code in (202, 400, 422)
    try:
        ids = EventLog(api.eventlog).read("feedback")["event_id"].to_list()
    finally:
        api.restart()  # the API must come back up on this log
    assert ids == ["cr-1"] * acked
    response = _post(api, "feedback", _feedback_json("cr-2") + b"\n", NDJSON)
    assert response.status_code == 202, response.text
    assert _export(api, "feedback", tmp_path / "f.parquet").returncode == 0


def test_export_of_events_with_empty_features(api: _Api, tmp_path: Path) -> None:
    event = {
        "kind": "prediction",
        "event_id": "nf-1",
        "prediction_id": "p1",
        "timestamp": "2024-01-01T00:00:00Z",
        "features": {},
        "prediction": 1,
    }
    assert _post(api, "prediction", json.dumps(event).encode()).status_code == 202
    done = _export(api, "prediction", tmp_path / "p.parquet")
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-2000:]


def test_huge_integer_feature_does_not_poison_the_log(api: _Api, tmp_path: Path) -> None:
    body = _feedback_json("big-1", features={"x": 2**200})
    response = _post(api, "feedback", body)
    assert response.status_code == 422, response.text
    assert _check_response(response, 1)["errors"][0]["reason"] == "out_of_range"
    ok = _post(api, "feedback", _feedback_json("big-2", features={"x": 2**63 - 1}))
    assert ok.status_code == 202, ok.text
    done = _export(api, "feedback", tmp_path / "f.parquet")
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-2000:]
