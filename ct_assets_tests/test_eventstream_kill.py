"""Breaking the event stream's processes on purpose (SIGKILL, real subprocesses, a real
nats-server with ``sync_interval: always``): acknowledged events are in the log exactly
once, whatever was killed in between."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from ct_assets.eventstream import open_stream
from ct_assets.settings import Settings
from ct_assets_tests.api_helpers import feedback_event, server_env, start_api
from ct_assets_tests.nats_helpers import NatsServer, start_nats
from ct_assets_tests.test_eventstream import consume, log_ids, mixed_batch, stream_env

pytestmark = pytest.mark.slow

# A consumer that hangs (until killed) right after its first durable commit, before the ack.
HANG_AFTER_COMMIT = """
import asyncio, sys, time
from pathlib import Path
from ct_assets.eventstream.consumer import run_consumer
from ct_assets.settings import Settings

def hang(deliveries: int) -> None:
    Path(sys.argv[1]).write_text(str(deliveries))
    time.sleep(600)

asyncio.run(run_consumer(Settings.from_env(), batch=int(sys.argv[2]), after_commit=hang))
"""


def test_consumer_killed_between_log_commit_and_ack_duplicates_and_loses_nothing(
    tmp_path: Path,
) -> None:
    server = start_nats(tmp_path / "nats")
    try:
        home = tmp_path / "home"
        settings = Settings.from_env({**stream_env(server.url), "CT_HOME": str(home)})
        batch = mixed_batch("k", 3000)

        async def publish() -> None:
            stream = await open_stream(settings)
            try:
                assert (await stream.publish(batch)).accepted == 3000
            finally:
                await stream.close()

        asyncio.run(publish())
        marker = tmp_path / "committed"
        proc = subprocess.Popen(
            [sys.executable, "-c", HANG_AFTER_COMMIT, str(marker), "500"],
            env=server_env(home, None, stream_env(server.url)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "the consumer never committed"
                time.sleep(0.05)
            assert marker.read_text() == "500"
            committed = log_ids(settings)
            assert len(committed) == 500  # durable in the log, not acknowledged to the stream
        finally:
            proc.kill()
            proc.wait(10)

        stats = consume(settings)  # a restarted consumer: the 500 come again (ack wait 2 s)
        assert stats.stored == 2500
        # at least the 500 committed but never acknowledged were delivered again (with a
        # 2 s ack wait, a slow round may be too), and each was acknowledged as a duplicate
        assert stats.duplicates >= 500
        assert stats.fetched == stats.stored + stats.duplicates
        ids = log_ids(settings)
        assert len(ids) == len(set(ids)) == 3000
        assert set(ids) == set(batch.ids)
    finally:
        server.kill()


class Client(threading.Thread):
    """Posts batches of new events; retries each (same ids) until it gets a 202, as a real
    client does after a refused or broken request."""

    def __init__(self, url: str, token: str, batches: int, size: int) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.batches, self.size = url, token, batches, size
        self.sent: set[str] = set()
        self.acknowledged: list[str] = []
        self.refused = 0
        self.broken = 0
        self.error: str | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(timeout=10.0) as http:
            for number in range(self.batches):
                events = [feedback_event(f"c{number}-{j}") for j in range(self.size)]
                self.sent.update(e["event_id"] for e in events)
                deadline = time.monotonic() + 90
                while True:
                    if time.monotonic() > deadline:
                        self.error = f"batch {number} never acknowledged"
                        return
                    try:
                        answer = http.post(self.url, json=events, headers=headers)
                    except httpx.TransportError:
                        self.broken += 1
                        time.sleep(0.05)
                        continue
                    if answer.status_code == 202:
                        self.acknowledged += [e["event_id"] for e in events]
                        break
                    if answer.status_code != 503:
                        self.error = f"{answer.status_code}: {answer.text}"
                        return
                    self.refused += 1
                    time.sleep(0.05)


def test_api_and_nats_killed_while_clients_post_every_acknowledged_event_logged_once(
    tmp_path: Path,
) -> None:
    servers: list[NatsServer] = [start_nats(tmp_path / "nats")]
    try:
        run_clients_through_kills(tmp_path, servers)
    finally:
        for server in servers:
            server.kill()


def run_clients_through_kills(tmp_path: Path, servers: list[NatsServer]) -> None:
    server = servers[0]
    home = tmp_path / "home"
    env = {**stream_env(server.url), "CT_NATS_TIMEOUT_SECONDS": "2"}
    api = start_api(home, env=env)
    port = api.port
    clients = [Client(api.url("/v1/feedback"), "test-token", 40, 25) for _ in range(2)]
    try:
        for client in clients:
            client.start()

        def acknowledged() -> int:
            return sum(len(c.acknowledged) for c in clients)

        def wait_for(count: int) -> None:
            deadline = time.monotonic() + 120
            while acknowledged() < count and any(c.is_alive() for c in clients):
                assert time.monotonic() < deadline
                time.sleep(0.01)

        for round_ in range(1, 3):  # the API killed mid-traffic, twice
            wait_for(round_ * 400)
            api.proc.kill()
            api.proc.wait(10)
            api = start_api(home, port=port, env=env)
        wait_for(1200)  # then the stream's server itself: acknowledged means fsynced
        server.kill()
        time.sleep(0.3)
        server = server.restart()
        servers.append(server)
        for client in clients:
            client.join(180)
        for client in clients:
            assert client.error is None, client.error
            assert not client.is_alive()
    finally:
        api.stop()

    settings = Settings.from_env({**env, "CT_HOME": str(home)})
    consume(settings)
    ids = log_ids(settings)
    acknowledged_ids = [i for c in clients for i in c.acknowledged]
    sent = set().union(*(c.sent for c in clients))
    assert len(acknowledged_ids) == 2000
    assert len(ids) == len(set(ids)), "an event is in the log twice"
    assert set(acknowledged_ids) <= set(ids), "an acknowledged event is missing"
    assert set(ids) <= sent
    # the kills really hit traffic: some requests broke or were refused and were retried
    assert sum(c.broken + c.refused for c in clients) > 0
