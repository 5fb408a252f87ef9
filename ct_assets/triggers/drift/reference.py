"""A champion version's drift reference: its train rows' encoded features and its
scores on holdout rows, stored as ``reference.npz`` + ``reference.json`` (never a pickle)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ct_assets.data.dataset import SPLIT
from ct_assets.storage import ObjectStore, write_bytes
from ct_assets.triggers.drift.config import DriftConfig
from ct_assets.triggers.drift.encoding import (
    ARRAYS_FILE,
    FORMAT_VERSION,
    META_FILE,
    MIN_SCORE_ROWS,
    ScoreRows,
    encode_features,
    sample_indices,
)

if TYPE_CHECKING:
    from ct_assets.training.model import TrainedModel


@dataclass(eq=False)
class DriftReference:
    """The reference a champion version's windows are compared with.

    ``x_ref`` is the encoded feature matrix (rows x ``feature_names``); ``scores_ref`` the
    champion's class probabilities (columns in ``classes`` order) on ``score_source`` rows,
    None when it was built without a model.
    """

    version: str
    feature_names: list[str]
    categories: dict[str, list[str]]
    classes: list[str]
    x_ref: NDArray[np.float64]
    scores_ref: NDArray[np.float64] | None
    score_source: str = "none"
    meta: dict[str, Any] = field(default_factory=dict)
    _detectors: dict[tuple[Any, ...], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        check_version(self.version)
        if self.x_ref.ndim != 2 or self.x_ref.shape[1] != len(self.feature_names):
            raise ValueError(
                f"x_ref has shape {self.x_ref.shape}, expected (rows, {len(self.feature_names)})"
            )
        if self.x_ref.shape[0] < 2:
            raise ValueError("a drift reference needs at least 2 rows")
        if self.scores_ref is not None and (
            self.scores_ref.ndim != 2 or self.scores_ref.shape[1] != len(self.classes)
        ):
            raise ValueError(
                f"scores_ref has shape {self.scores_ref.shape}, "
                f"expected (rows, {len(self.classes)})"
            )

    @property
    def size(self) -> int:
        return int(self.x_ref.shape[0])

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.feature_names) if name in self.categories]

    def encode(self, frame: pl.DataFrame) -> NDArray[np.float64]:
        """The frame's features as the detector reads them (see the module docstring)."""
        return encode_features(frame, self.feature_names, self.categories)

    def categories_per_feature(self) -> dict[int, list[int]]:
        """Per categorical column, the codes present in the reference.

        Explicit lists, not counts: a category absent from both samples would make a zero
        column in the chi-squared contingency table; a code only the window has is added
        by alibi-detect (its reference count is 0).
        """
        return {i: [int(v) for v in np.unique(self.x_ref[:, i])] for i in self.categorical_indices}

    def detector(self, config: DriftConfig) -> Any:
        """The alibi-detect detector for ``config``, built once per reference and settings."""
        key = (config.detector, config.p_val, config.correction)
        cached = self._detectors.get(key)
        if cached is not None:
            return cached
        if config.detector == "ks":
            if self.categories:
                raise ValueError(
                    f"the 'ks' detector is for numeric features only; categorical: "
                    f"{sorted(self.categories)} (use 'tabular')"
                )
            from alibi_detect.cd import KSDrift

            built = KSDrift(self.x_ref, p_val=config.p_val, correction=config.correction)
        else:
            from alibi_detect.cd import TabularDrift

            built = TabularDrift(
                self.x_ref,
                p_val=config.p_val,
                categories_per_feature=self.categories_per_feature(),  # type: ignore[arg-type]
                correction=config.correction,
            )
        self._detectors[key] = built
        return built

    # --- persistence ----------------------------------------------------------------------

    def save(self, directory: Path) -> Path:
        """Write ``reference.npz`` and ``reference.json`` into ``directory`` (atomically:
        into a temporary sibling, then renamed; an existing reference is left as it is)."""
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            arrays: dict[str, NDArray[Any]] = {"x_ref": self.x_ref}
            if self.scores_ref is not None:
                arrays["scores_ref"] = self.scores_ref
            np.savez(tmp / ARRAYS_FILE, **arrays)  # type: ignore[arg-type]
            (tmp / META_FILE).write_text(json.dumps(self._meta_json(), indent=2, sort_keys=True))
            try:
                os.replace(tmp, directory)
            except OSError:
                if not (directory / META_FILE).exists():
                    raise
                # another process saved the same version first: keep theirs
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory

    def save_to(self, objects: ObjectStore, prefix: str) -> str:
        """Write ``<prefix>/reference.npz`` and then ``<prefix>/reference.json`` on the
        object store, each once (the JSON last: a reference whose JSON exists is whole)."""
        arrays: dict[str, NDArray[Any]] = {"x_ref": self.x_ref}
        if self.scores_ref is not None:
            arrays["scores_ref"] = self.scores_ref
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        text = json.dumps(self._meta_json(), indent=2, sort_keys=True)
        write_bytes(objects, f"{prefix}/{ARRAYS_FILE}", buffer.getvalue(), once=True)
        write_bytes(objects, f"{prefix}/{META_FILE}", text.encode(), once=True)
        return prefix

    @classmethod
    def load_from(cls, objects: ObjectStore, prefix: str) -> DriftReference:
        """The reference :meth:`save_to` wrote under ``prefix``."""
        meta_text = objects.read_bytes(f"{prefix}/{META_FILE}").decode()
        arrays = io.BytesIO(objects.read_bytes(f"{prefix}/{ARRAYS_FILE}"))
        return cls._from_parts(objects.uri_of(prefix), meta_text, arrays)

    @classmethod
    def load(cls, directory: Path) -> DriftReference:
        return cls._from_parts(
            directory, (directory / META_FILE).read_text(), directory / ARRAYS_FILE
        )

    @classmethod
    def _from_parts(cls, where: Any, meta_text: str, arrays_file: Any) -> DriftReference:
        meta = json.loads(meta_text)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{where}: unknown drift reference format {meta.get('format_version')}"
            )
        with np.load(arrays_file, allow_pickle=False) as arrays:
            x_ref = np.asarray(arrays["x_ref"], dtype=np.float64)
            scores = (
                np.asarray(arrays["scores_ref"], dtype=np.float64)
                if "scores_ref" in arrays.files
                else None
            )
        return cls(
            version=str(meta["version"]),
            feature_names=[str(n) for n in meta["feature_names"]],
            categories={str(k): [str(v) for v in vs] for k, vs in meta["categories"].items()},
            classes=[str(c) for c in meta["classes"]],
            x_ref=x_ref,
            scores_ref=scores,
            score_source=str(meta["score_source"]),
            meta=dict(meta.get("meta", {})),
        )

    def _meta_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "feature_names": self.feature_names,
            "categories": self.categories,
            "classes": self.classes,
            "reference_rows": self.size,
            "score_rows": 0 if self.scores_ref is None else int(self.scores_ref.shape[0]),
            "score_source": self.score_source,
            "meta": self.meta,
        }


def check_version(version: str) -> None:
    if not version or version in (".", "..") or "/" in version or "\\" in version:
        raise ValueError(f"a champion version must be a plain folder name, got {version!r}")


def build_reference(
    version: str,
    dataset: pl.DataFrame,
    model: TrainedModel | None,
    *,
    max_reference: int = 5000,
    seed: int = 0,
    score_rows: ScoreRows = "holdout",
    meta: dict[str, Any] | None = None,
) -> DriftReference:
    """The reference of champion ``version`` from its training dataset (dataset layout).

    Features: a seeded sample of at most ``max_reference`` train-split rows, encoded with
    ``model``'s categories (the dataset's string columns when there is no model). Scores:
    ``model``'s probabilities on at most ``max_reference`` holdout rows (``score_rows``
    "holdout", the default, when there are at least ``MIN_SCORE_ROWS`` of them), else on
    the feature reference rows; none without a model.
    """
    from ct_assets.data.dataset import META_COLUMNS

    if max_reference < 2:
        raise ValueError(f"max_reference must be >= 2, got {max_reference}")
    if SPLIT in dataset.columns:
        train = dataset.filter(pl.col(SPLIT) == "train")
        holdout = dataset.filter(pl.col(SPLIT) == "holdout")
    else:
        train, holdout = dataset, dataset.clear()
    if model is not None:
        feature_names = list(model.spec.feature_names)
        categories = {k: list(v) for k, v in model.spec.categories.items()}
        classes = list(model.spec.classes)
    else:
        feature_names = [c for c in dataset.columns if c not in META_COLUMNS]
        categories = {
            name: sorted(v for v in dataset[name].unique().to_list() if v is not None)
            for name in feature_names
            if dataset.schema[name] == pl.String
        }
        classes = []
    rows = train[sample_indices(train.height, max_reference, seed)]
    x_ref = encode_features(rows, feature_names, categories)
    scores: NDArray[np.float64] | None = None
    source = "none"
    if model is not None:
        if score_rows == "holdout" and holdout.height >= MIN_SCORE_ROWS:
            scored, source = holdout[sample_indices(holdout.height, max_reference, seed)], "holdout"
        else:
            scored, source = rows, "train"
        scores = np.asarray(model.predict_proba(scored), dtype=np.float64)
    info = {
        "built_at": datetime.now(UTC).isoformat(),
        "seed": seed,
        "max_reference": max_reference,
        "train_rows": train.height,
        "holdout_rows": holdout.height,
        **(meta or {}),
    }
    return DriftReference(
        version=version,
        feature_names=feature_names,
        categories=categories,
        classes=classes,
        x_ref=x_ref,
        scores_ref=scores,
        score_source=source,
        meta=info,
    )
