"""Reading what upstream assets recorded: their latest materialization's metadata."""

from __future__ import annotations

from typing import Any

import dagster as dg


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict[str, Any] | None:
    """Metadata of the asset's latest materialization as plain values, or None if never."""
    result = instance.fetch_materializations(dg.AssetKey(asset), limit=1)
    if not result.records:
        return None
    materialization = result.records[0].asset_materialization
    if materialization is None:
        return None
    return {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}


def require_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> Any:
    return required_metadata(instance, asset, key)[key]


def required_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> dict[str, Any]:
    """All metadata of the asset's latest materialization, which must hold ``key``."""
    metadata = latest_metadata(instance, asset)
    if metadata is None:
        raise dg.Failure(f"{asset} has never been materialized; materialize it first")
    if key not in metadata:
        raise dg.Failure(f"the latest {asset} materialization has no {key!r} metadata")
    return metadata
