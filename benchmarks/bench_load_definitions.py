"""How long loading the ct_assets code location takes, against a bare `import dagster`.

Each measurement is a fresh interpreter (what the webserver, daemon and run
workers pay per code-location load). Prints medians and their ratio; the target
is a code-location load under 2.5 s on a 2-core machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

REPEAT = 5
BASELINE = "import dagster"
LOCATION = (
    "from ct_assets.definitions import defs\n"
    "d = defs() if callable(defs) else defs\n"
    "d.resolve_job_def('retrain')\n"
    "d.resolve_asset_graph()\n"
)


def timed(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "CT_HOME": home}
        timed(LOCATION, env)  # warm the filesystem cache and bytecode
        base = statistics.median(timed(BASELINE, env) for _ in range(REPEAT))
        ours = statistics.median(timed(LOCATION, env) for _ in range(REPEAT))
    print(f"bare `import dagster`          : {base:.3f} s (median of {REPEAT})")
    print(f"ct_assets Definitions, loaded  : {ours:.3f} s (median of {REPEAT})")
    print(f"ratio                          : {ours / base:.2f}x  (target: < 2.5 s absolute)")


if __name__ == "__main__":
    main()
