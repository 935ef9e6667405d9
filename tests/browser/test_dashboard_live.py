"""The dashboard in a real browser: live rows, force-release from the page, ticking heartbeat ages.

Bounded: every wait has a timeout of a few seconds; "live" means under one second without reload.
"""

import json
import time
import urllib.request

import pytest
from django.contrib.auth.models import Group, User

from agents.services import agent_register
from assignments.services import profile_create
from config.actors import OPERATORS_GROUP, Actor
from pools.services import pool_create
from tests.browser.conftest import wait_until

pytestmark = [pytest.mark.postgres]

SETUP = Actor.system("browser-test")
LIVE_MS = 1000


def api(base, method, path, token, body=None):
    request = urllib.request.Request(
        base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def fleet(transactional_db):
    pool, _ = pool_create(name="browser-pool", actor=SETUP)
    agent, token = agent_register(pool=pool, agent_id="browser-agent", actor=SETUP, capacity=5)
    agent_register(pool=pool, agent_id="spare-agent", actor=SETUP, capacity=5)
    profile_create(profile_id="browser-profile", actor=SETUP, name="Browser profile")
    operator = User.objects.create_user("op-browser", password="op-browser-pass-42")
    operator.groups.add(Group.objects.get_or_create(name=OPERATORS_GROUP)[0])
    User.objects.create_user("viewer-browser", password="viewer-browser-pass-42")
    return {"agent_token": token}


def login(browser, base, username, password, path):
    page = browser.new_context().new_page()  # a context of its own: its own session cookie
    page.set_default_timeout(10_000)
    page.goto(f"{base}/accounts/login/?next={path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{path}")
    # Connected to the event stream (the indicator turns on when the WebSocket opens).
    page.wait_for_selector("#live-state[data-state=on]", timeout=5_000)
    page.evaluate("window.__not_reloaded = true")
    return page


def test_row_appears_live_then_force_release_reaches_the_api_and_every_page(fleet, browser, asgi_server):
    base, token = asgi_server, fleet["agent_token"]
    operator_page = login(browser, base, "op-browser", "op-browser-pass-42", "/assignments/")
    viewer_page = login(browser, base, "viewer-browser", "viewer-browser-pass-42", "/assignments/")
    assert operator_page.locator("tr[data-key]").count() == 0

    # An agent takes a profile through the API: the row appears on both open pages, without reload.
    status, body = api(base, "POST", "/api/assignments", token,
                       {"profile_id": "browser-profile", "agent_id": "browser-agent", "workflow_id": "wf-browser"})
    assert status == 201, body
    taken_at = time.monotonic()
    row = f'tr[data-key="{body["assignment_id"]}"]'
    operator_page.wait_for_selector(row, timeout=LIVE_MS)
    viewer_page.wait_for_selector(row, timeout=max(1, LIVE_MS - int((time.monotonic() - taken_at) * 1000)))
    assert time.monotonic() - taken_at < 1.0
    assert "wf-browser" in operator_page.inner_text(row)
    assert operator_page.evaluate("window.__not_reloaded") and viewer_page.evaluate("window.__not_reloaded")
    # The viewer sees it but has no button; the operator has one.
    assert viewer_page.locator(f"{row} a.btn").count() == 0

    # The operator force-releases it from the page, through the confirmation step.
    operator_page.click(f"{row} a.btn.danger")
    operator_page.wait_for_selector("[data-testid=confirm]")
    operator_page.click("[data-testid=confirm]")
    operator_page.wait_for_url(f"{base}/assignments/")
    status, released = api(base, "GET", f"/api/assignments/{body['assignment_id']}", token)
    # Its agent is alive, so it is told to let go first (DESIGN: releasing → released on confirm).
    assert status == 200 and released["status"] == "releasing"
    # The viewer's page shows the change live.
    viewer_page.wait_for_selector(f"{row} .badge.s-releasing", timeout=LIVE_MS)

    # The agent confirms: the API reports it released, and it leaves the live list on the open page.
    status, confirmed = api(base, "DELETE", f"/api/assignments/{body['assignment_id']}", token)
    assert status == 200 and confirmed["status"] == "released"
    status, final = api(base, "GET", f"/api/assignments/{body['assignment_id']}", token)
    assert final["status"] == "released" and final["released_at"]
    viewer_page.wait_for_selector(row, state="detached", timeout=LIVE_MS)
    assert viewer_page.evaluate("window.__not_reloaded")


def test_heartbeat_age_ticks_in_the_browser(fleet, browser, asgi_server):
    base = asgi_server
    page = login(browser, base, "viewer-browser", "viewer-browser-pass-42", "/agents/")
    cell = 'tr[data-key="browser-agent"] [data-testid=heartbeat] time.age'

    def seconds():
        text = page.inner_text(cell)
        assert text.endswith("s"), text
        parts = text.replace("m", " ").replace("s", "").split()
        return int(parts[0]) * 60 + int(parts[1]) if len(parts) == 2 else int(parts[0])

    first = seconds()
    # Polled from here: a string for wait_for_function is eval'd in the page, which the page's
    # Content-Security-Policy (script-src 'self') rightly refuses.
    shown, deadline = page.inner_text(cell), time.monotonic() + 2.5
    while page.inner_text(cell) == shown:
        assert time.monotonic() < deadline, f"the heartbeat age stayed at {shown!r}"
        time.sleep(0.05)
    time.sleep(1.1)
    assert seconds() > first
    # A heartbeat through the API resets it (heartbeats emit no event: the page re-reads on its own
    # timer; a reload shows it at once).
    status, _ = api(base, "POST", "/api/agents/browser-agent/heartbeat", fleet["agent_token"], {"load_metrics": {"cpu": 12}})
    assert status == 200
    page.reload()
    assert seconds() <= 2


def test_draining_an_agent_from_its_page_shows_live_on_the_agents_list(fleet, browser, asgi_server):
    base, token = asgi_server, fleet["agent_token"]
    status, body = api(base, "POST", "/api/assignments", token, {"profile_id": "browser-profile", "agent_id": "browser-agent"})
    assert status == 201, body
    viewer_page = login(browser, base, "viewer-browser", "viewer-browser-pass-42", "/agents/")
    operator_page = login(browser, base, "op-browser", "op-browser-pass-42", "/agents/browser-agent/")
    row = 'tr[data-key="browser-agent"]'
    assert "active" in viewer_page.inner_text(f"{row} .badge")

    operator_page.click("a.btn.danger:has-text('Drain')")
    operator_page.click("[data-testid=confirm]")
    operator_page.wait_for_url(f"{base}/agents/browser-agent/")
    assert "inactive" in operator_page.inner_text("#agent-summary .badge")
    drained_at = time.monotonic()
    # The viewer's list shows it inactive, and its assignment moved to the spare agent, without reload.
    viewer_page.wait_for_selector(f"{row} .badge.s-inactive", timeout=LIVE_MS)
    assert time.monotonic() - drained_at < 1.0
    wait_until(viewer_page, "document.querySelector('tr[data-key=\"spare-agent\"]').innerText.includes('1/5')",
               timeout=LIVE_MS)
    assert viewer_page.evaluate("window.__not_reloaded")
    status, moved = api(base, "GET", f"/api/assignments/{body['assignment_id']}", token)
    assert moved["agent_id"] == "spare-agent" and moved["status"] == "active"
