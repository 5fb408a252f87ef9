"""The plain parts of building a training dataset: where its window starts after a change,
and the schema changes against the reference."""

from datetime import UTC, datetime

import polars as pl
import pytest

from ct_assets import keys
from ct_assets.data.reference import infer_reference
from ct_assets.pipeline.dataset_build import DatasetBuildError, schema_drift, window_start


def test_window_start_prefers_the_run_tag_then_the_champion() -> None:
    champion = {keys.META_WINDOW_START: "2024-01-02T00:00:00+00:00"}
    tagged = {keys.RUN_TAG_WINDOW_START: "2024-01-03T06:00:00"}
    assert window_start(tagged, champion) == datetime(2024, 1, 3, 6, tzinfo=UTC)
    assert window_start({}, champion) == datetime(2024, 1, 2, tzinfo=UTC)
    assert window_start({}, {}) is None


def test_a_window_start_that_is_not_a_timestamp_names_where_it_came_from() -> None:
    with pytest.raises(DatasetBuildError, match=r"run tag .* is not an ISO timestamp"):
        window_start({keys.RUN_TAG_WINDOW_START: "yesterday"}, {})


def test_schema_drift_lists_added_and_removed_features() -> None:
    examples = pl.DataFrame(
        {"features": [{"a": 1.0, "b": "x"}, {"a": 2.0, "b": "y"}], "label": ["0", "1"]}
    )
    reference = infer_reference(examples)
    assert schema_drift(None, ["a"]) == {}
    assert schema_drift(reference, ["a", "b"]) == {}
    assert schema_drift(reference, ["a", "c"]) == {"added": ["c"], "removed": ["b"]}
