"""The folder of the incremental feedback aggregates: per-date Parquet parts and the
``state.json`` recording what each part was computed from (see :mod:`.incremental`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_assets.data import table_files
from ct_assets.data.duckdb_work import quote

if TYPE_CHECKING:
    import duckdb

STATE_FILE = "state.json"
LOCK_FILE = ".lock"


@dataclass
class FolderState:
    """``state.json``: the key each file was computed from (a different ``config`` or a
    damaged file loads as empty, so that everything is computed again)."""

    config: str = ""
    predictions: dict[str, str] = field(default_factory=dict)  # P -> source
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)  # F -> key, pdays, open
    days: dict[str, str] = field(default_factory=dict)  # D -> key

    @classmethod
    def load(cls, path: Path, config: str) -> FolderState:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls(config)
        if not isinstance(raw, dict) or raw.get("config") != config:
            return cls(config)
        predictions, feedback, days = (raw.get(n) for n in ("predictions", "feedback", "days"))
        if not (isinstance(predictions, dict) and isinstance(feedback, dict)):
            return cls(config)  # not ours, or damaged: compute everything again
        if not isinstance(days, dict):
            return cls(config)
        return cls(config, predictions, feedback, days)

    def save(self, path: Path) -> None:
        document = {
            "config": self.config,
            "predictions": self.predictions,
            "feedback": self.feedback,
            "days": self.days,
        }
        table_files.write_bytes(path, json.dumps(document, sort_keys=True).encode())


def copy_to_parquet(con: duckdb.DuckDBPyConnection, select: str, path: Path) -> None:
    """The rows of ``select`` written to ``path`` as Parquet, replacing it atomically."""
    table_files.write_atomically(
        path, lambda tmp: con.execute(f"COPY ({select}) TO {quote(str(tmp))} (FORMAT parquet)")
    )


class PartFolder:
    """The per-date Parquet files under the folder, by kind (``predictions``, ``feedback``,
    ``days``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, kind: str, day: str) -> Path:
        return self.root / kind / f"date={day}.parquet"

    def prune(self, kind: str, keep: set[str]) -> None:
        for path in (self.root / kind).glob("date=*.parquet"):
            if path.name[5:-8] not in keep:
                path.unlink(missing_ok=True)
