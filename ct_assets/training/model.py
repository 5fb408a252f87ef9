"""A trained LightGBM model with what feeds it: features, categories, classes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

if TYPE_CHECKING:
    import lightgbm

MODEL_FILE = "model.txt"
SPEC_FILE = "ct_model.json"


@dataclass(frozen=True)
class FeatureSpec:
    """The model's inputs: ordered feature names, categories of the string features, classes."""

    feature_names: list[str]
    categories: dict[str, list[str]]
    classes: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.feature_names) if name in self.categories]

    def compatible_with(self, other: FeatureSpec) -> bool:
        """Same inputs and classes: a model of one can continue boosting on data of the other."""
        return (
            self.feature_names == other.feature_names
            and self.categories == other.categories
            and self.classes == other.classes
        )

    def matrix(self, frame: pl.DataFrame) -> NDArray[Any]:
        """Features as a float matrix; categories as their codes, unseen or missing as NaN.
        Built by one Polars selection (one pass, however many features)."""
        if not self.feature_names:
            return np.empty((frame.height, 0))
        columns = frame.select(
            self._column(name, name in frame.columns) for name in self.feature_names
        )
        return np.ascontiguousarray(columns.to_numpy(), dtype=np.float64)

    def _column(self, name: str, present: bool) -> pl.Expr:
        if not present:
            return pl.lit(np.nan, dtype=pl.Float64).alias(name)
        if name in self.categories:
            codes = self._codes[name]
            coded = (
                pl.col(name)
                .cast(pl.String)
                .replace_strict(codes, default=None, return_dtype=pl.Float64)
            )
            return coded.fill_null(np.nan)
        return pl.col(name).cast(pl.Float64).fill_null(np.nan)

    @cached_property
    def _codes(self) -> dict[str, dict[str, float]]:
        return {
            name: {value: float(i) for i, value in enumerate(values)}
            for name, values in self.categories.items()
        }

    def label_indices(self, labels: pl.Series) -> NDArray[Any]:
        index = {value: i for i, value in enumerate(self.classes)}
        values = labels.cast(pl.String).to_list()
        unknown = sorted({v for v in values if v not in index})
        if unknown:
            raise ValueError(
                f"labels {unknown[:5]} are not among the model's classes {self.classes}"
            )
        return np.array([index[v] for v in values], dtype=int)

    def to_json(self) -> str:
        return json.dumps(
            {
                "feature_names": self.feature_names,
                "categories": self.categories,
                "classes": self.classes,
                "params": self.params,
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        data = json.loads(text)
        return cls(data["feature_names"], data["categories"], data["classes"], data["params"])


#: Predictions of at most this many rows run on one thread.
SINGLE_THREAD_ROWS = 10_000


@dataclass
class TrainedModel:
    booster: lightgbm.Booster
    spec: FeatureSpec

    def predict_proba(self, frame: pl.DataFrame) -> NDArray[Any]:
        """Class probabilities, shape (rows, classes), columns in ``spec.classes`` order.

        Up to ``SINGLE_THREAD_ROWS`` rows are predicted on one thread (as serving does):
        starting OpenMP threads costs more than the work, tens of times more on a busy
        machine; the probabilities are the same."""
        matrix = self.spec.matrix(frame)
        if frame.height <= SINGLE_THREAD_ROWS:
            raw = np.asarray(self.booster.predict(matrix, num_threads=1))
        else:
            raw = np.asarray(self.booster.predict(matrix))
        if len(self.spec.classes) == 2 and raw.ndim == 1:
            return np.column_stack([1.0 - raw, raw])
        return raw

    def predict(self, frame: pl.DataFrame) -> list[str]:
        proba = self.predict_proba(frame)
        return [self.spec.classes[i] for i in proba.argmax(axis=1)]

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / MODEL_FILE))
        (directory / SPEC_FILE).write_text(self.spec.to_json())
        return directory

    @classmethod
    def load(cls, directory: Path) -> TrainedModel:
        import lightgbm

        booster = lightgbm.Booster(model_file=str(directory / MODEL_FILE))
        spec = FeatureSpec.from_json((directory / SPEC_FILE).read_text())
        return cls(booster, spec)
