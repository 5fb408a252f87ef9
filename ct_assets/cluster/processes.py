"""Long-lived child processes of ``make cluster-demo``: each in its own process group with
its output in a log file, stopped with SIGTERM and then SIGKILL (the whole group)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class EngineError(RuntimeError):
    """An engine did not start or stopped: the message names it and its log."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: each socket stays bound until all are
    chosen (ports asked for one at a time may come back twice, and a server given the same
    port for two of its listeners loses one)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def log_tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@dataclass
class Service:
    """One started process (the leader of its own process group)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    cwd: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise EngineError(
                f"{self.name} exited with {self.proc.returncode}; its log {self.log_path} "
                f"ends with:\n{log_tail(self.log_path)}"
            )


def _group_gone(proc: subprocess.Popen[bytes]) -> bool:
    proc.poll()  # reaps the leader once it exited
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return True
    return False


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop_groups(procs: list[subprocess.Popen[bytes]], term_seconds: float = 20.0) -> list[bool]:
    """SIGTERM to each process group, SIGKILL to what is left of them after
    ``term_seconds`` (a group may outlive its leader: its members are killed too).
    For each, whether it took SIGKILL."""
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + term_seconds
    while time.monotonic() < deadline and not all(_group_gone(p) for p in procs):
        time.sleep(0.2)
    killed = [not _group_gone(p) for p in procs]
    for proc, kill in zip(procs, killed, strict=True):
        if kill:
            _signal_group(proc, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(_group_gone(p) for p in procs):
        time.sleep(0.2)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
    return killed


@dataclass
class Services:
    """What the demo started, stopped in reverse order by :meth:`stop_all`."""

    logs: Path
    env: dict[str, str]
    started: list[Service] = field(default_factory=list)
    #: How long a service has after SIGTERM before its group gets SIGKILL.
    term_seconds: float = 20.0

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> Service:
        self.logs.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        service = Service(name, proc, log_path, cwd)
        self.started.append(service)
        return service

    def check_all(self) -> None:
        for service in self.started:
            service.check()

    def stop_all(self) -> list[str]:
        """Stops every service at once; their names in start order, each marked when it
        needed SIGKILL."""
        services, self.started = self.started, []
        killed = stop_groups([s.proc for s in services], self.term_seconds)
        return [s.name + (" (SIGKILL)" if k else "") for s, k in zip(services, killed, strict=True)]


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    service: Service | None = None,
    interval: float = 0.5,
) -> None:
    """Polls ``ready`` until it holds; :class:`EngineError` when ``service`` exits or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        if service is not None:
            service.check()
        if ready():
            return
        if time.monotonic() > deadline:
            where = (
                f"; its log {service.log_path}:\n{log_tail(service.log_path)}" if service else ""
            )
            raise EngineError(f"{what} not ready within {timeout:.0f} s{where}")
        time.sleep(interval)


def http_answers(url: str, ok_statuses: tuple[int, ...] = (200,)) -> bool:
    """``url`` answers with one of ``ok_statuses`` (an HTTP error status counts if listed)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status) in ok_statuses
    except urllib.error.HTTPError as error:
        return error.code in ok_statuses
    except OSError:
        return False
