"""Helpers for tests that talk to a real ``ct-assets api`` server over HTTP.

Kept small and stable (several test modules import it): start and stop the server
as a subprocess on a free loopback port, wait for ``/healthz``, build valid events.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

CT_ASSETS = str(Path(sys.executable).parent / "ct-assets")
HOST = "127.0.0.1"
# Inherited variables a test server must never pick up from the developer's environment.
_DROPPED_ENV_PREFIXES = ("CT_", "PROMETHEUS_MULTIPROC_DIR")


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_env(
    home: Path, token: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a server process: inherited, minus every ``CT_*``, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    env["CT_HOME"] = str(home)
    env["DAGSTER_HOME"] = str(home / "dagster")
    if token is not None:
        env["CT_API_TOKEN"] = token
    env.update(extra or {})
    return env


@dataclass
class ApiServer:
    """A running ``ct-assets api`` process."""

    proc: subprocess.Popen[bytes]
    home: Path
    port: int
    token: str | None
    log_path: Path
    host: str = HOST

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def eventlog_dir(self) -> Path:
        return self.home / "eventlog"

    def url(self, path: str) -> str:
        return self.base_url + path

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful uvicorn shutdown), SIGKILL after ``timeout``; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


class ServerStartError(RuntimeError):
    pass


def wait_healthy(server: ApiServer, timeout: float = 30.0) -> dict[str, Any]:
    """Poll ``/healthz`` until it answers 200; the body. Raises if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise ServerStartError(
                f"ct-assets api exited with {server.proc.returncode}:\n{server.output()}"
            )
        try:
            response = httpx.get(server.url("/healthz"), timeout=2.0)
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise ServerStartError(f"ct-assets api not healthy after {timeout}s:\n{server.output()}")


def start_api(
    home: Path,
    token: str | None = "test-token",
    *,
    port: int | None = None,
    workers: int = 1,
    host: str = HOST,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> ApiServer:
    """Start ``ct-assets api`` on ``home`` (CT_HOME) and wait until it is healthy.

    ``token=None`` starts without CT_API_TOKEN (pass ``--insecure-no-auth`` in ``args``).
    ``env`` adds variables (e.g. ``CT_API_MAX_BODY_BYTES``). Output goes to a file under
    ``home``; stop the server with :meth:`ApiServer.stop`.
    """
    home.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_port(host)
        log_path = home / f"api-{chosen}.log"
        command = [CT_ASSETS, "api", "--host", host, "--port", str(chosen)]
        command += ["--workers", str(workers), *args]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command,
                env=server_env(home, token, env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ApiServer(proc, home, chosen, token, log_path, host)
        try:
            wait_healthy(server, timeout)
            return server
        except ServerStartError:
            server.stop()
            in_use = "address already in use" in server.output().lower()
            if not in_use or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def run_api(
    home: Path,
    token: str | None,
    args: Sequence[str],
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``ct-assets api`` expecting it to exit by itself (a refused start)."""
    return subprocess.run(
        [CT_ASSETS, "api", *args],
        env=server_env(home, token),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _timestamp(at: datetime | None) -> str:
    when = at or datetime.now(UTC) - timedelta(minutes=1)
    return when.isoformat().replace("+00:00", "Z")


def feedback_event(event_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid schema-v1 explicit feedback event; ``overrides`` replace or add fields."""
    event: dict[str, Any] = {
        "kind": "feedback",
        "schema_version": 1,
        "event_id": event_id,
        "timestamp": _timestamp(None),
        "feedback_type": "explicit",
        "label": 1,
        "features": {"x0": 0.5, "channel": "web"},
        "user_id": "user-0001",
        "source": "test",
    }
    event.update(overrides)
    return event


def prediction_event(event_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid schema-v1 prediction event; ``overrides`` replace or add fields."""
    event: dict[str, Any] = {
        "kind": "prediction",
        "schema_version": 1,
        "event_id": event_id,
        "prediction_id": f"pred-{event_id}",
        "timestamp": _timestamp(None),
        "features": {"x0": 0.5, "channel": "web"},
        "prediction": 1,
        "scores": {"0": 0.25, "1": 0.75},
        "model_name": "test-model",
        "model_version": "1",
        "arm": "champion",
    }
    event.update(overrides)
    return event
