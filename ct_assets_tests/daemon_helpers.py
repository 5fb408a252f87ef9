"""A real ``dagster-daemon`` on a test's instance, for the tests that let sensors act."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ct_assets.instance import prepare_dagster_home
from ct_assets.settings import PROJECT_ROOT, Settings

DAGSTER_DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return log_tail(self.log_path)


def daemon_log_path(settings: Settings) -> Path:
    return settings.home / "daemon.log"


def log_tail(path: Path, chars: int = 4000) -> str:
    """The end of a log, for a failure message ("" when there is none)."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextmanager
def running_daemon(settings: Settings) -> Iterator[Daemon]:
    """``dagster-daemon run`` on the settings' instance (its sensors evaluated every
    ``settings.sensor_interval_seconds``); terminated, then killed, on exit."""
    home = prepare_dagster_home(settings)
    env = {**os.environ, **settings.as_env(), "DAGSTER_HOME": str(home)}
    log_path = daemon_log_path(settings)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [DAGSTER_DAEMON, "run", "-w", "workspace.yaml"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Daemon(proc, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
