"""The per-commit feedback tallies of the journal: labeled feedback counted by offset
from the journal alone equals a full decode, for any commits and any label policy;
journals from before tallies and writers killed mid-stream count exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ct_assets.eventlog.counts as counts
from ct_assets.data.attribution import LabelPolicy, UnknownSignalError, labeled_feedback
from ct_assets.eventlog import EventLog, prepare_batch
from ct_assets.eventlog.checkpoint import Mark
from ct_assets.eventlog.journal import Commit, committed, encode_commit
from ct_assets.eventlog.layout import journal_path
from ct_assets.eventlog.tally import FeedbackTally, _read_range, feedback_tally
from ct_assets.schema import Event, FeedbackEvent, PredictionEvent
from ct_assets.triggers.evidence import LabeledCounter, labeled_between
from ct_assets_tests.test_journal_checkpoint import forget_process_state

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)

POLICIES = [
    LabelPolicy(),
    LabelPolicy(dwell_signal=None),
    LabelPolicy(positive_signals=frozenset({"hover"}), negative_signals=frozenset({"skip"})),
    LabelPolicy(ignore_unknown=False),
]


def full_scan(log: EventLog, start: int, end: int, policy: LabelPolicy) -> int | dict[str, int]:
    """What counting by decoding every event of the range gives (or the unknown signals
    it raises on)."""
    if end <= start:
        return 0
    events = log.read("feedback", limit=end, since=start)
    try:
        return labeled_feedback(events, policy).height if events.height else 0
    except UnknownSignalError as exc:
        return exc.counts


def tallied(log: EventLog, start: int, end: int, policy: LabelPolicy) -> int | dict[str, int]:
    try:
        return labeled_between(log, start, end, policy)
    except UnknownSignalError as exc:
        return exc.counts


def _event(draw: st.DrawFn, event_id: str) -> Event:
    at = T0 - timedelta(days=draw(st.integers(0, 3)), seconds=draw(st.integers(0, 100)))
    if draw(st.integers(0, 3)) == 0:
        return PredictionEvent(
            event_id=event_id,
            prediction_id=f"p-{event_id}",
            timestamp=at,
            features={},
            prediction=1,
        )
    if draw(st.booleans()):
        label = draw(
            st.one_of(st.none(), st.integers(0, 2), st.sampled_from(["a", ""]), st.booleans())
        )
        return FeedbackEvent(event_id=event_id, timestamp=at, feedback_type="explicit", label=label)
    return FeedbackEvent(
        event_id=event_id,
        timestamp=at,
        feedback_type="implicit",
        signal=draw(st.sampled_from([None, "click", "skip", "dwell", "hover", "Click"])),
        value=draw(st.one_of(st.none(), st.floats(0, 100), st.just(float("nan")))),
    )


@st.composite
def commits(draw: st.DrawFn) -> list[list[list[Event]]]:
    """Commits, each a group of batches; ids from a small pool, so some are duplicates
    (of earlier commits, of the same commit, of the same batch) the id index drops."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        group = []
        for _ in range(draw(st.integers(1, 3))):
            ids = draw(st.lists(st.integers(0, 60), min_size=1, max_size=12))
            group.append([_event(draw, f"e{i}") for i in ids])
        out.append(group)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commits(), st.data())
def test_tallied_count_equals_a_full_scan(
    groups: list[list[list[Event]]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = EventLog(Path(tmp) / "log", segment_max_bytes=2048)
        boundaries = [0]
        for group in groups:
            log.writer.commit([prepare_batch(batch) for batch in group])
            boundaries.append(log.counts().feedback)
        total = boundaries[-1]
        for policy in POLICIES:
            # commit boundaries: counted from the journal alone, no event decoded
            a, b = sorted(data.draw(st.sampled_from(boundaries)) for _ in range(2))
            assert feedback_tally(log.root, a, b).undecided == []
            assert tallied(log, a, b, policy) == full_scan(log, a, b, policy)
            # any offsets, mid-commit included
            s, e = sorted(data.draw(st.integers(0, total + 2)) for _ in range(2))
            assert tallied(log, s, e, policy) == full_scan(log, s, e, policy)
            expected = full_scan(log, s, e, policy)
            if isinstance(expected, int):
                assert LabeledCounter().count(log, s, e, policy) == expected
        log.writer.close()


def walk(root: Path, start: int, end: int) -> FeedbackTally:
    """The tally of [start, end) read commit by commit from the journal's start (no mark's
    sum used)."""
    out = FeedbackTally()
    if end > start:
        _read_range(root, out, [Mark(0, 0, 0, 0, 0, {}, 0)], [0], 0, start, end)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commits(), st.data())
def test_tallies_from_the_summary_marks_equal_a_walk_of_the_whole_journal(
    groups: list[list[list[Event]]], data: st.DataObject
) -> None:
    """With a mark every 2 commits and a checkpoint every 3, processes started afresh
    between commits (from the checkpoint): any range's tally, found from two marks' sums
    and the records at its ends, is the one a walk of every commit gives."""
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as tmp:
        patch.setattr(counts, "MARK_EVERY", 2)
        patch.setattr(counts, "CHECKPOINT_COMMITS", 3)
        log = EventLog(Path(tmp) / "log", segment_max_bytes=2048)
        for group in groups:
            log.writer.commit([prepare_batch(batch) for batch in group])
            if data.draw(st.booleans()):
                forget_process_state()
            log.counts()
        total = log.counts().feedback
        for _ in range(4):
            s, e = sorted(data.draw(st.integers(0, total + 2)) for _ in range(2))
            assert feedback_tally(log.root, s, e) == walk(log.root, s, e)
            policy = data.draw(st.sampled_from(POLICIES))
            assert tallied(log, s, e, policy) == full_scan(log, s, e, policy)
        log.writer.close()


def _events(prefix: str, n: int) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        at = T0 - timedelta(days=i % 3)
        if i % 4 == 0:
            out.append(
                FeedbackEvent(
                    event_id=f"{prefix}{i}", timestamp=at, feedback_type="explicit", label=i % 2
                )
            )
        elif i % 4 == 1:
            out.append(
                FeedbackEvent(
                    event_id=f"{prefix}{i}",
                    timestamp=at,
                    feedback_type="implicit",
                    signal="dwell",
                    value=float(i % 50) if i % 3 else None,
                )
            )
        elif i % 4 == 2:
            out.append(
                FeedbackEvent(
                    event_id=f"{prefix}{i}", timestamp=at, feedback_type="implicit", signal="hover"
                )
            )
        else:
            out.append(
                PredictionEvent(
                    event_id=f"{prefix}{i}",
                    prediction_id="p",
                    timestamp=at,
                    features={},
                    prediction=0,
                )
            )
    return out


@pytest.mark.parametrize("mark_every", [1000, 1])
def test_records_without_a_tally_are_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mark_every: int
) -> None:
    """A journal written before commits carried tallies counts by decoding those commits,
    and tallied commits appended after them are summed (read from the journal, or from
    the sums the summary keeps at each commit)."""
    monkeypatch.setattr(counts, "MARK_EVERY", mark_every)
    log = EventLog(tmp_path / "log")
    for k in range(4):
        log.append(_events(f"old{k}-", 25))
    old_total = log.counts().feedback
    log.writer.close()
    old = committed(log.root)
    journal_path(log.root).write_bytes(
        b"".join(encode_commit(Commit(c.sequence, c.committed_at_us, c.parts)) for c in old)
    )
    assert all(c.labels is None for c in committed(log.root)) and len(old) == 4
    log = EventLog(tmp_path / "log")
    for k in range(3):
        log.append(_events(f"new{k}-", 25))
    total = log.counts().feedback
    found = feedback_tally(log.root, 0, total)
    assert found.commits == 3 and found.undecided == [(0, old_total)]
    for policy in POLICIES:
        for start in (0, 7, 40):
            assert tallied(log, start, total, policy) == full_scan(log, start, total, policy)
            assert feedback_tally(log.root, start, total) == walk(log.root, start, total)
    log.writer.close()


_APPENDER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from ct_assets.eventlog import EventLog
    from ct_assets.schema import FeedbackEvent
    log = EventLog(Path(sys.argv[1]))
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    k = 0
    while True:
        batch = [
            FeedbackEvent(event_id=f"k{k}-{i}", timestamp=t0 - timedelta(days=i % 2),
                          feedback_type="implicit" if i % 2 else "explicit",
                          signal="click" if i % 4 == 1 else ("hover" if i % 2 else None),
                          label=None if i % 2 else str(i % 3))
            for i in range(50)
        ]
        log.append(batch)
        k += 1
        if k == 20:
            print("ready", flush=True)
    """
)


@pytest.mark.slow
def test_a_writer_killed_mid_stream_leaves_exact_tallies(tmp_path: Path) -> None:
    """A writer killed -9 while appending: what the journal commits is counted exactly
    (the tally is in the commit record), and the next writer goes on counting."""
    root = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, str(root)], env=env, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    log = EventLog(root)
    log.writer.refresh()
    total = log.counts().feedback
    assert total >= 1000
    for policy in POLICIES[:3]:
        assert tallied(log, 0, total, policy) == full_scan(log, 0, total, policy)
        assert LabeledCounter().count(log, 10, total, policy) == full_scan(log, 10, total, policy)
    log.append(_events("after-", 40))
    after = log.counts().feedback
    assert feedback_tally(log.root, total, after).undecided == []
    assert tallied(log, 0, after, LabelPolicy()) == full_scan(log, 0, after, LabelPolicy())
    log.writer.close()


def test_a_line_the_tally_cannot_read_leaves_the_commit_without_one() -> None:
    """A tally never stops a commit: lines it cannot read give none (counted by decoding)."""
    from ct_assets.eventlog.tally import tally_lines

    good = b'{"kind":"feedback","feedback_type":"implicit","signal":"dwell","value":3}'
    assert tally_lines([good, good]) == {"implicit:dwell": [2, 2]}
    assert tally_lines([good, b'{"feedback_type":"implicit","signal":7}']) is None
