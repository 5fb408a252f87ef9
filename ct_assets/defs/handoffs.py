"""The retrain job's hand-offs: what each of its assets passes on to the next, as small
typed records through :class:`HandoffIOManager`.

In one run, a step loads the record its upstream step stored in that same run, so a model
materialized by hand in between cannot take the place of the run's own. Materializing an
asset alone loads its upstream's latest stored record (Dagster's usual semantics).

With ``CT_STORAGE_URI`` on an object store the records are also written there
(``handoffs/...``, the same layout) and read from there: a run's steps, or the next run,
may execute on another worker than the one that stored them."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.execution.context.output import RUN_ID_PLACEHOLDER

from ct_assets import keys
from ct_assets.data.table_files import write_bytes
from ct_assets.defs.dataset_store import StoreFields
from ct_assets.storage import ObjectNotFoundError, ObjectStore, same_file
from ct_assets.storage import write_bytes as write_object

STORE_PREFIX = keys.HANDOFFS_OBJECT_PREFIX

#: The IO manager key of the hand-offs; every other asset keeps the default IO manager.
HANDOFF_IO_MANAGER = "handoff_io_manager"


@dataclass(frozen=True)
class DatasetHandoff:
    """``training_dataset`` → ``candidate_model``: the dataset version to train on."""

    version: str
    path: str
    log_position: int
    window_start: str
    rows: int


@dataclass(frozen=True)
class CandidateHandoff:
    """``candidate_model`` → ``validation_report``: the registered version to judge."""

    model_version: str
    run_id: str
    dataset_version: str
    mode: str
    dagster_run_id: str


@dataclass(frozen=True)
class GateHandoff:
    """``validation_report`` → ``champion_model``: the gate's decision on a version."""

    decision: str
    model_version: str
    promote: bool
    champion_version: str
    dagster_run_id: str


#: Which record each hand-off asset stores.
RECORDS: dict[str, type[Any]] = {
    keys.TRAINING_DATASET: DatasetHandoff,
    keys.CANDIDATE_MODEL: CandidateHandoff,
    keys.VALIDATION_REPORT: GateHandoff,
}


class HandoffIOManager(dg.ConfigurableIOManager, StoreFields):
    """Stores each hand-off as JSON: ``<root>/<asset>.json`` (the latest) and
    ``<root>/<asset>/runs/<run_id>.json`` (the run's own), both written atomically.
    An input from a step of the same run (or of the run it re-executes) loads that run's
    record; an input whose asset is not in the run loads the latest. With ``storage_uri``
    naming an object store, every record is written there too and read from there."""

    root: str

    def _latest(self, asset: str) -> Path:
        return Path(self.root) / f"{asset}.json"

    def _of_run(self, asset: str, run_id: str) -> Path:
        return Path(self.root) / asset / "runs" / f"{run_id}.json"

    def _objects(self) -> ObjectStore | None:
        return self.configured_store(Path(self.root).parent)

    def _key(self, path: Path) -> str:
        return f"{STORE_PREFIX}/{path.relative_to(Path(self.root)).as_posix()}"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        asset = context.asset_key.to_user_string()
        record = RECORDS.get(asset)
        if record is None or not isinstance(obj, record):
            raise dg.Failure(
                f"{asset} must hand off a {getattr(record, '__name__', 'known record')}, "
                f"not {type(obj).__name__}"
            )
        self.store(asset, obj, context.run_id)

    def store(self, asset: str, record: Any, run_id: str | None = None) -> Path:
        """Writes ``record`` as ``asset``'s latest hand-off (and ``run_id``'s, if given), as
        a run does; also for a hand-off recorded outside a run (e.g. a benchmark's dataset)."""
        data = json.dumps(dataclasses.asdict(record), indent=2, sort_keys=True).encode()
        paths = ([self._of_run(asset, run_id)] if run_id is not None else []) + [
            self._latest(asset)
        ]
        objects = self._objects()
        for path in paths:
            write_bytes(path, data)
            if objects is not None and not same_file(objects, self._key(path), path):
                write_object(objects, self._key(path), data)
        return self._latest(asset)

    def _read(self, path: Path) -> tuple[str | None, str]:
        """The record at ``path`` (on the object store when there is one; None if none) and
        where it was looked for."""
        objects = self._objects()
        if objects is None:
            return (path.read_text() if path.exists() else None), str(path)
        key = self._key(path)
        try:
            return objects.read_bytes(key).decode(), objects.uri_of(key)
        except ObjectNotFoundError:
            return None, objects.uri_of(key)

    def load_input(self, context: dg.InputContext) -> Any:
        asset = context.asset_key.to_user_string()
        record = RECORDS.get(asset)
        if record is None:
            raise dg.Failure(f"{asset} hands nothing off")
        upstream = context.upstream_output
        run_id = _run_id(upstream) if upstream is not None else None
        if run_id is not None:
            text, where = self._read(self._of_run(asset, run_id))
            if text is None:
                raise dg.Failure(f"run {run_id} stored no {asset} hand-off at {where}")
        else:
            text, where = self._read(self._latest(asset))
            if text is None:
                raise dg.Failure(f"{asset} has handed nothing off yet: materialize {asset} first")
        fields = {f.name for f in dataclasses.fields(record)}
        data = json.loads(text)
        missing = fields - set(data)
        if missing:
            raise dg.Failure(
                f"the stored {asset} hand-off {where} lacks {sorted(missing)}: "
                f"materialize {asset} again"
            )
        return record(**{k: v for k, v in data.items() if k in fields})


def _run_id(upstream: dg.OutputContext) -> str | None:
    """The run that stored the upstream output; None when the asset is not in this run
    (Dagster then builds an upstream context without a run: the placeholder id)."""
    try:
        run_id = upstream.run_id
    except dg.DagsterInvariantViolationError:
        return None
    return None if not run_id or run_id == RUN_ID_PLACEHOLDER else run_id


def handoff_output(record: Any, metadata: Mapping[str, Any], data_version: str) -> dg.Output[Any]:
    """The hand-off ``record`` as the asset's output, with its metadata and data version.
    ``data_version`` on an ``Output`` is marked beta in Dagster 1.13 (it is what a
    ``MaterializeResult`` carried before without a warning): the warning is kept out of
    every run's log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(record, metadata=dict(metadata), data_version=dg.DataVersion(data_version))
