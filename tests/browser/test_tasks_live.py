"""The /tasks/ page in a real browser: queue sizes move live as tasks are submitted and placed, and
an operator clears a queue from the page through its confirmation step."""

import time

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from tests.browser.conftest import wait_until
from tests.browser.test_dashboard_live import LIVE_MS, api, fleet, login  # noqa: F401 — fixtures

pytestmark = [pytest.mark.postgres]


def test_queues_move_live_and_an_operator_clears_one(fleet, browser, asgi_server):  # noqa: F811
    base = asgi_server
    ops_token = Token.objects.create(user=User.objects.get(username="op-browser")).key
    viewer_page = login(browser, base, "viewer-browser", "viewer-browser-pass-42", "/tasks/")
    operator_page = login(browser, base, "op-browser", "op-browser-pass-42", "/tasks/")
    low = '[data-testid="queue-browser-pool-low"]'
    assert viewer_page.inner_text(low).strip() == "0"

    status, body = api(base, "POST", "/api/tasks/batch", ops_token,
                       {"tasks": [{"pool": "browser-pool", "priority": "low", "requirements": {"capabilities": ["gpu"]}}
                                  for _ in range(3)]})
    assert status == 201, body
    submitted_at = time.monotonic()
    # Nobody can serve them (no agent has "gpu"): they wait, and both pages show 3 without reload.
    wait_until(viewer_page, f"document.querySelector('{low} a.badge')?.textContent === '3'", timeout=LIVE_MS)
    assert time.monotonic() - submitted_at < 1.0
    wait_until(operator_page, f"document.querySelector('{low} a.badge')?.textContent === '3'", timeout=LIVE_MS)
    assert viewer_page.locator('[data-testid="clear-browser-pool-low"]').count() == 0

    operator_page.click('[data-testid="clear-browser-pool-low"]')
    operator_page.wait_for_selector("[data-testid=confirm]")
    operator_page.click("[data-testid=confirm]")
    operator_page.wait_for_url(f"{base}/tasks/")
    wait_until(viewer_page, f"document.querySelector('{low}').innerText.trim() === '0'", timeout=LIVE_MS)
    status, queues = api(base, "GET", "/api/tasks/queues?pool=browser-pool", ops_token)
    assert status == 200 and queues["queues"]["low"] == 0
    assert viewer_page.evaluate("window.__not_reloaded")
