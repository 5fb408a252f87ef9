"""Crash safety of the ingestion API: ``kill -9`` mid-stream loses nothing acknowledged.

A real ``ct-assets api`` (uvicorn, one worker or several) takes concurrent NDJSON
batches of feedback and predictions from several client threads and is SIGKILLed
while requests are in flight; it is then restarted on the same CT_HOME. After
every cycle:

* every batch answered 202 is in ``ct-assets events export`` exactly once;
* the export holds only events that were sent, with the payload that was sent;
* a batch whose request failed is wholly present or wholly absent;
* the restarted API accepts new batches and answers an acknowledged batch re-sent
  with all duplicates.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

pytestmark = pytest.mark.slow

CT_ASSETS = Path(sys.executable).parent / "ct-assets"
TOKEN = "crash-test-token"
CLIENT_THREADS = 6
ENDPOINTS = {"feedback": "/v1/feedback", "prediction": "/v1/predictions"}
NDJSON = {"content-type": "application/x-ndjson", "authorization": f"Bearer {TOKEN}"}
# (uvicorn workers, seconds of traffic before the SIGKILL) of each cycle
CYCLES = [(1, 0.5), (1, 0.8), (2, 0.9), (1, 1.1)]
SEGMENT_MAX_BYTES = 256 * 1024


# -- the server ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    """The inherited environment minus every ``CT_*``, plus this test's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        CT_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        CT_API_TOKEN=TOKEN,
        # small segments: the kills also land around segment rollovers
        CT_SEGMENT_MAX_BYTES=str(SEGMENT_MAX_BYTES),
        PYTHONUNBUFFERED="1",
    )
    return env


class _Server:
    """``ct-assets api`` in its own session, so that ``killpg`` reaches every worker."""

    def __init__(self, home: Path, log: Path, workers: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self._log = open(log, "ab")  # noqa: SIM115 (closed in kill())
        self.proc = subprocess.Popen(
            [CT_ASSETS, "api", "--port", str(self.port), "--workers", str(workers)],
            env=_env(home),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_healthy(log)

    def _wait_healthy(self, log: Path) -> None:
        deadline = time.monotonic() + 30
        pids: set[int] = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited: {log.read_text(errors='replace')}")
            try:
                # the worker's pid is told only to a caller with the token
                response = httpx.get(
                    f"{self.url}/healthz",
                    headers={"authorization": f"Bearer {TOKEN}"},
                    timeout=1,
                )
                if response.status_code == 200:
                    pids.add(response.json()["pid"])
                    # with several workers, wait until more than one answers (best effort)
                    if len(pids) >= min(self.workers, 2) or self.workers == 1:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        if pids:
            return  # one worker answers: enough to take traffic
        self.kill()
        raise AssertionError(f"the API did not become healthy: {log.read_text(errors='replace')}")

    def kill(self) -> None:
        """SIGKILL the whole process group (the server and every uvicorn worker)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        # the group must be gone: no orphaned worker may keep writing to the log
        deadline = time.monotonic() + 5
        while _group_alive(self.proc.pid):
            assert time.monotonic() < deadline, "processes of the killed API are still alive"
            time.sleep(0.02)
        self._log.close()


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of the group ``pgid`` remains."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")"
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


# -- the clients -----------------------------------------------------------------------------


@dataclass
class _Batch:
    kind: str
    events: list[dict[str, Any]]
    fresh: list[str]  # ids sent for the first time by this batch
    resent: list[str]  # ids of earlier, acknowledged batches
    status: str = "pending"  # acked | failed (cut or refused: unacknowledged) | rejected
    response: dict[str, Any] | None = None
    detail: str = ""


@dataclass
class _Ledger:
    """Everything the clients sent and what the server answered, over all cycles."""

    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # event_id -> event
    batches: list[_Batch] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, batch: _Batch) -> None:
        with self.lock:
            for event in batch.events:
                previous = self.sent.setdefault(event["event_id"], event)
                assert previous == event, "a re-sent id must carry the same payload"
            self.batches.append(batch)

    def acked_ids(self, kind: str) -> set[str]:
        return {
            e["event_id"]
            for b in self.batches
            if b.kind == kind and b.status == "acked"
            for e in b.events
        }


_OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))]


def _timestamp(rng: random.Random, base: datetime, spread_days: int) -> str:
    """A past instant, ``spread_days`` UTC dates wide, written with a random UTC offset."""
    midnight = base.replace(hour=0, minute=0, second=0, microsecond=0)
    day = midnight - timedelta(days=rng.randrange(spread_days) + 1)
    # close to midnight more often than not: the offset then changes the local date
    seconds = rng.choice(
        [rng.uniform(0, 600), rng.uniform(86400 - 600, 86399), rng.uniform(0, 86399)]
    )
    instant = day + timedelta(seconds=seconds)
    return instant.astimezone(rng.choice(_OFFSETS)).isoformat()


def _event(rng: random.Random, kind: str, event_id: str, spread_days: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    features = {
        "f0": rng.uniform(-1e6, 1e6),
        "f1": rng.random(),
        "city": rng.choice(["Zürich", "東京", "São Paulo", "naïve 🚀", 'q"uote\\back\nline']),
    }
    if kind == "prediction":
        return {
            "kind": "prediction",
            "event_id": event_id,
            "prediction_id": f"p-{event_id}",
            "timestamp": _timestamp(rng, now, spread_days),
            "features": features,
            "prediction": rng.choice([0, 1, 0.25, "cat", True]),
            "scores": {"p1": rng.random()},
            "model_name": "m",
            "model_version": str(rng.randrange(5)),
            "arm": rng.choice(["a", "b"]),
        }
    if rng.random() < 0.5:
        return {
            "kind": "feedback",
            "event_id": event_id,
            "timestamp": _timestamp(rng, now, spread_days),
            "feedback_type": "explicit",
            "label": rng.choice([0, 1, 0.5, "yes", False]),
            "features": features,
            "user_id": f"u{rng.randrange(100)}",
        }
    return {
        "kind": "feedback",
        "event_id": event_id,
        "timestamp": _timestamp(rng, now, spread_days),
        "feedback_type": "implicit",
        "prediction_id": f"p-{rng.randrange(10**6)}",
        "signal": "click",
        "value": rng.uniform(0, 10),
        "source": "web",
    }


def _client(
    ledger: _Ledger, url: str, cycle: int, thread: int, stop: threading.Event, seed: int
) -> None:
    rng = random.Random(seed)
    own_acked: dict[str, list[dict[str, Any]]] = {"feedback": [], "prediction": []}
    with httpx.Client(base_url=url, timeout=20) as client:
        number = 0
        while not stop.is_set():
            number += 1
            kind = rng.choice(["feedback", "prediction"])
            size = rng.choice([1, rng.randint(1, 20), rng.randint(1, 200)])
            spread = 1 if rng.random() < 0.5 else rng.randint(2, 4)
            fresh = [
                _event(rng, kind, f"c{cycle}-t{thread}-b{number}-e{i}", spread) for i in range(size)
            ]
            old: list[dict[str, Any]] = []
            if own_acked[kind] and rng.random() < 0.25:
                old = rng.sample(own_acked[kind], min(len(own_acked[kind]), rng.randint(1, 20)))
            events = fresh + old
            rng.shuffle(events)
            batch = _Batch(
                kind, events, [e["event_id"] for e in fresh], [e["event_id"] for e in old]
            )
            ledger.add(batch)
            body = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)
            try:
                response = client.post(ENDPOINTS[kind], content=body, headers=NDJSON)
            except httpx.HTTPError as exc:
                # ConnectError: the server was already gone; anything else: cut in flight
                batch.status, batch.detail = "failed", repr(exc)
                if isinstance(exc, httpx.ConnectError):
                    stop.wait(0.01)
                continue
            if response.status_code == 202:
                batch.status, batch.response = "acked", response.json()
                own_acked[kind].extend(fresh)
            else:
                batch.status, batch.detail = "rejected", f"{response.status_code} {response.text}"


def _traffic(ledger: _Ledger, server: _Server, cycle: int, seconds: float) -> None:
    """Clients post until the server is SIGKILLed ``seconds`` after they started."""
    stop = threading.Event()
    before = len(ledger.batches)
    threads = [
        threading.Thread(
            target=_client,
            args=(ledger, server.url, cycle, t, stop, 1000 * cycle + t),
            daemon=True,
        )
        for t in range(CLIENT_THREADS)
    ]
    for t in threads:
        t.start()
    # the kill lands ``seconds`` into acknowledged traffic, however slow a loaded machine
    # makes the first batches
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
        b.status == "acked" for b in ledger.batches[before:]
    ):
        time.sleep(0.01)
    time.sleep(seconds)
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a client thread hung after the kill"
    mine = ledger.batches[before:]
    assert any(b.status == "acked" for b in mine), f"cycle {cycle}: nothing was acknowledged"


# -- checking the log ------------------------------------------------------------------------


def _export(home: Path, out_dir: Path) -> dict[str, pl.DataFrame]:
    """``ct-assets events export`` of both kinds (run side by side)."""
    procs = {
        kind: subprocess.Popen(
            [CT_ASSETS, "events", "export", "--kind", kind, "--out", out_dir / f"{kind}.parquet"],
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for kind in ENDPOINTS
    }
    frames: dict[str, pl.DataFrame] = {}
    for kind, proc in procs.items():
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"export {kind} failed: {output.decode(errors='replace')}"
        frames[kind] = pl.read_parquet(out_dir / f"{kind}.parquet")
    return frames


def _present(features: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (features or {}).items() if v is not None}


def _check_payload(row: dict[str, Any], sent: dict[str, Any]) -> None:
    """The stored event is the one that was sent, field by field."""
    event_id = sent["event_id"]
    assert row["kind"] == sent["kind"], event_id
    assert row["schema_version"] == 1, event_id
    assert row["timestamp"] == datetime.fromisoformat(sent["timestamp"]), event_id
    assert row["received_at"] is not None, event_id
    assert _present(row["features"]) == _present(sent.get("features")), event_id
    if sent["kind"] == "prediction":
        names = ["prediction_id", "model_name", "model_version", "arm"]
        assert row["prediction"] == str(sent["prediction"]), event_id
    else:
        names = ["feedback_type", "prediction_id", "signal", "value", "user_id", "source"]
        expected_label = None if sent.get("label") is None else str(sent["label"])
        assert row["label"] == expected_label, event_id
    for name in names:
        assert row[name] == sent.get(name), (event_id, name)


def _verify(ledger: _Ledger, frames: dict[str, pl.DataFrame], cycle: int) -> None:
    for kind, frame in frames.items():
        ids = frame["event_id"].to_list()
        stored = set(ids)
        assert len(ids) == len(stored), f"{kind}: an event_id is stored more than once"
        assert frame["log_offset"].to_list() == list(range(len(ids))), f"{kind}: offsets"
        foreign = stored - ledger.sent.keys()
        assert not foreign, f"{kind}: events that were never sent: {sorted(foreign)[:5]}"
        missing = ledger.acked_ids(kind) - stored
        assert not missing, f"cycle {cycle}: acknowledged {kind} events lost: {sorted(missing)[:5]}"
        for row in frame.iter_rows(named=True):
            _check_payload(row, ledger.sent[row["event_id"]])
        for batch in ledger.batches:
            if batch.kind != kind:
                continue
            assert batch.status != "rejected", f"a valid batch was refused: {batch.detail}"
            if batch.status == "acked":
                assert batch.response == {
                    "accepted": len(batch.fresh),
                    "duplicates": len(batch.resent),
                }, batch.response
            else:
                present = [i for i in batch.fresh if i in stored]
                assert len(present) in (0, len(batch.fresh)), (
                    f"cycle {cycle}: an unacknowledged {kind} batch is half written: "
                    f"{len(present)} of {len(batch.fresh)} events ({batch.detail})"
                )
    for batch in ledger.batches:
        if batch.kind not in frames:
            continue
        # a re-sent id was acknowledged before, so it is stored whatever became of this batch
        assert set(batch.resent) <= set(frames[batch.kind]["event_id"].to_list())


def _after_restart(ledger: _Ledger, server: _Server, cycle: int) -> None:
    """The restarted log takes new writes and knows every acknowledged id."""
    rng = random.Random(cycle)
    with httpx.Client(base_url=server.url, timeout=20) as client:
        for kind in ENDPOINTS:
            events = [_event(rng, kind, f"after{cycle}-{kind}-{i}", 3) for i in range(25)]
            batch = _Batch(kind, events, [e["event_id"] for e in events], [])
            ledger.add(batch)
            body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
            response = client.post(ENDPOINTS[kind], content=body, headers=NDJSON)
            assert response.status_code == 202, response.text
            batch.status, batch.response = "acked", response.json()
            assert batch.response == {"accepted": 25, "duplicates": 0}
            acked = [b for b in ledger.batches if b.kind == kind and b.status == "acked"]
            again = max(acked[:-1] or acked, key=lambda b: len(b.events))
            body = b"".join(json.dumps(e).encode() + b"\n" for e in again.events)
            response = client.post(ENDPOINTS[kind], content=body, headers=NDJSON)
            assert response.status_code == 202, response.text
            assert response.json() == {"accepted": 0, "duplicates": len(again.events)}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "ct"


def test_kill_9_mid_stream_loses_no_acknowledged_event(home: Path, tmp_path: Path) -> None:
    ledger = _Ledger()
    log = tmp_path / "api.log"
    server = _Server(home, log, CYCLES[0][0])
    try:
        for cycle, (workers, seconds) in enumerate(CYCLES):
            if server.workers != workers:
                server.kill()
                server = _Server(home, log, workers)
            _traffic(ledger, server, cycle, seconds)
            # restart on the same CT_HOME (with the next cycle's worker count)
            following = CYCLES[cycle + 1][0] if cycle + 1 < len(CYCLES) else 1
            server = _Server(home, log, following)
            out = tmp_path / f"export-{cycle}"
            out.mkdir()
            _verify(ledger, _export(home, out), cycle)
            _after_restart(ledger, server, cycle)
        out = tmp_path / "export-final"
        out.mkdir()
        frames = _export(home, out)
        _verify(ledger, frames, len(CYCLES))
    finally:
        server.kill()
    failed = [b for b in ledger.batches if b.status == "failed"]
    cut = [b for b in failed if not b.detail.startswith("ConnectError")]
    assert cut, "no request was in flight at any kill: the test proved nothing"
    stored = {kind: set(frame["event_id"].to_list()) for kind, frame in frames.items()}
    committed = [b for b in failed if b.fresh and set(b.fresh) <= stored[b.kind]]
    acked = [b for b in ledger.batches if b.status == "acked"]
    print(
        f"{len(acked)} batches acknowledged ({sum(len(b.events) for b in acked)} events), "
        f"{len(cut)} cut in flight by a kill, {len(failed) - len(cut)} refused, "
        f"{len(committed)} unacknowledged but committed; "
        f"stored: {', '.join(f'{k} {len(v)}' for k, v in stored.items())} "
        f"in {len(list((home / 'eventlog').rglob('*.ctlog')))} segments"
    )
