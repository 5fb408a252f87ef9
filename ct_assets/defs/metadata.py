"""Reading an asset's latest materialization's metadata (for sensors and the dataset's
champion), and the metadata entries that link a model version to MLflow. The retrain job's
assets pass what they need to each other as inputs (``handoffs.py``), not through this."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ct_assets import keys
from ct_assets.uris import model_version_link


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict[str, Any] | None:
    """Metadata of the asset's latest materialization as plain values, or None if never."""
    result = instance.fetch_materializations(dg.AssetKey(asset), limit=1)
    if not result.records:
        return None
    materialization = result.records[0].asset_materialization
    if materialization is None:
        return None
    return {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}


def model_version_metadata(
    tracking_uri: str, model_name: str, version: str
) -> dict[str, dg.MetadataValue]:  # type: ignore[type-arg]
    """``ct/mlflow_model_version``: a link to the version's page in the MLflow UI when the
    tracking URI is an http(s) server, else the file store's path (credentials never shown)."""
    link = model_version_link(tracking_uri, model_name, version)
    value = {
        "url": dg.MetadataValue.url,
        "path": dg.MetadataValue.path,
        "text": dg.MetadataValue.text,
    }[link.kind](link.target)
    return {keys.META_MLFLOW_MODEL_VERSION: value}
