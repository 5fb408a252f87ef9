"""dagster-celery's run launcher, with a health check that notices a dead worker.

``CeleryRunLauncher.check_run_worker_health`` reads only the task's state in the result
backend. A worker killed with SIGKILL (OOM killer, lost machine) never writes a final
state, so its run stays ``STARTED`` and run monitoring reports it running forever. This
launcher also pings the worker that recorded the ``STARTED`` state (its hostname is in
the state's meta) and reports the run worker failed after ``max_missed_pings``
consecutive checks without an answer; run monitoring then fails the run.
Loaded by the Dagster instance only (never by the code location).
"""

from __future__ import annotations

from typing import Any

from dagster import DagsterRun, Field
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG


class MonitoredCeleryRunLauncher(CeleryRunLauncher):
    """``CeleryRunLauncher`` whose health check pings the worker holding a started run."""

    def __init__(
        self,
        *args: Any,
        max_missed_pings: int = 3,
        ping_timeout_seconds: float = 2.0,
        **kwargs: Any,
    ) -> None:
        self.max_missed_pings = max(1, max_missed_pings)
        self.ping_timeout_seconds = ping_timeout_seconds
        self._missed: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    @classmethod
    def config_type(cls) -> Any:
        return {
            **CeleryRunLauncher.config_type(),  # type: ignore[dict-item]
            "max_missed_pings": Field(
                int,
                is_required=False,
                default_value=3,
                description="Consecutive health checks without an answer from the run's "
                "worker after which the run worker is reported failed.",
            ),
            "ping_timeout_seconds": Field(
                float,
                is_required=False,
                default_value=2.0,
                description="How long a health check waits for the worker's answer.",
            ),
        }

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        result = super().check_run_worker_health(run)
        if result.status != WorkerStatus.RUNNING:
            self._missed.pop(run.run_id, None)
            return result
        info = self.celery.AsyncResult(run.tags[DAGSTER_CELERY_TASK_ID_TAG]).info
        hostname = info.get("hostname") if isinstance(info, dict) else None
        if not hostname:
            return result
        replies = self.celery.control.ping(
            destination=[hostname], timeout=self.ping_timeout_seconds
        )
        if any(hostname in reply for reply in replies or []):
            self._missed.pop(run.run_id, None)
            return result
        missed = self._missed[run.run_id] = self._missed.get(run.run_id, 0) + 1
        if missed < self.max_missed_pings:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"Celery worker {hostname} missed {missed} ping(s)"
            )
        self._missed.pop(run.run_id, None)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"Celery worker {hostname}, which started the run, did not answer "
            f"{missed} pings in a row: it is gone",
        )
