"""``POST /v1/predict`` with ``CT_EVENT_STORE=nats``: the inference log publishes each
served prediction to the stream, and the consumer writes it into the log."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ct_assets.data.dataset import describe
from ct_assets.eventlog import EventLog
from ct_assets.registry import Registry
from ct_assets.settings import Settings
from ct_assets.training.train import train_model
from ct_assets_tests.api_helpers import start_api
from ct_assets_tests.nats_helpers import start_nats
from ct_assets_tests.test_eventstream import consume, stream_env
from ct_assets_tests.test_routing import PARAMS, instance_rows, synthetic_dataset

pytestmark = pytest.mark.slow


def test_served_predictions_go_through_the_stream_into_the_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry = Registry.from_settings(Settings().with_home(home))
    dataset = synthetic_dataset("x0")
    info = describe(dataset, "ds-x0", home / "x0.parquet", dataset.height)
    version = registry.log_candidate(train_model(dataset, PARAMS), info, {}, dataset.head(5))
    registry.promote(version.version, "stream test")

    server = start_nats(tmp_path / "nats")
    try:
        env = {**stream_env(server.url), "CT_SERVING_POLL_SECONDS": "0.1"}
        api = start_api(home, env=env)
        try:
            rows = instance_rows(12, seed=5)
            answer = httpx.post(
                api.url("/v1/predict"),
                json={"instances": [{"features": r} for r in rows]},
                headers=api.auth(),
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            answered = [p["prediction_id"] for p in answer.json()["predictions"]]
        finally:
            api.stop()  # a graceful stop publishes everything the inference log queued
        settings = Settings.from_env({**env, "CT_HOME": str(home)})
        assert EventLog.from_settings(settings).read("prediction").height == 0
        assert consume(settings).stored == 12
    finally:
        server.kill()
    logged = EventLog.from_settings(settings).read("prediction")
    assert logged["prediction_id"].to_list() == answered
    assert set(logged["model_version"].to_list()) == {version.version}
