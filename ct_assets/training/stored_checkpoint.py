"""A training checkpoint kept on the object store as well (``CT_STORAGE_URI``, e.g. S3), so
a killed run's rerun resumes wherever it runs: on another Celery worker, whose disk never
saw the first attempt's files.

The checkpoint is written to its local folder as always (:class:`Checkpoint`), then copied
to ``checkpoints/<key>/`` on the store in the same order, the model before the state that
names it, each object written atomically; older model objects are removed after. Loading
takes whichever copy, local or stored, holds more iterations, and checks it as a local
checkpoint is checked (key, format, the model's size and SHA-256): a stored checkpoint
that is torn or damaged is ignored with a note, never half-used. Clearing removes both,
the stored state first.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_assets.storage import ObjectNotFoundError, ObjectStore, put_file, same_file
from ct_assets.storage.local import atomic_file
from ct_assets.training.checkpoint import STATE_FILE, Checkpoint, model_file_name

if TYPE_CHECKING:
    import lightgbm

#: Where checkpoints live on the object store: ``checkpoints/<key>/``.
STORE_PREFIX = "checkpoints"


class StoredCheckpoint(Checkpoint):
    """A :class:`Checkpoint` in ``folder`` copied to ``store`` under ``checkpoints/<key>/``."""

    def __init__(self, folder: Path, key: str, store: ObjectStore) -> None:
        super().__init__(folder, key)
        self.store = store
        self.prefix = f"{STORE_PREFIX}/{key}/"

    @classmethod
    def wrap(cls, checkpoint: Checkpoint, store: ObjectStore | None) -> Checkpoint:
        """``checkpoint`` copied to ``store``; itself when there is no store or the store's
        objects are its own files (a local store rooted where the checkpoint lives)."""
        key = f"{STORE_PREFIX}/{checkpoint.key}/{STATE_FILE}"
        if store is None or same_file(store, key, checkpoint.state_path):
            return checkpoint
        return cls(checkpoint.folder, checkpoint.key, store)

    def __repr__(self) -> str:
        return f"StoredCheckpoint({str(self.folder)!r}, {self.key!r}, {self.location!r})"

    @property
    def location(self) -> str:
        return self.store.uri_of(self.prefix + STATE_FILE).removesuffix(STATE_FILE)

    def exists(self) -> bool:
        return super().exists() or self.store.exists(self.prefix + STATE_FILE)

    def peek(self) -> dict[str, Any] | None:
        local, stored = super().peek(), self._stored_state()
        return stored if _newer(stored, local) else local

    def load(self) -> tuple[lightgbm.Booster, dict[str, Any]] | None:
        """The newer of the local and the stored checkpoint (see the module docstring)."""
        stored = self._stored_state()
        if stored is not None and _newer(stored, super().peek()):
            self._fetch(stored)
        return super().load()

    def save(self, booster: lightgbm.Booster, state: Mapping[str, Any] | None = None) -> int:
        iteration = super().save(booster, state)
        model_file = model_file_name(iteration)
        put_file(self.store, self.prefix + model_file, self.folder / model_file)
        put_file(self.store, self.prefix + STATE_FILE, self.state_path)
        for key in self.store.list(self.prefix.rstrip("/")):
            if key != self.prefix + model_file and key != self.prefix + STATE_FILE:
                self.store.delete(key)
        return iteration

    def clear(self) -> None:
        super().clear()
        self.store.delete(self.prefix + STATE_FILE)
        for key in self.store.list(self.prefix.rstrip("/")):
            self.store.delete(key)

    def _stored_state(self) -> dict[str, Any] | None:
        """The stored state when it is of this job; a note when one is there but unusable."""
        try:
            data = self.store.read_bytes(self.prefix + STATE_FILE)
        except ObjectNotFoundError:
            return None
        try:
            state = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            self.notes.append(f"checkpoint in {self.location} ignored: {STATE_FILE} is not JSON")
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            self.notes.append(f"checkpoint in {self.location} ignored: not this job's")
            return None
        iteration = state.get("iteration")
        if not isinstance(iteration, int) or isinstance(iteration, bool):
            self.notes.append(f"checkpoint in {self.location} ignored: no valid iteration")
            return None
        return state

    def _fetch(self, state: Mapping[str, Any]) -> None:
        """Copy the stored model, then the state naming it, into the local folder (the
        local checks then judge them); nothing when the model object is missing."""
        model_file = str(state.get("model_file", ""))
        try:
            data = self.store.read_bytes(self.prefix + model_file)
        except (ObjectNotFoundError, ValueError):
            self.notes.append(
                f"checkpoint in {self.location} ignored: its model {model_file!r} is missing"
            )
            return
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()  # the older local state goes first: never a torn pair
        atomic_file(self.folder / Path(model_file).name, [data])
        atomic_file(self.state_path, [json.dumps(dict(state), sort_keys=True).encode()])


def _newer(stored: Mapping[str, Any] | None, local: Mapping[str, Any] | None) -> bool:
    """Whether the stored state holds more iterations than the local one (or is the only one)."""
    return stored is not None and (local is None or stored["iteration"] > local["iteration"])
