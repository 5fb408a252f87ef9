"""Which labeled examples a dataset is compiled from: the training window.

A :class:`WindowSpec` chooses, from the labeled examples up to a point in time
``end``:

* ``sliding``: the examples of the last ``window_days`` days (``end - window_days``
  up to ``end``, both included), so the model follows the recent concept;
* ``all``: every example up to ``end``;
* ``sliding_reservoir``: the sliding window plus a uniform sample of
  ``reservoir_size`` older examples, so old but still valid patterns are not
  forgotten entirely.

``max_rows`` caps the recent part (for ``all``: everything), keeping the newest.

``since`` (a detected change of the concept) narrows the recent part to the examples
from that instant on, so a retrain after a change learns the new concept only; when
fewer than ``min_rows`` are that new, the newest ``min_rows`` of the recent part are
kept instead (a handful of rows trains nothing).

The reservoir is a bottom-k sample: the older examples with the lowest keyed hash of
``(seed, event_id)``. It depends only on the seed and on which examples are older
than the window, never on row order or on newer examples, so the same log gives the
same dataset, and an example, once chosen, stays until an example with a lower hash
leaves the window and displaces it. The hash is BLAKE2b, stable across Python and
Polars versions (Polars' own ``hash`` is not), computed once per older example.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal, get_args

import polars as pl

WindowMode = Literal["sliding", "all", "sliding_reservoir"]
WindowPart = Literal["recent", "reservoir"]

RECENT: WindowPart = "recent"
RESERVOIR: WindowPart = "reservoir"
_HASH = "__reservoir_hash"


@dataclass(frozen=True)
class WindowSpec:
    """What a dataset is compiled from; see the module docstring for the modes."""

    mode: WindowMode = "sliding"
    window_days: int = 14
    max_rows: int | None = None
    reservoir_size: int = 0
    seed: int = 0
    since: datetime | None = None
    min_rows: int = 0

    def __post_init__(self) -> None:
        if self.since is not None:
            _utc(self.since)
        if self.min_rows < 0:
            raise ValueError(f"min_rows must be >= 0, got {self.min_rows}")
        if self.mode not in get_args(WindowMode):
            raise ValueError(f"unknown window mode {self.mode!r}")
        if self.mode != "all" and self.window_days < 1:
            raise ValueError(f"window_days must be >= 1, got {self.window_days}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 or None, got {self.max_rows}")
        if self.reservoir_size < 0:
            raise ValueError(f"reservoir_size must be >= 0, got {self.reservoir_size}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")

    def start(self, end: datetime) -> datetime | None:
        """The first instant of the recent part (None for ``all``: no lower bound)."""
        if self.mode == "all":
            return None
        return _utc(end) - timedelta(days=self.window_days)

    def describe(self) -> str:
        """A short text for asset metadata."""
        text = self.mode if self.mode == "all" else f"{self.mode}, last {self.window_days} days"
        if self.mode == "sliding_reservoir":
            text += f" + reservoir of {self.reservoir_size} older (seed {self.seed})"
        if self.max_rows is not None:
            text += f", at most {self.max_rows} recent rows"
        if self.since is not None:
            text += f", since the change at {_utc(self.since).isoformat()}"
            text += f" (at least {self.min_rows} rows)" if self.min_rows else ""
        return text


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no time zone; pass an aware datetime")
    return moment.astimezone(UTC)


def reservoir_keys(event_ids: pl.Series, seed: int) -> pl.Series:
    """The keyed BLAKE2b hash (64 bits) of each event id: reservoir rank, lowest first."""
    key = seed.to_bytes(8, "big")

    def digest(event_id: str | None) -> int:
        if event_id is None:
            return 2**64 - 1  # never preferred over a real id
        return int.from_bytes(
            hashlib.blake2b(event_id.encode(), digest_size=8, key=key).digest(), "big"
        )

    return pl.Series(_HASH, [digest(e) for e in event_ids.to_list()], dtype=pl.UInt64)


def select_window(examples: pl.DataFrame, spec: WindowSpec, end: datetime) -> pl.DataFrame:
    """The examples ``spec`` selects as of ``end``, plus ``window_part`` (recent/reservoir).

    ``examples`` needs ``event_id``, ``log_offset`` and ``timestamp`` (as from
    :func:`ct_assets.data.attribution.attribute_feedback`). Examples after ``end`` are
    never selected. Sorted by ``(timestamp, log_offset)``: the reservoir, being older,
    comes first, and the newest rows (where a dataset's holdout is taken) are recent.
    """
    end = _utc(end)
    ts = pl.col("timestamp")
    dtype = examples.schema["timestamp"]
    upto = examples.filter(ts <= pl.lit(end).cast(dtype))
    start = spec.start(end)
    if start is None:
        recent, older = upto, upto.clear()
    else:
        at_start = ts >= pl.lit(start).cast(dtype)
        recent, older = upto.filter(at_start), upto.filter(~at_start)
    if spec.since is not None:
        recent = since_change(recent, _utc(spec.since), spec.min_rows)
    if spec.max_rows is not None and recent.height > spec.max_rows:
        recent = recent.sort(["timestamp", "log_offset"], maintain_order=True).tail(spec.max_rows)
    parts = [recent.with_columns(pl.lit(RECENT).alias("window_part"))]
    if spec.mode == "sliding_reservoir" and spec.reservoir_size and older.height:
        keyed = older.with_columns(reservoir_keys(older["event_id"], spec.seed))
        chosen = keyed.bottom_k(spec.reservoir_size, by=[_HASH, "event_id", "log_offset"])
        parts.append(chosen.drop(_HASH).with_columns(pl.lit(RESERVOIR).alias("window_part")))
    return pl.concat(parts).sort(["timestamp", "log_offset"], maintain_order=True)


def since_change(examples: pl.DataFrame, since: datetime, min_rows: int) -> pl.DataFrame:
    """The examples from ``since`` on; the newest ``min_rows`` when fewer are that new."""
    ts = pl.col("timestamp")
    newer = examples.filter(ts >= pl.lit(since).cast(examples.schema["timestamp"]))
    if newer.height >= min_rows:
        return newer
    return examples.sort(["timestamp", "log_offset"], maintain_order=True).tail(min_rows)


def partitions_for(
    spec: WindowSpec, end: datetime, first: date, *, lookback_days: int = 0
) -> list[str]:
    """Daily partition keys (``YYYY-MM-DD``, UTC event dates) the window as of ``end`` reads.

    From ``first`` (the first partition there is) for ``all`` and ``sliding_reservoir``
    (the reservoir samples all history), else from the date of ``end - window_days``;
    up to the date of ``end``. ``lookback_days`` reaches further back, e.g. for the
    predictions that feedback in the window refers to, which were logged earlier.
    Empty when ``end`` is before ``first``.
    """
    if lookback_days < 0:
        raise ValueError(f"lookback_days must be >= 0, got {lookback_days}")
    end = _utc(end)
    start = spec.start(end)
    begin = first if start is None or spec.mode == "sliding_reservoir" else start.date()
    begin = max(first, begin - timedelta(days=lookback_days))
    days = (end.date() - begin).days
    return [(begin + timedelta(days=i)).isoformat() for i in range(days + 1)]
