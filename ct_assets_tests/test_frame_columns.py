"""A date's frames held as columns: the same frames back, in any way they are cut,
joined, stored and read."""

from __future__ import annotations

import random
import threading

import pytest

from ct_assets.eventlog.frame_columns import DatedPart, FrameColumns
from ct_assets.eventlog.journal import Part


def random_frames(rng: random.Random, n: int, segments: list[str]) -> list[DatedPart]:
    out, commit, predictions, feedback = [], 0, 0, 0
    for _ in range(n):
        commit += rng.randint(0, 2)
        part = Part(rng.choice(segments), rng.randint(0, 2**40), rng.randint(1, 2**20), 3, 2)
        at = rng.randint(0, 2**62)
        out.append(DatedPart(commit, part, predictions, feedback, at))
        predictions, feedback = predictions + 3, feedback + 2
    return out


def columns_of(frames: list[DatedPart]) -> FrameColumns:
    out = FrameColumns()
    for dated in frames:
        out.append(dated)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_frames_come_back_cut_joined_and_stored(seed: int) -> None:
    rng = random.Random(seed)
    segments = [f"2026-03-0{d}/seg-{s:08d}.ctlog" for d in (1, 2) for s in range(3)]
    frames = random_frames(rng, rng.randint(0, 300), segments)
    held = columns_of(frames)
    assert list(held) == frames
    assert [held[i] for i in range(len(held))] == frames
    stored = FrameColumns.from_bytes(held.segments, held.to_bytes())
    assert stored is not None and list(stored) == frames
    cut = rng.randint(0, (frames[-1].commit + 1) if frames else 1)
    before, since = held.before(cut), held.since(cut)
    assert list(before) == [f for f in frames if f.commit < cut]
    assert list(since) == [f for f in frames if f.commit >= cut]
    # a later chunk names its segments in its own order
    later = FrameColumns(list(reversed(segments)))
    for dated in since:
        later.append(dated)
    assert list(before.extended(later)) == frames
    assert list(FrameColumns().extended(held)) == frames


def test_columns_that_do_not_fit_together_are_refused() -> None:
    held = columns_of(random_frames(random.Random(1), 10, ["a/seg-1", "a/seg-2"]))
    columns = held.to_bytes()
    assert FrameColumns.from_bytes(held.segments, columns[:-1]) is None, "a column missing"
    assert FrameColumns.from_bytes(held.segments, [columns[0][:-8], *columns[1:]]) is None
    assert FrameColumns.from_bytes(held.segments, [columns[0][:-3], *columns[1:]]) is None
    assert FrameColumns.from_bytes(held.segments[:1], columns) is None, "a segment unnamed"


def test_a_walk_takes_the_frames_held_when_it_began_while_another_thread_appends() -> None:
    rng = random.Random(2)
    frames = random_frames(rng, 20_000, ["a/seg-1", "a/seg-2"])
    held = columns_of(frames[:10_000])
    walk = held.upto(len(held))
    writer = threading.Thread(target=lambda: [held.append(f) for f in frames[10_000:]])
    writer.start()
    walked = list(walk)
    writer.join()
    assert walked == frames[:10_000]
    assert list(held) == frames


def test_a_frame_is_found_by_its_segment_and_offset() -> None:
    frames = random_frames(random.Random(3), 500, ["a/seg-1", "a/seg-2"])
    # the same offsets in both segments: the segment tells them apart
    frames += [
        DatedPart(999, Part(segment, 7, 5, 1, 0), 10_000 + i, 0, 0)
        for i, segment in enumerate(["a/seg-2", "a/seg-1"])
    ]
    held = columns_of(frames)
    for dated in frames:
        assert held.find(dated.part) == dated
    assert held.find(Part("a/seg-3", 7, 5, 1, 0)) is None, "a segment not held"
    assert held.find(Part("a/seg-1", 8, 5, 1, 0)) is None, "an offset not held"
