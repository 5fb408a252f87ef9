"""What each retrain trigger reads from the event log: labeled feedback since an offset
(volume), the champion's newest logged predictions (drift), its newest attributed
outcomes (performance). Committed events never change, so counts up to a log position
stay true and are kept."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ct_assets.data.attribution import LabelPolicy, UnknownSignalError, attribute_feedback
from ct_assets.data.attribution.policy import EXPLICIT, IMPLICIT
from ct_assets.eventlog import EventLog
from ct_assets.eventlog.recent import newest_dates
from ct_assets.eventlog.tally import (
    EXPLICIT_KEY,
    IMPLICIT_PREFIX,
    Tally,
    add_to,
    feedback_tally,
    merge,
)


def labeled_between(log: EventLog, start: int, end: int, policy: LabelPolicy) -> int:
    """Feedback events at log offsets in [``start``, ``end``) that the label policy labels
    (explicit labels, and implicit signals it maps), whatever their event date. Counted
    from the tallies the journal records with each commit; only the commits partly in
    the range (and any recorded without a tally) are decoded. Raises
    :class:`UnknownSignalError` as :func:`labeled_feedback` does on the same events."""
    if end <= start:
        return 0
    found = feedback_tally(log.root, start, end)
    tally = found.tally
    for first, last in found.undecided:
        merge(tally, frame_tally(log.read("feedback", limit=last, since=first)))
    return policy_labeled(tally, policy)


def frame_tally(feedback: pl.DataFrame) -> Tally:
    """The tally (:mod:`ct_assets.eventlog.tally`) of decoded feedback rows."""
    out: Tally = {}
    if not feedback.height:
        return out
    missing = [c for c in ("feedback_type", "label", "signal") if c not in feedback.columns]
    feedback = feedback.with_columns(pl.lit(None, pl.String).alias(c) for c in missing)
    kind = pl.col("feedback_type")
    explicit = feedback.filter((kind == EXPLICIT) & pl.col("label").is_not_null()).height
    if explicit:
        add_to(out, EXPLICIT_KEY, explicit, explicit)
    implicit = feedback.filter((kind == IMPLICIT) & pl.col("signal").is_not_null())
    if implicit.height:
        value = pl.col("value") if "value" in implicit.columns else pl.lit(None, pl.Float64)
        has_value = (value.is_not_null() & value.is_not_nan()).fill_null(False)
        groups = implicit.group_by("signal").agg(
            pl.len().alias("n"), has_value.sum().alias("with_value")
        )
        for signal, n, with_value in groups.iter_rows():
            add_to(out, IMPLICIT_PREFIX + signal, int(n), int(with_value))
    return out


def policy_labeled(tally: Tally, policy: LabelPolicy) -> int:
    """How many of the tallied events ``policy`` labels: explicit feedback with a label,
    implicit feedback with a positive or negative signal, and the dwell signal with a
    value. Raises :class:`UnknownSignalError` for signals the policy does not know
    unless it ignores them."""
    labeled = tally.get(EXPLICIT_KEY, [0, 0])[0]
    unknown: dict[str, int] = {}
    fixed = policy.positive_signals | policy.negative_signals
    for key, (n, with_value) in tally.items():
        if not key.startswith(IMPLICIT_PREFIX):
            continue
        signal = key[len(IMPLICIT_PREFIX) :]
        if signal in fixed:
            labeled += n
        elif signal == policy.dwell_signal:
            labeled += with_value
        elif n:
            unknown[signal] = unknown.get(signal, 0) + n
    if unknown and not policy.ignore_unknown:
        raise UnknownSignalError(unknown)
    return labeled


class LabeledCounter:
    """Counts the labeled feedback events from a baseline offset to the log's position,
    counting only the events added since the previous count (:func:`labeled_between`:
    from the journal's tallies, so a first count costs the commits since the baseline,
    not a decode of their events): committed events never change, so the count up to
    a position stays true. Keyed by the log, the label policy
    and the baseline; only the latest key is kept."""

    def __init__(self) -> None:
        self._counted: dict[tuple[Path, LabelPolicy, int], tuple[int, int]] = {}

    def count(self, log: EventLog, baseline: int, position: int, policy: LabelPolicy) -> int:
        key = (log.root.resolve(), policy, baseline)
        upto, labeled = self._counted.get(key, (baseline, 0))
        if upto > position:  # a log read afresh (replaced): count again
            upto, labeled = baseline, 0
        labeled += labeled_between(log, upto, position, policy)
        self._counted = {key: (position, labeled)}
        return labeled


def served_by(frame: pl.DataFrame, version: str) -> pl.DataFrame:
    """The rows a model version served (all rows when the frame does not say)."""
    if "model_version" in frame.columns:
        return frame.filter(pl.col("model_version") == version)
    return frame


def champion_predictions(log: EventLog, version: str, rows: int) -> pl.DataFrame:
    """The newest ``rows`` predictions logged by champion ``version``, oldest first (read
    from the newest dates holding four times as many predictions of any version)."""
    recent = log.read("prediction", dates=newest_dates(log, 4 * rows))
    return served_by(recent, version).tail(rows)


def champion_examples(log: EventLog, version: str, rows: int) -> pl.DataFrame:
    """Labeled feedback attributed to predictions champion ``version`` served, from the
    newest dates holding ``2 * rows`` events: the outcomes the performance trigger
    judges it on."""
    dates = newest_dates(log, 2 * rows)
    examples = attribute_feedback(
        log.read("feedback", dates=dates), log.read("prediction", dates=dates)
    )
    return served_by(examples, version)
