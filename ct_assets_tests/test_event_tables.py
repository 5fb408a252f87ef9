"""Curation inputs read from the per-date raw tables where those are current."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import msgspec
import polars as pl
import pytest

from ct_assets import keys
from ct_assets.data.tables import TableStore
from ct_assets.defs.ingestion import raw_materialization
from ct_assets.eventlog import CorruptLogError, EventLog
from ct_assets.pipeline.event_tables import read_via_tables
from ct_assets.schema import FeedbackEvent, PredictionEvent

DAY = datetime(2026, 3, 1, 12, tzinfo=UTC)
DATES = [(DAY + timedelta(days=d)).date().isoformat() for d in range(4)]


def _events(start: int, days: range, features: dict[str, object] | None = None) -> list:  # type: ignore[type-arg]
    out: list[FeedbackEvent | PredictionEvent] = []
    for d in days:
        for i in range(3):
            n = start + 10 * d + i
            when = DAY + timedelta(days=d, seconds=n)
            extra = features or {}
            out.append(
                PredictionEvent(
                    event_id=f"pe-{n}",
                    prediction_id=f"p-{n}",
                    timestamp=when,
                    features={"x": float(n), **extra},
                    prediction=n % 2,
                    model_version="1",
                )
            )
            out.append(
                FeedbackEvent(
                    event_id=f"fb-{n}",
                    timestamp=when + timedelta(seconds=1),
                    feedback_type="explicit",
                    prediction_id=f"p-{n}",
                    label=n % 2,
                )
            )
    return out


def _tables(log: EventLog, store: TableStore, dates: list[str]) -> None:
    fingerprints = log.partition_fingerprints()
    for day in dates:
        for table, kind in ((keys.RAW_FEEDBACK, "feedback"), (keys.RAW_PREDICTIONS, "prediction")):
            raw_materialization(dg.AssetKey(table), log, kind, day, fingerprints[day], store)  # type: ignore[arg-type]


def _feature_added_on_03_03(tmp_path: Path, days: int) -> tuple[EventLog, TableStore]:
    """A log of ``days`` dates whose predictions carry one more feature from 03-03 on."""
    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    log.append(_events(0, range(2)))
    log.append(_events(100, range(2, days), features={"late": "v"}))
    return log, store


def _segments(log: EventLog, day: str) -> Path:
    return log.root / "segments" / day


def test_current_tables_are_read_instead_of_the_log(tmp_path: Path) -> None:
    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    log.append(_events(0, range(4)))
    _tables(log, store, DATES[:3])  # 03-04 has no table
    log.append(_events(100, range(2, 3)))  # 03-03's table is now stale
    wanted = [*DATES, "2026-03-09"]  # and a date without events
    for kind in ("feedback", "prediction"):
        expected = log.read(kind, dates=wanted)
        got = read_via_tables(log, store, kind, wanted, log.partition_fingerprints())
        assert got.equals(expected), kind
    # the current tables stand in for the log: 03-01's events are read without its segments
    expected = log.read("prediction", dates=wanted)
    shutil.rmtree(_segments(log, DATES[0]))
    got = read_via_tables(log, store, "prediction", wanted, log.partition_fingerprints())
    assert got.equals(expected)
    with pytest.raises(CorruptLogError):
        log.read("prediction", dates=wanted)


def test_tables_with_other_columns_or_dates_that_differ_are_read_from_the_log(
    tmp_path: Path,
) -> None:
    log, store = _feature_added_on_03_03(tmp_path, days=3)
    fingerprints = log.partition_fingerprints()
    _tables(log, store, DATES[:3])
    expected = log.read("prediction", dates=DATES[:3])
    assert read_via_tables(log, store, "prediction", DATES[:3], fingerprints).equals(expected)
    # a table written by another version (an extra column), with the current source
    path = store.path(keys.RAW_PREDICTIONS, DATES[0])
    store.write(
        keys.RAW_PREDICTIONS,
        DATES[0],
        pl.read_parquet(path).with_columns(other=pl.lit(1)),
        source=fingerprints[DATES[0]],
    )
    got = read_via_tables(log, store, "prediction", DATES[:2], fingerprints)
    assert got.equals(log.read("prediction", dates=DATES[:2]))
    assert "other" not in got.columns


def test_a_current_raw_table_is_not_written_again(tmp_path: Path) -> None:
    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    log.append(_events(0, range(2)))
    _tables(log, store, DATES[:2])
    path = store.path(keys.RAW_PREDICTIONS, DATES[0])
    before = path.stat().st_ino
    _tables(log, store, DATES[:2])
    assert path.stat().st_ino == before, "same events: the table stays"
    log.append(_events(100, range(0, 1)))
    _tables(log, store, DATES[:2])
    assert path.stat().st_ino != before, "new events of the date: written again"
    assert pl.read_parquet(path).height == 6


def test_a_read_of_the_predictions_feedback_cites_equals_the_filtered_log(
    tmp_path: Path,
) -> None:
    log, store = _feature_added_on_03_03(tmp_path, days=4)
    _tables(log, store, DATES[:3])  # 03-04 from the log
    fingerprints = log.partition_fingerprints()
    cases = {
        "one date's": ["p-10", "p-11"],
        "three dates'": ["p-1", "p-120", "p-132"],
        "none": ["p-999"],
        "with unknown ids": ["p-0", "nope", "p-131"],
    }
    for name, cited in cases.items():
        ids = pl.Series("prediction_id", cited)
        for dates in (DATES, DATES[:2], DATES[1:3]):
            whole = log.read("prediction", dates=dates)
            expected = whole.filter(pl.col("prediction_id").is_in(ids.implode()))
            got = read_via_tables(log, store, "prediction", dates, fingerprints, ids)
            assert got.equals(expected), (name, dates)
            assert got.schema == whole.schema, "the columns of the whole read, rows or none"


def test_a_table_without_a_cited_prediction_is_read_no_further(tmp_path: Path) -> None:
    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    log.append(_events(0, range(2)))
    _tables(log, store, DATES[:2])
    fingerprints = log.partition_fingerprints()
    ids = pl.Series("prediction_id", ["p-10"])  # 03-02's
    # 03-01's table keeps its footer and prediction_id column, but the pages of its
    # other columns are garbage: a whole read of it fails
    path = store.path(keys.RAW_PREDICTIONS, DATES[0])
    schema = pl.read_parquet_schema(path)
    _garble_columns(path, keep="prediction_id")
    with pytest.raises((pl.exceptions.PolarsError, OSError)):
        pl.read_parquet(path)
    shutil.rmtree(_segments(log, DATES[0]))  # nor may the log be read for it
    got = read_via_tables(log, store, "prediction", DATES[:2], fingerprints, ids)
    assert got["prediction_id"].to_list() == ["p-10"]
    assert got.schema == schema


def _garble_columns(path: Path, keep: str) -> None:
    """Overwrite the data of every column chunk of ``path`` but ``keep``'s."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for group in range(metadata.num_row_groups):
        for index in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(index)
            if chunk.path_in_schema == keep:
                continue
            start = chunk.dictionary_page_offset or chunk.data_page_offset
            size = chunk.total_compressed_size
            data[start : start + size] = b"\xff" * size
    path.write_bytes(bytes(data))


def _mixed_log(log: EventLog, seed: int) -> None:
    """Six dates of predictions (some logged twice) and feedback that cites them days
    later, cites none, cites unknown ids, repeats itself or carries its own features."""
    import random

    rng = random.Random(seed)
    events: list[FeedbackEvent | PredictionEvent] = []
    for n in range(240):
        when = DAY + timedelta(days=n // 40, seconds=n * 7)
        copies = 2 if rng.random() < 0.1 else 1
        for copy in range(copies):
            events.append(
                PredictionEvent(
                    event_id=f"pe-{n}-{copy}",
                    prediction_id=f"p-{n}",
                    timestamp=when + timedelta(seconds=copy),
                    features={"x": float(n + copy), "c": rng.choice("abc")},
                    prediction=rng.randint(0, 1),
                    scores={"0": 0.3, "1": 0.7},
                    model_version=str(1 + copy),
                )
            )
        if rng.random() < 0.6:  # answered, maybe days later, maybe twice
            later = when + timedelta(hours=rng.choice([1, 30, 70]))
            for again in range(rng.choice([1, 1, 2])):
                events.append(
                    FeedbackEvent(
                        event_id=f"fb-{n}-{again}",
                        timestamp=later,
                        feedback_type=rng.choice(["explicit", "implicit"]),
                        prediction_id=f"p-{n}",
                        label=rng.randint(0, 1),
                        signal=rng.choice(["click", "skip"]),
                        user_id=f"u-{rng.randint(0, 9)}",
                    )
                )
        if rng.random() < 0.1:
            events.append(
                FeedbackEvent(
                    event_id=f"fx-{n}",
                    timestamp=when,
                    feedback_type="explicit",
                    prediction_id=rng.choice([None, f"unknown-{n}"]),
                    features={"x": 1.0, "c": "a"} if rng.random() < 0.5 else None,
                    label=1,
                    user_id="u-x",
                )
            )
    rng.shuffle(events)
    for start in range(0, len(events), 37):
        log.append(events[start : start + 37])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curating_from_the_cited_predictions_equals_curating_from_all(
    tmp_path: Path, seed: int
) -> None:
    from ct_assets.data.attribution import LabelPolicy
    from ct_assets.data.feedback_rules import ValidationRules
    from ct_assets.pipeline.curation import CurationInputs, curate, input_dates

    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    _mixed_log(log, seed)
    days = list(log.counts_by_date())
    _tables(log, store, days[::2])  # every other date from its table, the rest from the log
    rules, policy = ValidationRules(), LabelPolicy()
    fingerprints = log.partition_fingerprints()
    for day in days:
        feedback_dates, lookup_dates = input_dates([day], rules, 3)
        everything = CurationInputs(
            log.read("feedback", dates=feedback_dates), log.read("prediction", dates=lookup_dates)
        )
        cited = CurationInputs.read(log, [day], rules, tables=(store, fingerprints))
        assert cited.predictions.height < everything.predictions.height
        for inputs in (cited, CurationInputs.read(log, [day], rules)):
            got = curate(log, [day], rules, policy, None, inputs=inputs)
            want = curate(log, [day], rules, policy, None, inputs=everything)
            assert got.validated.equals(want.validated), day
            assert got.examples.equals(want.examples), day
            assert want.examples.height > 0


#: ``EventLog.read`` as it is, for what tests compare a spied read with.
_UNSPIED_READ = EventLog.read


def _spy_on_whole_date_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[str, tuple[str, ...]]]:
    """Record every read of whole dates (``dates`` given, from the first event)."""
    whole_reads: list[tuple[str, tuple[str, ...]]] = []

    def spy(self: EventLog, kind: str, limit: int | None = None, dates=None, since: int = 0):  # type: ignore[no-untyped-def]
        if dates is not None and since == 0:
            whole_reads.append((kind, tuple(dates)))
        return _UNSPIED_READ(self, kind, limit, dates, since)  # type: ignore[arg-type]

    monkeypatch.setattr(EventLog, "read", spy)
    return whole_reads


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_stale_raw_table_is_extended_by_the_frames_committed_since(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from ct_assets.pipeline.event_tables import refresh_raw_tables

    rng = random.Random(seed)
    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    whole_reads = _spy_on_whole_date_reads(monkeypatch)
    read = _UNSPIED_READ
    tables = {"feedback": keys.RAW_FEEDBACK, "prediction": keys.RAW_PREDICTIONS}
    for step in range(12):
        days = range(rng.randint(0, 2), 3)
        late = {"late": "v"} if step == 7 else None  # a feature first seen at step 7
        batch = _events(1000 * step, days, features=late)[: rng.randint(1, 9)]
        # feedback with features of its own, some of them, or none
        own = rng.choice([None, {"x": 1.0}, {"x": 2.0, "c": "a"}])
        log.append(
            [
                msgspec.structs.replace(e, features=own)
                if isinstance(e, FeedbackEvent) and rng.random() < 0.5
                else e
                for e in batch
            ]
        )
        schemas = {
            (kind, day): pl.read_parquet_schema(store.path(table, day))
            for kind, table in tables.items()
            for day in DATES
            if store.source(table, day)  # a table of a date that had events
        }
        whole_reads.clear()
        fingerprints = log.partition_fingerprints()
        refresh_raw_tables(log, store, DATES[:3], fingerprints)
        for day in [d for d in DATES[:3] if d in fingerprints]:
            for kind, table in tables.items():
                got = store.read_current(table, day, fingerprints[day])
                want = read(log, kind, dates=[day])  # type: ignore[arg-type]
                assert got is not None and got.equals(want), (step, day, kind)
        # a date is read whole for its first table, or when new events bring a column or
        # a feature its table does not have
        for kind, (day,) in whole_reads:
            before = schemas.get((kind, day))
            after = pl.read_parquet_schema(store.path(tables[kind], day))
            assert before is None or before != after, (step, kind, day)
        extended = [key for key in schemas if (key[0], (key[1],)) not in whole_reads]
        assert step < 2 or extended, "some tables were extended"


def test_a_table_from_another_log_or_cut_short_is_not_extended(tmp_path: Path) -> None:
    from ct_assets.pipeline.event_tables import refreshed_events

    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    log.append(_events(0, range(1)))
    _tables(log, store, DATES[:1])
    path = store.path(keys.RAW_PREDICTIONS, DATES[0])
    source = log.partition_fingerprints()[DATES[0]]
    # a table one row short of what its source held
    store.write(keys.RAW_PREDICTIONS, DATES[0], pl.read_parquet(path).head(2), source=source)
    log.append(_events(100, range(1)))
    fingerprint = log.partition_fingerprints()[DATES[0]]
    frame, stale = refreshed_events(log, store, "prediction", DATES[0], fingerprint)
    assert stale and frame.equals(log.read("prediction", dates=[DATES[0]]))
    # a source this date never had (a segment longer than the log's)
    store.write(keys.RAW_PREDICTIONS, DATES[0], frame.head(3), source="seg-00000001.ctlog:99999")
    frame, stale = refreshed_events(log, store, "prediction", DATES[0], fingerprint)
    assert stale and frame.equals(log.read("prediction", dates=[DATES[0]]))


def test_a_retrains_refresh_extends_stale_raw_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``refresh_tables`` (a retrain's ``training_dataset``) extends a stale raw predictions
    table by the frames committed since, as a raw run does: the date is not read whole."""
    from ct_assets.data.attribution import LabelPolicy
    from ct_assets.data.feedback_rules import ValidationRules
    from ct_assets.pipeline.curation import log_as_of, refresh_tables

    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    log.append(_events(0, range(3)))
    _tables(log, store, DATES[:3])
    log.append([e for e in _events(500, range(1, 2)) if isinstance(e, PredictionEvent)])
    whole_reads = _spy_on_whole_date_reads(monkeypatch)
    read = _UNSPIED_READ
    fingerprints = log.partition_fingerprints()
    as_of = log_as_of(log)
    assert as_of is not None
    curated = refresh_tables(
        log, store, [DATES[2]], ValidationRules(), LabelPolicy(), None, as_of, fingerprints
    )
    assert curated == [DATES[2]]
    table = store.read_current(keys.RAW_PREDICTIONS, DATES[1], fingerprints[DATES[1]])
    assert table is not None and table.equals(read(log, "prediction", dates=[DATES[1]]))
    assert table.height == 6
    assert not [r for r in whole_reads if r[0] == "prediction" and DATES[1] in r[1]]


def test_dates_that_differ_by_a_feature_are_read_from_their_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feature first seen on one date (or a date whose events lack one) does not send the
    whole read to the log: each date's table gets the others' fields as null, as one
    decode of all of them gives them, whether all rows are read or only the cited ones."""
    log, store = _feature_added_on_03_03(tmp_path, days=4)
    _tables(log, store, DATES)
    fingerprints = log.partition_fingerprints()
    whole_reads = _spy_on_whole_date_reads(monkeypatch)
    for dates in (DATES, DATES[1:3], DATES[2:], list(reversed(DATES))):
        for kind in ("prediction", "feedback"):
            want = _UNSPIED_READ(log, kind, dates=dates)  # type: ignore[arg-type]
            got = read_via_tables(log, store, kind, dates, fingerprints)  # type: ignore[arg-type]
            assert got.equals(want), (kind, dates)
        ids = pl.Series("prediction_id", ["p-1", "p-121", "p-133", "nope"])
        want = _UNSPIED_READ(log, "prediction", dates=dates)
        got = read_via_tables(log, store, "prediction", dates, fingerprints, ids)
        assert got.equals(want.filter(pl.col("prediction_id").is_in(ids.implode())))
        assert got.schema == want.schema
    assert whole_reads == []
