"""The ingestion API over real HTTP: a ``ct-assets api`` subprocess (uvicorn) on 127.0.0.1.

Most tests share one module-scoped server on its own CT_HOME (a small body limit, a
small event limit and a short clock skew make every rejection cheap to trigger). Each
rejection is checked for its status, the error body and its reason code, and for
leaving the event log byte for byte as it was. Tests that start servers of their own
(restart, two workers, start refusals) are marked ``slow``.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ct_assets.eventlog import EventLog, LogCounts
from ct_assets.schema import EventKind
from ct_assets_tests.api_helpers import (
    CT_ASSETS,
    ApiServer,
    feedback_event,
    free_port,
    prediction_event,
    run_api,
    server_env,
    start_api,
)

TOKEN = "tok-" + secrets.token_hex(12)
MAX_BODY_BYTES = 65536
MAX_EVENT_BYTES = 4096
SKEW_SECONDS = 120
SERVER_ENV = {
    "CT_API_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "CT_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
    "CT_MAX_FUTURE_SKEW_SECONDS": str(SKEW_SECONDS),
}
JSON = "application/json"
NDJSON = "application/x-ndjson"
FEEDBACK = "/v1/feedback"
PREDICTIONS = "/v1/predictions"
PREDICT = "/v1/predict"
KIND_OF_PATH: dict[str, EventKind] = {FEEDBACK: "feedback", PREDICTIONS: "prediction"}
RAW = '"@@RAW@@"'  # a placeholder string value, replaced by a raw JSON token (NaN, 1e999)


# -- bodies --------------------------------------------------------------------------------


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def fb(event_id: str, **overrides: Any) -> str:
    return dumps(feedback_event(event_id, **overrides))


def pr(event_id: str, **overrides: Any) -> str:
    return dumps(prediction_event(event_id, **overrides))


def raw(text: str, token: str) -> str:
    """``text`` with its placeholder value replaced by the raw JSON ``token``."""
    assert RAW in text
    return text.replace(RAW, token)


def array(*records: str) -> bytes:
    return ("[" + ",".join(records) + "]").encode()


def ndjson(*records: str, eol: str = "\n") -> bytes:
    return (eol.join(records) + eol).encode()


def in_future(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- server, client, log -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    api = start_api(tmp_path_factory.mktemp("api-home"), TOKEN, env=SERVER_ENV)
    try:
        # Seed both kinds so the journal exists before the first "unchanged" comparison.
        for path, body in ((FEEDBACK, fb("seed-fb")), (PREDICTIONS, pr("seed-pr"))):
            response = httpx.post(
                api.url(path),
                content=body,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": JSON},
            )
            assert response.status_code == 202, response.text
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30.0
    ) as http:
        yield http


def post(
    http: httpx.Client, path: str, body: Any, content_type: str | None = JSON, **headers: str
) -> httpx.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return http.post(path, content=body, headers=headers)


def post_to(api: ApiServer, path: str, body: bytes, content_type: str = JSON) -> httpx.Response:
    """One request on a new connection, with the token."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    return httpx.post(api.url(path), content=body, headers=headers, timeout=60)


@dataclass(frozen=True)
class LogState:
    counts: LogCounts
    journal: bytes
    segments: dict[str, int]


def log_state(root: Path) -> LogState:
    segments = {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted((root / "segments").rglob("*"))
        if p.is_file()
    }
    return LogState(EventLog(root).counts(), (root / "journal.ctj").read_bytes(), segments)


def stored_ids(root: Path, kind: EventKind) -> list[str]:
    ids: list[str] = EventLog(root).read(kind)["event_id"].to_list()
    return ids


def all_stored_ids(root: Path) -> list[str]:
    return stored_ids(root, "feedback") + stored_ids(root, "prediction")


def export_ids(home: Path, kind: EventKind, out: Path) -> list[str]:
    """``ct-assets events export`` as a user runs it; the event ids of the Parquet file."""
    done = subprocess.run(
        [CT_ASSETS, "events", "export", "--kind", kind, "--out", str(out)],
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    ids: list[str] = pl.read_parquet(out)["event_id"].to_list()
    return ids


def error_body(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error body, checked against the documented shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"errors", "error_count"}
    errors = body["errors"]
    assert isinstance(errors, list) and errors
    assert isinstance(body["error_count"], int) and body["error_count"] >= len(errors)
    for error in errors:
        assert set(error) == {"index", "field", "message", "reason"}
        assert isinstance(error["index"], int)
        assert isinstance(error["field"], str) and error["field"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["reason"], str) and error["reason"]
    return body


def metric(text: str, sample: str, **labels: str) -> float:
    """The value of one sample of Prometheus text (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


# -- rejections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """A request the API must refuse; ``body(prefix)`` names its events ``<prefix>-<n>``."""

    path: str
    body: Callable[[str], bytes]
    status: int
    reason: str
    # the index of the bad record (every error must name it); a tuple: any of these; None: -
    index: int | tuple[int, ...] | None
    field: str | None = None  # the error's field starts with this
    content_type: str = JSON


def _nan_label(p: str) -> str:
    return raw(fb(f"{p}-1", label="@@RAW@@"), "NaN")


REJECTED = [
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(fb(f"{p}-0"), fb(f"{p}-1", bogus=1), fb(f"{p}-2")),
            422,
            "unknown_field",
            1,
            "bogus",
        ),
        id="unknown_field-array-1-of-3",
    ),
    pytest.param(
        Rejected(PREDICTIONS, lambda p: pr(f"{p}-0", extra="x").encode(), 422, "unknown_field", 0),
        id="unknown_field-object-predictions",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: ndjson(fb(f"{p}-0"), fb(f"{p}-1", lable=1), fb(f"{p}-2"), eol="\r\n"),
            422,
            "unknown_field",
            1,
            "lable",
            NDJSON,
        ),
        id="unknown_field-ndjson-crlf-1-of-3",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: f"\n\n{fb(f'{p}-0')}\n\n\n{fb(f'{p}-1', lable=1)}\n\n".encode(),
            422,
            "unknown_field",
            1,  # the record's index, not its line number
            "lable",
            NDJSON,
        ),
        id="unknown_field-ndjson-blank-lines-record-1",
    ),
    pytest.param(
        Rejected(FEEDBACK, lambda p: _nan_label(p).encode(), 422, "not_finite", 0),
        id="not_finite-nan-object",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: ndjson(fb(f"{p}-0"), _nan_label(p), fb(f"{p}-2")),
            422,
            "not_finite",
            1,
            content_type=NDJSON,
        ),
        id="not_finite-nan-ndjson-1-of-3",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(
                fb(f"{p}-0"), raw(fb(f"{p}-1", value="@@RAW@@"), "-Infinity"), fb(f"{p}-2")
            ),
            422,
            "not_finite",
            # The whole array fails to parse, so the error is the request's (-1).
            (1, -1),
        ),
        id="not_finite-minus-infinity-array",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(
                fb(f"{p}-0"), raw(fb(f"{p}-1", label="@@RAW@@"), "1e999"), fb(f"{p}-2")
            ),
            422,
            "not_finite",
            1,
            "label",
        ),
        id="not_finite-1e999-array-1-of-3",
    ),
    pytest.param(
        Rejected(
            PREDICTIONS,
            lambda p: raw(pr(f"{p}-0", features={"x0": "@@RAW@@"}), "-1e999").encode(),
            422,
            "not_finite",
            0,
            "features",
        ),
        id="not_finite-1e999-feature-predictions",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(fb(f"{p}-0"), fb(f"{p}-1", timestamp=in_future(3600)), fb(f"{p}-2")),
            422,
            "future_timestamp",
            1,
            "timestamp",
        ),
        id="future_timestamp-array-1-of-3",
    ),
    pytest.param(
        Rejected(
            PREDICTIONS,
            lambda p: pr(f"{p}-0", timestamp=in_future(SKEW_SECONDS + 600)).encode(),
            422,
            "future_timestamp",
            0,
            "timestamp",
        ),
        id="future_timestamp-object-predictions",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(fb(f"{p}-0"), fb(f"{p}-1", features={"s": "z" * 2000}), fb(f"{p}-2")),
            422,
            "string_too_long",
            1,
            "features",
        ),
        id="string_too_long-feature-1-of-3",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: fb(f"{p}-0", user_id="u" * 200).encode(),
            422,
            "string_too_long",
            0,
            "user_id",
        ),
        id="string_too_long-user_id",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(fb(f"{p}-0"), fb(f"{p}-1", features={"a": {"b": 1}}), fb(f"{p}-2")),
            422,
            "nested_value",
            1,
            "features",
        ),
        id="nested_value-feature-object-1-of-3",
    ),
    pytest.param(
        Rejected(
            PREDICTIONS,
            lambda p: ndjson(pr(f"{p}-0"), pr(f"{p}-1", scores={"a": [0.5]})),
            422,
            "nested_value",
            1,
            "scores",
            NDJSON,
        ),
        id="nested_value-scores-ndjson",
    ),
    pytest.param(
        Rejected(FEEDBACK, lambda p: deep_array(5000).encode(), 422, "too_deep", -1),
        id="too_deep-array-5000",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(
                fb(f"{p}-0"), raw(fb(f"{p}-1", features={"a": "@@RAW@@"}), deep_array(5000))
            ),
            422,
            "too_deep",
            (1, -1),
        ),
        id="too_deep-feature-in-array",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(
                fb(f"{p}-0"), fb(f"{p}-1", features={f"f{i}": i for i in range(600)}), fb(f"{p}-2")
            ),
            422,
            "too_large",
            1,
            "features",
        ),
        id="too_large-600-features-1-of-3",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(
                fb(f"{p}-0"),
                fb(f"{p}-1", features={f"s{i}": "z" * 1000 for i in range(6)}),
                fb(f"{p}-2"),
            ),
            422,
            "too_large",
            1,
            "$",
        ),
        id="too_large-event-bytes-1-of-3",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(fb(f"{p}-0"), pr(f"{p}-1"), fb(f"{p}-2")),
            422,
            "wrong_kind",
            1,
            "kind",
        ),
        id="wrong_kind-prediction-on-feedback",
    ),
    pytest.param(
        Rejected(PREDICTIONS, lambda p: fb(f"{p}-0").encode(), 422, "wrong_kind", 0, "kind"),
        id="wrong_kind-feedback-on-predictions",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(fb(f"{p}-0"), fb(f"{p}-1", label=None), fb(f"{p}-2")),
            422,
            "missing_label",
            1,
            "label",
        ),
        id="missing_label-1-of-3",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(fb(f"{p}-0"), fb(f"{p}-1", timestamp="2026-01-01T00:00:00")),
            422,
            "schema",
            1,
            "timestamp",
        ),
        id="schema-naive-timestamp",
    ),
    pytest.param(
        Rejected(FEEDBACK, lambda p: b"[]", 422, "empty_batch", -1), id="empty_batch-array"
    ),
    pytest.param(
        Rejected(PREDICTIONS, lambda p: b"\n\r\n  \n", 422, "empty_batch", -1, content_type=NDJSON),
        id="empty_batch-ndjson-blank-lines",
    ),
    pytest.param(
        Rejected(FEEDBACK, lambda p: b'{"kind": "feedback", nope', 400, "malformed", None),
        id="malformed-object",
    ),
    pytest.param(
        Rejected(FEEDBACK, lambda p: b"hello", 400, "malformed", None), id="malformed-not-json"
    ),
    pytest.param(Rejected(FEEDBACK, lambda p: b"", 400, "malformed", None), id="malformed-empty"),
    pytest.param(
        Rejected(FEEDBACK, lambda p: array(fb(f"{p}-0")) + b" x", 400, "malformed", None),
        id="malformed-trailing-garbage",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: ndjson(fb(f"{p}-0"), '{"kind": nope', fb(f"{p}-2")),
            400,
            "malformed",
            1,
            content_type=NDJSON,
        ),
        id="malformed-ndjson-line-1-of-3",
    ),
    pytest.param(
        Rejected(
            FEEDBACK,
            lambda p: array(fb(f"{p}-0", bogus=1), fb(f"{p}-1")) + b" x",
            400,
            "malformed",
            None,
        ),
        id="malformed-after-a-schema-error",
    ),
]


@pytest.mark.parametrize("case", REJECTED)
def test_a_rejected_body_writes_nothing(
    server: ApiServer, client: httpx.Client, request: pytest.FixtureRequest, case: Rejected
) -> None:
    prefix = "rej-" + request.node.callspec.id
    before = log_state(server.eventlog_dir)

    response = post(client, case.path, case.body(prefix), case.content_type)

    body = error_body(response, case.status)
    reasons = {error["reason"] for error in body["errors"]}
    assert case.reason in reasons, body
    if case.index is not None:
        allowed = case.index if isinstance(case.index, tuple) else (case.index,)
        # only the bad record is named: the good records of the batch have no errors
        assert {error["index"] for error in body["errors"]} <= set(allowed), body
    if case.field is not None:
        fields = [e["field"] for e in body["errors"] if e["reason"] == case.reason]
        assert any(f.startswith(case.field) for f in fields), body
    assert log_state(server.eventlog_dir) == before
    assert not [i for i in all_stored_ids(server.eventlog_dir) if i.startswith(prefix + "-")]


@pytest.mark.parametrize("content_type", [JSON, NDJSON])
def test_a_timestamp_before_year_one_in_utc_is_a_422(
    server: ApiServer, client: httpx.Client, content_type: str
) -> None:
    prefix = f"year0-{content_type.rsplit('/', 1)[1]}"
    records = (fb(f"{prefix}-0"), fb(f"{prefix}-1", timestamp="0001-01-01T00:00:00+01:00"))
    body = array(*records) if content_type == JSON else ndjson(*records)
    before = log_state(server.eventlog_dir)

    response = post(client, FEEDBACK, body, content_type)

    errors = error_body(response, 422)["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "timestamp")]
    assert log_state(server.eventlog_dir) == before


def test_every_bad_record_is_counted_and_the_first_hundred_listed(
    server: ApiServer, client: httpx.Client
) -> None:
    before = log_state(server.eventlog_dir)
    records = [fb(f"many-{i}", bogus=i) if i % 2 else fb(f"many-{i}") for i in range(240)]
    payload = array(*records)
    assert len(payload) <= MAX_BODY_BYTES

    body = error_body(post(client, FEEDBACK, payload), 422)

    assert body["error_count"] == 120
    assert len(body["errors"]) == 100
    assert [e["index"] for e in body["errors"]] == list(range(1, 200, 2))
    assert {e["reason"] for e in body["errors"]} == {"unknown_field"}
    assert log_state(server.eventlog_dir) == before


# -- 413 -----------------------------------------------------------------------------------


def _over_limit_ndjson(prefix: str) -> bytes:
    lines: list[str] = []
    while sum(len(line) + 1 for line in lines) <= MAX_BODY_BYTES:
        lines.append(fb(f"{prefix}-{len(lines)}"))
    return ndjson(*lines)


@pytest.mark.parametrize("path", [FEEDBACK, PREDICTIONS])
def test_413_when_content_length_is_over_the_limit(
    server: ApiServer, client: httpx.Client, path: str
) -> None:
    prefix = f"big-cl{path.replace('/', '-')}"
    body = _over_limit_ndjson(prefix)
    if path == PREDICTIONS:
        body = body.replace(b'"kind":"feedback"', b'"kind":"prediction"')
    before = log_state(server.eventlog_dir)

    response = post(client, path, body, NDJSON)

    assert response.request.headers["content-length"] == str(len(body))
    error = error_body(response, 413)["errors"][0]
    assert (error["index"], error["reason"]) == (-1, "body_too_large")
    assert log_state(server.eventlog_dir) == before
    assert not [i for i in all_stored_ids(server.eventlog_dir) if i.startswith(prefix)]


def test_413_for_a_chunked_body_without_content_length(
    server: ApiServer, client: httpx.Client
) -> None:
    body = _over_limit_ndjson("big-chunked")
    before = log_state(server.eventlog_dir)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = post(client, FEEDBACK, chunks(), NDJSON)

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    error = error_body(response, 413)["errors"][0]
    assert (error["index"], error["reason"]) == (-1, "body_too_large")
    assert log_state(server.eventlog_dir) == before
    assert not [i for i in all_stored_ids(server.eventlog_dir) if i.startswith("big-chunked")]
    # the connection is still usable after the refusal
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", [FEEDBACK, PREDICT])
def test_413_reaches_a_client_that_sends_the_whole_body_and_closes(
    server: ApiServer, path: str
) -> None:
    # urllib sends "Connection: close" and writes the whole body before reading: a
    # server closing with the body unread would make it see "connection reset".
    body = _over_limit_ndjson("big-urllib") * 160  # ~10 MiB, far over the 64 KiB limit
    assert len(body) > 10_000_000
    before = log_state(server.eventlog_dir)
    request = urllib.request.Request(
        server.url(path),
        data=body,
        method="POST",
        headers={"Content-Type": NDJSON if path == FEEDBACK else JSON, **server.auth()},
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)

    assert refused.value.code == 413
    assert refused.value.headers["Content-Type"].startswith("application/json")
    body_of_error = json.loads(refused.value.read())
    assert body_of_error["errors"][0]["reason"] == "body_too_large"
    assert log_state(server.eventlog_dir) == before


def test_413_to_an_expect_100_continue_client_does_not_invite_the_body(
    server: ApiServer,
) -> None:
    head = (
        f"POST {FEEDBACK} HTTP/1.1\r\nHost: {server.host}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: {NDJSON}\r\n"
        f"Content-Length: {MAX_BODY_BYTES * 100}\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)

    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer


def test_a_body_of_exactly_the_limit_is_accepted(server: ApiServer, client: httpx.Client) -> None:
    line = ndjson(fb("limit-exact"))
    padded = line + b"\n" * (MAX_BODY_BYTES - len(line))
    assert len(padded) == MAX_BODY_BYTES

    over = post(client, FEEDBACK, padded + b"\n", NDJSON)
    assert error_body(over, 413)["errors"][0]["reason"] == "body_too_large"
    exact = post(client, FEEDBACK, padded, NDJSON)
    assert exact.status_code == 202, exact.text
    assert exact.json() == {"accepted": 1, "duplicates": 0}


# -- 401 and 415 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "authorization"),
    [
        pytest.param(FEEDBACK, None, id="no-header"),
        pytest.param(FEEDBACK, "Bearer wrong-token", id="wrong-token"),
        pytest.param(
            FEEDBACK, "Basic " + base64.b64encode(f"u:{TOKEN}".encode()).decode(), id="basic"
        ),
        pytest.param(FEEDBACK, f"Basic {TOKEN}", id="basic-with-the-token"),
        pytest.param(PREDICTIONS, f"Bearer {TOKEN}x", id="token-plus-suffix"),
        pytest.param(PREDICTIONS, f"Bearer {TOKEN[:-1]}", id="token-prefix"),
        pytest.param(PREDICTIONS, "Bearer", id="scheme-only"),
        pytest.param(PREDICTIONS, TOKEN, id="token-without-scheme"),
    ],
)
def test_401_without_the_right_bearer_token(
    server: ApiServer, path: str, authorization: str | None
) -> None:
    event = fb("unauth-0") if path == FEEDBACK else pr("unauth-0")
    headers = {"Content-Type": JSON}
    if authorization is not None:
        headers["Authorization"] = authorization
    before = log_state(server.eventlog_dir)

    response = httpx.post(server.url(path), content=event, headers=headers)

    error = error_body(response, 401)["errors"][0]
    assert error["index"] == -1
    assert response.headers["www-authenticate"] == "Bearer"
    assert log_state(server.eventlog_dir) == before
    assert "unauth-0" not in all_stored_ids(server.eventlog_dir)


def test_401_comes_before_the_content_type_and_the_body(server: ApiServer) -> None:
    response = httpx.post(
        server.url(FEEDBACK), content=b"x" * (2 * MAX_BODY_BYTES), headers={"Content-Type": "a/b"}
    )
    error_body(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/xml", "multipart/form-data; boundary=x", "application/jsonx"],
)
def test_415_for_other_content_types(
    server: ApiServer, client: httpx.Client, content_type: str | None
) -> None:
    before = log_state(server.eventlog_dir)

    response = post(client, FEEDBACK, fb("media-0"), content_type)

    if content_type is None:
        assert "content-type" not in response.request.headers
    error = error_body(response, 415)["errors"][0]
    assert (error["index"], error["reason"]) == (-1, "unsupported_media_type")
    assert log_state(server.eventlog_dir) == before
    assert "media-0" not in all_stored_ids(server.eventlog_dir)


# -- accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [FEEDBACK, PREDICTIONS])
def test_object_array_and_ndjson_are_accepted_and_stored_once(
    server: ApiServer, client: httpx.Client, tmp_path: Path, path: str
) -> None:
    kind = KIND_OF_PATH[path]
    make = fb if kind == "feedback" else pr
    prefix = f"ok-{kind}"
    ids = [f"{prefix}-{i}" for i in range(10)]
    before = EventLog(server.eventlog_dir).counts()

    sent = [
        (make(ids[0]).encode(), "application/json; charset=utf-8", 1),
        (make(ids[1]).encode(), "Application/JSON", 1),
        (array(*map(make, ids[2:5])), JSON, 3),
        # blank lines, CRLF line ends, no final newline
        (
            ("\r\n" + make(ids[5]) + "\r\n\r\n" + make(ids[6]) + "\n\n" + make(ids[7])).encode(),
            NDJSON,
            3,
        ),
        (ndjson(*map(make, ids[8:10])), "application/x-ndjson; charset=utf-8", 2),
    ]
    for body, content_type, count in sent:
        response = post(client, path, body, content_type)
        assert response.status_code == 202, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"accepted": count, "duplicates": 0}

    assert EventLog(server.eventlog_dir).counts().of(kind) == before.of(kind) + len(ids)
    out = tmp_path / f"{kind}.parquet"
    EventLog(server.eventlog_dir).export(kind, out)
    exported = pl.read_parquet(out)
    mine = exported.filter(pl.col("event_id").str.starts_with(prefix + "-"))
    assert sorted(mine["event_id"].to_list()) == sorted(ids)
    assert exported["event_id"].n_unique() == exported.height
    assert set(mine["kind"].to_list()) == {kind}
    if kind == "feedback":
        assert set(mine["source"].to_list()) == {"test"}
    else:
        assert set(mine["model_name"].to_list()) == {"test-model"}


def test_a_timestamp_within_the_skew_is_accepted(server: ApiServer, client: httpx.Client) -> None:
    response = post(client, FEEDBACK, fb("skew-ok", timestamp=in_future(SKEW_SECONDS / 4)))
    assert response.status_code == 202, response.text
    assert "skew-ok" in stored_ids(server.eventlog_dir, "feedback")


@pytest.mark.parametrize("content_type", [JSON, NDJSON])
def test_received_at_is_stamped_by_the_server(
    server: ApiServer, client: httpx.Client, content_type: str
) -> None:
    event_id = f"stamp-{content_type.rsplit('/', 1)[1]}"
    record = fb(event_id, received_at="2000-01-01T00:00:00Z")
    body = array(record) if content_type == JSON else ndjson(record)
    sent = datetime.now(UTC)

    assert post(client, FEEDBACK, body, content_type).status_code == 202

    frame = EventLog(server.eventlog_dir).read("feedback")
    (received,) = frame.filter(pl.col("event_id") == event_id)["received_at"].to_list()
    assert sent - timedelta(seconds=5) <= received <= datetime.now(UTC) + timedelta(seconds=5)


def test_the_bearer_scheme_is_case_insensitive(server: ApiServer) -> None:
    response = httpx.post(
        server.url(FEEDBACK),
        content=fb("lower-bearer"),
        headers={"Authorization": f"bearer {TOKEN}", "Content-Type": JSON},
    )
    assert response.status_code == 202, response.text


# -- duplicates ----------------------------------------------------------------------------


def test_duplicates_are_acknowledged_and_never_stored_twice(
    server: ApiServer, client: httpx.Client
) -> None:
    root = server.eventlog_dir
    before = EventLog(root).counts()
    first = [fb(f"dup-{i}") for i in range(4)]

    def accepted(path: str, body: bytes, content_type: str = JSON) -> dict[str, int]:
        response = post(client, path, body, content_type)
        assert response.status_code == 202, response.text
        result: dict[str, int] = response.json()
        return result

    assert accepted(FEEDBACK, array(*first)) == {"accepted": 4, "duplicates": 0}
    assert accepted(FEEDBACK, array(*first)) == {"accepted": 0, "duplicates": 4}
    assert accepted(FEEDBACK, ndjson(*first), NDJSON) == {"accepted": 0, "duplicates": 4}
    # old and new mixed
    mixed = array(first[1], fb("dup-new-0"), first[3], fb("dup-new-1"), fb("dup-new-2"))
    assert accepted(FEEDBACK, mixed) == {"accepted": 3, "duplicates": 2}
    # the same id twice within one batch: the first is stored, the second is a duplicate
    within = array(fb("dup-in-0"), fb("dup-in-0"), fb("dup-in-1"), fb("dup-in-0"))
    assert accepted(FEEDBACK, within) == {"accepted": 2, "duplicates": 2}
    # a re-sent event with a different payload is still the same event
    assert accepted(FEEDBACK, fb("dup-0", label=0).encode()) == {"accepted": 0, "duplicates": 1}
    predictions = ndjson(pr("dup-pr-0"), pr("dup-pr-0"), pr("dup-pr-1"))
    assert accepted(PREDICTIONS, predictions, NDJSON) == {"accepted": 2, "duplicates": 1}
    assert accepted(PREDICTIONS, predictions, NDJSON) == {"accepted": 0, "duplicates": 3}

    after = EventLog(root).counts()
    assert after.feedback == before.feedback + 9
    assert after.prediction == before.prediction + 2
    counts = Counter(all_stored_ids(root))
    assert all(n == 1 for n in counts.values()), [i for i, n in counts.items() if n > 1]
    feedback = EventLog(root).read("feedback")
    labels = feedback.filter(pl.col("event_id") == "dup-0")["label"].to_list()
    assert labels == ["1"]  # the first payload is kept


# -- health, OpenAPI, metrics --------------------------------------------------------------


def test_healthz_with_a_token_tells_the_worker(server: ApiServer) -> None:
    response = httpx.get(server.url("/healthz"), headers=server.auth())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["pid"] == server.proc.pid  # one worker: uvicorn serves in-process
    assert "serving" in body


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token"], ids=["no-token", "wrong-token"]
)
def test_healthz_without_a_valid_token_says_only_healthy_or_not(
    server: ApiServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(server.url("/healthz"), headers=headers)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}  # no pid, versions, paths or counts


def test_labeling_queue_is_served_from_what_the_asset_wrote(server: ApiServer) -> None:
    url = server.url("/v1/labeling-queue")
    assert httpx.get(url).status_code == 401
    queue_path = server.home / "tables" / "labeling_queue" / "latest.json"
    queue_path.unlink(missing_ok=True)
    empty = httpx.get(url, headers=server.auth())
    assert empty.status_code == 200
    assert empty.json()["items"] == [] and empty.json()["count"] == 0
    items = [{"prediction_id": f"p-{i}", "uncertainty": 1.0 - i / 10} for i in range(5)]
    queue_path.parent.mkdir(parents=True, exist_ok=True)
    queue_path.write_text(
        json.dumps({"items": items, "generated_at": "2026-01-01T00:00:00Z", "method": "margin"})
    )
    try:
        full = httpx.get(url, headers=server.auth()).json()
        assert full["items"] == items and full["method"] == "margin"
        limited = httpx.get(url, params={"limit": 2}, headers=server.auth()).json()
        assert [i["prediction_id"] for i in limited["items"]] == ["p-0", "p-1"]
        assert limited["count"] == 2
        for bad in ("0", "-1", "x", "10001"):
            response = httpx.get(url, params={"limit": bad}, headers=server.auth())
            assert response.status_code == 422, bad
            assert response.json()["errors"][0]["reason"] == "schema"
    finally:
        queue_path.unlink()


def test_openapi_document(server: ApiServer) -> None:
    response = httpx.get(server.url("/openapi.json"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = json.loads(response.content)
    assert document["openapi"] == "3.1.0"
    for path in (FEEDBACK, PREDICTIONS):
        operation = document["paths"][path]["post"]
        assert {"application/json", "application/x-ndjson"} <= set(
            operation["requestBody"]["content"]
        )
        assert {"202", "400", "401", "413", "415", "422"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    assert {"FeedbackEvent", "PredictionEvent"} <= set(schemas)
    assert str(MAX_BODY_BYTES) in document["info"]["description"]


def test_metrics_move_with_accepted_and_rejected_requests(
    server: ApiServer, client: httpx.Client
) -> None:
    def scrape() -> str:
        response = httpx.get(server.url("/metrics"))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    before = scrape()
    assert post(client, FEEDBACK, array(fb("met-0"), fb("met-1"))).status_code == 202
    assert post(client, FEEDBACK, fb("met-0")).status_code == 202  # a duplicate
    bad = array(fb("met-2"), fb("met-3", bogus=1), fb("met-4", features={"a": [1]}))
    assert post(client, FEEDBACK, bad).status_code == 422
    assert httpx.post(server.url(PREDICTIONS), content=pr("met-5")).status_code == 401
    after = scrape()

    def delta(sample: str, **labels: str) -> float:
        return metric(after, sample, **labels) - metric(before, sample, **labels)

    route = {"route": FEEDBACK}
    assert delta("ct_api_requests_total", status="202", **route) == 2
    assert delta("ct_api_requests_total", status="422", **route) == 1
    assert delta("ct_api_requests_total", route=PREDICTIONS, status="401") == 1
    assert delta("ct_api_events_accepted_total", kind="feedback") == 2
    assert delta("ct_api_events_rejected_total", kind="feedback", reason="unknown_field") == 1
    assert delta("ct_api_events_rejected_total", kind="feedback", reason="nested_value") == 1
    assert delta("ct_api_events_rejected_total", kind="prediction", reason="unauthorized") == 1
    assert delta("ct_eventlog_write_seconds_count") == 2
    assert delta("ct_eventlog_group_commit_batches_count") == 2
    assert delta("ct_eventlog_group_commit_batches_sum") == 2


# -- restart, workers, start policy (servers of their own) ---------------------------------


@pytest.mark.slow
def test_duplicates_are_recognised_after_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    feedback = array(*(fb(f"rs-fb-{i}") for i in range(5)))
    predictions = ndjson(*(pr(f"rs-pr-{i}") for i in range(3)))
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def send(api: ApiServer, path: str, body: bytes, content_type: str) -> Any:
        response = httpx.post(
            api.url(path), content=body, headers={**headers, "Content-Type": content_type}
        )
        assert response.status_code == 202, response.text
        return response.json()

    first = start_api(home, TOKEN, env=SERVER_ENV)
    try:
        assert send(first, FEEDBACK, feedback, JSON) == {"accepted": 5, "duplicates": 0}
        assert send(first, PREDICTIONS, predictions, NDJSON) == {"accepted": 3, "duplicates": 0}
    finally:
        code = first.stop()
    # a graceful stop (uvicorn re-raises the SIGTERM it handled)
    assert code in (0, -signal.SIGTERM), first.output()
    journal = (home / "eventlog" / "journal.ctj").read_bytes()

    second = start_api(home, TOKEN, env=SERVER_ENV)
    try:
        assert send(second, FEEDBACK, feedback, JSON) == {"accepted": 0, "duplicates": 5}
        assert send(second, PREDICTIONS, predictions, NDJSON) == {"accepted": 0, "duplicates": 3}
        assert (home / "eventlog" / "journal.ctj").read_bytes() == journal
        mixed = array(fb("rs-fb-0"), fb("rs-fb-new"))
        assert send(second, FEEDBACK, mixed, JSON) == {"accepted": 1, "duplicates": 1}
    finally:
        second.stop()

    fb_ids = export_ids(home, "feedback", tmp_path / "fb.parquet")
    assert sorted(fb_ids) == sorted([f"rs-fb-{i}" for i in range(5)] + ["rs-fb-new"])
    pr_ids = export_ids(home, "prediction", tmp_path / "pr.parquet")
    assert sorted(pr_ids) == [f"rs-pr-{i}" for i in range(3)]


@pytest.mark.slow
def test_two_workers_store_each_id_once_and_aggregate_metrics(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ids = [f"mw-{i:04d}" for i in range(240)]
    threads, batch_size = 8, 20
    records = {i: fb(i) for i in ids}
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": JSON}

    api = start_api(home, TOKEN, workers=2, env=SERVER_ENV)
    try:
        barrier = threading.Barrier(threads)

        pids: set[int] = set()

        def client_thread(seed: int) -> list[dict[str, int]]:
            order = list(ids)
            random.Random(seed).shuffle(order)
            barrier.wait(30)
            results = []
            for start in range(0, len(order), batch_size):
                body = array(*(records[i] for i in order[start : start + batch_size]))
                # httpx.post: a new connection per request, so both workers get traffic
                response = httpx.post(api.url(FEEDBACK), content=body, headers=headers, timeout=60)
                assert response.status_code == 202, response.text
                results.append(response.json())
                health = httpx.get(api.url("/healthz"), headers=headers, timeout=60)
                pids.add(health.json()["pid"])
            return results

        with ThreadPoolExecutor(threads) as pool:
            results = [r for rs in pool.map(client_thread, range(threads)) for r in rs]

        assert sum(r["accepted"] for r in results) == len(ids)
        assert sum(r["duplicates"] for r in results) == (threads - 1) * len(ids)
        requests = len(results)
        # the kernel spread the connections over both worker processes
        assert len(pids) == 2 and api.proc.pid not in pids, pids
        for _ in range(6):  # any worker answers with the sum over both workers
            response = httpx.get(api.url("/metrics"))
            assert response.status_code == 200
            text = response.text
            assert metric(text, "ct_api_events_accepted_total", kind="feedback") == len(ids)
            duplicates = metric(text, "ct_api_events_duplicate_total", kind="feedback")
            assert duplicates == (threads - 1) * len(ids)
            assert metric(text, "ct_api_requests_total", route=FEEDBACK, status="202") == requests
    finally:
        api.stop()

    exported = export_ids(home, "feedback", tmp_path / "fb.parquet")
    assert len(exported) == len(ids)
    assert sorted(exported) == ids
    assert EventLog(home / "eventlog").counts().feedback == len(ids)


def _split_records(prefix: str) -> tuple[bytes, list[str]]:
    """3 events on 3 lines, but not one per line: "{a} {b}", "{c-head", "c-tail}"."""
    a, b, c = fb(f"{prefix}-a"), fb(f"{prefix}-b"), fb(f"{prefix}-c")
    cut = c.index(",") + 1
    return f"{a} {b}\n{c[:cut]}\n{c[cut:]}\n".encode(), [f"{prefix}-{x}" for x in "abc"]


def _carriage_return(prefix: str) -> tuple[bytes, list[str]]:
    """One event on one line, with a CR (JSON whitespace) between two of its members."""
    line = fb(f"{prefix}-a").replace(',"event_id"', ',\r"event_id"')
    assert "\r" in line
    return f"{line}\n".encode(), [f"{prefix}-a"]


@pytest.mark.slow
@pytest.mark.parametrize("build", [_split_records, _carriage_return], ids=["split", "cr"])
def test_ndjson_lines_that_are_not_one_record_each_cannot_poison_the_log(
    tmp_path: Path, build: Callable[[str], tuple[bytes, list[str]]]
) -> None:
    home = tmp_path / "home"
    body, ids = build("poison")
    api = start_api(home, TOKEN, env=SERVER_ENV)
    try:
        response = post_to(api, FEEDBACK, body, NDJSON)
        # refusing the body or storing its events: either is fine, a broken log is not
        assert response.status_code in (202, 400), response.text
    finally:
        api.stop()
    expected = ids if response.status_code == 202 else []
    assert sorted(stored_ids(home / "eventlog", "feedback")) == expected
    start_api(home, TOKEN, env=SERVER_ENV).stop()  # and the API still starts on this log


@pytest.mark.slow
@pytest.mark.parametrize("token", [None, ""], ids=["unset", "empty"])
def test_the_api_refuses_to_start_without_a_token(tmp_path: Path, token: str | None) -> None:
    done = run_api(tmp_path / "home", token, ["--host", "127.0.0.1", "--port", str(free_port())])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CT_API_TOKEN" in done.stderr


@pytest.mark.slow
def test_no_auth_is_refused_on_a_public_address(tmp_path: Path) -> None:
    args = ["--insecure-no-auth", "--host", "0.0.0.0", "--port", str(free_port("0.0.0.0"))]
    done = run_api(tmp_path / "home", None, args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "loopback" in done.stderr and "0.0.0.0" in done.stderr


UVICORN = str(Path(CT_ASSETS).parent / "uvicorn")


def run_factory(home: Path, host: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the API's app factory under uvicorn directly (not through ``ct-assets api``)."""
    command = [UVICORN, "ct_assets.api.server:create_app_from_env", "--factory"]
    command += ["--host", host, "--port", str(free_port(host)), "--log-level", "warning"]
    return subprocess.run(
        command,
        env=server_env(home, None, env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("host", "env", "says"),
    [
        pytest.param("127.0.0.1", {}, "CT_API_TOKEN", id="no-token"),
        pytest.param(
            "127.0.0.1", {"CT_API_INSECURE_NO_AUTH": "1"}, "CT_API_BIND_HOST", id="unknown-host"
        ),
        pytest.param(
            "0.0.0.0",
            {"CT_API_INSECURE_NO_AUTH": "1", "CT_API_BIND_HOST": "0.0.0.0"},
            "only allowed on a loopback address, not 0.0.0.0",
            id="public-host",
        ),
    ],
)
def test_the_uvicorn_factory_refuses_to_start_without_auth_off_loopback(
    tmp_path: Path, host: str, env: dict[str, str], says: str
) -> None:
    done = run_factory(tmp_path / "home", host, env)
    assert done.returncode != 0, done.stdout + done.stderr
    assert says in done.stderr, done.stderr
    assert "Uvicorn running" not in done.stderr


@pytest.mark.slow
def test_no_auth_on_loopback_accepts_requests_without_a_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    api = start_api(home, None, args=["--insecure-no-auth"], env=SERVER_ENV)
    try:
        response = httpx.post(
            api.url(FEEDBACK), content=fb("noauth-0"), headers={"Content-Type": JSON}
        )
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 1, "duplicates": 0}
    finally:
        api.stop()
    assert stored_ids(home / "eventlog", "feedback") == ["noauth-0"]


@pytest.mark.slow
def test_no_auth_flag_does_not_disable_a_configured_token(tmp_path: Path) -> None:
    api = start_api(tmp_path / "home", TOKEN, args=["--insecure-no-auth"], env=SERVER_ENV)
    try:
        response = httpx.post(
            api.url(FEEDBACK), content=fb("flag-0"), headers={"Content-Type": JSON}
        )
        assert response.status_code == 401
        response = httpx.post(
            api.url(FEEDBACK),
            content=fb("flag-0"),
            headers={"Content-Type": JSON, "Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 202, response.text
    finally:
        api.stop()
