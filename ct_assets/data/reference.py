"""The reference schema: what valid examples look like, inferred from training data.

Like a TFX schema, it records per feature whether it is numeric (with the observed
range) or categorical (with the observed domain), how often it is missing, and the
label values seen. Feedback validation checks incoming rows against it. The schema
is inferred, then optionally corrected by hand through overrides (widen a range,
fix a domain, exclude a feature from checks); its ``version`` is a hash of its
canonical JSON, so any change of content gives a new version and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import polars as pl

FeatureKind = Literal["numeric", "categorical"]

FORMAT_VERSION = 1
# Beyond this many distinct values a string feature is free text: no domain check.
MAX_CATEGORIES = 1000
# Beyond this many distinct labels the label is not a class (e.g. a regression target).
MAX_LABELS = 1000

_LABEL_ALIAS = "\x00label"  # cannot clash with a feature name
_OVERRIDE_KEYS = frozenset({"kind", "min", "max", "categories", "check"})


@dataclass(frozen=True)
class FeatureStats:
    """One feature as seen in the training data.

    ``min``/``max`` are set for numeric features (None when every value was missing:
    no range check); ``categories`` is the sorted observed domain of a categorical
    feature, None when it had more than :data:`MAX_CATEGORIES` values (free text, no
    domain check). ``check=False`` keeps the statistics but excludes the feature
    from validation.
    """

    name: str
    kind: FeatureKind
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    null_fraction: float = 0.0
    check: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "min": self.min,
            "max": self.max,
            "categories": self.categories,
            "null_fraction": self.null_fraction,
            "check": self.check,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureStats:
        kind = data["kind"]
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {data.get('name')!r}: unknown kind {kind!r}")
        categories = data.get("categories")
        return cls(
            name=str(data["name"]),
            kind=kind,
            min=_optional_float(data.get("min")),
            max=_optional_float(data.get("max")),
            categories=sorted({category_text(v) for v in categories})
            if categories is not None
            else None,
            null_fraction=float(data.get("null_fraction", 0.0)),
            check=bool(data.get("check", True)),
        )


@dataclass(frozen=True)
class ReferenceSchema:
    """Features and labels of the training data; ``labels`` None means no label check."""

    features: dict[str, FeatureStats] = field(default_factory=dict)
    labels: list[str] | None = None

    def content(self) -> dict[str, Any]:
        """The canonical content (no version): what the version is a hash of."""
        return {
            "format": FORMAT_VERSION,
            "features": {name: self.features[name].to_dict() for name in sorted(self.features)},
            "labels": self.labels,
        }

    @cached_property
    def version(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({**self.content(), "version": self.version}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReferenceSchema:
        """Parse a schema; a stored ``version`` is ignored (it is recomputed from content)."""
        data = json.loads(text)
        if data.get("format", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"unsupported reference schema format {data.get('format')!r}")
        features = {
            name: FeatureStats.from_dict({**stats, "name": name})
            for name, stats in data.get("features", {}).items()
        }
        labels = data.get("labels")
        return cls(
            features=features,
            labels=sorted({category_text(v) for v in labels}) if labels is not None else None,
        )

    def save(self, path: Path) -> Path:
        """Write the schema atomically (temporary file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> ReferenceSchema:
        return cls.from_json(path.read_text())

    def checked_features(self) -> list[FeatureStats]:
        """Features validation looks at, in name order."""
        return [self.features[n] for n in sorted(self.features) if self.features[n].check]


def category_text(value: Any) -> str:
    """A domain value as the text Polars gives when casting it to String (``true``, ``3``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"range bound {value!r} is not finite")
    return number


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() and dtype != pl.Boolean


def infer_reference_from_columns(
    frame: pl.DataFrame | pl.LazyFrame,
    feature_names: Sequence[str],
    label_column: str | None = "label",
) -> ReferenceSchema:
    """Infer the schema from a flat frame: one column per feature, plus the label column.

    Numeric columns (integers, floats) become numeric features with their min and max;
    everything else (strings, booleans) categorical with its observed values. A column
    with only missing values is numeric without a range (nothing to check against).
    A LazyFrame (e.g. a scan of a dataset file) is aggregated without being collected.
    """
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    n = int(lazy.select(pl.len()).collect().item())
    numeric = [c for c in feature_names if _is_numeric(schema[c])]
    all_null = [c for c in feature_names if schema[c] == pl.Null]
    categorical = [c for c in feature_names if c not in numeric and c not in all_null]
    aggregates: list[pl.Expr] = [
        pl.col(c).null_count().alias(f"{c}\x00nulls") for c in feature_names
    ]
    aggregates += [pl.col(c).min().cast(pl.Float64).alias(f"{c}\x00min") for c in numeric]
    aggregates += [pl.col(c).max().cast(pl.Float64).alias(f"{c}\x00max") for c in numeric]
    aggregates += [
        pl.col(c).cast(pl.String).drop_nulls().n_unique().alias(f"{c}\x00distinct")
        for c in categorical
    ]
    stats = lazy.select(aggregates).collect().row(0, named=True) if aggregates else {}

    features: dict[str, FeatureStats] = {}
    for name in feature_names:
        null_fraction = stats[f"{name}\x00nulls"] / n if n else 0.0
        if name in categorical:
            categories: list[str] | None = None
            if stats[f"{name}\x00distinct"] <= MAX_CATEGORIES:
                values = lazy.select(pl.col(name).cast(pl.String).drop_nulls().unique())
                categories = sorted(values.collect().to_series().to_list())
            features[name] = FeatureStats(
                name, "categorical", categories=categories, null_fraction=null_fraction
            )
        else:
            low = stats.get(f"{name}\x00min")
            high = stats.get(f"{name}\x00max")
            if low is not None and not math.isfinite(low):
                low = None
            if high is not None and not math.isfinite(high):
                high = None
            features[name] = FeatureStats(
                name, "numeric", min=low, max=high, null_fraction=null_fraction
            )

    labels: list[str] | None = None
    if label_column is not None:
        observed = (
            lazy.select(pl.col(label_column).cast(pl.String).drop_nulls().unique())
            .collect()
            .to_series()
        )
        labels = sorted(observed.to_list()) if observed.len() <= MAX_LABELS else None
    return ReferenceSchema(features=features, labels=labels)


def infer_reference(examples: pl.DataFrame) -> ReferenceSchema:
    """Infer the schema from labeled examples: a ``features`` struct and a ``label`` column.

    This is the shape :func:`ct_assets.data.dataset.labeled_examples` produces.
    """
    label_column = "label" if "label" in examples.columns else None
    dtype = examples.schema.get("features")
    if not isinstance(dtype, pl.Struct) or not dtype.fields:
        return infer_reference_from_columns(examples, [], label_column)
    names = [f.name for f in dtype.fields]
    label = [pl.col(label_column).alias(_LABEL_ALIAS)] if label_column else []
    flat = examples.select(pl.col("features").struct.unnest(), *label)
    return infer_reference_from_columns(flat, names, _LABEL_ALIAS if label_column else None)


def apply_overrides(schema: ReferenceSchema, overrides: Mapping[str, Any]) -> ReferenceSchema:
    """The schema corrected by hand, e.g. from a JSON file::

        {"features": {"x0": {"min": -10, "max": 10},
                      "channel": {"categories": ["web", "app", "kiosk"]},
                      "comment": {"check": false}},
         "labels": ["0", "1"]}

    Per feature, ``kind``, ``min``, ``max``, ``categories`` (null: free text) and
    ``check`` may be set; a feature not in the schema may be added when its ``kind``
    is given. ``labels`` replaces the label domain (null: no label check). Anything
    else is an error, so a typo cannot silently disable a check.
    """
    unknown_top = set(overrides) - {"features", "labels"}
    if unknown_top:
        raise ValueError(f"unknown override keys: {sorted(unknown_top)}")
    features = dict(schema.features)
    for name, changes in (overrides.get("features") or {}).items():
        if not isinstance(changes, Mapping):
            raise ValueError(f"override of feature {name!r} must be an object")
        unknown = set(changes) - _OVERRIDE_KEYS
        if unknown:
            raise ValueError(f"feature {name!r}: unknown override keys {sorted(unknown)}")
        current = features.get(name)
        if current is None:
            if "kind" not in changes:
                raise ValueError(f"feature {name!r} is not in the schema; give its kind to add it")
            current = FeatureStats(name, changes["kind"])
        merged = FeatureStats.from_dict({**current.to_dict(), **changes, "name": name})
        if merged.kind == "numeric" and merged.categories is not None:
            merged = replace(merged, categories=None)
        if merged.kind == "categorical":
            merged = replace(merged, min=None, max=None)
        if merged.min is not None and merged.max is not None and merged.min > merged.max:
            raise ValueError(f"feature {name!r}: min {merged.min} > max {merged.max}")
        features[name] = merged
    labels = schema.labels
    if "labels" in overrides:
        given = overrides["labels"]
        labels = sorted({category_text(v) for v in given}) if given is not None else None
    return ReferenceSchema(features=features, labels=labels)
