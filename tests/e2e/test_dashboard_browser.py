"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): sign in with an
API token, read every section, watch a campaign's progress move without reloading, and check
a screenshot of the page for the timeline's bars, the overdue bar and the progress bar.

`make test` installs Debian's chromium (infra/ensure-services.sh --postgres)."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select, update

from shared.clock import FixedClock
from shared.db.models import CampaignItem
from tests.services.api.conftest import ApiHarness, running_api, serving
from tests.services.api.test_dashboard import fleet

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is missing: apt-get install chromium (make test installs it)",
)

BLUE = (0x2F, 0x6F, 0xDB)  # timeline bars and progress bars
RED = (0xB3, 0x26, 0x1E)  # overdue certificates and bad figures


@pytest.fixture
def served(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[ApiHarness, str]]:
    """The real app on a real HTTP server (werkzeug, threaded) over SQLite and Redis."""
    clock = FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    with running_api(sqlite_url, redis_url, tmp_path, clock) as api, serving(api.app) as url:
        yield api, url


def test_dashboard_in_headless_chromium(served: tuple[ApiHarness, str], tmp_path: Path) -> None:
    api, url = served
    campaign_id = fleet(api)
    token = api.token("auditor")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/dashboard/")
            assert "/dashboard/login" in page.url  # no cookie yet
            page.fill("input[name=token]", "cf_wrong")
            page.click("button[type=submit]")
            assert "not valid" in page.inner_text("[role=alert]")
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/dashboard/")

            assert page.inner_text("#tile-active b") == "4"
            assert page.inner_text("#tile-expiring b") == "2"
            assert page.inner_text("#tile-expired b") == "1"
            sites = page.inner_text("#sites")
            for name in ("hq-copenhagen", "branch-aarhus", "branch-stockholm"):
                assert name in sites
            assert page.locator("#timeline rect.week").count() == 57  # to the latest expiry
            assert page.locator("#timeline rect.overdue").count() == 1
            assert "expires" in page.inner_text("#timeline .ca-list")
            assert "token.created" in page.inner_text("#audit")

            row = page.locator(f"#campaigns tr[data-campaign='{campaign_id}']")
            assert "spring renewal" in row.inner_text()
            assert "0 / 2" in row.inner_text()  # headquarters' two active certificates
            # Progress moves on the page without a reload.
            with api.db.session() as session:
                ids = session.scalars(
                    select(CampaignItem.id).where(CampaignItem.campaign_id == campaign_id)
                ).all()
                session.execute(
                    update(CampaignItem)
                    .where(CampaignItem.id.in_(ids[:1]))
                    .values(status="verified", finished_at=api.clock.now())
                )
            page.wait_for_function(
                "() => document.querySelector("
                f"\"#campaigns tr[data-campaign='{campaign_id}']\").innerText.includes('1 / 2')",
                timeout=15000,
            )
            assert (
                "50%" in page.locator(f"#campaigns tr[data-campaign='{campaign_id}']").inner_text()
            )

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            regions = {
                name: page.locator(selector).bounding_box()
                for name, selector in (
                    ("timeline", "#timeline svg"),
                    ("progress", f"#campaigns tr[data-campaign='{campaign_id}'] .bar"),
                )
            }

            page.click("text=Hosts")
            page.wait_for_url(f"{url}/dashboard/hosts")
            assert page.locator("tr[data-host]").count() == 11
            assert "none" in page.inner_text("tr[data-host='hq-event01']")
        finally:
            browser.close()

    image = Image.open(shot).convert("RGB")
    assert image.width >= 1400 and image.height >= 1000
    timeline = colours(image, regions["timeline"])
    assert timeline.get(BLUE, 0) >= 20  # the bar for hq-rec01's week
    assert timeline.get(RED, 0) >= 20  # the overdue bar for sto-rec01
    progress = colours(image, regions["progress"])
    assert progress.get(BLUE, 0) >= 30  # half of the bar filled


def colours(image: Image.Image, box: dict[str, float] | None) -> dict[tuple[int, int, int], int]:
    """How many pixels of each colour a page region has in the screenshot."""
    assert box is not None
    left, top = int(box["x"]), int(box["y"])
    region = image.crop((left, top, left + int(box["width"]), top + int(box["height"])))
    return {colour: count for count, colour in region.getcolors(maxcolors=1 << 20) or []}


def test_the_api_reference_renders_offline(served: tuple[ApiHarness, str]) -> None:
    """/api/v1/docs in the browser with every request to another origin refused: Swagger UI
    comes from the API itself and lists every operation of the spec."""
    api, url = served
    spec = api.get("/api/v1/openapi.json", token="").get_json()
    operations = sum(
        method in ("get", "post", "put", "patch", "delete")
        for path in spec["paths"].values()
        for method in path
    )
    elsewhere: list[str] = []

    def only_the_api(route: Any) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", only_the_api)
            page.goto(f"{url}/api/v1/docs")
            page.wait_for_selector(".opblock", timeout=15000)
            assert page.locator(".opblock").count() == operations
            assert "certfleet" in page.inner_text(".info .title")
            assert page.locator(".opblock-summary-path[data-path='/api/v1/hosts']").count() >= 1
        finally:
            browser.close()
    assert elsewhere == []
