"""The cache dashboard in a real browser: htmx polling brings new numbers without a reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e


def lookups(page: Page) -> int:
    cells = page.locator("#kind-total td").all_inner_texts()
    return int(cells[0]) + int(cells[1])  # hits + misses of every kind


def test_dashboard_numbers_follow_the_traffic(page: Page, output_dir: Path) -> None:
    dashboard = page
    dashboard.goto("/stats")
    dashboard.evaluate("window.__marker = 1")
    before = lookups(dashboard)
    polled = dashboard.locator("#stats-panel").get_attribute("data-generated-at")

    tasks = dashboard.context.new_page()
    tasks.goto("/")
    tasks.get_by_label("Task name").fill("Make some cache traffic")
    tasks.get_by_role("button", name="Add Task").click()
    expect(tasks.locator("#tasks > li")).to_have_count(1)
    tasks.reload()
    tasks.close()

    expect(dashboard.locator("#stats-panel")).not_to_have_attribute(
        "data-generated-at", polled, timeout=6000
    )
    dashboard.wait_for_function(
        f"() => {{ const c = document.querySelectorAll('#kind-total td');"
        f" return +c[0].textContent + +c[1].textContent > {before}; }}",
        timeout=6000,
    )
    assert lookups(dashboard) > before
    # The history samples every 5 s: within two samples the traffic is a point on the chart.
    drawn = dashboard.locator("svg.chart").locator("path.line, circle.dot")
    expect(drawn.first).to_be_visible(timeout=12000)
    expect(dashboard.locator(".chart-note")).to_contain_text("Latest:")
    expect(dashboard.locator("#stats-panel").get_by_text("up", exact=True)).to_be_visible()
    expect(dashboard.locator("#processes-reporting")).to_have_text("1 process reporting")
    expect(dashboard.locator('#processes tbody tr[aria-current="true"]')).to_have_count(1)
    assert dashboard.evaluate("window.__marker") == 1, "polling must not reload the page"
    dashboard.screenshot(path=output_dir / "stats.png", full_page=True, caret="initial")
