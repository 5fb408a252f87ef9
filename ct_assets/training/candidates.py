"""Several training windows in one retrain, all scored on the same holdout.

A retrain trains one candidate per window over the dataset's train split:

* ``window``: every train row (the configured window, or the rows since a detected change
  when the dataset starts at one);
* ``recent``: the newest half of them, when that half has at least ``min_rows`` rows (a
  concept that moves gradually is best learned from its latest state);
* ``incremental``: the champion, continued on the train rows after its own dataset's
  cutoff; only when no change was detected (after one, the champion's trees describe a
  concept that no longer holds) and the champion's inputs match the dataset's.

Each is scored on the dataset's holdout, which none of them trained on, by the gate's
primary metric. The first window (every row: the most data) is the default; a later one
replaces it only when it is clearly better on the holdout: the lower bound of a paired
bootstrap interval (``confidence``) of its metric minus the default's is above 0. A
small holdout's noise therefore never trades data away for nothing (on a stationary
stream the newest half wins by chance about as often as the older one would). The
chosen candidate goes to the gate, which compares it with the champion on the same
holdout; choosing on that holdout flatters the chosen one a little, only when it won
clearly.

The windows are trained side by side, one thread each up to the machine's cores, when
each training is small enough to run on one thread (below ``ONE_THREAD_BELOW_ROWS`` train
rows, threads not set; LightGBM releases the interpreter while it boosts): the same
models as one after the other, in less wall time.

The model that is registered and served is then :func:`refit` (unless turned off): the
chosen candidate's recipe -- its window, mode and number of rounds -- trained again with
the holdout rows as well. The holdout is the newest fifth of the data, the part that
tells most about the rows to come; a model that never learns it starts each deployment
behind a plain retrain on all the rows (about one accuracy point on drifting streams).
The gate's evidence stays honest: it judges the candidate it validated (trained without
the holdout), and the registered model is that recipe on more data.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import polars as pl

from ct_assets.data.dataset import LABEL, SPLIT
from ct_assets.training.checkpoint import Checkpoint
from ct_assets.training.metrics import PRIMARY_METRIC
from ct_assets.training.model import TrainedModel
from ct_assets.training.train import (
    ONE_THREAD_BELOW_ROWS,
    Mode,
    TrainParams,
    TrainResult,
    evaluate,
    train_model,
)

WindowName = Literal["window", "recent", "incremental"]
#: What a retrain asks for: full, incremental, or auto (both compete as candidates).
RequestedMode = Literal["full", "incremental", "auto"]
WINDOWS: tuple[WindowName, ...] = ("window", "recent", "incremental")


@dataclass(frozen=True)
class CandidateWindow:
    name: WindowName
    mode: Mode
    #: Only train rows with a larger log offset (None: every train row).
    after_offset: int | None = None

    def describe(self) -> str:
        if self.name == "incremental":
            return f"champion continued on train rows after log offset {self.after_offset}"
        if self.after_offset is None:
            return "every train row of the dataset"
        return f"train rows after log offset {self.after_offset} (the newest half)"


@dataclass
class TrainedCandidate:
    window: CandidateWindow
    result: TrainResult
    #: The candidate's metrics on the dataset's holdout.
    holdout: dict[str, float]
    #: Paired bootstrap interval of its metric minus the default window's (None for the
    #: default itself).
    versus_default: tuple[float, float] | None = None

    @property
    def score(self) -> float:
        value = self.holdout.get(PRIMARY_METRIC, math.nan)
        return value if not math.isnan(value) else -math.inf

    def summary(self, chosen: bool) -> dict[str, Any]:
        return {
            "window": self.window.name,
            "mode": self.result.mode,
            "rows": self.result.train_rows,
            "after_offset": self.window.after_offset,
            "trees": self.result.model.booster.current_iteration(),
            PRIMARY_METRIC: self.holdout.get(PRIMARY_METRIC),
            "accuracy": self.holdout.get("accuracy"),
            "chosen": chosen,
            "versus_default": list(self.versus_default) if self.versus_default else None,
            "notes": "; ".join(self.result.notes),
        }


def chain_is_full(chain: int, limit: int) -> bool:
    """The champion ends ``chain`` incremental versions in a row: at ``limit`` (> 0) the
    next retrain trains from scratch instead of stacking more trees."""
    return limit > 0 and chain >= limit


def plan_windows(
    dataset: pl.DataFrame,
    *,
    requested: RequestedMode,
    allowed: Sequence[str] = WINDOWS,
    champion_cutoff: int | None,
    change_detected: bool,
    min_rows: int = 500,
) -> list[CandidateWindow]:
    """The windows to train. ``requested`` ``full`` never continues the champion,
    ``incremental`` only continues it (as asked), ``auto`` lets the windows compete.
    ``champion_cutoff``: the last log offset the champion's dataset held (None without a
    champion)."""
    unknown = sorted(set(allowed) - set(WINDOWS))
    if unknown:
        raise ValueError(f"unknown candidate windows {unknown}: use {', '.join(WINDOWS)}")
    if requested == "incremental":
        return [CandidateWindow("incremental", "incremental", champion_cutoff)]
    plan = [CandidateWindow("window", "full")]
    train = dataset.filter(pl.col(SPLIT) == "train")["log_offset"].sort()
    if "recent" in allowed and train.len() >= 2 * min_rows:
        plan.append(CandidateWindow("recent", "full", int(train[train.len() // 2 - 1])))
    if (
        requested == "auto"
        and "incremental" in allowed
        and champion_cutoff is not None
        and not change_detected
    ):
        plan.append(CandidateWindow("incremental", "incremental", champion_cutoff))
    return plan


def train_candidates(
    dataset: pl.DataFrame,
    params: TrainParams,
    windows: Sequence[CandidateWindow],
    champion: TrainedModel | None,
    *,
    checkpoint_for: Callable[[CandidateWindow], Checkpoint | None] = lambda _: None,
    checkpoint_every: int = 25,
    confidence: float = 0.9,
    resamples: int = 300,
    seed: int = 0,
) -> list[TrainedCandidate]:
    """Train every window and score each on the holdout; the chosen one first (see the
    module docstring), then the others by score."""
    holdout = dataset.filter(pl.col(SPLIT) == "holdout")

    def one(window: CandidateWindow) -> TrainedCandidate | None:
        result = train_window(
            dataset,
            params,
            window,
            champion,
            checkpoint=checkpoint_for(window),
            checkpoint_every=checkpoint_every,
        )
        if window.mode == "incremental" and result.mode == "full" and len(windows) > 1:
            return None  # it fell back to a full retrain: the window candidate already is one
        return TrainedCandidate(window, result, evaluate(result.model, holdout))

    workers = side_by_side(dataset, params, len(windows))
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="candidate") as pool:
            every = list(pool.map(one, windows))
    else:
        every = [one(window) for window in windows]
    trained = [t for t in every if t is not None]
    if not trained:
        raise ValueError("no candidate window to train")
    chosen = _choose(trained, holdout, confidence, resamples, seed)
    others = sorted((t for t in trained if t is not chosen), key=lambda t: -t.score)
    return [chosen, *others]


def side_by_side(dataset: pl.DataFrame, params: TrainParams, windows: int) -> int:
    """How many windows train at once: one per core when every training runs on one
    thread (threads not set, fewer than ``ONE_THREAD_BELOW_ROWS`` train rows, not on the
    dask cluster), else 1 (a bigger training already uses every core)."""
    rows = dataset.filter(pl.col(SPLIT) == "train").height
    if windows < 2 or params.num_threads != 0 or rows >= ONE_THREAD_BELOW_ROWS:
        return 1
    if params.distributes(rows):
        return 1
    return max(1, min(windows, os.cpu_count() or 1))


def train_window(
    dataset: pl.DataFrame,
    params: TrainParams,
    window: CandidateWindow,
    champion: TrainedModel | None,
    *,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 25,
) -> TrainResult:
    """One window's candidate, trained on the dataset's train rows of that window."""
    frame = dataset
    if window.mode == "full" and window.after_offset is not None:
        frame = dataset.filter(
            (pl.col(SPLIT) != "train") | (pl.col("log_offset") > window.after_offset)
        )
    return train_model(
        frame,
        params,
        window.mode,
        champion if window.mode == "incremental" else None,
        window.after_offset if window.mode == "incremental" else None,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        score_holdout=False,
    )


def recorded_window(summaries: Sequence[Mapping[str, Any]], mode: Mode) -> CandidateWindow:
    """The chosen window among a version's recorded candidates; without a record, every
    train row (or the champion continued, for an incremental version)."""
    for s in summaries:
        name = s.get("window")
        if s.get("chosen") and name in WINDOWS:
            after = s.get("after_offset")
            return CandidateWindow(name, mode, int(after) if after is not None else None)
    return CandidateWindow("incremental" if mode == "incremental" else "window", mode)


def refit(
    dataset: pl.DataFrame,
    params: TrainParams,
    chosen: TrainedCandidate,
    champion: TrainedModel | None,
    *,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 25,
) -> TrainResult:
    """The chosen candidate's recipe on every row of its window, the holdout included:
    same window and mode, as many rounds as the validated candidate kept (no early
    stopping: the rounds are already picked)."""
    window, validated = chosen.window, chosen.result
    frame = dataset.with_columns(pl.lit("train").alias(SPLIT))
    incremental = validated.mode == "incremental" and champion is not None
    if not incremental and window.after_offset is not None:
        frame = frame.filter(pl.col("log_offset") > window.after_offset)
    start = champion.booster.current_iteration() if incremental and champion else 0
    rounds = max(1, validated.best_iteration - start)
    result = train_model(
        frame,
        replace(params, num_boost_round=rounds, early_stopping_rounds=0),
        validated.mode,
        champion if incremental else None,
        window.after_offset if incremental else None,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        score_holdout=False,
    )
    result.validation_metrics = dict(validated.validation_metrics)
    result.early_stopped = validated.early_stopped
    result.notes.append(
        f"refit on {result.train_rows} rows (the {validated.train_rows} validated train rows "
        f"and the holdout) for {rounds} rounds"
    )
    return result


def _choose(
    trained: list[TrainedCandidate],
    holdout: pl.DataFrame,
    confidence: float,
    resamples: int,
    seed: int,
) -> TrainedCandidate:
    """The default (first) candidate, unless another is clearly better on the holdout."""
    from ct_assets.training.bootstrap import paired_bootstrap

    default = trained[0]
    known = holdout.filter(pl.col(LABEL).cast(pl.String).is_in(default.result.model.spec.classes))
    if len(trained) == 1 or known.height == 0:
        return default
    y = default.result.model.spec.label_indices(known[LABEL])
    base = default.result.model.predict_proba(known)
    chosen, best_low = default, 0.0
    for other in trained[1:]:
        if other.result.model.spec.classes != default.result.model.spec.classes:
            continue
        interval = paired_bootstrap(
            y,
            other.result.model.predict_proba(known),
            base,
            PRIMARY_METRIC,
            n_resamples=resamples,
            confidence=confidence,
            seed=seed,
        )
        other.versus_default = (interval.low, interval.high)
        if interval.n_resamples and interval.low > best_low:
            chosen, best_low = other, interval.low
    return chosen


def candidates_markdown(summaries: Sequence[Mapping[str, Any]]) -> str:
    """A table of the candidates (:meth:`TrainedCandidate.summary` of each, as recorded on
    the version), the chosen one marked; empty without candidates."""
    if not summaries:
        return ""
    lines = [
        f"| window | mode | train rows | trees | holdout {PRIMARY_METRIC} | accuracy | chosen |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        lines.append(
            f"| {s.get('window')} | {s.get('mode')} | {s.get('rows')} | {s.get('trees')} | "
            f"{_fmt(s.get(PRIMARY_METRIC))} | {_fmt(s.get('accuracy'))} | "
            f"{'yes' if s.get('chosen') else ''} |"
        )
    return "\n".join(lines)


def recorded_candidates(text: str) -> list[dict[str, Any]]:
    """The summaries recorded as JSON on a version; empty when absent or unreadable."""
    try:
        value = json.loads(text) if text else []
    except json.JSONDecodeError:
        return []
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def _fmt(value: Any) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    return f"{value:.4f}"
