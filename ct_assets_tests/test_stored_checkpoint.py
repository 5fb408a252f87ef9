"""Training checkpoints kept on the object store too (a real SeaweedFS S3 server): a run
killed on one machine resumes on another whose disk never saw it, to the model an
uninterrupted run trains; a damaged stored checkpoint is ignored, never half-used."""

from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from ct_assets.storage import LocalStore, S3Store
from ct_assets.training.checkpoint import STATE_FILE, Checkpoint
from ct_assets.training.stored_checkpoint import StoredCheckpoint
from ct_assets.training.train import TrainResult, train_model
from ct_assets_tests.object_store_helpers import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    SeaweedServer,
    seaweed,
)

from .test_checkpoint import (
    EVERY,
    PARAMS,
    after_best,
    assert_same_model,
    crashed_run,
    kill_at_checkpoint,
    make_dataset,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    yield from seaweed(tmp_path_factory)


@pytest.fixture(scope="module")
def dataset() -> pl.DataFrame:
    return make_dataset()


@pytest.fixture(scope="module")
def reference(dataset: pl.DataFrame) -> TrainResult:
    return train_model(dataset, PARAMS)


def stored(folder: Path, store: S3Store, key: str) -> StoredCheckpoint:
    checkpoint = StoredCheckpoint.wrap(Checkpoint(folder, key), store)
    assert isinstance(checkpoint, StoredCheckpoint)
    return checkpoint


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import polars as pl

    from ct_assets.storage import S3Config, S3Store
    from ct_assets.training.checkpoint import Checkpoint
    from ct_assets.training.stored_checkpoint import StoredCheckpoint
    from ct_assets.training.train import TrainParams, train_model

    data, folder, key, params, endpoint, bucket, access, secret = sys.argv[1:9]
    store = S3Store(bucket, "ct", S3Config(endpoint, access, secret))

    def slow(env):
        time.sleep(0.05)  # the kill lands mid-training

    train_model(
        pl.read_parquet(data),
        TrainParams(**json.loads(params)),
        checkpoint=StoredCheckpoint.wrap(Checkpoint(Path(folder), key), store),
        checkpoint_every=5,
        callbacks=[slow],
    )
    print("finished", flush=True)
    """
)


def test_run_killed_on_one_machine_resumes_on_another_from_the_store(
    weed: SeaweedServer, tmp_path: Path, dataset: pl.DataFrame, reference: TrainResult
) -> None:
    store = weed.store()
    key = "killed-job"
    data = tmp_path / "dataset.parquet"
    dataset.write_parquet(data)
    first_machine = tmp_path / "worker-1" / key
    k = after_best(reference)
    args = [str(data), str(first_machine), key, json.dumps(dataclasses.asdict(PARAMS))]
    args += [weed.endpoint_url, BUCKET, ACCESS_KEY, SECRET_KEY]
    watcher = stored(tmp_path / "watcher" / key, store, key)  # nothing local: the store's
    kill_at_checkpoint(CHILD, args, watcher, k, tmp_path / "child.err", timeout=120)
    saved = watcher.peek()
    assert saved is not None and saved["iteration"] >= k
    shutil.rmtree(tmp_path / "worker-1")  # that machine is gone with its disk

    second = stored(tmp_path / "worker-2" / key, store, key)
    assert not second.folder.exists()
    result = train_model(dataset, PARAMS, checkpoint=second, checkpoint_every=EVERY)
    assert result.resumed_from is not None and result.resumed_from >= saved["iteration"]
    assert result.notes == [f"resumed from checkpoint at iteration {result.resumed_from}"]
    assert_same_model(result, reference, dataset)
    # a finished training leaves nothing behind, on the disk or on the store
    assert not second.folder.exists()
    assert store.list(f"checkpoints/{key}") == []


def test_stored_checkpoint_keeps_one_model_and_its_state(
    weed: SeaweedServer, tmp_path: Path, dataset: pl.DataFrame
) -> None:
    store = weed.store()
    key = "crashed-job"
    checkpoint = stored(tmp_path / "a" / key, store, key)
    crashed_run(dataset, PARAMS, checkpoint, at=12)
    state = checkpoint.peek()
    assert state is not None and state["iteration"] == 10
    assert store.list(f"checkpoints/{key}") == [
        f"checkpoints/{key}/{state['model_file']}",
        f"checkpoints/{key}/{STATE_FILE}",
    ]
    stored_state = json.loads(store.read_bytes(f"checkpoints/{key}/{STATE_FILE}"))
    assert stored_state == json.loads(checkpoint.state_path.read_text())


def test_damaged_stored_model_is_ignored_and_training_starts_afresh(
    weed: SeaweedServer, tmp_path: Path, dataset: pl.DataFrame, reference: TrainResult
) -> None:
    store = weed.store()
    key = "damaged-job"
    crashed_run(dataset, PARAMS, stored(tmp_path / "a" / key, store, key), at=12)
    state = json.loads(store.read_bytes(f"checkpoints/{key}/{STATE_FILE}"))
    model_key = f"checkpoints/{key}/{state['model_file']}"
    data = bytearray(store.read_bytes(model_key))
    data[len(data) // 2] ^= 0x20
    store.write_chunks(model_key, [bytes(data)])

    elsewhere = stored(tmp_path / "b" / key, store, key)
    result = train_model(dataset, PARAMS, checkpoint=elsewhere, checkpoint_every=EVERY)
    assert result.resumed_from is None
    assert any("does not match its digest" in note for note in result.notes), result.notes
    assert_same_model(result, reference, dataset)
    assert store.list(f"checkpoints/{key}") == []


def test_a_newer_local_checkpoint_wins_over_an_older_stored_one(
    weed: SeaweedServer, tmp_path: Path, dataset: pl.DataFrame, reference: TrainResult
) -> None:
    store = weed.store()
    key = "newer-local-job"
    folder = tmp_path / "a" / key
    crashed_run(dataset, PARAMS, stored(folder, store, key), at=12)  # iteration 10
    older = {k: store.read_bytes(k) for k in store.list(f"checkpoints/{key}")}
    crashed_run(dataset, PARAMS, stored(folder, store, key), at=22)  # iteration 20
    for stored_key, data in sorted(older.items()):  # the store lags behind: iteration 10
        store.write_chunks(stored_key, [data])
    assert json.loads(store.read_bytes(f"checkpoints/{key}/{STATE_FILE}"))["iteration"] == 10
    checkpoint = stored(folder, store, key)
    local = Checkpoint(folder, key).peek()
    assert local is not None and local["iteration"] == 20
    result = train_model(dataset, PARAMS, checkpoint=checkpoint, checkpoint_every=EVERY)
    assert result.resumed_from == 20
    assert_same_model(result, reference, dataset)


def test_a_store_holding_the_checkpoint_files_themselves_is_not_copied_to(
    tmp_path: Path,
) -> None:
    """With ``CT_STORAGE_URI`` empty or the local disk under CT_HOME, checkpoints are the
    files themselves: nothing is copied."""
    checkpoint = Checkpoint(tmp_path / "checkpoints" / "job", "job")
    assert StoredCheckpoint.wrap(checkpoint, None) is checkpoint
    assert StoredCheckpoint.wrap(checkpoint, LocalStore(tmp_path)) is checkpoint
    elsewhere = StoredCheckpoint.wrap(checkpoint, LocalStore(tmp_path / "other"))
    assert isinstance(elsewhere, StoredCheckpoint)
