"""The console in a real browser (headless Debian chromium): an operator finds a failed workflow,
opens it, reviews the dry-run replay plan, confirms it, and watches the line item reach
`activated`. Screenshots of each step are saved under test-artifacts/browser/."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleStack
from tests.e2e.support import crm_event, order_submitted, publish, subscription

ADD_ITEM = "POST /orders/*/line-items"
# pytest-base-url (a pytest-playwright dependency) defines its session fixture in a way pytest 9
# deprecates; the warning is theirs, not ours, and `filterwarnings = error` would turn it into one.
pytestmark = pytest.mark.filterwarnings("ignore:Session-scoped fixtures defined as instance methods")


def _wait_failed(stack: ConsoleStack, order_id: str) -> None:
    headers = {"Authorization": f"Bearer {stack.token}"}
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=stack.admin_url, headers=headers, timeout=10) as http:
        while time.monotonic() < deadline:  # bounded: a minute at most
            answer = http.get("/api/v1/workflows", params={"order_id": order_id, "state": "failed"}).json()
            if answer["total"] == 1:
                return
            time.sleep(0.2)
    raise AssertionError(f"{order_id} did not fail within a minute")


def test_operator_replays_a_failed_workflow_from_the_console(
    console_stack: ConsoleStack, page: Page, artifacts: Path
) -> None:
    stack = console_stack
    assert stack.control is not None
    assert stack.settings is not None
    stack.call(stack.control.faults({"match": ADD_ITEM, "kind": "error", "status": 400}))
    data = order_submitted("o-console", subscription("li-console"))
    stack.call(publish(stack.settings, "o-console", crm_event("crm.order.submitted", data)))
    _wait_failed(stack, "o-console")
    stack.call(stack.control.faults())  # the provider is fixed; now the operator steps in

    # Sign in with the token once; the console keeps a cookie.
    page.goto(f"{stack.admin_url}/console?token={stack.token}")
    expect(page.locator("h1")).to_have_text("Workflows")
    expect(page.locator("#counts")).to_contain_text("failed 1")
    page.screenshot(path=str(artifacts / "01-workflows.png"), full_page=True)

    # Search for failed workflows and open the one found.
    page.select_option("select[name=state]", "failed")
    page.click("#search-button")
    rows = page.locator("#workflows tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("provider_rejected")
    rows.first.locator("a.workflow-link").click()
    expect(page.locator("#state")).to_have_text("failed")
    expect(page.locator("#workflow-error")).to_contain_text("provider_rejected")
    expect(page.locator("svg.diagram g.current")).to_have_attribute("data-state", "failed")
    expect(page.locator("#calls")).to_contain_text("add_item")
    page.screenshot(path=str(artifacts / "02-failed-workflow.png"), full_page=True)

    # Replay: the dry-run plan first, then confirm.
    page.fill("#replay-reason", "provider fixed the line item validation")
    page.click("#plan-replay")
    expect(page.locator("h1")).to_contain_text("Replay plan")
    expect(page.locator("#plan")).to_contain_text("add_item")
    expect(page.locator("#plan .action").first).to_have_attribute("data-action", "rekey")
    page.screenshot(path=str(artifacts / "03-replay-plan.png"), full_page=True)
    page.click("#confirm-replay")

    # The workflow page follows the engine until the line item is activated.
    expect(page.locator("#flash")).to_contain_text("1 resumed")
    expect(page.locator("#state")).to_have_text("activated", timeout=60_000)
    expect(page.locator("svg.diagram g.current")).to_have_attribute("data-state", "activated")
    expect(page.locator("#audit")).to_contain_text("provider fixed the line item validation")
    expect(page.locator("#timeline")).to_contain_text("operator:")
    page.screenshot(path=str(artifacts / "04-activated.png"), full_page=True)
