"""``make demo``: the closed loop on simulated feedback with a concept drift, then the Dagster UI.

1. simulate a stream whose concept changes part-way; ingest the part before the drift;
2. materialize the retrain job once by hand: the first champion;
3. start a real ``dagster-daemon``; ingest the part after the drift;
4. the volume sensor notices the new labeled feedback and launches a retrain run;
   the candidate passes the gate and becomes champion;
5. materialize the monitoring assets (feedback aggregates, loop latency, bias, health);
6. print versions and accuracy before/after the drift; serve the UI on 127.0.0.1:3000
   (unless ``CT_DEMO_NO_UI=1``).

The demo owns its CT_HOME: it refuses to run in a non-empty CT_HOME it did not create,
and starts afresh in one it did.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from ct_assets import keys
from ct_assets.settings import PROJECT_ROOT, Settings

DEMO_MARKER = ".ct-demo"
PRE_DRIFT_ROWS = 5000
POST_DRIFT_ROWS = 4000
EVAL_ROWS = 2000
WAIT_SECONDS = 420


@dataclass(frozen=True)
class DemoSummary:
    champion_before: str
    champion_after: str | None
    accuracy_before_drift: float
    accuracy_after_drift_old: float
    accuracy_after_drift_new: float | None
    trigger_reason: str | None


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _file_logger() -> Any:
    """A Dagster logger writing every event of an in-process run (the per-step DEBUG
    lines included) to the file its config names, instead of the console."""
    import dagster as dg

    @dg.logger(config_schema={"path": str}, description="every run event, to a file")
    def file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.Logger("ct_assets.demo.runs", level=logging.DEBUG)
        handler = logging.FileHandler(init_context.logger_config["path"])
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        return logger

    return file_logger


def _run_quietly(job: Any, instance: Any, log_path: Path, **kwargs: Any) -> Any:
    """Execute ``job`` in process with its events going to ``log_path``: the demo's
    console shows only its own progress lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    quiet = job.with_logger_defs({"file": _file_logger()})
    config = {"loggers": {"file": {"config": {"path": str(log_path)}}}}
    return quiet.execute_in_process(run_config=config, instance=instance, **kwargs)


def _reset_home(settings: Settings) -> None:
    home = settings.home
    if home.exists() and any(home.iterdir()) and not (home / DEMO_MARKER).exists():
        raise SystemExit(
            f"{home} holds state the demo did not create; set CT_HOME to another directory"
        )
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / DEMO_MARKER).write_text("created by ct-assets demo; deleted by the next demo\n")


def _events(rows: int, seed: int, drift_at: float) -> list[dict[str, object]]:
    from ct_assets.simulate import SimulationSpec, simulate_events

    spec = SimulationSpec(rows=rows, seed=seed, drift="concept", drift_at=drift_at)
    return list(simulate_events(spec))


def _eval_frame(seed: int, drifted: bool) -> pl.DataFrame:
    from ct_assets.simulate import SimulationSpec, simulate_rows

    spec = SimulationSpec(
        rows=EVAL_ROWS, seed=seed, drift="concept", drift_at=0.0 if drifted else 1.0
    )
    rows = list(simulate_rows(spec))
    return pl.DataFrame(
        [{**row["features"], "label": str(row["label"])} for row in rows],
        infer_schema_length=None,
    )


def _accuracy(settings: Settings, version: str, frame: pl.DataFrame) -> float:
    from ct_assets.registry import Registry
    from ct_assets.training.train import evaluate

    model = Registry.from_settings(settings).load_model(version)
    return evaluate(model, frame)["accuracy"]


def _ingest(settings: Settings, events: list[dict[str, object]]) -> int:
    from ct_assets.eventlog import EventLog
    from ct_assets.schema import convert_record, validate_events

    valid = validate_events([convert_record(e, i) for i, e in enumerate(events)])
    return EventLog.from_settings(settings).append(valid).accepted


def _start_daemon(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.as_env()}
    dagster_daemon = Path(sys.executable).with_name("dagster-daemon")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "ab")  # noqa: SIM115 - the daemon owns it until it exits
    return subprocess.Popen(
        [str(dagster_daemon), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_new_champion(settings: Settings, old: str, daemon: subprocess.Popen[bytes]) -> str:
    from ct_assets.registry import CHAMPION, Registry

    registry = Registry.from_settings(settings)
    started = time.monotonic()
    deadline = started + WAIT_SECONDS
    told = started
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"dagster-daemon exited with {daemon.returncode}; see its log")
        champion = registry.alias(CHAMPION)
        if champion is not None and champion.version != old:
            return champion.version
        if time.monotonic() - told >= 15:
            told = time.monotonic()
            _say(f"  ... {told - started:.0f}s: {_progress(settings)}")
        time.sleep(2)
    raise SystemExit(f"no new champion within {WAIT_SECONDS}s; see the daemon log")


def _progress(settings: Settings) -> str:
    """What the daemon has done so far: the newest retrain run and its status."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records(
            dg.RunsFilter(job_name=keys.RETRAIN_JOB), limit=1, ascending=False
        )
    if not runs or runs[0].dagster_run.tags.get(keys.RUN_TAG_TRIGGER) == "manual":
        return "no retrain launched yet (the volume sensor ticks every few seconds)"
    run = runs[0].dagster_run
    trigger = run.tags.get(keys.RUN_TAG_TRIGGER, "?")
    return f"retrain run {run.run_id[:8]} ({trigger}) is {run.status.value.lower()}"


def _last_trigger_reason(settings: Settings) -> str | None:
    from ct_assets.status import collect_status

    trigger = collect_status(settings).get("last_trigger")
    return str(trigger["reason"]) if trigger else None


def run_demo(base: Settings) -> int:
    import dagster as dg

    from ct_assets.defs import build_definitions
    from ct_assets.instance import prepare_dagster_home

    settings = replace(base, sensor_interval_seconds=min(base.sensor_interval_seconds, 5))
    _reset_home(settings)
    os.environ.update(settings.as_env())
    prepare_dagster_home(settings)
    _say(f"CT_HOME={settings.home}")

    events = _events(PRE_DRIFT_ROWS + POST_DRIFT_ROWS, seed=1, drift_at=0.5555556)
    before, after = events[:PRE_DRIFT_ROWS], events[PRE_DRIFT_ROWS:]
    _say(f"ingested {_ingest(settings, before)} labeled feedback events (before the drift)")

    runs_log = settings.home / "logs" / "demo-runs.log"
    _say(f"training the first champion (retrain job; every run event in {runs_log}) ...")
    with dg.DagsterInstance.get() as instance:
        result = _run_quietly(
            build_definitions(settings).resolve_job_def(keys.RETRAIN_JOB),
            instance,
            runs_log,
            tags={keys.RUN_TAG_TRIGGER: "manual"},
            raise_on_error=False,
        )
    if not result.success:
        raise SystemExit(f"the first retrain run failed; see {runs_log} or the Dagster UI")
    from ct_assets.registry import CHAMPION, Registry

    champion = Registry.from_settings(settings).alias(CHAMPION)
    assert champion is not None
    first = champion.version
    _say(f"first champion: v{first}")

    pre_eval, post_eval = _eval_frame(101, drifted=False), _eval_frame(102, drifted=True)
    acc_before = _accuracy(settings, first, pre_eval)
    acc_after_old = _accuracy(settings, first, post_eval)

    daemon_log = settings.home / "logs" / "dagster-daemon.log"
    daemon = _start_daemon(settings, daemon_log)
    _say(f"dagster-daemon started (pid {daemon.pid}, log {daemon_log})")
    try:
        accepted = _ingest(settings, after)
        _say(f"ingested {accepted} labeled feedback events (after the drift)")
        _say(f"waiting for the volume sensor (threshold {settings.volume_threshold}) ...")
        second = _wait_for_new_champion(settings, first, daemon)
        _say(f"new champion: v{second}")
        acc_after_new = _accuracy(settings, second, post_eval)
        _say("materializing the monitoring assets ...")
        with dg.DagsterInstance.get() as instance:
            monitoring = _run_quietly(
                build_definitions(settings).resolve_job_def(keys.MONITORING_JOB),
                instance,
                runs_log,
                raise_on_error=False,
            )
        _say(
            "monitoring assets materialized (feedback aggregates, loop latency, bias, health)"
            if monitoring.success
            else "the monitoring job failed; see the Dagster UI"
        )
        _say(f"what v{second} learned from: ct-assets lineage --version {second}")
        summary = DemoSummary(
            first, second, acc_before, acc_after_old, acc_after_new, _last_trigger_reason(settings)
        )
        print(render_summary(summary), flush=True)
        if os.environ.get("CT_DEMO_NO_UI") == "1":
            return 0
        _say("Dagster UI on http://127.0.0.1:3000 (Ctrl-C to stop)")
        webserver = Path(sys.executable).with_name("dagster-webserver")
        ui = subprocess.Popen(
            [
                str(webserver),
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                "3000",
            ],
            cwd=PROJECT_ROOT,
            env={**os.environ, **settings.as_env()},
        )
        try:
            ui.wait()
        except KeyboardInterrupt:
            _stop(ui)
        return 0
    finally:
        _stop(daemon)


def render_summary(summary: DemoSummary) -> str:
    new = summary.accuracy_after_drift_new
    return "\n".join(
        [
            "",
            "== ct_assets demo ==",
            f"champion before the drift : v{summary.champion_before}",
            f"champion after the drift  : v{summary.champion_after}  "
            f"(retrained by the volume sensor: {summary.trigger_reason})",
            f"accuracy, v{summary.champion_before} on data before the drift : "
            f"{summary.accuracy_before_drift:.3f}",
            f"accuracy, v{summary.champion_before} on data after the drift  : "
            f"{summary.accuracy_after_drift_old:.3f}",
            f"accuracy, v{summary.champion_after} on data after the drift  : "
            + (f"{new:.3f}" if new is not None else "-"),
            "",
        ]
    )
