"""Loading a version's model, kept in process: a version's files are written once, with
its run, so a loaded model is reused until evicted."""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from ct_assets.registry.client import RegistryClient
from ct_assets.registry.tags import TAG_VALIDATED_MODEL
from ct_assets.training.model import TrainedModel


class ModelCache:
    """Loaded models by (tracking URI, run id, source), the ``size`` most recently used."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, str, str], TrainedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> TrainedModel | None:
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
            return model

    def put(self, key: tuple[str, str, str], model: TrainedModel) -> TrainedModel:
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


#: Models loaded from the registry in this process (champion, challenger, candidates).
LOADED_MODELS = ModelCache(size=8)


class ModelLoading(RegistryClient):
    def load_model(self, version: str) -> TrainedModel:
        """The model of ``version``. Its files are written once, with its run: the loaded
        model is kept in process (:data:`LOADED_MODELS`), keyed by the run and the source
        the version resolves to now, so a version deleted and registered again is read
        anew. Callers must not change the model they get."""
        info = self.client.get_model_version(self.model_name, version)
        key = (self.tracking_uri, str(info.run_id), str(info.source))
        model = LOADED_MODELS.get(key)
        if model is None:
            with tempfile.TemporaryDirectory() as tmp:
                local = self.client.download_artifacts(str(info.run_id), "model/ct_model", tmp)
                model = LOADED_MODELS.put(key, TrainedModel.load(Path(local)))
        return model

    def load_validated_model(self, version: str) -> TrainedModel:
        """The model the gate judges for ``version``: the one trained without the holdout
        when the registered model was refit with it, else the registered model."""
        info = self.client.get_model_version(self.model_name, version)
        path = dict(info.tags or {}).get(TAG_VALIDATED_MODEL)
        if not path:
            return self.load_model(version)
        key = (self.tracking_uri, str(info.run_id), f"{info.source}#{path}")
        model = LOADED_MODELS.get(key)
        if model is None:
            with tempfile.TemporaryDirectory() as tmp:
                local = self.client.download_artifacts(str(info.run_id), path, tmp)
                model = LOADED_MODELS.put(key, TrainedModel.load(Path(local)))
        return model
