"""The closed loop of ``make demo``, driven from outside the engines: feedback posted to
the API (which publishes to the stream), retrain runs launched on the Dagster instance
and executed by Celery workers, the registry read from the MLflow server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ct_assets import keys
from ct_assets.cluster.processes import EngineError
from ct_assets.settings import Settings

#: The Dagster run tag dagster-celery's launcher records its task id under.
CELERY_TASK_TAG = "dagster-celery/task_id"
POST_CHUNK = 500


def post_feedback(
    api_urls: Sequence[str], token: str, events: Sequence[dict[str, object]]
) -> tuple[int, int]:
    """``POST /v1/feedback`` in NDJSON chunks, round-robin over ``api_urls``; a 503 (the
    stream unavailable) is retried. Returns (accepted, duplicates)."""
    accepted = duplicates = 0
    for index, start in enumerate(range(0, len(events), POST_CHUNK)):
        chunk = events[start : start + POST_CHUNK]
        body = "".join(json.dumps(e) + "\n" for e in chunk).encode()
        url = f"{api_urls[index % len(api_urls)]}/v1/feedback"
        answer = _post(url, token, body)
        accepted += int(answer.get("accepted", 0))
        duplicates += int(answer.get("duplicates", 0))
    return accepted, duplicates


def _post(url: str, token: str, body: bytes, attempts: int = 10) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return dict(json.loads(answer.read()))
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == attempts - 1:
                raise EngineError(f"POST {url}: {error.code} {error.read()[:500]!r}") from error
        time.sleep(1)
    raise EngineError(f"POST {url}: no answer")


def wait_for_log(
    settings: Settings, feedback: int, timeout: float, check: Callable[[], None]
) -> None:
    """Until the stream consumer has written ``feedback`` feedback events into the log."""
    from ct_assets.eventlog import EventLog

    deadline = time.monotonic() + timeout
    while True:
        check()
        have = EventLog.from_settings(settings).counts().feedback
        if have >= feedback:
            return
        if time.monotonic() > deadline:
            raise EngineError(
                f"the stream consumer wrote {have} of {feedback} feedback events "
                f"within {timeout:.0f} s"
            )
        time.sleep(0.5)


def submit_retrain(webserver_url: str, tags: dict[str, str]) -> str:
    """A run of the retrain job submitted through the webserver's GraphQL API (as the UI's
    launch button does); the daemon dequeues it and the Celery launcher hands it on."""
    from dagster_graphql import DagsterGraphQLClient

    host, _, port = webserver_url.removeprefix("http://").partition(":")
    client = DagsterGraphQLClient(host, port_number=int(port))
    return client.submit_job_execution(
        keys.RETRAIN_JOB,
        repository_location_name="ct_assets",
        repository_name="__repository__",
        tags=tags,
    )


def retrain_runs() -> list[Any]:
    """Every run of the retrain job on the instance, newest first."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return list(instance.get_runs(dg.RunsFilter(tags={keys.RUN_TAG_JOB: keys.RETRAIN_JOB})))


def describe(run: Any) -> str:
    trigger = run.tags.get(keys.RUN_TAG_TRIGGER, "?")
    return f"retrain run {run.run_id[:8]} ({trigger}) is {run.status.value.lower()}"


def wait_for_champion(
    settings: Settings,
    old: str | None,
    timeout: float,
    check: Callable[[], None],
    say: Callable[[str], None],
) -> str:
    """The champion version once it is not ``old``; a progress line every 15 s (the
    newest retrain run and its status); :class:`EngineError` when a retrain run failed."""
    from ct_assets.registry import CHAMPION, Registry

    registry = Registry.from_settings(settings)
    started = told = time.monotonic()
    while time.monotonic() < started + timeout:
        check()
        champion = registry.alias(CHAMPION)
        if champion is not None and champion.version != old:
            return champion.version
        runs = retrain_runs()
        failed = [r for r in runs if r.status.value == "FAILURE"]
        if failed:
            raise EngineError(f"{describe(failed[0])}; see the Dagster UI or the worker logs")
        if time.monotonic() - told >= 15:
            told = time.monotonic()
            state = describe(runs[0]) if runs else "no retrain run yet"
            say(f"  ... {told - started:.0f}s: {state}")
        time.sleep(2)
    raise EngineError(f"no new champion within {timeout:.0f} s")


def wait_for_runs(timeout: float, check: Callable[[], None]) -> list[Any]:
    """The retrain runs once every one has finished (the champion alias moves before the
    run's last step ends), newest first."""
    deadline = time.monotonic() + timeout
    while True:
        check()
        runs = retrain_runs()
        if all(run.is_finished for run in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(1)


def worker_of(run: Any, worker_logs: dict[str, Path]) -> str | None:
    """The Celery worker (of ``worker_logs``: name -> log) that received the run's task."""
    task_id = run.tags.get(CELERY_TASK_TAG)
    if not task_id:
        return None
    for name, path in worker_logs.items():
        if f"execute_job[{task_id}] received" in path.read_text(errors="replace"):
            return name
    return None
