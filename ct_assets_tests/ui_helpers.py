"""A small real CT_HOME and a ``dagster-webserver`` serving it, shared by the UI tests.

The CT_HOME is built in-process: simulated feedback is ingested, one event date goes
through job ``raw_partitions`` and job ``retrain`` makes a first champion, all on a
persistent SQLite instance under ``$CT_HOME/dagster``. A real ``dagster-webserver``
then serves the project's ``workspace.yaml`` on that instance. Both are built once per
test session and shared by every module that requests the ``dagster_ui`` fixture.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.instance import prepare_dagster_home
from ct_assets.registry import CHAMPION, Registry
from ct_assets.settings import PROJECT_ROOT, Settings

from .api_helpers import HOST, free_port
from .conftest import ingest, simulated_events

ROWS = 2400
WEBSERVER = str(Path(sys.executable).with_name("dagster-webserver"))
START_TIMEOUT_SECONDS = 120.0
LOG_TAIL_CHARS = 4000
_DROPPED_ENV_PREFIXES = ("CT_", "DAGSTER_", "PROMETHEUS_MULTIPROC_DIR")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Metadata the UI shows as its value's text (a path or URL as the link's text).
_PLAIN_METADATA = (
    dg.TextMetadataValue,
    dg.IntMetadataValue,
    dg.FloatMetadataValue,
    dg.PathMetadataValue,
    dg.UrlMetadataValue,
)

#: The lineage from the event log to the deployed model, upstream first.
LINEAGE_CHAIN = (
    keys.RAW_FEEDBACK,
    keys.VALIDATED_FEEDBACK,
    keys.ATTRIBUTED_EXAMPLES,
    keys.TRAINING_DATASET,
    keys.CANDIDATE_MODEL,
    keys.VALIDATION_REPORT,
    keys.CHAMPION_MODEL,
)

_LOCATIONS_QUERY = """
query Locations {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
  }
}
"""


def location_name() -> str:
    """The code location name ``workspace.yaml`` gives the project."""
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    (target,) = entry.values()
    return str(target["location_name"])


def asset_groups(defs: dg.Definitions) -> dict[str, list[str]]:
    """Group name -> asset keys, read from the code location's definitions."""
    groups: dict[str, list[str]] = {}
    for spec in defs.resolve_all_asset_specs():
        group = spec.group_name or "default"
        groups.setdefault(group, []).append(spec.key.to_user_string())
    return {group: sorted(assets) for group, assets in sorted(groups.items())}


def upstream_closure(parents: Mapping[str, Iterable[str]], key: str) -> set[str]:
    """``key`` and every asset it depends on, directly or not, given each asset's parents."""
    seen = {key}
    frontier = [key]
    while frontier:
        for parent in parents.get(frontier.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    return seen


def asset_parents(defs: dg.Definitions) -> dict[str, list[str]]:
    """Asset key -> the keys it depends on, read from the code location's definitions."""
    return {
        node.key.to_user_string(): sorted(p.to_user_string() for p in node.parent_keys)
        for node in defs.resolve_asset_graph().asset_nodes
    }


def _settings(root: Path) -> Settings:
    return Settings(
        volume_threshold=1000,
        training_window=3000,
        num_boost_round=60,
        sensor_interval_seconds=1,
        gate_bootstrap_resamples=200,
    ).with_home(root / "ct")


def _event_date(event: Mapping[str, object]) -> str:
    stamp = datetime.fromisoformat(str(event["timestamp"]))
    return stamp.astimezone(UTC).date().isoformat()


@dataclass(frozen=True)
class BuiltHome:
    """What the UI must show, as recorded in the instance and the registry."""

    settings: Settings
    dagster_home: Path
    location: str
    groups: dict[str, list[str]]
    parents: dict[str, list[str]]
    raw_partition: str
    raw_partition_rows: int
    retrain_run_id: str
    champion_version: str
    champion_run_id: str
    #: the text, number, path and URL metadata of champion_model's latest materialization
    champion_metadata: dict[str, str]

    def env(self) -> dict[str, str]:
        """The environment of a process serving this CT_HOME: inherited minus every
        ``CT_*`` and ``DAGSTER_*``, plus these settings and this DAGSTER_HOME."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
        env.update(self.settings.as_env())
        env["DAGSTER_HOME"] = str(self.dagster_home)
        return env


def build_home(root: Path) -> BuiltHome:
    """Ingest, materialize one event date of the daily assets, retrain once."""
    settings = _settings(root)
    dagster_home = prepare_dagster_home(settings)
    events = simulated_events(ROWS, drift_at=1.0)
    assert ingest(settings, events) == ROWS
    day = _event_date(events[0])
    defs = build_definitions(settings)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        raw = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB).execute_in_process(
            instance=instance, partition_key=day
        )
        assert raw.success, f"{keys.RAW_PARTITIONS_JOB} failed for {day}"
        retrain = defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(instance=instance)
        assert retrain.success, f"{keys.RETRAIN_JOB} failed"
        records = instance.fetch_materializations(dg.AssetKey(keys.CHAMPION_MODEL), limit=1)
        (record,) = records.records
        materialization = record.asset_materialization
        assert materialization is not None
        metadata = {
            k: str(v.value)
            for k, v in materialization.metadata.items()
            if isinstance(v, _PLAIN_METADATA)
        }
    champion = Registry.from_settings(settings).alias(CHAMPION)
    assert champion is not None, "the retrain run made no champion"
    assert metadata[keys.META_MODEL_VERSION] == champion.version
    return BuiltHome(
        settings=settings,
        dagster_home=dagster_home,
        location=location_name(),
        groups=asset_groups(defs),
        parents=asset_parents(defs),
        raw_partition=day,
        raw_partition_rows=sum(_event_date(e) == day for e in events),
        retrain_run_id=retrain.run_id,
        champion_version=champion.version,
        champion_run_id=champion.run_id,
        champion_metadata=metadata,
    )


class WebserverStartError(RuntimeError):
    pass


@dataclass
class DagsterUI:
    """A running ``dagster-webserver`` on a :class:`BuiltHome`."""

    home: BuiltHome
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    host: str = HOST

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            text = _ANSI.sub("", self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return "(no webserver log)"
        return (
            f"--- dagster-webserver log ({self.log_path}), last {chars} chars ---\n"
            + (text[-chars:])
        )

    def graphql(self, query: str, timeout: float = 30.0) -> dict[str, Any]:
        """One GraphQL query over plain HTTP (for the readiness probe)."""
        response = httpx.post(self.url("/graphql"), json={"query": query}, timeout=timeout)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        if body.get("errors"):
            raise WebserverStartError(f"GraphQL errors: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the webserver's process group (the webserver and the code server it
        spawned), SIGKILL to what is left of the group after ``timeout``."""
        group = self.proc.pid
        with suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not _group_alive(group):
                return
            time.sleep(0.1)
        with suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.proc.wait(5)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def webserver_log_on_failure(ui: DagsterUI) -> Iterator[None]:
    """Re-raise any failure inside the block as an AssertionError that ends with the
    webserver's log tail."""
    try:
        yield
    except Exception as exc:
        kind = "" if isinstance(exc, AssertionError) else f"{type(exc).__name__}: "
        raise AssertionError(f"{kind}{exc}\n{ui.log_tail()}") from exc


def _wait_ready(ui: DagsterUI, timeout: float) -> None:
    """``/server_info`` answers, then the code location reports LOADED."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if ui.proc.poll() is not None:
            raise WebserverStartError(
                f"dagster-webserver exited with {ui.proc.returncode}\n{ui.log_tail()}"
            )
        try:
            if httpx.get(ui.url("/server_info"), timeout=2.0).status_code == 200:
                workspace = ui.graphql(_LOCATIONS_QUERY)["workspaceOrError"]
                entries = {e["name"]: e for e in workspace.get("locationEntries", [])}
                entry = entries.get(ui.home.location)
                last = f"location entries: {entries}"
                if entry is not None and entry["loadStatus"] == "LOADED":
                    loaded = entry["locationOrLoadError"] or {}
                    if loaded.get("__typename") == "PythonError":
                        raise WebserverStartError(
                            f"code location {ui.home.location} failed to load: "
                            f"{loaded.get('message')}\n{ui.log_tail()}"
                        )
                    return
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.25)
    raise WebserverStartError(
        f"dagster-webserver not ready after {timeout}s ({last})\n{ui.log_tail()}"
    )


def start_webserver(home: BuiltHome, timeout: float = START_TIMEOUT_SECONDS) -> DagsterUI:
    """``dagster-webserver -w workspace.yaml`` from the project root on a free port."""
    attempts = 3
    for attempt in range(attempts):
        port = free_port()
        log_path = home.settings.home / f"webserver-{port}.log"
        command = [WEBSERVER, "-w", "workspace.yaml", "-h", HOST, "-p", str(port)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=home.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ui = DagsterUI(home, proc, port, log_path)
        try:
            _wait_ready(ui, timeout)
            return ui
        except WebserverStartError:
            ui.stop()
            in_use = "address already in use" in ui.log_tail().lower()
            if not in_use or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class _Shared:
    """One built home and webserver per process, released by its last user."""

    lock = threading.Lock()
    users = 0
    ui: DagsterUI | None = None
    error: BaseException | None = None


def acquire(root: Path) -> DagsterUI:
    with _Shared.lock:
        if _Shared.error is not None:
            raise _Shared.error
        if _Shared.ui is None:
            try:
                _Shared.ui = start_webserver(build_home(root))
            except BaseException as exc:
                _Shared.error = exc
                raise
        _Shared.users += 1
        return _Shared.ui


def release() -> None:
    with _Shared.lock:
        _Shared.users -= 1
        if _Shared.users == 0 and _Shared.ui is not None:
            ui, _Shared.ui = _Shared.ui, None
            ui.stop()


@pytest.fixture(scope="session")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    """The shared webserver; stopped after the last test that uses it."""
    ui = acquire(tmp_path_factory.mktemp("dagster-ui"))
    try:
        yield ui
    finally:
        release()
