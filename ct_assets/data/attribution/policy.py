"""The label policy: how implicit signals (click, skip, dwell ...) become labels."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

EXPLICIT = "explicit"
IMPLICIT = "implicit"
IMPLICIT_PREFIX = "implicit:"


class UnknownSignalError(ValueError):
    """Implicit feedback carries a signal the policy does not know and must not ignore."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)
        listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(self.counts.items()))
        super().__init__(f"implicit signals unknown to the label policy: {listed}")


def _names(values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, str):  # a lone string is one signal, not its characters
        return frozenset([values])
    return frozenset(values)


@dataclass(frozen=True)
class LabelPolicy:
    """How implicit feedback becomes a label; explicit feedback always keeps its own.

    * a signal in ``positive_signals`` is labeled ``positive_label``;
    * a signal in ``negative_signals`` is labeled ``negative_label``;
    * ``dwell_signal`` is labeled by its ``value`` (seconds): ``positive_label`` when it
      is at least ``dwell_threshold_seconds``, else ``negative_label``; without a value
      it gets no label;
    * any other signal is unknown: with ``ignore_unknown`` it gives no example (and is
      counted by :func:`unlabeled`), otherwise attribution raises
      :class:`UnknownSignalError` so a new signal cannot silently go missing.

    Signals are matched exactly (case-sensitive). The sets must not overlap.
    """

    positive_signals: frozenset[str] = field(
        default_factory=lambda: frozenset({"click", "purchase", "like", "convert"})
    )
    negative_signals: frozenset[str] = field(
        default_factory=lambda: frozenset({"skip", "dismiss", "dislike", "hide"})
    )
    dwell_signal: str | None = "dwell"
    dwell_threshold_seconds: float = 30.0
    positive_label: str = "1"
    negative_label: str = "0"
    ignore_unknown: bool = True

    def __post_init__(self) -> None:
        # accept any iterable of names (a list from JSON, a set literal) but store frozensets
        object.__setattr__(self, "positive_signals", _names(self.positive_signals))
        object.__setattr__(self, "negative_signals", _names(self.negative_signals))
        both = self.positive_signals & self.negative_signals
        if both:
            raise ValueError(f"signals both positive and negative: {sorted(both)}")
        if self.dwell_signal is not None and self.dwell_signal in (
            self.positive_signals | self.negative_signals
        ):
            raise ValueError(f"dwell signal {self.dwell_signal!r} is also a fixed-label signal")
        threshold = float(self.dwell_threshold_seconds)
        if not threshold >= 0 or threshold == float("inf"):
            raise ValueError(f"dwell_threshold_seconds must be finite and >= 0, got {threshold}")
        if self.positive_label == self.negative_label:
            raise ValueError("positive_label and negative_label must differ")

    @property
    def known_signals(self) -> frozenset[str]:
        dwell = {self.dwell_signal} if self.dwell_signal is not None else set()
        return self.positive_signals | self.negative_signals | dwell

    def to_dict(self) -> dict[str, Any]:
        return {
            "positive_signals": sorted(self.positive_signals),
            "negative_signals": sorted(self.negative_signals),
            "dwell_signal": self.dwell_signal,
            "dwell_threshold_seconds": float(self.dwell_threshold_seconds),
            "positive_label": self.positive_label,
            "negative_label": self.negative_label,
            "ignore_unknown": self.ignore_unknown,
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys and signal lists): equal policies give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LabelPolicy:
        """A policy from :meth:`to_json` output; missing keys take their defaults."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a label policy is a JSON object")
        unknown = set(data) - {f.name for f in cls.__dataclass_fields__.values()}
        if unknown:
            raise ValueError(f"unknown label policy fields: {sorted(unknown)}")
        return cls(**data)

    def describe(self) -> str:
        """One line per rule, for asset metadata and reports."""
        lines = [
            "explicit feedback: its own label",
            f"implicit {_listing(self.positive_signals)} -> {self.positive_label!r}",
            f"implicit {_listing(self.negative_signals)} -> {self.negative_label!r}",
        ]
        if self.dwell_signal is not None:
            lines.append(
                f"implicit {self.dwell_signal!r}: value >= {self.dwell_threshold_seconds:g}s "
                f"-> {self.positive_label!r}, else {self.negative_label!r}"
            )
        lines.append(
            "other signals: ignored (counted)" if self.ignore_unknown else "other signals: error"
        )
        return "\n".join(lines)


def _listing(signals: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(signals)) + "}" if signals else "{} (none)"
