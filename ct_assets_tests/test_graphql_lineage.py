"""The lineage and the latest materializations as a GraphQL client reads them from a
real ``dagster-webserver`` (``dagster_graphql.DagsterGraphQLClient``)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from dagster_graphql import DagsterGraphQLClient

from ct_assets import keys

from .ui_helpers import (
    LINEAGE_CHAIN,
    DagsterUI,
    dagster_ui,
    upstream_closure,
    webserver_log_on_failure,
)

__all__ = ["dagster_ui"]

pytestmark = [
    pytest.mark.slow,
    # raised inside dagster_graphql's client by the gql version it is pinned with
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

ASSET_NODES = """
query AssetNodes {
  assetNodes {
    assetKey { path }
    groupName
    dependencyKeys { path }
    repository { location { name } }
  }
}
"""

LATEST_MATERIALIZATIONS = """
query Latest($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetMaterializations(limit: 1) {
      runId
      partition
      metadataEntries {
        __typename
        label
        ... on TextMetadataEntry { text }
        ... on IntMetadataEntry { intValue }
        ... on FloatMetadataEntry { floatValue }
        ... on PathMetadataEntry { path }
        ... on UrlMetadataEntry { url }
      }
    }
  }
}
"""


def _client(ui: DagsterUI) -> DagsterGraphQLClient:
    return DagsterGraphQLClient(ui.host, port_number=ui.port, timeout=30)


def _query(ui: DagsterUI, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """A read query through the client (it has no public method for arbitrary queries)."""
    data: dict[str, Any] = _client(ui)._execute(query, variables)
    return data


def _key(node: dict[str, Any]) -> str:
    return "/".join(node["assetKey"]["path"])


def _metadata(materialization: dict[str, Any]) -> dict[str, str]:
    """label -> value as text, for the entry types the assets record as plain values."""
    out: dict[str, str] = {}
    for entry in materialization["metadataEntries"]:
        for field in ("text", "intValue", "floatValue", "path", "url"):
            if field in entry:
                out[entry["label"]] = str(entry[field])
    return out


def test_graphql_lineage_of_champion_model_matches_the_definitions(
    dagster_ui: DagsterUI,
) -> None:
    with webserver_log_on_failure(dagster_ui):
        check_lineage(dagster_ui)


def test_graphql_latest_materializations_match_the_instance_and_registry(
    dagster_ui: DagsterUI,
) -> None:
    with webserver_log_on_failure(dagster_ui):
        check_latest_materializations(dagster_ui)


def check_lineage(ui: DagsterUI) -> None:
    home = ui.home
    nodes = _query(ui, ASSET_NODES)["assetNodes"]

    locations = {n["repository"]["location"]["name"] for n in nodes}
    assert locations == {home.location}
    parents = {_key(n): sorted("/".join(d["path"]) for d in n["dependencyKeys"]) for n in nodes}
    groups = {_key(n): n["groupName"] for n in nodes}

    assert parents == home.parents, "the served graph differs from build_definitions"
    assert groups == {a: g for g, assets in home.groups.items() for a in assets}

    for upstream, downstream in pairwise(LINEAGE_CHAIN):
        assert upstream in parents[downstream], f"no edge {upstream} -> {downstream}: {parents}"

    closure = upstream_closure(parents, keys.CHAMPION_MODEL)
    assert set(LINEAGE_CHAIN) <= closure, f"upstream of champion_model: {sorted(closure)}"
    assert closure == upstream_closure(home.parents, keys.CHAMPION_MODEL)
    assert keys.DEPLOYMENT_HISTORY not in closure, "a downstream asset is not upstream"
    assert keys.LABELING_QUEUE not in closure, "a sibling branch is not upstream"
    assert keys.CHAMPION_MODEL not in upstream_closure(parents, keys.TRAINING_DATASET)


def check_latest_materializations(ui: DagsterUI) -> None:
    home = ui.home
    variables = {"keys": [{"path": [keys.CHAMPION_MODEL]}, {"path": [keys.RAW_FEEDBACK]}]}
    nodes = _query(ui, LATEST_MATERIALIZATIONS, variables)["assetNodes"]
    latest = {_key(n): n["assetMaterializations"] for n in nodes}
    assert set(latest) == {keys.CHAMPION_MODEL, keys.RAW_FEEDBACK}

    (champion,) = latest[keys.CHAMPION_MODEL]
    metadata = _metadata(champion)
    assert metadata[keys.META_MODEL_VERSION] == home.champion_version
    assert metadata[keys.META_MLFLOW_RUN_ID] == home.champion_run_id
    assert metadata == home.champion_metadata
    assert champion["runId"] == home.retrain_run_id
    assert champion["partition"] is None

    (raw,) = latest[keys.RAW_FEEDBACK]
    assert raw["partition"] == home.raw_partition
    assert _metadata(raw)["dagster/row_count"] == str(home.raw_partition_rows)
    assert raw["runId"] != home.retrain_run_id
