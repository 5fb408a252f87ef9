"""Starting the API under uvicorn: auth policy, workers, shared metrics."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket

from ct_assets.api.app import INSECURE_ENV
from ct_assets.api.metrics import MULTIPROC_ENV
from ct_assets.settings import Settings


class ServerConfigError(ValueError):
    """The API cannot start as asked (no token, no-auth on a public address, ...)."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def check_auth_policy(settings: Settings, host: str, insecure_no_auth: bool) -> None:
    if settings.api_token:
        return
    if not insecure_no_auth:
        raise ServerConfigError(
            "refusing to start without a token: set CT_API_TOKEN "
            "(or pass --insecure-no-auth on a loopback address)"
        )
    if not is_loopback(host):
        raise ServerConfigError(
            f"--insecure-no-auth is only allowed on a loopback address, not {host}"
        )


def serve(
    settings: Settings, host: str, port: int, workers: int = 1, insecure_no_auth: bool = False
) -> None:
    """Run the API until interrupted. Workers read their settings from the environment."""
    import uvicorn

    check_auth_policy(settings, host, insecure_no_auth)
    if workers < 1:
        raise ServerConfigError("--workers must be at least 1")
    os.environ.update(settings.as_env())
    if settings.api_token:
        os.environ["CT_API_TOKEN"] = settings.api_token
    os.environ[INSECURE_ENV] = "1" if insecure_no_auth and not settings.api_token else "0"
    if workers > 1:
        metrics_dir = settings.home / "api" / f"metrics-{port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    else:
        os.environ.pop(MULTIPROC_ENV, None)
    uvicorn.run(
        "ct_assets.api.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
