"""``POST /v1/predict`` over real HTTP: a ``ct-assets api`` subprocess (uvicorn on loopback)
serving real LightGBM models from a real MLflow registry (SQLite under a temporary CT_HOME).

Three versions are trained with ``train_model`` on small synthetic datasets that disagree,
registered with ``Registry.log_candidate``: v1 is promoted (champion), v2 is the
challenger, v3 is promoted while requests are in flight. Deployment modes are switched
with the registered-model tags ``ct.deployment.mode``/``ct.deployment.fraction``, as
``ct-assets deploy`` writes them; the servers poll the registry every 0.1 s.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from ct_assets.data.dataset import describe
from ct_assets.eventlog import EventLog
from ct_assets.eventlog.layout import log_lock
from ct_assets.registry import Registry
from ct_assets.serving.models import ServedModel
from ct_assets.serving.routing import ARM_CHAMPION, ARM_SHADOW, route, routing_key
from ct_assets.settings import Settings
from ct_assets.training.train import train_model
from ct_assets_tests.api_helpers import ApiServer, start_api
from ct_assets_tests.test_routing import PARAMS, instance_rows, synthetic_dataset

TOKEN = "serve-" + secrets.token_hex(12)
PREDICT = "/v1/predict"
POLL = {"CT_SERVING_POLL_SECONDS": "0.1"}
MODEL_NAME = Settings().model_name


@dataclass
class Deployed:
    """A registry with three versions: v1 champion, v2 challenger, v3 registered only."""

    home: Path
    registry: Registry
    v1: str
    v2: str
    v3: str
    served: dict[str, ServedModel]

    def expected(self, version: str, rows: list[dict[str, Any]]) -> list[dict[str, float]]:
        model = self.served[version]
        return [dict(zip(model.classes, p, strict=True)) for p in model.score(rows).tolist()]

    def set_deployment(self, mode: str, fraction: float | None = None) -> None:
        client, name = self.registry.client, self.registry.model_name
        client.set_registered_model_tag(name, "ct.deployment.mode", mode)
        if fraction is not None:
            client.set_registered_model_tag(name, "ct.deployment.fraction", str(fraction))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    home = tmp_path_factory.mktemp("serving-home")
    registry = Registry.from_settings(Settings().with_home(home))
    versions: list[str] = []
    for rule in ("x0", "x1", "not-x0"):
        dataset = synthetic_dataset(rule)
        info = describe(dataset, f"ds-{rule}", home / f"{rule}.parquet", dataset.height)
        result = train_model(dataset, PARAMS)
        versions.append(registry.log_candidate(result, info, {}, dataset.head(5)).version)
    v1, v2, v3 = versions
    registry.promote(v1, "serving test")
    registry.client.set_registered_model_alias(registry.model_name, "challenger", v2)
    served = {v: ServedModel.of(v, registry.load_model(v)) for v in versions}
    return Deployed(home, registry, v1, v2, v3, served)


@pytest.fixture(scope="module")
def server(deployed: Deployed) -> Iterator[ApiServer]:
    api = start_api(deployed.home, TOKEN, env=POLL)
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def client(server: ApiServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30.0) as http:
        yield http


# -- helpers ---------------------------------------------------------------------------------


def predict(http: httpx.Client, body: Any) -> httpx.Response:
    return http.post(PREDICT, json=body)


def serving(api: ApiServer) -> dict[str, Any]:
    response = httpx.get(api.url("/healthz"), headers=api.auth(), timeout=10)
    status: dict[str, Any] = response.json()["serving"]
    return status


def wait_serving(api: ApiServer, timeout: float = 15.0, **expected: Any) -> dict[str, Any]:
    """Poll /healthz until the worker serves what ``expected`` says."""
    deadline = time.monotonic() + timeout
    while True:
        status = serving(api)
        if all(status.get(k) == v for k, v in expected.items()):
            return status
        assert time.monotonic() < deadline, f"still serving {status}, want {expected}"
        time.sleep(0.05)


def logged(home: Path, ids: set[str], timeout: float = 15.0) -> list[dict[str, Any]]:
    """The logged prediction events of these prediction ids, in log order, once every id
    is in the log (the inference log writes in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = EventLog(home / "eventlog").read("prediction")
        rows = [r for r in frame.sort("log_offset").to_dicts() if r["prediction_id"] in ids]
        missing = ids - {r["prediction_id"] for r in rows}
        if not missing:
            return rows
        assert time.monotonic() < deadline, f"{len(missing)} never logged: {sorted(missing)[:5]}"
        time.sleep(0.05)


def all_logged_ids(home: Path) -> set[str]:
    frame = EventLog(home / "eventlog").read("prediction")
    return set(frame["prediction_id"].to_list()) if frame.height else set()


def barrier(http: httpx.Client, home: Path) -> None:
    """Wait until everything answered before is durable: the log is written in order."""
    marker = "barrier-" + secrets.token_hex(6)
    response = predict(http, {"features": {"x0": 0.0}, "prediction_id": marker})
    assert response.status_code == 200, response.text
    logged(home, {marker})


def assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12)


@contextmanager
def log_locked(home: Path) -> Iterator[None]:
    """Hold the event log's writer lock: every commit of the server waits for it."""
    with log_lock(home / "eventlog"):
        yield


# -- without a champion ----------------------------------------------------------------------


@pytest.mark.slow  # a server of its own
def test_predict_is_503_until_there_is_a_champion(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    api = start_api(home, TOKEN, env=POLL)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        response = httpx.post(api.url(PREDICT), json={"features": {"x0": 1.0}}, headers=headers)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        body = response.json()
        assert body["error_count"] == 1
        error = body["errors"][0]
        assert (error["index"], error["field"], error["reason"]) == (-1, "$", "no_model")
        assert "no champion" in error["message"]
        assert serving(api)["champion"] is None
        # ingestion is not affected
        feedback = {
            "kind": "feedback",
            "event_id": "fb-1",
            "timestamp": "2024-01-01T00:00:00Z",
            "feedback_type": "explicit",
            "label": 1,
            "features": {"x0": 1.0},
        }
        assert (
            httpx.post(api.url("/v1/feedback"), json=feedback, headers=headers).status_code == 202
        )
        # a champion registered while the API runs is picked up by the poller
        registry = Registry.from_settings(Settings().with_home(home))
        dataset = synthetic_dataset("x0")
        info = describe(dataset, "ds", home / "ds.parquet", dataset.height)
        version = registry.log_candidate(train_model(dataset, PARAMS), info, {}, dataset.head(5))
        registry.promote(version.version, "first champion")
        wait_serving(api, champion=version.version)
        response = httpx.post(api.url(PREDICT), json={"features": {"x0": 1.0}}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["model_version"] == version.version
    finally:
        api.stop()


# -- predictions -----------------------------------------------------------------------------


def test_single_prediction(server: ApiServer, client: httpx.Client, deployed: Deployed) -> None:
    assert serving(server)["champion"] == deployed.v1
    row = {"x0": 0.7, "x1": -0.2, "channel": "web"}
    response = predict(client, {"features": row, "entity_id": "e-1"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    (item,) = response.json()["predictions"]
    assert set(item) == {"prediction_id", "prediction", "scores", "model_version", "arm"}
    assert (item["model_version"], item["arm"]) == (deployed.v1, ARM_CHAMPION)
    assert len(item["prediction_id"]) == 32
    (want,) = deployed.expected(deployed.v1, [row])
    assert_close(item["scores"], want)
    assert item["prediction"] == max(want, key=want.__getitem__)
    # a client's prediction_id is kept; missing and null features are allowed
    sparse = predict(client, {"features": {"x0": 0.7, "channel": None}, "prediction_id": "mine"})
    assert sparse.status_code == 200, sparse.text
    (item,) = sparse.json()["predictions"]
    assert item["prediction_id"] == "mine"
    assert_close(item["scores"], deployed.expected(deployed.v1, [{"x0": 0.7}])[0])
    assert 'route="/v1/predict"' in httpx.get(server.url("/metrics")).text


def test_prediction_ids_are_issued_and_a_reused_one_is_refused(
    server: ApiServer, client: httpx.Client, deployed: Deployed
) -> None:
    """The server issues the id when the client gives none; a client-given id that another
    request already used is refused with 409 (before or after it is durable, in this
    worker or another one on the same log), and nothing of the refused request is logged."""
    row = instance_rows(1, seed=11)[0]
    issued = predict(client, {"features": row}).json()["predictions"][0]["prediction_id"]
    assert len(issued) == 32
    refused = predict(client, {"features": row, "prediction_id": issued})
    assert refused.status_code == 409, refused.text
    assert refused.json() == {
        "errors": [
            {
                "index": 0,
                "field": "prediction_id",
                "message": refused.json()["errors"][0]["message"],
                "reason": "duplicate_prediction_id",
            }
        ],
        "error_count": 1,
    }
    assert "already used" in refused.json()["errors"][0]["message"]

    own = "own-" + secrets.token_hex(6)
    assert predict(client, {"features": row, "prediction_id": own}).status_code == 200
    again = predict(client, {"features": row, "prediction_id": own})  # maybe not durable yet
    assert again.status_code == 409, again.text
    twice = {
        "instances": [
            {"features": row, "prediction_id": own + "-b"},
            {"features": row, "prediction_id": own + "-b"},
        ]
    }
    in_one = predict(client, twice)
    assert in_one.status_code == 409
    assert [(e["index"], e["reason"]) for e in in_one.json()["errors"]] == [
        (1, "duplicate_prediction_id")
    ]
    barrier(client, deployed.home)
    events = logged(deployed.home, {issued, own})
    assert sorted(e["prediction_id"] for e in events) == sorted([issued, own])  # once each
    assert own + "-b" not in all_logged_ids(deployed.home)

    # another server process on the same log learns the ids this one committed
    other = start_api(deployed.home, TOKEN, env=POLL)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=other.base_url, headers=headers, timeout=30.0) as http:
            assert predict(http, {"features": row, "prediction_id": own}).status_code == 409
            late = "late-" + secrets.token_hex(6)
            assert predict(http, {"features": row, "prediction_id": late}).status_code == 200
            logged(deployed.home, {late})
        assert predict(client, {"features": row, "prediction_id": late}).status_code == 409
    finally:
        other.stop()


def test_batch_predictions(client: httpx.Client, deployed: Deployed) -> None:
    rows = instance_rows(25, seed=9)
    batch = predict(client, {"instances": [{"features": r} for r in rows]})
    assert batch.status_code == 200, batch.text
    items = batch.json()["predictions"]
    assert len(items) == 25
    assert len({i["prediction_id"] for i in items}) == 25
    for item, want in zip(items, deployed.expected(deployed.v1, rows), strict=True):
        assert_close(item["scores"], want)
    array = predict(
        client, [{"features": r, "prediction_id": f"arr-{k}"} for k, r in enumerate(rows[:3])]
    )
    assert array.status_code == 200, array.text
    assert [i["prediction_id"] for i in array.json()["predictions"]] == ["arr-0", "arr-1", "arr-2"]
    assert [i["scores"] for i in array.json()["predictions"]] == [i["scores"] for i in items[:3]]


def _errors(response: httpx.Response, status: int = 422) -> set[tuple[int, str, str]]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_count"] == len(body["errors"])
    return {(e["index"], e["field"], e["reason"]) for e in body["errors"]}


def test_invalid_requests_are_refused_with_the_fields_named(
    server: ApiServer, client: httpx.Client, deployed: Deployed
) -> None:
    good = {"features": {"x0": 0.1, "channel": "web"}, "prediction_id": "rejected-good"}
    wrong_type = {"features": {"x0": "high", "channel": "web"}, "prediction_id": "rejected-1"}
    assert _errors(predict(client, wrong_type)) == {(0, "features.x0", "schema")}
    categorical = {"features": {"channel": 3}, "prediction_id": "rejected-2"}
    assert _errors(predict(client, categorical)) == {(0, "features.channel", "schema")}
    unknown = {"instances": [good, {"features": {"colour": "red"}, "prediction_id": "rejected-3"}]}
    assert _errors(predict(client, unknown)) == {(1, "features.colour", "unknown_field")}
    response = predict(client, unknown)
    assert "x0" in response.json()["errors"][0]["message"]  # names what the model takes
    nested = [good, good, {"features": {"x0": {"deep": 1}}}]
    assert _errors(predict(client, nested)) == {(2, "features.x0", "nested_value")}
    assert _errors(predict(client, {"entity_id": "e"})) == {(0, "features", "missing_field")}
    assert _errors(predict(client, {"features": {}, "colour": 1})) == {
        (0, "colour", "unknown_field")
    }
    assert _errors(predict(client, {"instances": []})) == {(-1, "$", "empty_batch")}
    assert _errors(predict(client, {"instances": [good], "features": {}})) == {(-1, "$", "schema")}
    not_json = client.post(PREDICT, content=b"{nope", headers={"content-type": "application/json"})
    assert _errors(not_json, 400) == {(-1, "$", "malformed")}
    text = client.post(PREDICT, content=b"{}", headers={"content-type": "text/plain"})
    assert _errors(text, 415) == {(-1, "$", "unsupported_media_type")}
    anonymous = httpx.post(server.url(PREDICT), json=good)
    assert _errors(anonymous, 401) == {(-1, "$", "unauthorized")}
    # nothing of a refused request is logged
    barrier(client, deployed.home)
    assert not {i for i in all_logged_ids(deployed.home) if i.startswith("rejected-")}


def test_every_served_prediction_is_logged(client: httpx.Client, deployed: Deployed) -> None:
    rows = instance_rows(20, seed=3)
    answered: list[dict[str, Any]] = []
    for k, row in enumerate(rows[:10]):
        response = predict(client, {"features": row, "entity_id": f"ent-{k}"})
        assert response.status_code == 200
        answered += response.json()["predictions"]
    response = predict(client, {"instances": [{"features": r} for r in rows[10:]]})
    answered += response.json()["predictions"]
    events = logged(deployed.home, {a["prediction_id"] for a in answered})
    assert len(events) == 20  # once each, in the order answered
    assert [e["prediction_id"] for e in events] == [a["prediction_id"] for a in answered]
    for event, answer, row in zip(events, answered, rows, strict=True):
        assert event["model_version"] == answer["model_version"] == deployed.v1
        assert event["arm"] == answer["arm"] == ARM_CHAMPION
        assert event["prediction"] == answer["prediction"]
        assert event["model_name"] == MODEL_NAME
        assert_close(event["scores"], answer["scores"])
        assert event["features"] == row
    assert [e["entity_id"] for e in events[:10]] == [f"ent-{k}" for k in range(10)]


def test_shadow_answers_as_the_champion_and_logs_both_arms(
    server: ApiServer, client: httpx.Client, deployed: Deployed
) -> None:
    rows = instance_rows(30, seed=4)

    def ask(prefix: str) -> list[dict[str, Any]]:
        body = {
            "instances": [
                {"features": r, "prediction_id": f"{prefix}-{k}"} for k, r in enumerate(rows)
            ]
        }
        response = predict(client, body)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["predictions"]
        return items

    alone = ask("off")
    deployed.set_deployment("shadow", 1.0)
    try:
        wait_serving(server, mode="shadow", challenger=deployed.v2)
        shadowed = ask("shadow")
    finally:
        deployed.set_deployment("off")
    wait_serving(server, mode="off", challenger=None)
    strip = [{k: v for k, v in item.items() if k != "prediction_id"} for item in alone]
    assert [{k: v for k, v in i.items() if k != "prediction_id"} for i in shadowed] == strip
    events = logged(deployed.home, {f"shadow-{k}" for k in range(30)})
    assert len(events) == 60
    want_shadow = deployed.expected(deployed.v2, rows)
    for k in range(30):
        pair = [e for e in events if e["prediction_id"] == f"shadow-{k}"]
        assert [(e["arm"], e["model_version"]) for e in pair] == [
            (ARM_CHAMPION, deployed.v1),
            (ARM_SHADOW, deployed.v2),
        ]  # the served one first: feedback is attributed to it
        assert_close(pair[1]["scores"], want_shadow[k])
    assert len(logged(deployed.home, {f"off-{k}" for k in range(30)})) == 30


def test_canary_and_ab_are_sticky_per_user(
    server: ApiServer, client: httpx.Client, deployed: Deployed
) -> None:
    users = [f"u-{k}" for k in range(300)]
    rows = instance_rows(300, seed=6)
    body = {"instances": [{"features": r, "user_id": u} for r, u in zip(rows, users, strict=True)]}
    for mode, fraction, arms in (("canary", 0.3, ("canary", "champion")), ("ab", 0.5, ("b", "a"))):
        deployed.set_deployment(mode, fraction)
        wait_serving(server, mode=mode, fraction=fraction, challenger=deployed.v2)
        first = predict(client, body).json()["predictions"]
        second = predict(client, body).json()["predictions"]
        assert [i["arm"] for i in first] == [i["arm"] for i in second]  # sticky
        for user, item in zip(users, first, strict=True):
            key = routing_key(user, None)
            to_challenger = route(mode, fraction, key, salt=deployed.v2).challenger_serves
            assert item["arm"] == (arms[0] if to_challenger else arms[1])
            assert item["model_version"] == (deployed.v2 if to_challenger else deployed.v1)
        share = sum(i["arm"] == arms[0] for i in first) / len(first)
        assert abs(share - fraction) < 0.12, share
    deployed.set_deployment("off")
    wait_serving(server, mode="off", challenger=None)


def test_alias_change_under_concurrent_load(server: ApiServer, deployed: Deployed) -> None:
    stop = threading.Event()
    answers: list[tuple[str, int, str | None]] = []
    failures: list[str] = []
    lock = threading.Lock()
    row = {"x0": 0.4, "x1": 0.1, "channel": "app"}

    def load(worker: int) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as http:
            n = 0
            while not stop.is_set():
                prediction_id = f"load-{worker}-{n}"
                n += 1
                try:
                    response = predict(http, {"features": row, "prediction_id": prediction_id})
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"{prediction_id}: {exc!r}")
                    continue
                version = None
                if response.status_code == 200:
                    version = response.json()["predictions"][0]["model_version"]
                with lock:
                    answers.append((prediction_id, response.status_code, version))

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(load, w) for w in range(8)]
        time.sleep(1.0)
        deployed.registry.promote(deployed.v3, "promoted under load")
        wait_serving(server, champion=deployed.v3)
        time.sleep(1.0)
        stop.set()
        for future in futures:
            future.result()
    assert not failures, failures[:5]
    assert {status for _, status, _ in answers} == {200}
    versions = {v for _, _, v in answers}
    assert versions == {deployed.v1, deployed.v3}, versions
    events = logged(deployed.home, {p for p, _, _ in answers})
    assert len(events) == len(answers)
    answered = {p: v for p, _, v in answers}
    assert all(e["model_version"] == answered[e["prediction_id"]] for e in events)
    order = [e["model_version"] for e in events]
    switch = order.index(deployed.v3)
    assert set(order[:switch]) == {deployed.v1} and set(order[switch:]) == {deployed.v3}, (
        f"the versions switch more than once in the log: {switch} of {len(order)}"
    )
    print(f"{len(answers)} requests, switch at {switch}")


def test_schemathesis_cases_of_the_documented_predict_never_get_a_5xx(server: ApiServer) -> None:
    """Positive and negative cases from the served OpenAPI document: every answer is
    documented (status, content type, body schema) and none is a 5xx."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as fuzz_settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_url(server.url("/openapi.json"))
    statuses: dict[int, int] = {}
    with requests.Session() as session:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = schema[PREDICT]["POST"].as_strategy(generation_mode=mode)

            @given(case=strategy)
            @fuzz_settings(
                max_examples=60,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any) -> None:
                try:
                    response = case.call(
                        base_url=server.base_url,
                        headers={"Authorization": f"Bearer {TOKEN}"},
                        session=session,
                    )
                except requests.exceptions.InvalidJSONError:
                    return  # NaN in a body: the client cannot send it
                statuses[response.status_code] = 1 + statuses.get(response.status_code, 0)
                case.validate_response(response, checks=checks)

            fuzz()
    print(f"statuses {sorted(statuses.items())}")
    assert statuses.get(200, 0) + statuses.get(422, 0) > 0, statuses


# -- backpressure ----------------------------------------------------------------------------


@pytest.mark.slow  # a server of its own
def test_a_full_inference_log_answers_503_and_loses_nothing_queued(
    tmp_path: Path, deployed: Deployed
) -> None:
    home = tmp_path / "small-queue"
    env = {
        **POLL,
        "CT_MLFLOW_TRACKING_URI": deployed.registry.tracking_uri,
        "CT_SERVING_LOG_QUEUE": "4",
        "CT_SERVING_LOG_TIMEOUT_SECONDS": "0.5",
    }
    api = start_api(home, TOKEN, env=env)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    http = httpx.Client(base_url=api.base_url, headers=headers, timeout=30)

    def ask(prediction_id: str, count: int = 1) -> httpx.Response:
        rows = [
            {"features": {"x0": 0.5}, "prediction_id": f"{prediction_id}-{k}"} for k in range(count)
        ]
        return predict(http, {"instances": rows})

    try:
        assert serving(api)["champion"] is not None
        with log_locked(home):
            for k in range(4):  # fills the queue: the writer is stuck on the lock
                # answered 200, not 503 after the 0.5 s log timeout: it did not wait
                assert ask(f"queued-{k}").status_code == 200
            assert serving(api)["log"] == {"pending": 4, "capacity": 4, "written": 0}
            started = time.monotonic()
            refused = ask("refused")
            waited = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert waited >= 0.45, waited  # it waited for the log timeout (0.5 s) first
            assert refused.headers["retry-after"] == "1"
            (error,) = refused.json()["errors"]
            assert error["reason"] == "log_full"
            assert "inference log is full" in error["message"]
            assert ask("refused-batch", 2).status_code == 503
            too_big = ask("too-big", 5)  # more records than the queue can ever hold
            assert _errors(too_big) == {(-1, "$", "too_large")}
        # released: everything answered is written, nothing refused is
        queued = {f"queued-{k}-0" for k in range(4)}
        assert {e["prediction_id"] for e in logged(home, queued)} == queued
        assert ask("after").status_code == 200
        logged(home, {"after-0"})
        ids = all_logged_ids(home)
        assert not {i for i in ids if i.startswith(("refused", "too-big"))}

        # shutdown writes what is queued, even when the writer is held up
        with log_locked(home):
            for k in range(3):
                assert ask(f"at-exit-{k}").status_code == 200
            stopping = threading.Thread(target=api.stop)
            stopping.start()
            time.sleep(0.5)
            assert api.proc.poll() is None  # waiting for the log
        stopping.join(30)
        # a graceful stop (uvicorn re-raises the SIGTERM it handled)
        assert api.proc.returncode in (0, -signal.SIGTERM), api.output()
        assert {f"at-exit-{k}-0" for k in range(3)} <= all_logged_ids(home)
    finally:
        http.close()
        api.stop()


def test_single_row_scores_match_in_process_model(deployed: Deployed) -> None:
    """The reloaded registry model scores as the trained one (sanity of the fixture)."""
    rows = instance_rows(5)
    model = deployed.registry.load_model(deployed.v1)
    frame = pl.DataFrame(rows)
    np.testing.assert_allclose(
        deployed.served[deployed.v1].score(rows), model.predict_proba(frame), atol=1e-12
    )
