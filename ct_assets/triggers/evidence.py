"""What each retrain trigger reads from the event log: labeled feedback since an offset
(volume), the champion's newest logged predictions (drift), its newest attributed
outcomes (performance). Committed events never change, so counts up to a log position
stay true and are kept."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ct_assets.data.attribution import LabelPolicy, attribute_feedback, labeled_feedback
from ct_assets.eventlog import EventLog
from ct_assets.eventlog.recent import newest_dates


def labeled_between(log: EventLog, start: int, end: int, policy: LabelPolicy) -> int:
    """Feedback events at log offsets in [``start``, ``end``) that the label policy labels
    (explicit labels, and implicit signals it maps), whatever their event date. Only the
    frames holding those offsets are read."""
    if end <= start:
        return 0
    events = log.read("feedback", limit=end, since=start)
    return labeled_feedback(events, policy).height if events.height else 0


class LabeledCounter:
    """Counts the labeled feedback events from a baseline offset to the log's position,
    reading only the events added since the previous count: committed events never
    change, so the count up to a position stays true. Keyed by the log, the label policy
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
