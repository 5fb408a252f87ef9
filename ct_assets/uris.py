"""URIs shown to people: credentials redacted, and links to MLflow model versions.

A tracking URI may carry secrets (``https://user:password@mlflow.example``,
``...?token=...``, ``postgresql://user:password@db/mlflow``). Whatever prints or shows
a URI (``ct-assets status``, asset metadata in the Dagster UI) goes through
:func:`redact_uri`; a link to the MLflow UI is built without them. Also the one check of
a dask scheduler address (CT_DASK_SCHEDULER).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

REDACTED = "***"
# Query parameters whose values are secrets (matched as substrings of the lowercased name).
SECRET_PARAMS = ("token", "password", "passwd", "secret", "key", "signature", "sig", "auth")


def redact_uri(uri: str) -> str:
    """``uri`` with its user information (``user:password@``) and the values of secret
    query parameters replaced by ``***``; any other text is returned as it is."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    redacted = uri
    if "@" in parts.netloc:  # rebuilt in place: urlunsplit would alter sqlite:////paths
        host = parts.netloc.rpartition("@")[2]
        redacted = redacted.replace(f"//{parts.netloc}", f"//{REDACTED}@{host}", 1)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(_is_secret(name) for name, _ in pairs):
        query = urlencode(
            [(name, REDACTED if _is_secret(name) else value) for name, value in pairs],
            safe="*",
        )
        redacted = redacted.replace(f"?{parts.query}", f"?{query}", 1)
    return redacted


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAMS)


@dataclass(frozen=True)
class ModelVersionLink:
    """Where a registered model version is seen: ``url`` (the MLflow UI's page of the
    version, when the tracking URI is an http(s) server), ``path`` (the file store
    otherwise) or ``text`` (another store, redacted, with the version's ``models:/`` URI)."""

    kind: Literal["url", "path", "text"]
    target: str


def model_version_link(tracking_uri: str, model_name: str, version: str) -> ModelVersionLink:
    parts = urlsplit(tracking_uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        host = parts.netloc.rpartition("@")[2]
        base = urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))
        page = f"/#/models/{quote(model_name, safe='')}/versions/{quote(str(version), safe='')}"
        return ModelVersionLink("url", base + page)
    if scheme == "sqlite" and tracking_uri.startswith("sqlite:///"):
        # sqlite:///relative.db, sqlite:////absolute.db
        return ModelVersionLink("path", tracking_uri.removeprefix("sqlite:///"))
    if scheme in ("file", ""):
        return ModelVersionLink("path", parts.path if scheme else tracking_uri)
    return ModelVersionLink("text", f"models:/{model_name}/{version} in {redact_uri(tracking_uri)}")


#: The dask scheduler address schemes CT_DASK_SCHEDULER accepts.
DASK_SCHEMES = ("tcp", "tls")


def scheduler_address_problem(address: str) -> str | None:
    """What is wrong with a dask scheduler address, ``tcp://host:port`` or ``tls://``
    (None when fine; empty means no scheduler)."""
    if not address:
        return None
    expected = "must be empty or a dask scheduler address tcp://host:port (or tls://)"
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        return expected
    if (
        parts.scheme not in DASK_SCHEMES
        or not parts.hostname
        or port is None
        or not 0 < port < 65536
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return expected
    return None
