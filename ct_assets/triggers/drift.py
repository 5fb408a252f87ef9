"""Drift trigger: has the input (or the champion's score) distribution moved since training?

A :class:`DriftReference` is built once per champion version from the champion's training
dataset: the train split's features (at most ``max_reference`` rows, a seeded sample),
encoded as the detector reads them, and the champion's class probabilities on reference
rows for the score test. It is stored as ``<root>/<champion_version>/`` (``reference.npz``
+ ``reference.json``, never a pickle) and kept in process by :func:`get_or_build`, so a
sensor tick loads or builds it once and then reuses it, with its alibi-detect detector.

:func:`check_drift` compares a window of recent feature rows (a seeded sample of at most
``max_window`` rows) against the reference:

* per feature, with alibi-detect's ``TabularDrift`` (Kolmogorov-Smirnov for numeric
  features, chi-squared for categorical ones) or ``KSDrift`` (all-numeric), with a
  Bonferroni or FDR correction over the features;
* the champion's scores on the window against its scores on the reference, with a
  two-sample Kolmogorov-Smirnov test (scipy): it catches a change the model is sensitive
  to that per-feature marginals miss (a changed correlation) or a serving-side change of
  the scores themselves.

The decision fires when either test detects drift and the window holds at least
``min_window`` rows; its reason names the features and the numbers.

Encoding: numeric features as floats, missing as ``-inf`` (so a change of the missing rate
is a change of distribution, not a NaN); categorical features as their index in the
champion's category list, missing as ``len(categories)`` and unseen as
``len(categories) + 1``.

Score reference rows: by default the dataset's holdout rows, which the champion did not
fit. Its scores on its own training rows are more confident than on any new data from the
same distribution, so a KS test against them fires on a stationary stream: with a model
boosted 300 rounds without early stopping, 100 of 100 stationary windows against train-row
scores, 0 of 100 against holdout scores.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ct_assets.data.dataset import SPLIT
from ct_assets.storage import ObjectStore, write_bytes

if TYPE_CHECKING:
    from ct_assets.training.model import TrainedModel

Detector = Literal["tabular", "ks"]
Correction = Literal["bonferroni", "fdr"]
ScoreRows = Literal["holdout", "train"]

FORMAT_VERSION = 1
ARRAYS_FILE = "reference.npz"
META_FILE = "reference.json"
#: On an object store, the reference of champion version V is ``drift/<V>/``.
OBJECT_PREFIX = "drift"
#: Numeric missing values are encoded as this (sorted first by the KS test).
NUMERIC_MISSING = -np.inf
#: Fewer holdout rows than this: the score reference falls back to the reference rows.
MIN_SCORE_ROWS = 200
#: References kept in process by :func:`get_or_build` (the newest ones).
CACHE_SIZE = 4


def missing_code(categories: list[str]) -> int:
    return len(categories)


def unseen_code(categories: list[str]) -> int:
    return len(categories) + 1


@dataclass(frozen=True)
class DriftConfig:
    """How a window is compared with the reference (see :func:`check_drift`)."""

    detector: Detector = "tabular"
    #: Family-wise level of the feature tests (the FDR q-value with ``correction="fdr"``).
    p_val: float = 0.05
    correction: Correction = "bonferroni"
    #: Level of the score KS test (Bonferroni over the class columns when multiclass).
    score_p_val: float = 0.01
    #: The smallest change that counts as drift, whatever its p-value: a feature's KS
    #: distance (numeric) or total variation distance between category frequencies
    #: (categorical), the scores' KS distance. A long stream of checks on large windows
    #: finds differences too small to matter (and, at a fixed level, by chance at about
    #: the level per check); below this floor they do not fire. 0: p-values alone.
    min_distance: float = 0.1
    max_window: int = 2000
    min_window: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.detector not in ("tabular", "ks"):
            raise ValueError(f"detector must be 'tabular' or 'ks', got {self.detector!r}")
        if self.correction not in ("bonferroni", "fdr"):
            raise ValueError(f"correction must be 'bonferroni' or 'fdr', got {self.correction!r}")
        for name in ("p_val", "score_p_val"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if not 0.0 <= self.min_distance < 1.0:
            raise ValueError(f"min_distance must be in [0, 1), got {self.min_distance}")
        if self.min_window < 2 or self.max_window < self.min_window:
            raise ValueError(
                f"need 2 <= min_window <= max_window, got {self.min_window}, {self.max_window}"
            )


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
        _check_version(self.version)
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


def _check_version(version: str) -> None:
    if not version or version in (".", "..") or "/" in version or "\\" in version:
        raise ValueError(f"a champion version must be a plain folder name, got {version!r}")


def feature_frame(frame: pl.DataFrame, feature_names: list[str]) -> pl.DataFrame:
    """``frame`` with its features as columns: when they are not there already, the fields
    of its ``features`` struct (prediction events, attributed examples), alone."""
    if (
        "features" in frame.columns
        and isinstance(frame.schema["features"], pl.Struct)
        and not set(feature_names) <= set(frame.columns)
    ):
        return frame.select("features").unnest("features")
    return frame


def encode_features(
    frame: pl.DataFrame, feature_names: list[str], categories: dict[str, list[str]]
) -> NDArray[np.float64]:
    """Encoded feature matrix (rows x features); absent columns are all missing."""
    frame = feature_frame(frame, feature_names)
    n = frame.height
    out = np.empty((n, len(feature_names)), dtype=np.float64)
    for j, name in enumerate(feature_names):
        cats = categories.get(name)
        if name not in frame.columns:
            out[:, j] = missing_code(cats) if cats is not None else NUMERIC_MISSING
            continue
        column = frame[name]
        if cats is not None:
            codes = {value: i for i, value in enumerate(cats)}
            text = column.cast(pl.String)
            coded = text.replace_strict(codes, default=unseen_code(cats), return_dtype=pl.Int64)
            out[:, j] = np.where(text.is_null().to_numpy(), missing_code(cats), coded.to_numpy())
        else:
            values = column.cast(pl.Float64, strict=False).to_numpy()
            out[:, j] = np.where(np.isnan(values), NUMERIC_MISSING, values)
    return out


def sample_indices(n: int, limit: int, seed: int) -> NDArray[np.int64]:
    """Sorted indices of a seeded sample of at most ``limit`` of ``n`` rows (all if fewer)."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False)).astype(np.int64)


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


# --- the in-process cache -------------------------------------------------------------------

_CACHE: OrderedDict[tuple[str, str], DriftReference] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def get_or_build(
    folder: Path,
    version: str,
    builder: Callable[[], DriftReference],
    objects: ObjectStore | None = None,
) -> DriftReference:
    """The reference of champion ``version``: from this process's cache, else loaded from
    ``folder/<version>/``, else built by ``builder()`` and saved there.

    ``folder`` is the drift root (``CT_HOME/drift``). With ``objects``, the reference is
    kept on that object store instead, as ``drift/<version>/`` (``folder`` unused). A
    stored reference that cannot be read is rebuilt. The cache keeps the
    :data:`CACHE_SIZE` most recently used versions.
    """
    _check_version(version)
    if objects is not None:
        return _get_or_build_on(objects, version, builder)
    key = (str(folder.resolve()), version)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
        directory = folder / version
        reference: DriftReference | None = None
        if (directory / META_FILE).exists():
            try:
                reference = DriftReference.load(directory)
            except (OSError, ValueError, KeyError, TypeError):
                reference = None
                shutil.rmtree(directory, ignore_errors=True)
        if reference is None:
            reference = builder()
            if reference.version != version:
                raise ValueError(
                    f"the builder made a reference of version {reference.version!r}, "
                    f"not {version!r}"
                )
            reference.save(directory)
        _CACHE[key] = reference
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return reference


def _get_or_build_on(
    objects: ObjectStore, version: str, builder: Callable[[], DriftReference]
) -> DriftReference:
    """:func:`get_or_build` on an object store (the same cache, keyed by the store's URI)."""
    key = (objects.uri, version)
    prefix = f"{OBJECT_PREFIX}/{version}"
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
        reference: DriftReference | None = None
        if objects.exists(f"{prefix}/{META_FILE}"):
            try:
                reference = DriftReference.load_from(objects, prefix)
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                reference = None
                objects.delete(f"{prefix}/{META_FILE}")
                objects.delete(f"{prefix}/{ARRAYS_FILE}")
        if reference is None:
            reference = builder()
            if reference.version != version:
                raise ValueError(
                    f"the builder made a reference of version {reference.version!r}, "
                    f"not {version!r}"
                )
            reference.save_to(objects, prefix)
        _CACHE[key] = reference
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return reference


# --- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftDecision:
    fire: bool
    feature_drift: bool
    score_drift: bool
    detector: str
    correction: str
    #: Feature p-values below this are drift (Bonferroni: p_val / features; FDR: the
    #: Benjamini-Hochberg cut-off, or p_val / features when nothing is significant).
    threshold: float
    feature_p_values: dict[str, float]
    #: The test statistic per feature: KS distance (numeric) or chi-squared (categorical).
    feature_distances: dict[str, float]
    #: The size of each feature's change, on one scale: KS distance (numeric), total
    #: variation distance between category frequencies (categorical).
    feature_effects: dict[str, float]
    feature_tests: dict[str, str]
    #: Features below the threshold with an effect of at least ``min_distance``,
    #: smallest p-value first.
    drifted_features: list[str]
    score_p_value: float | None
    score_distance: float | None
    score_threshold: float
    min_distance: float
    #: Rows in the window before sampling, rows compared, rows of the reference.
    window_rows: int
    window_size: int
    reference_size: int
    min_window: int
    reference_version: str

    def reason(self) -> str:
        k = len(self.feature_p_values)
        low = [(n, self.feature_p_values[n]) for n in self.drifted_features]
        if low:
            listed = ", ".join(f"{n} p={p:.3g}" for n, p in low[:5])
            more = f", +{len(low) - 5} more" if len(low) > 5 else ""
            features = (
                f"feature drift: {len(low)}/{k} features below p {self.threshold:.3g} "
                f"with an effect >= {self.min_distance:.3g} ({listed}{more})"
            )
        elif self.feature_p_values:
            name = min(self.feature_p_values, key=lambda n: self.feature_p_values[n])
            p, effect = self.feature_p_values[name], self.feature_effects.get(name, 0.0)
            if p < self.threshold:
                features = (
                    f"no feature drift: min p={p:.3g} ({name}) < {self.threshold:.3g} "
                    f"but its effect {effect:.3f} < {self.min_distance:.3g}"
                )
            else:
                features = (
                    f"no feature drift: min p={p:.3g} ({name}) >= {self.threshold:.3g} "
                    f"over {k} features"
                )
        else:
            features = "no features compared"
        if self.score_p_value is None:
            score = "score: not checked"
        else:
            verb = "<" if self.score_p_value < self.score_threshold else ">="
            score = (
                f"score KS p={self.score_p_value:.3g} {verb} {self.score_threshold:.3g} "
                f"(D={self.score_distance:.3f})"
            )
            if verb == "<" and not self.score_drift:
                score += f", D < {self.min_distance:.3g}: no score drift"
        sizes = (
            f"window {self.window_size} of {self.window_rows} rows vs reference "
            f"{self.reference_size} ({self.detector}, {self.correction})"
        )
        text = f"{features}; {score}; {sizes}"
        if self.window_size < self.min_window:
            return f"not firing: window {self.window_size} < min_window {self.min_window}; {text}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "fire": self.fire,
            "feature_drift": self.feature_drift,
            "score_drift": self.score_drift,
            "detector": self.detector,
            "correction": self.correction,
            "threshold": _finite(self.threshold),
            "feature_p_values": {k: _finite(v) for k, v in self.feature_p_values.items()},
            "feature_distances": {k: _finite(v) for k, v in self.feature_distances.items()},
            "feature_effects": {k: _finite(v) for k, v in self.feature_effects.items()},
            "feature_tests": dict(self.feature_tests),
            "drifted_features": list(self.drifted_features),
            "score_p_value": _finite(self.score_p_value),
            "score_distance": _finite(self.score_distance),
            "score_threshold": _finite(self.score_threshold),
            "min_distance": self.min_distance,
            "window_rows": self.window_rows,
            "window_size": self.window_size,
            "reference_size": self.reference_size,
            "min_window": self.min_window,
            "reference_version": self.reference_version,
            "reason": self.reason(),
        }


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def check_drift(
    reference: DriftReference,
    recent_features: pl.DataFrame,
    recent_scores: NDArray[Any] | None,
    config: DriftConfig | None = None,
) -> DriftDecision:
    """Compare a window of recent feature rows (and the champion's scores on them) with
    the reference; fire on feature or score drift when the window is large enough.

    ``recent_features`` has the features as columns or as a ``features`` struct.
    ``recent_scores`` are class probabilities (rows x classes, in ``reference.classes``
    order) or, when binary, the positive class's probability; rows aligned with
    ``recent_features`` are sampled with them. None: no score test.
    """
    config = config or DriftConfig()
    n = recent_features.height
    index = sample_indices(n, config.max_window, config.seed)
    window = recent_features[index] if index.size < n else recent_features
    x = reference.encode(window)
    size = int(x.shape[0])
    k = len(reference.feature_names)
    p_values = np.ones(k)
    distances = np.zeros(k)
    threshold = config.p_val / max(k, 1)
    if size >= 2 and k:
        result = reference.detector(config).predict(
            x, drift_type="batch", return_p_val=True, return_distance=True
        )["data"]
        p_values = np.asarray(result["p_val"], dtype=np.float64)
        distances = np.asarray(result["distance"], dtype=np.float64)
        raw = np.asarray(result["threshold"], dtype=np.float64)
        threshold = float(raw) if raw.ndim == 0 else float(raw.min())
    names = reference.feature_names
    effects = feature_effects(reference, x, distances)
    drifted = sorted(
        (i for i in range(k) if p_values[i] < threshold and effects[i] >= config.min_distance),
        key=lambda i: p_values[i],
    )
    tests = {n: ("chi2" if n in reference.categories else "ks") for n in names}
    score_p, score_d = _score_test(reference, recent_scores, index, n, config)
    feature_drift = bool(drifted)
    score_drift = (
        score_p is not None
        and score_p < config.score_p_val
        and (score_d or 0.0) >= config.min_distance
    )
    return DriftDecision(
        fire=(feature_drift or score_drift) and size >= config.min_window,
        feature_drift=feature_drift,
        score_drift=score_drift,
        detector=config.detector,
        correction=config.correction,
        threshold=threshold,
        feature_p_values={names[i]: float(p_values[i]) for i in range(k)},
        feature_distances={names[i]: float(distances[i]) for i in range(k)},
        feature_effects={names[i]: float(effects[i]) for i in range(k)},
        feature_tests=tests,
        drifted_features=[names[i] for i in drifted],
        score_p_value=score_p,
        score_distance=score_d,
        score_threshold=config.score_p_val,
        min_distance=config.min_distance,
        window_rows=n,
        window_size=size,
        reference_size=reference.size,
        min_window=config.min_window,
        reference_version=reference.version,
    )


def feature_effects(
    reference: DriftReference, window: NDArray[np.float64], ks_distances: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Per feature, how far the window lies from the reference on a 0-1 scale: the KS
    distance for numeric features (as the detector measured it), the total variation
    distance between the category frequencies (missing and unseen codes included) for
    categorical ones."""
    effects = np.asarray(ks_distances, dtype=np.float64).copy()
    if window.shape[0] == 0:
        return np.zeros_like(effects)
    for i in reference.categorical_indices:
        codes = np.concatenate([reference.x_ref[:, i], window[:, i]]).astype(np.int64)
        size = int(codes.max()) + 1 if codes.size else 1
        ref = np.bincount(reference.x_ref[:, i].astype(np.int64), minlength=size)
        new = np.bincount(window[:, i].astype(np.int64), minlength=size)
        effects[i] = 0.5 * float(np.abs(ref / ref.sum() - new / new.sum()).sum())
    return effects


def score_columns(scores: NDArray[Any], n_classes: int) -> NDArray[np.float64]:
    """The score columns the KS test compares: the positive class's probability when
    binary (one column), every class's otherwise."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 1:
        if n_classes > 2:
            raise ValueError(f"{n_classes} classes need a score matrix, got one column")
        return array[:, None]
    if array.ndim != 2 or array.shape[1] != n_classes:
        raise ValueError(f"scores have shape {array.shape}, expected (rows, {n_classes})")
    return array[:, 1:2] if n_classes == 2 else array


def _score_test(
    reference: DriftReference,
    scores: NDArray[Any] | None,
    index: NDArray[np.int64],
    n: int,
    config: DriftConfig,
) -> tuple[float | None, float | None]:
    """Two-sample KS p-value (Bonferroni over class columns) and the largest distance.

    Scores aligned with the feature window (as many rows) are sampled with it; others
    are sampled on their own."""
    if scores is None or reference.scores_ref is None:
        return None, None
    from scipy.stats import ks_2samp

    recent = score_columns(scores, len(reference.classes))
    if recent.shape[0] == n:
        if index.size < n:
            recent = recent[index]
    else:
        recent = recent[sample_indices(recent.shape[0], config.max_window, config.seed)]
    ref = score_columns(reference.scores_ref, len(reference.classes))
    p_min, d_max, tested = 1.0, 0.0, False
    for j in range(ref.shape[1]):
        a = ref[:, j][np.isfinite(ref[:, j])]
        b = recent[:, j][np.isfinite(recent[:, j])]
        if a.size < 2 or b.size < 2:
            continue
        result = ks_2samp(a, b, method="asymp")
        p_min = min(p_min, float(result.pvalue))
        d_max = max(d_max, float(result.statistic))
        tested = True
    if not tested:
        return None, None
    return min(1.0, p_min * ref.shape[1]), d_max


def prediction_scores(predictions: pl.DataFrame, classes: list[str]) -> NDArray[np.float64]:
    """The logged ``scores`` struct of prediction events as a (rows x classes) matrix in
    ``classes`` order (a class missing from the struct or a row: NaN)."""
    if "scores" not in predictions.columns:
        return np.full((predictions.height, len(classes)), np.nan)
    dtype = predictions.schema["scores"]
    fields = {f.name for f in dtype.fields} if isinstance(dtype, pl.Struct) else set()
    columns = [
        pl.col("scores").struct.field(c).cast(pl.Float64).alias(c)
        if c in fields
        else pl.lit(None, dtype=pl.Float64).alias(c)
        for c in classes
    ]
    return predictions.select(columns).fill_null(np.nan).to_numpy().astype(np.float64)
