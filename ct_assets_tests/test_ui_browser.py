"""The Dagster UI in headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright): the asset groups of the definitions, the lineage from ``raw_feedback`` to
``champion_model``, and the latest materialization metadata of ``champion_model``.

Screenshots are kept in ``$CT_TEST_ARTIFACTS`` (default ``<repo>/.artifacts``). Without
Chromium the tests skip, or fail when ``CT_REQUIRE_BROWSER=1`` (as in ``.ci/run``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect, sync_playwright

from ct_assets import keys
from ct_assets.settings import PROJECT_ROOT

from .ui_helpers import (
    LINEAGE_CHAIN,
    DagsterUI,
    dagster_ui,
    upstream_closure,
    webserver_log_on_failure,
)

__all__ = ["dagster_ui"]

# ``chromium`` first: without a browser the tests skip (or fail) before the instance is built
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("chromium")]

CHROMIUM = Path("/usr/bin/chromium")
#: wide enough that the fitted lineage graph draws full asset nodes (named in full),
#: not the zoomed-out minimal ones whose names are truncated
VIEWPORT: ViewportSize = {"width": 2800, "height": 1200}
TIMEOUT_MS = 30_000
NO_SUCH_GROUP = "no_such_group"
#: the assets of the chain that job ``retrain`` materialized (the others are partitioned)
RETRAINED = (
    keys.TRAINING_DATASET,
    keys.CANDIDATE_MODEL,
    keys.VALIDATION_REPORT,
    keys.CHAMPION_MODEL,
)
#: asset nodes and group nodes of the graph carry their full name in ``data-tooltip``
GRAPH_NAMES = "foreignObject [data-tooltip]"
SIDEBAR_GROUPS = 'button:has([aria-label="asset_group"]) [title]'


def artifacts_dir() -> Path:
    path = Path(os.environ.get("CT_TEST_ARTIFACTS") or PROJECT_ROOT / ".artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; Playwright never downloads a browser here."""
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} is missing: install Debian's package (apt-get install -y chromium); "
            "Playwright's own browser downloads are not used"
        )
        if os.environ.get("CT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CT_REQUIRE_BROWSER=1 but {message}", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@contextmanager
def diagnosed(ui: DagsterUI, page: Page, name: str) -> Iterator[None]:
    """On failure: a screenshot ``failed-<name>.png`` and the webserver's log tail."""
    try:
        with webserver_log_on_failure(ui):
            yield
    except Exception:
        with suppress(Exception):
            page.screenshot(path=str(artifacts_dir() / f"failed-{name}.png"), full_page=True)
        raise


def names(page: Page, selector: str, attribute: str) -> list[str]:
    values: list[str] = page.locator(selector).evaluate_all(
        f"els => els.map(e => e.getAttribute({attribute!r}))"
    )
    return values


def metadata_row(page: Page, key: str) -> Locator:
    """The row of the metadata table (Key, Timestamp, Value) whose key cell is ``key``."""
    key_cell = page.get_by_role("cell", name=key, exact=True)
    return page.get_by_role("row").filter(has=key_cell)


def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot kept as a test artifact, checked to be a real picture."""
    path = artifacts_dir() / name
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert path.exists(), f"no screenshot at {path}"
    assert path.stat().st_size > 10_000, f"{path}: {path.stat().st_size} bytes"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= VIEWPORT["width"] and image.height >= VIEWPORT["height"]
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50, f"{path} is nearly blank: {len(colors)} colors"
    return path


def test_asset_graph_shows_every_group_of_the_definitions(
    dagster_ui: DagsterUI, page: Page
) -> None:
    home = dagster_ui.home
    groups = set(home.groups)
    assert {keys.INGESTION, keys.CURATION, keys.TRAINING, keys.VALIDATION} <= groups
    assert {keys.DEPLOYMENT, keys.MONITORING} <= groups
    with diagnosed(dagster_ui, page, "asset_graph"):
        page.goto(dagster_ui.url("/asset-groups"))
        for group in sorted(groups):
            expect(page.locator(f'{GRAPH_NAMES}[data-tooltip="{group}"]')).to_be_visible()
            expect(
                page.locator(SIDEBAR_GROUPS).and_(page.get_by_title(group, exact=True))
            ).to_be_visible()
        assert set(names(page, GRAPH_NAMES, "data-tooltip")) == groups
        assert sorted(names(page, SIDEBAR_GROUPS, "title")) == sorted(groups)
        expect(page.locator(f'{GRAPH_NAMES}[data-tooltip="{NO_SUCH_GROUP}"]')).to_have_count(0)
        expect(page.get_by_text("fetching statuses")).to_have_count(0)
        screenshot(page, "asset_graph.png")

        for group, assets in home.groups.items():
            page.goto(dagster_ui.url(f"/locations/{home.location}/asset-groups/{group}/list"))
            for asset in assets:
                expect(page.locator(f'a[href="/assets/{quote(asset)}"]').first).to_be_visible()
            links = names(page, 'a[href^="/assets/"]', "href")
            shown = {re.sub(r"^/assets/|[?#].*$", "", link) for link in links}
            assert shown == set(assets), f"group {group}: {sorted(shown)} != {assets}"


def test_lineage_from_raw_feedback_to_champion_model(dagster_ui: DagsterUI, page: Page) -> None:
    home = dagster_ui.home
    closure = upstream_closure(home.parents, keys.CHAMPION_MODEL)
    assert set(LINEAGE_CHAIN) <= closure
    group_of = {asset: group for group, assets in home.groups.items() for asset in assets}
    depth = len(home.parents)  # at least the longest path; the UI caps it at what exists
    url = f"/assets/{keys.CHAMPION_MODEL}?view=lineage&lineageScope=upstream&lineageDepth={depth}"
    with diagnosed(dagster_ui, page, "champion_lineage"):
        page.goto(dagster_ui.url(url))
        nodes = [page.locator(f'{GRAPH_NAMES}[data-tooltip="{a}"]') for a in LINEAGE_CHAIN]
        for node in nodes:
            expect(node).to_be_visible()
        shown = set(names(page, GRAPH_NAMES, "data-tooltip"))
        assert shown == closure | {group_of[a] for a in closure}
        assert keys.DEPLOYMENT_HISTORY not in shown, "downstream of champion_model"
        assert keys.LABELING_QUEUE not in shown, "not upstream of champion_model"

        lefts = []
        for name, node in zip(LINEAGE_CHAIN, nodes, strict=True):
            box = node.bounding_box()
            assert box is not None, f"{name} has no box"
            lefts.append(box["x"])
        assert lefts == sorted(lefts) and len(set(lefts)) == len(lefts), (
            f"the chain is not drawn upstream to downstream, left to right: "
            f"{dict(zip(LINEAGE_CHAIN, lefts, strict=True))}"
        )
        for name in RETRAINED:
            node = page.locator("foreignObject", has=page.locator(f'[data-tooltip="{name}"]'))
            expect(node.get_by_text("Materialized", exact=True)).to_be_visible()
            expect(node.locator(f'a[href^="/runs/{home.retrain_run_id}?"]').first).to_be_visible()
        screenshot(page, "champion_lineage.png")


def test_asset_page_shows_latest_materialization_metadata(
    dagster_ui: DagsterUI, page: Page
) -> None:
    home = dagster_ui.home
    recorded = home.champion_metadata
    assert recorded[keys.META_MODEL_VERSION] == home.champion_version
    with diagnosed(dagster_ui, page, "champion_model"):
        page.goto(dagster_ui.url(f"/assets/{keys.CHAMPION_MODEL}"))
        version = metadata_row(page, keys.META_MODEL_VERSION)
        expect(version.get_by_role("cell").nth(2)).to_have_text(home.champion_version)
        run_id = metadata_row(page, keys.META_MLFLOW_RUN_ID)
        expect(run_id.get_by_role("cell").nth(2)).to_have_text(home.champion_run_id)
        expect(metadata_row(page, "ct/no_such_key")).to_have_count(0)

        table = page.locator("table", has=version)
        cells: list[list[str]] = table.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => Array.from(r.cells, c => c.innerText.trim()))"
        )
        shown = {cell[0]: cell[2] for cell in cells}
        assert shown == recorded, "the metadata table differs from the instance's record"
        screenshot(page, "champion_model.png")
