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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def stop_group(proc: subprocess.Popen[bytes], term_seconds: float = 20.0) -> bool:
    """SIGTERM to ``proc``'s process group, SIGKILL to what is left after ``term_seconds``
    (a group may outlive its leader: its members are killed too). True when it took
    SIGKILL."""
    killed = False
    for sig, wait in ((signal.SIGTERM, term_seconds), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        killed = sig == signal.SIGKILL
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            continue
        break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    return killed


@dataclass
class Services:
    """What the demo started, stopped in reverse order by :meth:`stop_all`."""

    logs: Path
    env: dict[str, str]
    started: list[Service] = field(default_factory=list)

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

    def stop(self, service: Service) -> None:
        stop_group(service.proc)
        if service in self.started:
            self.started.remove(service)

    def stop_all(self) -> list[str]:
        """Stops every service, newest first; their names in start order, each marked
        when it needed SIGKILL."""
        stopped = []
        while self.started:
            service = self.started.pop()
            killed = stop_group(service.proc)
            stopped.append(service.name + (" (SIGKILL)" if killed else ""))
        return stopped[::-1]


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
