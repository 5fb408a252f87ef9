"""The registry as lineage reads it: registered versions, their aliases and tags, the
chain of init models an incremental version continued from, and the versions trained on
each dataset. Opening it never creates a store as a side effect."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ct_assets.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN_ID,
    TAG_DATASET_VERSION,
    TAG_DECISION,
    TAG_DEPLOYMENT_STATUS,
    TAG_INIT_VERSION,
    TAG_LOG_POSITION,
    TAG_MODE,
    TAG_NEW_AFTER_OFFSET,
    TAG_TRIGGER,
    Registry,
)

#: How many versions an incremental model's chain of init models is followed back.
MAX_CHAIN = 50


def parse_version(raw: str) -> str:
    """``7`` or ``v7`` as the registry's version string; ValueError otherwise."""
    digits = raw.strip().removeprefix("v")
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(f"a model version is a positive number such as 3 or v3, got {raw!r}")
    return str(int(digits))


def model_version(registry: Registry, version: str) -> Any | None:
    """The registered version ``version`` of the model; None when the registry has none."""
    from mlflow.exceptions import MlflowException

    try:
        return registry.client.get_model_version(registry.model_name, version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def aliases_by_version(registry: Registry) -> dict[str, list[str]]:
    """The champion / challenger aliases, per version they point at."""
    out: dict[str, list[str]] = {}
    for alias in (CHAMPION, CHALLENGER):
        info = registry.alias(alias)
        if info is not None:
            out.setdefault(info.version, []).append(alias)
    return out


def _all_versions(registry: Registry) -> list[Any]:
    """Every registered version of the model, page by page."""
    name = registry.model_name.replace("'", "\\'")
    versions: list[Any] = []
    token: str | None = None
    while True:
        page = registry.client.search_model_versions(f"name='{name}'", page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def _optional_int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def version_summary(mv: Any, aliases: dict[str, list[str]]) -> dict[str, Any]:
    """What a registered version records about where it came from and where it stands."""
    tags: dict[str, str] = dict(mv.tags or {})
    version = str(mv.version)
    return {
        "version": version,
        "run_id": str(mv.run_id),
        "created_at": datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, UTC).isoformat(),
        "aliases": sorted(aliases.get(version, [])),
        "deployment_status": tags.get(TAG_DEPLOYMENT_STATUS),
        "dataset_version": tags.get(TAG_DATASET_VERSION),
        "dagster_run_id": tags.get(TAG_DAGSTER_RUN_ID),
        "trigger": tags.get(TAG_TRIGGER),
        "mode": tags.get(TAG_MODE),
        "code_version": tags.get(TAG_CODE_VERSION),
        "gate_decision": tags.get(TAG_DECISION),
        "log_position": _optional_int(tags.get(TAG_LOG_POSITION)),
        "init_model_version": tags.get(TAG_INIT_VERSION) or None,
        "new_after_offset": _optional_int(tags.get(TAG_NEW_AFTER_OFFSET)),
    }


def init_chain(
    registry: Registry, first: dict[str, Any], aliases: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """The versions an incremental version continued from, nearest first, until a version
    trained from scratch (or one the registry no longer has)."""
    chain: list[dict[str, Any]] = []
    seen = {first["version"]}
    parent = first["init_model_version"]
    while parent and parent not in seen and len(chain) < MAX_CHAIN:
        seen.add(parent)
        mv = model_version(registry, parent)
        if mv is None:
            chain.append({"version": parent, "missing": True})
            break
        summary = version_summary(mv, aliases)
        chain.append(summary)
        parent = summary["init_model_version"]
    return chain


def models_by_dataset(registry: Registry | None) -> dict[str, list[dict[str, Any]]]:
    """Registered versions per dataset version they were trained on, oldest first."""
    if registry is None:
        return {}
    aliases = aliases_by_version(registry)
    out: dict[str, list[dict[str, Any]]] = {}
    for mv in _all_versions(registry):
        summary = version_summary(mv, aliases)
        if summary["dataset_version"]:
            out.setdefault(summary["dataset_version"], []).append(summary)
    for versions in out.values():
        versions.sort(key=lambda s: int(s["version"]))
    return out
