"""Starting the API under uvicorn: auth policy, workers, shared metrics.

``ct-assets api`` checks the auth policy, writes the settings to the environment and
runs uvicorn on :func:`create_app_from_env`, the factory every worker calls. The
factory checks the same policy again (so starting it with uvicorn directly cannot
skip it): without a token it builds the app only if told to run without auth
(``CT_API_INSECURE_NO_AUTH=1``) and bound to a loopback address (``CT_API_BIND_HOST``,
set by ``ct-assets api`` to its ``--host``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket

from starlette.applications import Starlette

from ct_assets.api.app import ApiConfig, create_app
from ct_assets.api.metrics import MULTIPROC_ENV
from ct_assets.settings import Settings

# "1": run without a token (only ever on a loopback address)
INSECURE_ENV = "CT_API_INSECURE_NO_AUTH"
# The address uvicorn binds, for the factory's check of the auth policy.
BIND_HOST_ENV = "CT_API_BIND_HOST"


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
    os.environ[BIND_HOST_ENV] = host
    if workers > 1:
        metrics_dir = settings.home / "api" / f"metrics-{port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    else:
        os.environ.pop(MULTIPROC_ENV, None)
    uvicorn.run(
        "ct_assets.api.server:create_app_from_env",
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


def create_app_from_env() -> Starlette:
    """The uvicorn factory (``ct_assets.api.server:create_app_from_env``) of ``ct-assets
    api`` workers: settings from the environment. Raises :class:`ServerConfigError`
    (uvicorn exits) rather than serve without auth off loopback."""
    settings = Settings.from_env()
    insecure = os.environ.get(INSECURE_ENV) == "1"
    if not settings.api_token and insecure:
        host = os.environ.get(BIND_HOST_ENV)
        if not host:
            raise ServerConfigError(
                f"refusing to start without a token: {INSECURE_ENV}=1 needs {BIND_HOST_ENV} "
                "(the loopback address uvicorn binds; `ct-assets api` sets it)"
            )
        check_auth_policy(settings, host, insecure)
    return create_app(ApiConfig.from_settings(settings, insecure_no_auth=insecure))
