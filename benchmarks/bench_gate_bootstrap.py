"""The gate's paired bootstrap of the AUC difference on 50,000 holdout rows with ties
(scores rounded to 3 decimals, like tree ensembles give), 1,000 resamples.

Target: under 5 s on one core (the gate runs it for every candidate). Prints the
seconds and exits 1 over the target. Usage: python benchmarks/bench_gate_bootstrap.py
[--rows N] [--resamples N]
"""

from __future__ import annotations

import argparse
import sys
import time

TARGET_SECONDS = 5.0


def main() -> int:
    import numpy as np

    from ct_assets.training.bootstrap import paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, args.rows)

    def scores(strength: float) -> np.ndarray:
        logit = strength * (2 * y - 1) + rng.normal(size=args.rows)
        return np.asarray(np.round(1.0 / (1.0 + np.exp(-logit)), 3))

    p, q = scores(1.0), scores(0.8)
    started = time.perf_counter()
    result = paired_bootstrap(y, p, q, n_resamples=args.resamples)
    seconds = time.perf_counter() - started
    print(
        f"paired bootstrap: {args.rows} rows x {result.n_resamples} resamples in "
        f"{seconds:.2f} s (target < {TARGET_SECONDS:g} s); "
        f"AUC delta {result.delta:.4f} [{result.low:.4f}, {result.high:.4f}]"
    )
    return 0 if seconds < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
