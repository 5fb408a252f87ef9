"""Change detection on the champion's live error stream (ADWIN's cut test, one-sided).

The stream is the champion's 0/1 errors on labeled feedback, in time order. ADWIN
(Bifet & Gavaldà, 2007) keeps the longest window whose two sub-windows, at any cut, have
means within a bound that holds with probability ``1 - delta`` when nothing changed. We
only look for decay: a cut fires when the newer part's error rate exceeds the older
part's by more than the bound (an improvement is not a reason to retrain).

The bound, for sub-windows of ``n0`` and ``n1`` errors, ``m = 1 / (1/n0 + 1/n1)``, the
window's error variance ``v`` and ``d = delta / n`` (a union bound over the cuts tried)::

    eps = sqrt(2 v ln(2/d) / m) + 2 ln(2/d) / (3 m)

Cuts closer than ``min_side`` errors to either end are not tried (a handful of errors
is no evidence), and cuts are tried every ``stride`` errors. As ADWIN does, the older
part is dropped at the cut with the largest margin over its bound, and the rest tested
again until no cut fires: the change point reported is where the newest homogeneous
stretch begins, where a retrain's training window should start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ChangeConfig:
    #: Probability of a false alarm of one check on a stream without change (at most).
    delta: float = 0.002
    #: Errors on each side of a cut, at least.
    min_side: int = 100
    #: Cuts are tried every this many errors.
    stride: int = 16
    #: Only the newest this many errors are examined.
    max_window: int = 20_000

    def __post_init__(self) -> None:
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.min_side < 5:
            raise ValueError(f"min_side must be >= 5, got {self.min_side}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.max_window < 2 * self.min_side:
            raise ValueError(f"max_window {self.max_window} < 2 * min_side {self.min_side}")


@dataclass(frozen=True)
class ChangePoint:
    """A detected rise of the error rate: ``before`` on errors ``[0, index)``, ``after``
    on ``[index, n)`` of the examined stream, ``bound`` the difference allowed there."""

    found: bool
    index: int
    n: int
    before: float
    after: float
    bound: float
    delta: float

    @property
    def rows_since(self) -> int:
        """How many of the newest errors come after the change point."""
        return self.n - self.index if self.found else 0

    def reason(self) -> str:
        if self.n == 0:
            return "no labeled outcomes of the champion yet"
        if not self.found:
            return (
                f"no rise of the error rate in the last {self.n} outcomes "
                f"(ADWIN cut test, delta {self.delta:g})"
            )
        return (
            f"error rate rose from {self.before:.3f} to {self.after:.3f} over the last "
            f"{self.n - self.index} of {self.n} outcomes (> bound {self.bound:.3f}, ADWIN "
            f"cut test, delta {self.delta:g})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "index": self.index,
            "n": self.n,
            "rows_since": self.rows_since,
            "before": self.before,
            "after": self.after,
            "bound": self.bound,
            "delta": self.delta,
            "reason": self.reason(),
        }


def detect_change(
    errors: NDArray[Any] | list[int], config: ChangeConfig | None = None
) -> ChangePoint:
    """Where the newest rise of the error rate in ``errors`` (0/1, oldest first) begins,
    or ``found=False`` when no cut exceeds its bound."""
    config = config or ChangeConfig()
    values = np.asarray(errors, dtype=np.float64)[-config.max_window :]
    n = int(values.size)
    found = ChangePoint(False, n, n, math.nan, math.nan, math.nan, config.delta)
    start = 0
    while True:
        cut = _largest_rise(values[start:], config)
        if cut is None:
            return found
        index, before, after, bound = cut
        start += index
        found = ChangePoint(True, start, n, before, after, bound, config.delta)


def _largest_rise(
    values: NDArray[np.float64], config: ChangeConfig
) -> tuple[int, float, float, float] | None:
    """The cut where the newer part's error rate exceeds the older's by the most over the
    bound: (index, older rate, newer rate, bound), or None."""
    n = int(values.size)
    if n < 2 * config.min_side:
        return None
    cuts = np.arange(config.min_side, n - config.min_side + 1, config.stride)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    n0 = cuts.astype(np.float64)
    n1 = n - n0
    mean0 = sums[cuts] / n0
    mean1 = (sums[n] - sums[cuts]) / n1
    mean = sums[n] / n
    variance = max(mean * (1.0 - mean), 1.0 / n)
    m = 1.0 / (1.0 / n0 + 1.0 / n1)
    log_term = math.log(2.0 * n / config.delta)
    bound = np.sqrt(2.0 * variance * log_term / m) + 2.0 * log_term / (3.0 * m)
    margin = (mean1 - mean0) - bound
    best = int(np.argmax(margin))
    if margin[best] <= 0:
        return None
    return int(cuts[best]), float(mean0[best]), float(mean1[best]), float(bound[best])
