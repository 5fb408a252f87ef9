"""Checkpoints of one LightGBM training job, so that a killed run resumes instead of restarting.

A checkpoint lives in a folder of its own, ``CT_HOME/checkpoints/<key>/``, where ``key``
identifies the exact job (:func:`checkpoint_key`: the dataset, the mode, the LightGBM
parameters, the number of rounds and the model it starts from). The folder holds

* ``model-<iteration>.txt``: the booster (``model_to_string``, every tree so far);
* ``state.json``: the job's key, the iteration, the model file's name, size and SHA-256,
  and whatever the trainer adds (its early stopping state).

Both are written atomically (temporary file, fsync, ``os.replace``, fsync of the folder),
the model first: ``state.json`` only ever names a model file that is complete. A checkpoint
that cannot be read, does not parse, belongs to another key or whose model does not match
its recorded digest is ignored with a note in :attr:`Checkpoint.notes`, never half-used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightgbm

#: Bumped when the files' layout or meaning changes: older checkpoints are then ignored.
FORMAT = 1
STATE_FILE = "state.json"
_MODEL_FILE = re.compile(r"model-\d{7,}\.txt")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: Keys :meth:`Checkpoint.save` writes in the state, over what the caller passes.
_OWN_KEYS = ("format", "key", "iteration", "model_file", "model_bytes", "model_sha256")


def model_file_name(iteration: int) -> str:
    """The file a checkpoint keeps the booster of ``iteration`` in."""
    return f"model-{iteration:07d}.txt"


def checkpoints_root(home: Path) -> Path:
    """Where the checkpoints of a CT_HOME live: one folder per training job."""
    return home / "checkpoints"


def checkpoint_key(
    *,
    dataset: str,
    mode: str,
    params: Mapping[str, Any],
    num_boost_round: int,
    init_model: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A stable name for one training job.

    ``dataset`` is the dataset's version (or any digest of its content), ``params`` the
    LightGBM parameters, ``init_model`` the identity of the model boosting starts from
    (the champion's registry version; None for a full training) and ``extra`` anything
    else that changes the result (early stopping rounds, validation fraction, ...).
    """
    payload = json.dumps(
        {
            "format": FORMAT,
            "dataset": dataset,
            "mode": mode,
            "params": dict(params),
            "num_boost_round": num_boost_round,
            "init_model": init_model,
            "extra": dict(extra or {}),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class Checkpoint:
    """The checkpoint of one training job, in ``folder``, valid only for ``key``."""

    def __init__(self, folder: Path, key: str) -> None:
        if not _KEY.fullmatch(key):
            raise ValueError(f"checkpoint key {key!r} must be 1-128 of [A-Za-z0-9_.-]")
        self.folder = Path(folder)
        self.key = key
        #: Why a checkpoint found in the folder was not used (appended by :meth:`load`).
        self.notes: list[str] = []

    @classmethod
    def for_job(
        cls,
        root: Path,
        *,
        dataset: str,
        mode: str,
        params: Mapping[str, Any],
        num_boost_round: int,
        init_model: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Checkpoint:
        """The checkpoint ``root/<key>`` of the job (see :func:`checkpoint_key`)."""
        key = checkpoint_key(
            dataset=dataset,
            mode=mode,
            params=params,
            num_boost_round=num_boost_round,
            init_model=init_model,
            extra=extra,
        )
        return cls(Path(root) / key, key)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.folder)!r}, {self.key!r})"

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_FILE

    def exists(self) -> bool:
        """Whether a state file is there (valid or not: see :meth:`load`)."""
        return self.state_path.is_file()

    # --- reading --------------------------------------------------------------------------

    def peek(self) -> dict[str, Any] | None:
        """The saved state if it is well-formed and of this key; no model loaded, no note."""
        try:
            return self._read_state()
        except _Invalid:
            return None

    def load(self) -> tuple[lightgbm.Booster, dict[str, Any]] | None:
        """The checkpointed booster and state; None if there is none or it is unusable.

        An unusable checkpoint (torn, corrupt, another key's, another format) is ignored
        and a note saying why is appended to :attr:`notes`.
        """
        import lightgbm

        if not self.exists():
            return None
        try:
            state = self._read_state()
            if state is None:
                return None
            data = self._read_model(state)
            try:
                booster = lightgbm.Booster(model_str=data.decode())
            except Exception as error:  # LightGBMError, UnicodeDecodeError, ...
                raise _Invalid(f"its model does not load ({type(error).__name__})") from error
            if booster.current_iteration() != state["iteration"]:
                raise _Invalid(
                    f"its model has {booster.current_iteration()} iterations, "
                    f"the state says {state['iteration']}"
                )
        except _Invalid as invalid:
            self.notes.append(f"checkpoint in {self.folder} ignored: {invalid}")
            return None
        return booster, state

    def _read_state(self) -> dict[str, Any] | None:
        try:
            text = self.state_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _Invalid(f"{STATE_FILE} cannot be read ({error})") from error
        try:
            state = json.loads(text)
        except (UnicodeDecodeError, ValueError) as error:
            raise _Invalid(f"{STATE_FILE} is not valid JSON") from error
        if not isinstance(state, dict):
            raise _Invalid(f"{STATE_FILE} is not a JSON object")
        if state.get("format") != FORMAT:
            raise _Invalid(f"format {state.get('format')!r} is not {FORMAT}")
        if state.get("key") != self.key:
            raise _Invalid(f"it belongs to another training job (key {state.get('key')!r})")
        for name in ("iteration", "model_bytes"):
            value = state.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _Invalid(f"{STATE_FILE} has no valid {name}")
        model_file = state.get("model_file")
        if not isinstance(model_file, str) or not _MODEL_FILE.fullmatch(model_file):
            raise _Invalid(f"{STATE_FILE} has no valid model_file")
        if not isinstance(state.get("model_sha256"), str):
            raise _Invalid(f"{STATE_FILE} has no valid model_sha256")
        return state

    def _read_model(self, state: Mapping[str, Any]) -> bytes:
        path = self.folder / str(state["model_file"])
        try:
            data = path.read_bytes()
        except OSError as error:
            raise _Invalid(f"its model file {path.name} cannot be read") from error
        if len(data) != state["model_bytes"]:
            raise _Invalid(
                f"its model file {path.name} has {len(data)} bytes, not {state['model_bytes']}"
            )
        if hashlib.sha256(data).hexdigest() != state["model_sha256"]:
            raise _Invalid(f"its model file {path.name} does not match its digest")
        return data

    # --- writing --------------------------------------------------------------------------

    def save(self, booster: lightgbm.Booster, state: Mapping[str, Any] | None = None) -> int:
        """Save every tree of ``booster`` and ``state``; returns the iteration saved.

        ``state`` must be JSON-serialisable; ``format``, ``key``, ``iteration`` and the
        model file's fields are set here.
        """
        iteration = int(booster.current_iteration())
        data = booster.model_to_string(num_iteration=-1).encode()
        model_file = model_file_name(iteration)
        full = {k: v for k, v in (state or {}).items() if k not in _OWN_KEYS}
        full.update(
            format=FORMAT,
            key=self.key,
            iteration=iteration,
            model_file=model_file,
            model_bytes=len(data),
            model_sha256=hashlib.sha256(data).hexdigest(),
        )
        text = json.dumps(full, indent=2, sort_keys=True).encode()
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.folder / model_file, data)
        _fsync_dir(self.folder)
        _atomic_write(self.state_path, text)
        _fsync_dir(self.folder)
        self._remove_files(keep=model_file)
        return iteration

    def callback(
        self,
        every: int,
        state: Callable[[], Mapping[str, Any]] | None = None,
        start: int = 0,
    ) -> CheckpointCallback:
        """A LightGBM callback saving the booster (and ``state()``) every ``every`` rounds.

        Rounds are counted from iteration ``start`` (the number of trees of the model
        boosting started from). The last round is not saved: training ends there.
        """
        return CheckpointCallback(self, every, state, start)

    def clear(self) -> None:
        """Remove the checkpoint: the state first, so no torn checkpoint is left behind."""
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        self._remove_files(keep=None)
        with contextlib.suppress(OSError):  # not empty (files of others) or already gone
            self.folder.rmdir()

    def _remove_files(self, keep: str | None) -> None:
        """Model files other than ``keep`` and temporary files left by killed writers."""
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            name = path.name
            ours = _MODEL_FILE.fullmatch(name) or (name.startswith(".") and name.endswith(".tmp"))
            if ours and name != keep:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


class CheckpointCallback:
    """Saves a :class:`Checkpoint` every ``every`` boosting rounds (a LightGBM callback)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        every: int,
        state: Callable[[], Mapping[str, Any]] | None,
        start: int,
    ) -> None:
        if every < 1:
            raise ValueError(f"checkpoint every {every} rounds: must be at least 1")
        self.checkpoint = checkpoint
        self.every = every
        self.state = state
        self.start = start
        # After early stopping (order 30): the state saved is that of the round just done.
        self.order = 40
        self.before_iteration = False
        self.saved: list[int] = []

    def __call__(self, env: lightgbm.callback.CallbackEnv) -> None:
        done = env.iteration + 1 - self.start
        if done % self.every or env.iteration >= env.end_iteration - 1:
            return
        state = self.state() if self.state is not None else {}
        booster: lightgbm.Booster = env.model  # type: ignore[assignment]  # train(), not cv()
        self.saved.append(self.checkpoint.save(booster, state))


class _Invalid(Exception):
    """Why a checkpoint cannot be used."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported (e.g. some platforms): the replace is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
