"""``make demo`` end to end: ``ct-assets demo`` in a process of its own, with a real
``dagster-daemon``, on a fresh CT_HOME; the UI is not started (``CT_DEMO_NO_UI=1``).

What a newcomer sees: the demo's own progress lines on the console, the summary, and the
file every run event went to; Dagster's per-step DEBUG lines stay out of the console."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_the_loop_and_keeps_run_events_in_the_log_it_names(tmp_path: Path) -> None:
    home = tmp_path / "ct"
    env = {
        **os.environ,
        "CT_HOME": str(home),
        "CT_DEMO_NO_UI": "1",
        "CT_SENSOR_INTERVAL_SECONDS": "2",
        "CT_REPORT_PLOTS": "0",
    }
    cli = Path(sys.executable).with_name("ct-assets")
    done = subprocess.run(
        [str(cli), "demo"], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    lines = out.splitlines()
    log = home / "logs" / "demo-runs.log"
    assert any(f"every run event in {log}" in line for line in lines), out
    assert "first champion: v1" in out and "new champion: v" in out
    assert "== ct_assets demo ==" in out
    # the console has the demo's lines, not Dagster's step events
    assert not [line for line in lines if re.search(r"STEP_(START|SUCCESS)|DEBUG", line)]
    assert "BetaWarning" not in done.stderr, done.stderr[-2000:]
    events = log.read_text()
    assert "STEP_SUCCESS" in events and "candidate_model" in events
    assert "RUN_SUCCESS" in events
    summary = out[out.index("== ct_assets demo ==") :]
    accuracies = [float(v) for v in re.findall(r"drift\s*: (\d\.\d{3})", summary)]
    assert len(accuracies) == 3
    _before, old_after, new_after = accuracies
    assert new_after > old_after, summary  # retraining after the drift paid off
