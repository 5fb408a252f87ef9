"""The models being served: the registry's ``champion`` (and ``challenger``), hot-swapped.

:class:`ModelHolder` reads the registered model's aliases and deployment tags (one
``get_registered_model`` call) at start and then every ``poll_seconds`` on a background
thread. When anything changed it loads every model the new state needs *first* (a
version already loaded is reused, e.g. a challenger promoted to champion), then publishes
one new immutable :class:`Snapshot` by a single reference assignment. A request reads the
snapshot once and uses only it, so it sees either the old state or the new one, never a
mix, and never waits for a load. A load that fails keeps the previous snapshot (the
champion) and is retried at the next poll.

Each API worker holds its own models and polls on its own: for up to one poll interval
after a change, two workers may serve different versions; within one worker the change
happens at one point (every request before it logged with the old version, every request
after it with the new one).

The challenger is loaded only while a deployment mode uses it (shadow, canary, ab). If the
``champion`` alias disappears, the last loaded champion keeps serving (a request never
fails for it); rollbacks and promotions are just alias moves and are picked up the same way.

With the default SQLite registry, the holder does not touch MLflow (nor import it) until
the registry database holds a champion for the model: it checks that with one read-only
SQLite query per poll. This keeps ``ct-assets api`` quick to start on a fresh ``CT_HOME``
and never races the first creation of the registry's tables by the training side.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ct_assets.serving.routing import Mode, parse_deployment

if TYPE_CHECKING:
    from ct_assets.registry import Registry
    from ct_assets.training.model import TrainedModel

_LOG = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
SQLITE_PREFIX = "sqlite:///"
# Predicting a handful of rows is faster on one thread than with OpenMP's fan-out.
_SINGLE_THREAD_ROWS = 64


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version with what scoring a request needs, precomputed."""

    version: str
    model: TrainedModel
    #: feature name -> column
    columns: Mapping[str, int]
    #: categorical feature name -> {category: code}, codes as in FeatureSpec.matrix
    codes: Mapping[str, Mapping[str, float]]

    @classmethod
    def of(cls, version: str, model: TrainedModel) -> ServedModel:
        spec = model.spec
        return cls(
            version=version,
            model=model,
            columns={name: i for i, name in enumerate(spec.feature_names)},
            codes={
                name: {value: float(i) for i, value in enumerate(values)}
                for name, values in spec.categories.items()
            },
        )

    @property
    def classes(self) -> list[str]:
        return self.model.spec.classes

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> NDArray[np.float64]:
        """The rows as the model's float matrix: what ``FeatureSpec.matrix`` gives for the
        same values (categories as codes; missing, null, unseen or mistyped values NaN)."""
        out = np.full((len(rows), len(self.columns)), np.nan)
        columns, codes = self.columns, self.codes
        for i, features in enumerate(rows):
            for name, value in features.items():
                j = columns.get(name)
                if j is None or value is None:
                    continue
                categories = codes.get(name)
                if categories is not None:
                    code = categories.get(value) if isinstance(value, str) else None
                    if code is not None:
                        out[i, j] = code
                elif not isinstance(value, str):
                    out[i, j] = float(value)
        return out

    def score(self, rows: Sequence[Mapping[str, Any]]) -> NDArray[np.float64]:
        """Class probabilities, shape (rows, classes), columns in ``classes`` order: the
        same numbers as ``TrainedModel.predict_proba`` on a frame of these rows."""
        matrix = self.matrix(rows)
        booster = self.model.booster
        if len(rows) <= _SINGLE_THREAD_ROWS:
            predicted = booster.predict(matrix, num_threads=1)
        else:
            predicted = booster.predict(matrix)
        raw = np.asarray(predicted, dtype=np.float64)
        if len(self.classes) == 2 and raw.ndim == 1:
            return np.column_stack([1.0 - raw, raw])
        return raw.reshape(len(rows), -1)


@dataclass(frozen=True)
class RegistryState:
    """What the registry asks to serve: alias versions and the deployment tags."""

    champion: str | None
    challenger: str | None
    mode: Mode = "off"
    fraction: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    """Everything one request is served with; immutable, replaced as a whole."""

    champion: ServedModel | None
    challenger: ServedModel | None
    mode: Mode
    fraction: float
    #: the registry state this snapshot serves
    source: RegistryState = field(default=RegistryState(None, None))
    #: False when a model of ``source`` could not be loaded (retried at the next poll)
    complete: bool = True
    published_at: float = 0.0

    @cached_property
    def signature(self) -> Mapping[str, bool]:
        """Every feature a request may send, mapped to whether it is categorical: the
        champion's, and the challenger's (when one is served) that the champion lacks."""
        kinds: dict[str, bool] = {}
        for served in (self.challenger, self.champion):
            if served is not None:
                spec = served.model.spec
                kinds.update((name, name in spec.categories) for name in spec.feature_names)
        return kinds

    def describe(self) -> dict[str, Any]:
        return {
            "champion": self.champion.version if self.champion else None,
            "challenger": self.challenger.version if self.challenger else None,
            "mode": self.mode,
            "fraction": self.fraction,
        }


EMPTY = Snapshot(None, None, "off", 0.0)


def sqlite_champion(db_path: Path, model_name: str) -> str | None:
    """The champion version recorded in an MLflow SQLite registry, read without MLflow;
    None when there is none, the database does not exist yet, or it cannot be read now."""
    if not db_path.is_file():
        return None
    try:
        connection = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        row = connection.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
            (model_name, CHAMPION),
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return None if row is None else str(row[0])


class ModelHolder:
    """Serves consistent snapshots of the registry's models; polls for changes."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        artifact_root: str = "",
        poll_seconds: float = 2.0,
        *,
        registry: Registry | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_root = artifact_root
        self.poll_seconds = poll_seconds
        self._registry = registry
        self._snapshot = EMPTY
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._first_poll = threading.Event()
        self._thread: threading.Thread | None = None
        self._sqlite_path = (
            Path(tracking_uri.removeprefix(SQLITE_PREFIX))
            if tracking_uri.startswith(SQLITE_PREFIX) and registry is None
            else None
        )
        self._failures: dict[str, str] = {}
        #: polls that found a change and published it / that failed
        self.swaps = 0
        self.errors = 0

    def snapshot(self) -> Snapshot:
        """The current snapshot: read it once per request and use only it."""
        return self._snapshot

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Poll on a background thread: now (see :meth:`wait_ready`), then every
        ``poll_seconds``. Errors are logged and retried, never raised."""
        self._thread = threading.Thread(target=self._run, name="ct-model-poll", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the first poll is done (whatever it found); False on timeout."""
        return self._first_poll.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        self._safe_refresh()
        self._first_poll.set()
        while not self._stop.wait(self.poll_seconds):
            self._safe_refresh()

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except Exception:
            self.errors += 1
            _LOG.exception("serving: reading the registry %s failed", self.tracking_uri)

    # -- one poll --------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the registry; if what it serves changed, load and publish. True if published."""
        with self._refresh_lock:
            state = self.read_state()
            if state is None:
                return False
            current = self._snapshot
            if state == current.source and current.complete:
                return False
            snapshot = self._realise(state, current)
            if snapshot is None:
                return False
            self._snapshot = snapshot  # the one atomic swap
            self.swaps += 1
            _LOG.info("serving: now %s", snapshot.describe())
            return True

    def read_state(self) -> RegistryState | None:
        """What the registry serves now; None while there is no registry to read."""
        if self._sqlite_path is not None:
            if sqlite_champion(self._sqlite_path, self.model_name) is None:
                return None
            self._sqlite_path = None  # a champion exists: MLflow from now on
        from mlflow.exceptions import MlflowException

        try:
            model = self.registry.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        aliases = {str(k): str(v) for k, v in (model.aliases or {}).items()}
        mode, fraction = parse_deployment(model.tags)
        champion = aliases.get(CHAMPION)
        challenger = aliases.get(CHALLENGER)
        if challenger == champion or mode == "off":
            challenger = None  # nothing to compare, or not used: not loaded
        return RegistryState(champion, challenger, mode, fraction)

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from ct_assets.registry import Registry

            self._registry = Registry(self.tracking_uri, self.model_name, self.artifact_root)
        return self._registry

    def _realise(self, state: RegistryState, current: Snapshot) -> Snapshot | None:
        """The snapshot serving ``state``, every model loaded; None to keep ``current``."""
        loaded = {m.version: m for m in (current.champion, current.challenger) if m is not None}
        if state.champion is None:
            if current.champion is not None:
                _LOG.warning(
                    "serving: the %s alias is gone; still serving v%s",
                    CHAMPION,
                    current.champion.version,
                )
            champion = current.champion
        else:
            champion = loaded.get(state.champion) or self._load(state.champion)
            if champion is None:
                return None  # keep serving the previous champion; retried next poll
        challenger = None
        if state.challenger is not None:
            challenger = loaded.get(state.challenger) or self._load(state.challenger)
        complete = challenger is not None or state.challenger is None
        if not complete and current.source == state:
            return None  # the challenger failed again: nothing new to publish
        return Snapshot(
            champion=champion,
            challenger=challenger,
            mode=state.mode,
            fraction=state.fraction,
            source=state,
            complete=complete,
            published_at=time.time(),
        )

    def _load(self, version: str) -> ServedModel | None:
        try:
            served = ServedModel.of(version, self.registry.load_model(version))
            served.score([{}])  # warm up: the first prediction allocates the predictor
        except Exception as exc:
            if self._failures.get(version) != str(exc):  # log each new failure once
                _LOG.exception("serving: loading %s v%s failed", self.model_name, version)
            self._failures[version] = str(exc)
            self.errors += 1
            return None
        self._failures.pop(version, None)
        return served
