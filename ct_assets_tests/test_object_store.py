"""The object-store seam (ct_assets.storage): the local disk and a real S3-compatible
server (SeaweedFS on loopback). Round trips, atomic writes, write-once, clear errors, and
a server killed mid-upload."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ct_assets.config_report import config_report
from ct_assets.settings import Settings, SettingsError
from ct_assets.storage import (
    LocalStore,
    ObjectNotFoundError,
    ObjectStore,
    S3Config,
    S3Store,
    StorageError,
    get_file,
    open_store,
    put_file,
    store_from_settings,
    write_bytes,
)
from ct_assets_tests.object_store_helpers import BUCKET, SeaweedServer, seaweed


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    yield from seaweed(tmp_path_factory)


class Boom(RuntimeError):
    pass


def failing_chunks(parts: int) -> Iterator[bytes]:
    for _ in range(parts):
        yield b"x" * 65536
    raise Boom("the producer failed mid-object")


def round_trip(store: ObjectStore, tmp_path: Path) -> None:
    assert write_bytes(store, "datasets/a.json", b"first")
    assert store.read_bytes("datasets/a.json") == b"first"
    assert store.exists("datasets/a.json") and not store.exists("datasets/b.json")
    assert write_bytes(store, "datasets/a.json", b"second")  # a plain write replaces
    assert store.read_bytes("datasets/a.json") == b"second"
    # content-addressed: an existing object is not rewritten
    assert not write_bytes(store, "datasets/a.json", b"other", once=True)
    assert store.read_bytes("datasets/a.json") == b"second"
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 20000)
    assert put_file(store, "drift/7/reference.npz", source)
    copy = get_file(store, "drift/7/reference.npz", tmp_path / "copy" / "reference.npz")
    assert copy.read_bytes() == source.read_bytes()
    assert store.list("") == ["datasets/a.json", "drift/7/reference.npz"]
    assert store.list("drift") == ["drift/7/reference.npz"]
    store.delete("datasets/a.json")
    store.delete("datasets/a.json")  # nothing to delete: no error
    assert store.list("datasets") == []
    with pytest.raises(ObjectNotFoundError):
        store.read_bytes("datasets/a.json")
    with pytest.raises(ObjectNotFoundError):
        get_file(store, "datasets/a.json", tmp_path / "none")
    # a failed write leaves no object (nor a partial one)
    with pytest.raises(Boom):
        store.write_chunks("datasets/failed.parquet", failing_chunks(40))
    assert not store.exists("datasets/failed.parquet")
    assert store.list("datasets") == []
    with pytest.raises(ValueError, match="relative"):
        store.exists("../escape")


def test_local_store_round_trip_and_atomic_writes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "home")
    round_trip(store, tmp_path)
    # no temporary file survives, failed or not
    assert sorted(p.name for p in (tmp_path / "home").rglob("*") if p.is_file()) == [
        "reference.npz"
    ]


def test_default_store_is_ct_home_with_the_same_layout(tmp_path: Path) -> None:
    settings = Settings().with_home(tmp_path / "ct")
    store = store_from_settings(settings)
    assert isinstance(store, LocalStore)
    assert store.local_path("datasets/abc.parquet") == settings.datasets_dir / "abc.parquet"
    assert store.local_path("drift/3/reference.json") == settings.drift_dir / "3" / "reference.json"
    other = open_store((tmp_path / "elsewhere").as_uri(), settings.home)
    assert other.local_path("datasets/x.json") == tmp_path / "elsewhere" / "datasets" / "x.json"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("s3://ab/prefix", "at least 3 characters"),
        ("gs://bucket/x", "s3://bucket"),
        ("s3://user:pw@bucket/x", "CT_S3_ACCESS_KEY_ID"),
        ("relative/folder", "s3://bucket"),
    ],
)
def test_a_bad_storage_uri_names_the_setting(uri: str, problem: str) -> None:
    with pytest.raises(SettingsError, match="CT_STORAGE_URI") as caught:
        Settings.from_env({"CT_STORAGE_URI": uri})
    assert problem in str(caught.value)
    with pytest.raises(ValueError, match="CT_STORAGE_URI"):
        open_store(uri, Path("/tmp"))


def test_config_redacts_the_s3_credentials() -> None:
    env = {
        "CT_STORAGE_URI": "s3://ct-bucket/prod",
        "CT_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
        "CT_S3_ACCESS_KEY_ID": "AKIA-VISIBLE-NOT",
        "CT_S3_SECRET_ACCESS_KEY": "very-secret",
    }
    report = config_report(Settings.from_env(env), env)["storage"]
    assert report["storage_uri"] == {
        "value": "s3://ct-bucket/prod",
        "source": "environment",
        "env": "CT_STORAGE_URI",
    }
    assert report["s3_access_key_id"]["value"] == "***"
    assert report["s3_secret_access_key"]["value"] == "***"
    assert "very-secret" not in repr(Settings.from_env(env))
    store = store_from_settings(Settings.from_env(env))
    assert "very-secret" not in repr(store) and "very-secret" not in repr(store.config)  # type: ignore[attr-defined]
    with pytest.raises(SettingsError, match="CT_S3_ENDPOINT_URL"):
        Settings.from_env({"CT_S3_ENDPOINT_URL": "127.0.0.1:8333"})


def test_s3_store_round_trip_and_atomic_writes(weed: SeaweedServer, tmp_path: Path) -> None:
    store = weed.store(prefix="round-trip")
    round_trip(store, tmp_path)
    assert store.uri_of("datasets/v.parquet") == f"s3://{BUCKET}/round-trip/datasets/v.parquet"


def test_s3_reader_never_sees_a_partial_object(weed: SeaweedServer) -> None:
    """A writer replaces one key with whole objects of 6 MB (multipart uploads) while a
    reader reads it: every read is one whole object."""
    store = weed.store(prefix="partial")
    objects = [bytes([n]) * (6 << 20) for n in (1, 2, 3)]
    write_bytes(store, "k.bin", objects[0])
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for n in range(6):
                write_bytes(store, "k.bin", objects[n % 3])
        except BaseException as error:
            errors.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads < 3:
        data = store.read_bytes("k.bin")
        assert data in objects, f"read {len(data)} bytes that are no whole object"
        reads += 1
    thread.join()
    assert errors == []


def test_s3_write_once_keeps_the_first_object(weed: SeaweedServer) -> None:
    store = weed.store(prefix="once")
    assert write_bytes(store, "datasets/v1.parquet", b"content", once=True)
    calls: list[int] = []

    def chunks() -> Iterator[bytes]:
        calls.append(1)
        yield b"never"

    assert not store.write_chunks("datasets/v1.parquet", chunks(), once=True)
    assert calls == []  # not even read
    assert store.read_bytes("datasets/v1.parquet") == b"content"


def test_s3_errors_are_clear(weed: SeaweedServer) -> None:
    wrong = S3Store(BUCKET, "x", weed.config(secret="wrong"))
    with pytest.raises(StorageError, match=weed.endpoint_url):
        wrong.read_bytes("k")
    with pytest.raises(StorageError, match="no bucket 'no-such-bucket'"):
        S3Store("no-such-bucket", "", weed.config()).check_bucket()
    down = S3Store(BUCKET, "", S3Config("http://127.0.0.1:9", "a", "b"))
    with pytest.raises(StorageError, match=r"127\.0\.0\.1:9 failed"):
        write_bytes(down, "k", b"data")


def _volume_bytes(server: SeaweedServer) -> int:
    return sum(p.stat().st_size for p in (server.folder / "data").rglob("*") if p.is_file())


def test_s3_server_killed_mid_upload_fails_cleanly_and_a_retry_succeeds(
    weed: SeaweedServer,
) -> None:
    """SIGKILL the server while a 48 MB object is being uploaded (its volume files are
    growing): the write raises StorageError, no object appears, and after a restart the
    same write succeeds."""
    store = weed.store(prefix="restart")
    data = bytes(range(256)) * (48 << 12)
    outcome: list[BaseException | None] = []
    for _attempt in range(3):
        before = _volume_bytes(weed)
        outcome.clear()

        def write() -> None:
            try:
                write_bytes(store, "datasets/big.parquet", data)
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=write)
        thread.start()
        deadline = time.monotonic() + 30
        while _volume_bytes(weed) < before + (4 << 20) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not outcome:  # still uploading: kill it now
            weed.stop(hard=True)
            thread.join(timeout=120)
            break
        thread.join()
        store.delete("datasets/big.parquet")  # too fast: try again
    else:
        pytest.fail("the upload finished before the server could be killed, three times")
    assert len(outcome) == 1 and isinstance(outcome[0], StorageError), outcome
    weed.start()
    assert not store.exists("datasets/big.parquet")
    assert write_bytes(store, "datasets/big.parquet", data)
    assert store.read_bytes("datasets/big.parquet") == data


def test_a_dataset_is_published_once_and_read_back_on_another_machine(tmp_path: Path) -> None:
    """Two machines compile the same dataset version: the store keeps the first one's
    objects and manifest; a third reads it into its empty folder."""
    import polars as pl

    from ct_assets.data.dataset import DatasetInfo
    from ct_assets.data.dataset_objects import dataset_file, publish_dataset, read_manifest

    store = LocalStore(tmp_path / "shared")
    frame = pl.DataFrame({"event_id": ["a", "b"], "x": [1.0, 2.0]})
    infos = []
    for machine, position in (("one", 10), ("two", 99)):
        folder = tmp_path / machine / "datasets"
        folder.mkdir(parents=True)
        frame.write_parquet(folder / "v1.parquet")
        (folder / "v1.reference.json").write_text("{}")
        info = DatasetInfo(
            version="v1",
            path=str(folder / "v1.parquet"),
            rows=2,
            train_rows=1,
            holdout_rows=1,
            feature_names=["x"],
            categorical_features=[],
            classes=["0", "1"],
            log_position=position,
            first_log_offset=0,
            last_log_offset=1,
            first_event_id="a",
            last_event_id="b",
            start_time="t0",
            end_time="t1",
        )
        infos.append(publish_dataset(store, folder, info))
    shared = tmp_path / "shared" / "datasets"
    assert infos[0] == infos[1]
    assert infos[1].log_position == 10 and infos[1].path == str(shared / "v1.parquet")
    assert sorted(store.list("datasets")) == [
        "datasets/v1.json",
        "datasets/v1.parquet",
        "datasets/v1.reference.json",
    ]
    assert DatasetInfo.from_json((tmp_path / "two/datasets/v1.json").read_text()) == infos[0]
    third = tmp_path / "three" / "datasets"
    assert read_manifest(store, third, "v1") == infos[0]
    assert pl.read_parquet(dataset_file(store, third, "v1")).equals(frame)
    assert read_manifest(store, third, "v2") is None
    assert not dataset_file(store, third, "v2").exists()
