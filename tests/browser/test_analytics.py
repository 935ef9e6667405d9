"""/analytics/ and /alerts/ in a real browser: the SVG charts are there and drawn, they follow new
takes without a reload, and an operator resolves an alert from the page after confirming."""

import pytest

from assignments.jobs import usage_rollup_recent
from assignments.models import Alert
from config.actors import Actor
from tests.browser.conftest import wait_until
from tests.browser.test_dashboard_live import api, fleet, login  # noqa: F401 — `fleet` is a fixture

pytestmark = [pytest.mark.postgres]

ROLLUP = Actor.system("browser-rollup")
CHARTS = ("utilization", "conflicts", "failovers", "queue", "efficiency", "contention")


def test_analytics_charts_are_drawn_and_follow_new_takes_live(browser, asgi_server, fleet):  # noqa: F811
    from assignments.services import profile_create

    profile_create(profile_id="second-profile", actor=Actor.system("browser-test"))
    token = fleet["agent_token"]
    status, _ = api(asgi_server, "POST", "/api/assignments", token, {"profile_id": "browser-profile"})
    assert status == 201
    status, _ = api(asgi_server, "POST", "/api/assignments", token, {"profile_id": "browser-profile"})
    assert status == 409  # a refused take: the contention ranking has a bar
    usage_rollup_recent(actor=ROLLUP)

    page = login(browser, asgi_server, "op-browser", "op-browser-pass-42", "/analytics/")
    for chart in CHARTS:
        assert page.locator(f"figure#chart-{chart}").count() == 1, chart
    assert page.locator("svg[data-chart=utilization] polyline").count() == 1
    assert page.locator("svg[data-chart=conflicts] rect.bar").count() >= 1
    assert page.locator("svg[data-chart=contention] rect.bar").count() == 1
    box = page.locator("svg[data-chart=utilization]").bounding_box()
    assert box and box["width"] > 200 and box["height"] > 50  # laid out, not collapsed
    assert page.inner_text("[data-testid=taken]") == "1"

    # A second take, no rollup run since: the page re-renders its tiles and charts in place (the
    # current hour's counts come from the event log).
    status, _ = api(asgi_server, "POST", "/api/assignments", token, {"profile_id": "second-profile"})
    assert status == 201
    wait_until(page, "document.querySelector('[data-testid=taken]').textContent.trim() === '2'", timeout=5_000)
    assert page.evaluate("window.__not_reloaded") is True


def test_an_operator_resolves_an_alert_from_the_alerts_page(browser, asgi_server, fleet):  # noqa: F811
    from assignments.alerts import alert_raise

    alert, _ = alert_raise(kind=Alert.Kind.CONFLICT_BURST, actor=Actor.system("browser-test"),
                           message="5 refused takes of browser-profile", pool="browser-pool",
                           profile_id="browser-profile")
    page = login(browser, asgi_server, "op-browser", "op-browser-pass-42", "/alerts/")
    row = page.locator(f"tr[data-key='{alert.alert_id}']")
    assert "5 refused takes" in row.inner_text()
    row.locator("[data-testid=resolve]").click()
    page.wait_for_selector("[data-testid=confirm]")
    page.click("[data-testid=confirm]")
    page.wait_for_url(f"{asgi_server}/alerts/")
    assert page.locator(f"tr[data-key='{alert.alert_id}']").count() == 0  # unresolved only, by default
    alert.refresh_from_db()
    assert alert.status == "resolved"
